import itertools
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest

from service.blazeface import BlazeFaceDetector, tile_windows
from service.detection import LANDMARKS, DetectorFileMissing, clip_box, shrink
from service.detector import HaarFaceDetector, SsdFaceDetector, _Copies, create_detector
from service.preprocess import Box
from service.weights import BLAZEFACE, INSTALL_COMMAND, installed_file


@pytest.fixture(scope="module", params=["blazeface", "ssd", "haar"])
def detector(request):
    return create_detector(request.param)


def test_finds_the_one_face_of_a_portrait(detector, astronaut):
    faces = detector.detect(astronaut)
    assert len(faces) == 1
    box = faces[0].box
    # Eileen Collins' face lies around x 180-270, y 60-175 in the 512x512 portrait.
    assert 150 <= box.x <= 200 and 40 <= box.y <= 90
    assert 70 <= box.width <= 130 and 70 <= box.height <= 140
    assert 0.0 <= faces[0].score <= 1.0


def test_finds_no_face_in_a_photo_of_coffee(detector, coffee):
    assert detector.detect(coffee) == []


def test_finds_no_face_in_a_blank_image(detector):
    assert detector.detect(np.full((240, 320, 3), 127, np.uint8)) == []


def test_threshold_one_rejects_everything(detector, astronaut):
    assert detector.detect(astronaut, threshold=1.01) == []


@pytest.mark.parametrize(("backend", "copies"), [("blazeface", 1), ("ssd", 1), ("ssd", 3), ("haar", 1), ("haar", 3)])
def test_threads_sharing_one_detector_get_the_answers_of_a_lone_caller(backend, copies, astronaut, coffee):
    # The service runs requests in a thread pool against one detector; a cv2.dnn.Net is stateful.
    detector = create_detector(backend, copies=copies)
    images = [astronaut, coffee] * 12
    expected = [detector.detect(image) for image in images[:2]] * 12
    with ThreadPoolExecutor(max_workers=8) as pool:
        assert list(pool.map(detector.detect, images)) == expected


@pytest.mark.parametrize("backend", ["blazeface", "ssd"])
def test_two_faces_side_by_side_are_both_found_largest_first(backend, astronaut):
    face = astronaut[30:210, 130:320]
    small = face[::2, ::2]
    canvas = np.full((300, 600, 3), 90, np.uint8)
    canvas[40 : 40 + face.shape[0], 20 : 20 + face.shape[1]] = face
    canvas[60 : 60 + small.shape[0], 400 : 400 + small.shape[1]] = small
    faces = create_detector(backend).detect(canvas)
    assert len(faces) == 2
    assert faces[0].box.area > faces[1].box.area
    assert faces[0].box.x < 300 < faces[1].box.x


@pytest.mark.parametrize(
    ("coords", "expected"),
    [
        ((10, 10, 50, 60), Box(10, 10, 40, 50)),
        ((-5, 10, 35, 60), Box(0, 10, 35, 50)),  # mostly inside: clipped, kept
        ((-80, -80, 10, 10), None),  # mostly outside the frame: a corner phantom
        ((10, 10, 12, 60), None),  # a sliver, not face-shaped
        ((30, 30, 20, 20), None),  # degenerate
    ],
)
def test_clip_box_drops_phantom_and_degenerate_boxes(coords, expected):
    assert clip_box(*coords, width=100, height=100) == expected


def test_missing_files_fail_fast_with_the_path(tmp_path: Path):
    missing = tmp_path / "nope.caffemodel"
    with pytest.raises(DetectorFileMissing, match=r"nope\.caffemodel"):
        SsdFaceDetector(weights=missing)
    with pytest.raises(DetectorFileMissing, match=r"cascade\.xml"):
        HaarFaceDetector(cascade=tmp_path / "cascade.xml")


def test_missing_blazeface_weights_fail_fast_naming_the_install_command(tmp_path: Path):
    with pytest.raises(DetectorFileMissing, match=INSTALL_COMMAND):
        BlazeFaceDetector(tmp_path / "absent.onnx")
    with pytest.raises(DetectorFileMissing, match=INSTALL_COMMAND):
        create_detector("blazeface", directory=tmp_path)


def test_unknown_backend_is_refused():
    with pytest.raises(ValueError, match="unknown detector backend"):
        create_detector("yunet")  # type: ignore[arg-type]


