"""The demo page at / in a real headless Chromium (Debian's), driven by playwright-core from npm."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.conftest import FIXTURES, ROOT
from tests.live import start_service, stop

HERE = ROOT / "tests" / "browser"
SCREENSHOT = ROOT / "artifacts" / "demo-page.png"


def browser_tools() -> tuple[str, str]:
    """node and chromium, or skip (fail where FACEGENDER_BROWSER_TESTS=required, as in CI)."""
    node = shutil.which("node")
    chromium = os.environ.get("FACEGENDER_CHROMIUM") or shutil.which("chromium")
    missing = [
        what
        for what, ok in (
            ("node (Node.js 18+)", node),
            ("chromium (Debian: apt-get install chromium)", chromium and Path(chromium).is_file()),
            ("playwright-core (npm ci --prefix tests/browser)", (HERE / "node_modules" / "playwright-core").is_dir()),
        )
        if not ok
    ]
    if missing:
        reason = "the browser test needs " + ", ".join(missing)
        if os.environ.get("FACEGENDER_BROWSER_TESTS") == "required":
            pytest.fail(reason)
        pytest.skip(reason)
    return str(node), str(chromium)


@pytest.fixture(scope="module")
def two_people(tmp_path_factory):
    """The astronaut (a woman, frontal) beside the cameraman (a man, three-quarter, grey) as one JPEG."""
    canvas = np.full((440, 880, 3), 235, np.uint8)
    canvas[20:420, 20:420] = cv2.resize(cv2.imread(str(FIXTURES / "astronaut.jpg")), (400, 400))
    canvas[20:420, 460:860] = cv2.resize(cv2.imread(str(ROOT / "benchmarks" / "photos" / "camera.jpg")), (400, 400))
    path = tmp_path_factory.mktemp("browser") / "two-people.jpg"
    cv2.imwrite(str(path), canvas)
    return path


@pytest.fixture(scope="module")
def seen(tmp_path_factory, two_people):
    """What the page showed, as reported by demo.mjs after driving it against a live server."""
    node, chromium = browser_tools()
    process, base = start_service(tmp_path_factory.mktemp("browser-live") / "uvicorn.log")
    SCREENSHOT.parent.mkdir(exist_ok=True)
    SCREENSHOT.unlink(missing_ok=True)
    try:
        result = subprocess.run(
            [node, str(HERE / "demo.mjs"), base, chromium, str(two_people), str(SCREENSHOT),
             str(ROOT / "examples" / "predict.js")],
            capture_output=True, text=True, timeout=180, cwd=HERE, check=False,
        )  # fmt: skip
    finally:
        stop(process)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


def test_demo_page_boxes_every_face_with_its_probabilities(seen):
    assert seen["pageErrors"] == []
    faces = seen["json"]["faces"]
    assert [f["label"] for f in faces] == ["female", "male"] == seen["labels"]
    assert seen["status"].startswith("2 faces in 880x440 pixels")
    female = round(100 * faces[0]["gender"]["female"])
    assert seen["tags"][0].startswith(f"female · F {female}%")
    # The boxes sit where /predict put them, scaled from image pixels to the displayed photo.
    photo = seen["photo"]
    scale = photo["width"] / seen["json"]["image"]["width"]
    assert scale < 0.9  # the 700 px window shrinks the 880 px photo, so the boxes must be scaled
    for face, box in zip(faces, seen["boxes"], strict=True):
        assert box["x"] == pytest.approx(photo["x"] + face["box"]["x"] * scale, abs=2)
        assert box["y"] == pytest.approx(photo["y"] + face["box"]["y"] * scale, abs=2)
        assert box["width"] == pytest.approx(face["box"]["width"] * scale, abs=2)


def test_demo_page_slider_sets_min_confidence(seen):
    assert seen["sliderLabels"] == ["uncertain", "uncertain"]


def test_demo_page_shows_the_services_error_for_a_bad_file(seen):
    assert seen["error"] == "the bytes are not an image (JPEG, PNG, WebP, BMP, TIFF, PPM or PGM expected)"
    assert seen["errorVisible"] and seen["boxesAfterError"] == 0


def test_demo_page_screenshot_is_saved(seen):
    image = cv2.imread(str(SCREENSHOT))
    assert image is not None and image.shape[1] == 700 and image.shape[0] >= 440


def test_demo_page_takes_a_dropped_file(seen):
    # The slider still stands at 1 from the step before, so the new photo is sent with it too.
    assert seen["droppedLabels"] == ["uncertain", "uncertain"]


def test_fetch_example_runs_in_the_browser(seen):
    assert [f["label"] for f in seen["example"]["faces"]] == ["female", "male"]
    assert seen["exampleError"].startswith("HTTP 400: the bytes are not an image")
