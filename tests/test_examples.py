"""The client examples in examples/ are the ones docs/usage.md shows, and they work against a live server."""

import json
import re
import shutil
import subprocess
import sys

import pytest

from tests.conftest import FIXTURES, ROOT
from tests.live import start_service, stop

# Each example file and the language of the docs/usage.md code block that shows it.
EXAMPLES = {"predict.sh": "bash", "predict.py": "python", "predict.js": "javascript"}


@pytest.fixture(scope="module")
def base_url(tmp_path_factory):
    process, base = start_service(tmp_path_factory.mktemp("examples") / "uvicorn.log")
    yield base
    stop(process)


@pytest.fixture
def not_an_image(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    return path


@pytest.mark.parametrize("name", EXAMPLES)
def test_usage_page_shows_each_example_verbatim(name):
    source = (ROOT / "examples" / name).read_text()
    assert f"```{EXAMPLES[name]}\n{source}```\n" in (ROOT / "docs" / "usage.md").read_text()


def run(*command):
    return subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=ROOT, check=False)


def test_curl_example(base_url, not_an_image):
    if shutil.which("curl") is None:
        pytest.skip("needs curl")
    result = run("bash", "examples/predict.sh", str(FIXTURES / "astronaut.jpg"), base_url)
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert [face["label"] for face in body["faces"]] == ["female"] and body["image"] == {"width": 512, "height": 512}
    refused = run("bash", "examples/predict.sh", str(not_an_image), base_url)
    assert refused.returncode == 22 and "not an image" in json.loads(refused.stdout)["detail"]


def test_httpx_example(base_url, not_an_image):
    result = run(sys.executable, "examples/predict.py", str(FIXTURES / "astronaut.jpg"), base_url)
    assert result.returncode == 0, result.stderr
    (line,) = result.stdout.splitlines()
    match = re.match(r"female: female (0\.\d+), male (0\.\d+), box \d+x\d+ at \(\d+, \d+\)$", line)
    assert match is not None, line
    assert float(match.group(1)) > 0.6 and float(match.group(1)) + float(match.group(2)) == pytest.approx(1, abs=0.011)
    refused = run(sys.executable, "examples/predict.py", str(not_an_image), base_url)
    assert refused.returncode == 1 and refused.stderr.startswith("HTTP 400: the bytes are not an image")
