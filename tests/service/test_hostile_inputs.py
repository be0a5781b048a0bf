"""Hostile uploads against the real app and model: each gets API.md's status as JSON, and the service keeps serving."""

import json
import subprocess
import sys
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import ROOT
from tests.service.hostile import CORPUS, encode, noise
from tests.service.test_api import post_image

REFUSALS = {400, 413, 415}
# Generous for a shared 2-core machine; a decode that allocated a bomb's pixels would take seconds.
SECONDS_PER_REQUEST = 3.0
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)


def check_answer(response, allowed: set[int]) -> None:
    """The status is one of ``allowed``; a refusal is JSON with a short detail and no internals."""
    assert response.status_code in allowed, response.text[:300]
    if response.status_code != 200:
        assert response.headers["content-type"] == "application/json"
        detail = response.json()["detail"]
        assert isinstance(detail, str) and 0 < len(detail) < 300
        for internal in ("Traceback", 'File "', " object at 0x"):
            assert internal not in detail


def timed_post(client, data: bytes, **kwargs):
    started = time.perf_counter()
    response = post_image(client, data, **kwargs)
    assert time.perf_counter() - started < SECONDS_PER_REQUEST
    return response


def assert_still_serving(client, astronaut_jpeg) -> None:
    response = post_image(client, astronaut_jpeg)
    assert response.status_code == 200 and len(response.json()["faces"]) == 1


@pytest.mark.parametrize("name", list(CORPUS))
def test_each_hostile_file_gets_its_status(client, name):
    data, status = CORPUS[name]
    # The file name and declared type lie on purpose: the type is sniffed from the bytes.
    check_answer(timed_post(client, data, filename="photo.gif", content_type="image/gif"), {status})
    raw = client.post("/annotate", content=data, headers={"content-type": "application/octet-stream"})
    check_answer(raw, {status})


def test_the_service_serves_after_the_corpus(client, astronaut_jpeg):
    for data, _ in CORPUS.values():
        post_image(client, data)
    assert_still_serving(client, astronaut_jpeg)


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        (encode(noise(), "PNG"), "image/jpeg", 200),
        (encode(noise(), "JPEG"), "image/png", 200),
        (CORPUS["animated gif"][0], "image/jpeg", 415),
        (encode(noise(), "JPEG"), "text/plain", 422),
        (encode(noise(), "JPEG"), "application/json", 422),
        (encode(noise(), "JPEG"), "multipart/form-data; boundary=nothere", 400),
        (encode(noise(), "JPEG"), "", 422),
    ],
    ids=["png-as-jpeg", "jpeg-as-png", "gif-as-jpeg", "text", "json", "multipart-without-parts", "no-type"],
)
def test_lying_content_type_headers(client, body, content_type, status):
    response = client.post("/predict", content=body, headers={"content-type": content_type})
    check_answer(response, {status})


def test_two_image_fields_are_refused(client, astronaut_jpeg):
    files = [("image", ("a.jpg", astronaut_jpeg, "image/jpeg")), ("image", ("b.jpg", astronaut_jpeg, "image/jpeg"))]
    check_answer(client.post("/predict", files=files), {400})


def test_random_bytes_are_refused(client, astronaut_jpeg):
    @FUZZ
    @given(data=st.binary(max_size=4096), raw=st.booleans())
    def fuzz(data: bytes, raw: bool) -> None:
        if raw:
            response = client.post("/predict", content=data, headers={"content-type": "image/jpeg"})
        else:
            response = timed_post(client, data)
        check_answer(response, REFUSALS)

    fuzz()
    assert_still_serving(client, astronaut_jpeg)


VALID = {fmt: encode(noise(96, 80, seed=3), fmt) for fmt in ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "PPM")}


def test_damaged_images_are_decoded_or_refused(client, astronaut_jpeg):
    """Truncated, bit-flipped and spliced versions of valid files in every supported format."""

    @FUZZ
    @given(
        fmt=st.sampled_from(sorted(VALID)),
        cut=st.one_of(st.just(1.0), st.floats(0.0, 1.0)),
        flips=st.lists(st.tuples(st.floats(0.0, 1.0), st.integers(1, 255)), max_size=8),
        junk=st.binary(max_size=64),
    )
    def fuzz(fmt: str, cut: float, flips: list[tuple[float, int]], junk: bytes) -> None:
        data = bytearray(VALID[fmt])
        for where, mask in flips:
            data[int(where * (len(data) - 1))] ^= mask
        damaged = bytes(data[: max(1, int(cut * len(data)))]) + junk
        check_answer(timed_post(client, damaged), {200, *REFUSALS})

    fuzz()
    assert_still_serving(client, astronaut_jpeg)


BOMB_PROBE = """
import json, resource, time
from service.errors import ImageTooLarge
from service.images import decode_image
from tests.service.hostile import CORPUS, encode, noise
decode_image(encode(noise(64, 64), "JPEG"), 40_000_000)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
slowest = 0.0
for name, (data, status) in CORPUS.items():
    if name.startswith("bomb") and status == 413:
        started = time.perf_counter()
        try:
            decode_image(data, 40_000_000)
        except ImageTooLarge:
            slowest = max(slowest, time.perf_counter() - started)
        else:
            raise SystemExit(name + " was decoded")
print(json.dumps({"rss_growth_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before, "slowest_s": slowest}))
"""


def test_bombs_are_refused_without_allocating_their_pixels():
    """In a fresh process (so the peak RSS is ours alone): 100M to 900M-pixel headers cost almost nothing."""
    result = subprocess.run(
        [sys.executable, "-c", BOMB_PROBE], cwd=ROOT, capture_output=True, text=True, timeout=120, check=True
    )
    measured = json.loads(result.stdout.splitlines()[-1])
    # The smallest bomb, 10000 x 10000 RGB, would need 300 MB decoded.
    assert measured["rss_growth_kib"] < 20 * 1024, measured
    assert measured["slowest_s"] < 0.5, measured