def test_shrink_matches_one_area_resize(astronaut):
    # shrink takes OpenCV's whole-factor fast path first; the result must still be an area average.
    big = cv2.resize(astronaut, (1920, 1080), interpolation=cv2.INTER_CUBIC)
    direct = cv2.resize(big, (300, 300), interpolation=cv2.INTER_AREA).astype(int)
    fast = shrink(big, 300, 300)
    assert fast.shape == (300, 300, 3) and fast.dtype == np.uint8
    assert np.abs(fast.astype(int) - direct).mean() < 1.0


def test_ssd_input_size_is_configurable(astronaut):
    small = create_detector("ssd", input_size=240)
    assert isinstance(small, SsdFaceDetector) and small.input_size == 240
    assert len(small.detect(astronaut)) == 1


def test_a_returned_copy_goes_to_the_longest_waiting_caller():
    # A plain lock let a few requests wait many seconds under load while others cycled; borrowing must be FIFO.
    copies = _Copies(object, 1)
    order: list[int] = []

    def borrow(n: int) -> None:
        with copies.borrow():
            order.append(n)

    threads = []
    with copies.borrow():
        for n in range(6):
            threads.append(threading.Thread(target=borrow, args=(n,)))
            threads[-1].start()
            deadline = time.monotonic() + 5
            while len(copies._waiting) < n + 1 and time.monotonic() < deadline:
                time.sleep(0.001)
    for thread in threads:
        thread.join(timeout=5)
    assert order == list(range(6))


def test_blazeface_landmarks_are_named_and_the_inner_ones_lie_inside_the_box(astronaut):
    (face,) = create_detector("blazeface").detect(astronaut)
    assert face.landmarks is not None and tuple(face.landmarks) == LANDMARKS
    b = face.box
    for name in ("right_eye", "left_eye", "nose_tip", "mouth"):
        x, y = face.landmarks[name]
        assert b.x <= x <= b.x + b.width and b.y <= y <= b.y + b.height, name
    (rx, ry), (lx, ly) = face.eyes
    # The subject's right eye is the one on the image's left; both sit above the mouth.
    assert rx < lx and max(ry, ly) < face.landmarks["mouth"][1]
    # Eileen Collins' eyes are near (203, 102) and (248, 103) in the 512x512 portrait.
    assert abs(rx - 203) < 8 and abs(lx - 248) < 8 and abs(ry - 102) < 8


def test_opencv_backends_give_no_landmarks(astronaut):
    assert create_detector("ssd").detect(astronaut)[0].landmarks is None


def _small_face_scene(astronaut: np.ndarray, face_side: int) -> tuple[np.ndarray, tuple[int, int]]:
    """The astronaut's head shrunk to a face about ``face_side`` px wide, at a known spot of a grey 1920x1080 scene."""
    head = astronaut[20:220, 120:330]
    scale = face_side / 95
    head = cv2.resize(head, (round(head.shape[1] * scale), round(head.shape[0] * scale)), interpolation=cv2.INTER_AREA)
    canvas = np.full((1080, 1920, 3), 120, np.uint8)
    x, y = 1300, 600
    canvas[y : y + head.shape[0], x : x + head.shape[1]] = head
    return canvas, (x + head.shape[1] // 2, y + head.shape[0] // 2)


def test_the_tile_pass_finds_a_small_face_in_a_large_image_that_one_view_misses(astronaut):
    scene, (cx, cy) = _small_face_scene(astronaut, 50)
    assert create_detector("blazeface", tile_size=0).detect(scene) == []
    found = create_detector("blazeface", tile_size=640).detect(scene)
    assert len(found) == 1
    b = found[0].box
    assert b.x <= cx <= b.x + b.width and b.y <= cy <= b.y + b.height
    assert 35 <= b.width <= 80


def test_tiles_cover_the_image_with_the_overlap_asked_for():
    windows = tile_windows(1920, 1080, 640, 0.25)
    assert {(x, y) for x, y, _ in windows} >= {(0, 0), (1280, 440)}
    xs = sorted({x for x, _, _ in windows})
    assert all(b - a <= 640 * 0.75 + 1 for a, b in itertools.pairwise(xs))
    assert tile_windows(500, 400, 640, 0.25) == [(0, 0, 640)]


def test_blazeface_reads_the_installed_weights_file():
    detector = create_detector("blazeface")
    assert isinstance(detector, BlazeFaceDetector) and detector.weights == installed_file(BLAZEFACE)
