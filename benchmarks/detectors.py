"""Recall, false positives and speed of the face detector backends on a labelled photo set.

Usage: python benchmarks/detectors.py [--repeats 3] [--json benchmarks/detectors.json]
       [--example benchmarks/detectors_example.png] [--shared ../shared/datasets]
(from the repository root with PYTHONPATH=. so that `benchmarks` imports)

The set is built at run time, the same every time, from the public-domain and CC0 photos in
benchmarks/photos/ (see its README.md): the two face photos as they are, composites that paste
those two faces at many sizes, flipped, tilted or darkened onto the no-face photos, and the
no-face photos themselves. Nothing is downloaded. A detection counts as a hit when its IoU with
a not yet matched ground-truth face is at least 0.4; every other detection is a false positive.
Milliseconds are per image, one OpenCV thread: the median of the repeats, then the median over images.
Where ../shared/datasets holds pixabay_portraits (904 portraits, the face often filling the frame), each
setting's share of those photos with at least one face found is reported too.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
from PIL import Image as PilImage

from benchmarks.common import HERE, PHOTOS, ROOT, cpu_model
from service.detection import Detection, FaceDetector
from service.detector import create_detector
from service.preprocess import Box

SEED = 20240611
# On the astronaut, haar's square box and res10's taller one both reach IoU 0.8 with the hand-drawn
# face box, so 0.4 absorbs the backends' box styles; a centre-inside-the-face rule was not used because
# it also credits boxes several times the face's size.
MIN_IOU = 0.4
SMALL_FACE_PX = 60
Image = npt.NDArray[np.uint8]


@dataclass(frozen=True)
class FaceSource:
    """A photo with one face: its hand-checked face box and the head-and-shoulders patch that gets pasted."""

    face: Box
    patch: Box
    view: str


# Boxes run from the hairline or fringe to the chin and from cheek to cheek (the cameraman is seen
# three-quarter, so his box runs from the ear to the nose tip); each was drawn onto the photo and
# checked by eye. The patches are centred on the face so that the feathered ellipse that blends
# them in stays opaque over the whole face box.
FACE_SOURCES = {
    "astronaut": FaceSource(Box(181, 64, 88, 111), Box(125, 5, 200, 230), "frontal"),
    "camera": FaceSource(Box(198, 112, 60, 82), Box(160, 68, 136, 170), "three-quarter"),
}
VIEWS = ("frontal", "three-quarter")
NO_FACE = ("coffee", "chelsea", "rocket", "hubble_deep_field", "brick", "grass", "gravel", "clock_motion")


@dataclass(frozen=True)
class Composite:
    """How one multi-face test image is made."""

    background: str
    size: tuple[int, int]  # width, height
    faces: int
    face_width: tuple[int, int]  # smallest and largest pasted face width in pixels
    tilt: float = 0.0  # degrees; each face gets +tilt or -tilt
    gamma: float = 1.0  # > 1 darkens the whole image


COMPOSITES = (
    Composite("coffee", (640, 480), 3, (60, 140)),
    Composite("rocket", (640, 480), 4, (50, 120)),
    Composite("brick", (640, 480), 5, (40, 100)),
    Composite("grass", (640, 480), 6, (40, 80)),
    Composite("gravel", (800, 600), 4, (60, 160)),
    Composite("hubble_deep_field", (800, 600), 3, (80, 200)),
    Composite("chelsea", (640, 480), 2, (50, 100)),
    Composite("clock_motion", (640, 480), 3, (50, 110)),
    Composite("coffee", (1024, 768), 6, (40, 200)),
    Composite("rocket", (1024, 768), 5, (60, 180)),
    Composite("brick", (480, 640), 3, (60, 140)),
    Composite("grass", (640, 480), 2, (120, 180)),
    Composite("gravel", (640, 480), 1, (150, 190)),
    Composite("hubble_deep_field", (320, 240), 3, (40, 60)),
    Composite("coffee", (1920, 1080), 6, (40, 200)),
    Composite("gravel", (640, 480), 4, (60, 120), tilt=10),
    Composite("rocket", (800, 600), 4, (60, 150), tilt=10),
    Composite("brick", (640, 480), 4, (60, 140), gamma=2.2),
    Composite("chelsea", (800, 600), 3, (40, 120)),
    Composite("clock_motion", (800, 600), 4, (50, 150)),
    Composite("grass", (1024, 768), 5, (50, 150)),
    Composite("hubble_deep_field", (640, 480), 4, (45, 90)),
    Composite("coffee", (640, 480), 2, (90, 160)),
    Composite("rocket", (480, 640), 3, (50, 110)),
    Composite("brick", (800, 600), 6, (40, 110)),
    Composite("gravel", (1024, 768), 3, (80, 200)),
    Composite("grass", (640, 480), 3, (70, 130), tilt=8),
    Composite("clock_motion", (640, 480), 2, (40, 60)),
)
EXAMPLE_INDEX = 1  # the composite drawn into the example PNG: four faces of mixed size over a rocket


@dataclass
class Sample:
    """One labelled test image."""

    name: str
    image: Image
    faces: list[Box]
    views: list[str]  # the pose of each face, from its source photo


@dataclass(frozen=True)
class Setting:
    """One detector configuration to measure."""

    label: str
    backend: str
    threshold: float
    input_size: int = 300
    tile_size: int = 640

    def build(self) -> FaceDetector:
        return create_detector(self.backend, input_size=self.input_size, tile_size=self.tile_size)  # type: ignore[arg-type]


SETTINGS = (
    Setting("blazeface, thr 0.5, tiles 640 (default)", "blazeface", 0.5),
    Setting("blazeface, thr 0.6, tiles 640", "blazeface", 0.6),
    Setting("blazeface, thr 0.7, tiles 640", "blazeface", 0.7),
    Setting("blazeface, thr 0.5, tiles 480", "blazeface", 0.5, tile_size=480),
    Setting("blazeface, thr 0.5, no tiles", "blazeface", 0.5, tile_size=0),
    Setting("ssd 300 px, thr 0.5", "ssd", 0.5),
    Setting("ssd 300 px, thr 0.3", "ssd", 0.3),
    Setting("ssd 300 px, thr 0.7", "ssd", 0.7),
    Setting("ssd 240 px, thr 0.5", "ssd", 0.5, input_size=240),
    Setting("ssd 200 px, thr 0.5", "ssd", 0.5, input_size=200),
    Setting("haar", "haar", 0.0),
)


def load(name: str) -> Image:
    image = cv2.imread(str(PHOTOS / name), cv2.IMREAD_COLOR)
    if image is None:
        raise FileNotFoundError(PHOTOS / name)
    return image


def feathered_ellipse(width: int, height: int) -> npt.NDArray[np.float32]:
    """An alpha mask, 1 inside an ellipse that fills the patch and fading to 0 at its edge."""
    mask = np.zeros((height, width), np.float32)
    cv2.ellipse(mask, (width // 2, height // 2), (int(width * 0.45), int(height * 0.45)), 0, 0, 360, 1.0, -1)
    sigma = max(1.0, 0.04 * width)
    return cv2.GaussianBlur(mask, (0, 0), sigma)


def cover(image: Image, width: int, height: int, rng: np.random.Generator) -> Image:
    """Scale the background so that it covers the canvas, then crop a random window of it."""
    scale = max(width / image.shape[1], height / image.shape[0])
    scaled = cv2.resize(image, (max(width, round(image.shape[1] * scale)), max(height, round(image.shape[0] * scale))))
    x = int(rng.integers(0, scaled.shape[1] - width + 1))
    y = int(rng.integers(0, scaled.shape[0] - height + 1))
    return scaled[y : y + height, x : x + width].copy()


def paste_face(
    canvas: Image,
    source: FaceSource,
    photo: Image,
    face_width: int,
    placed: list[Box],
    rng: np.random.Generator,
    tilt: float,
) -> Box | None:
    """Paste the source's head patch with its face `face_width` px wide; return the face's box on the canvas."""
    scale = face_width / source.face.width
    p = source.patch
    patch = photo[p.y : p.y + p.height, p.x : p.x + p.width]
    pw, ph = round(p.width * scale), round(p.height * scale)
    if pw > canvas.shape[1] or ph > canvas.shape[0]:
        return None
    patch = cv2.resize(patch, (pw, ph), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    fw, fh = round(source.face.width * scale), round(source.face.height * scale)
    fx = (source.face.x - p.x) * scale
    fy = (source.face.y - p.y) * scale
    if rng.random() < 0.5:
        patch = patch[:, ::-1]
        fx = pw - fx - fw
    alpha = feathered_ellipse(pw, ph)
    centre = np.array([fx + fw / 2, fy + fh / 2, 1.0])
    if tilt:
        angle = tilt if rng.random() < 0.5 else -tilt
        turn = cv2.getRotationMatrix2D((pw / 2, ph / 2), angle, 1.0)
        patch = cv2.warpAffine(patch, turn, (pw, ph), borderMode=cv2.BORDER_REFLECT)
        alpha = cv2.warpAffine(alpha, turn, (pw, ph))
        # A detector boxes a tilted face about as tightly as an upright one, so the ground truth
        # keeps the face's size and only follows its centre, rather than growing to the rotated
        # corners' bounding box.
        centre[:2] = turn @ centre
    for _ in range(200):
        x = int(rng.integers(0, canvas.shape[1] - pw + 1))
        y = int(rng.integers(0, canvas.shape[0] - ph + 1))
        spot = Box(x, y, pw, ph)
        if all(intersection(spot, other) == 0 for other in placed):
            break
    else:
        return None
    placed.append(spot)
    region = canvas[y : y + ph, x : x + pw].astype(np.float32)
    a = alpha[..., None]
    canvas[y : y + ph, x : x + pw] = (a * patch + (1 - a) * region).round().astype(np.uint8)
    return Box(round(x + centre[0] - fw / 2), round(y + centre[1] - fh / 2), fw, fh)


def make_composite(
    spec: Composite, photos: dict[str, Image], rng: np.random.Generator
) -> tuple[Image, list[Box], list[str]]:
    width, height = spec.size
    canvas = cover(photos[spec.background], width, height, rng)
    placed: list[Box] = []
    faces, views = [], []
    for _ in range(spec.faces):
        name = "astronaut" if rng.random() < 0.65 else "camera"
        face_width = int(rng.integers(spec.face_width[0], spec.face_width[1] + 1))
        # A face that finds no free spot is tried smaller, down to the smallest size of the spec.
        while True:
            box = paste_face(canvas, FACE_SOURCES[name], photos[name], face_width, placed, rng, spec.tilt)
            if box is not None or face_width <= spec.face_width[0]:
                break
            face_width = max(spec.face_width[0], int(face_width * 0.8))
        if box is not None:
            faces.append(box)
            views.append(FACE_SOURCES[name].view)
    if spec.gamma != 1.0:
        canvas = (255.0 * (canvas / 255.0) ** spec.gamma).round().astype(np.uint8)
    # The service receives JPEGs; one round of compression also softens the paste seams.
    _, jpeg = cv2.imencode(".jpg", canvas, [cv2.IMWRITE_JPEG_QUALITY, 90])
    return cv2.imdecode(jpeg, cv2.IMREAD_COLOR), faces, views


def build_samples() -> list[Sample]:
    rng = np.random.default_rng(SEED)
    photos = {name: load(f"{name}.jpg") for name in (*FACE_SOURCES, *NO_FACE)}
    samples = [Sample(name, photos[name], [source.face], [source.view]) for name, source in FACE_SOURCES.items()]
    for i, spec in enumerate(COMPOSITES):
        image, faces, views = make_composite(spec, photos, rng)
        name = f"composite{i:02d}_{spec.background}_{spec.size[0]}x{spec.size[1]}"
        samples.append(Sample(name, image, faces, views))
    samples += [Sample(name, photos[name], [], []) for name in NO_FACE]
    return samples


def intersection(a: Box, b: Box) -> int:
    ix = max(0, min(a.x + a.width, b.x + b.width) - max(a.x, b.x))
    iy = max(0, min(a.y + a.height, b.y + b.height) - max(a.y, b.y))
    return ix * iy


def iou(a: Box, b: Box) -> float:
    inter = intersection(a, b)
    return inter / (a.area + b.area - inter)


def match(detections: list[Detection], faces: list[Box]) -> tuple[list[bool], list[Detection]]:
    """Greedy matching, best score first; returns which faces were found and the false positives."""
    found = [False] * len(faces)
    false_positives = []
    for det in sorted(detections, key=lambda d: d.score, reverse=True):
        best, best_iou = -1, MIN_IOU
        for i, face in enumerate(faces):
            overlap = iou(det.box, face)
            if not found[i] and overlap >= best_iou:
                best, best_iou = i, overlap
        if best < 0:
            false_positives.append(det)
        else:
            found[best] = True
    return found, false_positives


def load_portraits(shared: Path) -> list[Image]:
    """The pixabay_portraits photos, or none when the shared archive is absent."""
    archive = shared / "pixabay_portraits.tar.gz"
    if not archive.is_file():
        return []
    portraits = []
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            handle = tar.extractfile(member) if member.name.endswith(".jpg") else None
            if handle is not None:
                portraits.append(cv2.imdecode(np.frombuffer(handle.read(), np.uint8), cv2.IMREAD_COLOR))
    return portraits


def evaluate(setting: Setting, samples: list[Sample], repeats: int, portraits: list[Image]) -> dict[str, Any]:
    detector = setting.build()
    detector.detect(samples[0].image, setting.threshold)
    total = small = hit = small_hit = 0
    fp_total = fp_no_face = 0
    by_view = {view: [0, 0] for view in VIEWS}  # found, total
    times, per_image, false_positives = [], {}, []
    for sample in samples:
        runs = []
        for _ in range(repeats):
            start = time.perf_counter()
            detections = detector.detect(sample.image, setting.threshold)
            runs.append((time.perf_counter() - start) * 1000)
        times.append(statistics.median(runs))
        found, fps = match(detections, sample.faces)
        total += len(found)
        hit += sum(found)
        small += sum(face.width < SMALL_FACE_PX for face in sample.faces)
        small_hit += sum(f and face.width < SMALL_FACE_PX for f, face in zip(found, sample.faces, strict=True))
        for f, view in zip(found, sample.views, strict=True):
            by_view[view][0] += f
            by_view[view][1] += 1
        fp_total += len(fps)
        fp_no_face += 0 if sample.faces else len(fps)
        false_positives += [{"image": sample.name, "box": box_list(d.box), "score": round(d.score, 3)} for d in fps]
        per_image[sample.name] = {
            "ms": round(times[-1], 2),
            "found": sum(found),
            "detections": [
                {"box": box_list(d.box), "score": round(d.score, 3), "landmarks": d.landmarks} for d in detections
            ],
        }
    no_face_images = sum(not s.faces for s in samples)
    portraits_found = sum(bool(detector.detect(p, setting.threshold)) for p in portraits)
    return {
        "setting": setting.label,
        "backend": setting.backend,
        "threshold": setting.threshold,
        "input_size": setting.input_size if setting.backend == "ssd" else None,
        "faces": total,
        "found": hit,
        "recall": round(hit / total, 3),
        "small_faces": small,
        "small_found": small_hit,
        "recall_small": round(small_hit / small, 3) if small else None,
        "found_by_view": {view: {"found": f, "faces": n} for view, (f, n) in by_view.items()},
        "false_positives": fp_total,
        "false_positives_on_no_face_images": fp_no_face,
        "false_positives_per_no_face_image": round(fp_no_face / no_face_images, 3),
        "median_ms": round(statistics.median(times), 2),
        "max_ms": round(max(times), 2),
        "portraits": len(portraits),
        "portraits_found": portraits_found,
        "slowest_image": samples[times.index(max(times))].name,
        "false_positive_list": false_positives,
        "per_image": per_image,
    }


def portrait_rate(result: dict[str, Any]) -> str:
    if not result["portraits"]:
        return "not run (no ../shared)"
    return f"{result['portraits_found'] / result['portraits']:.1%} ({result['portraits_found']}/{result['portraits']})"


def box_list(box: Box) -> list[int]:
    return [box.x, box.y, box.width, box.height]


def markdown(results: list[dict[str, Any]]) -> str:
    lines = [
        f"| setting | recall | recall, faces < {SMALL_FACE_PX} px | found: frontal, three-quarter | false positives "
        "| FP per no-face image | median ms | slowest ms | pixabay_portraits found |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        views = ", ".join(f"{v['found']}/{v['faces']}" for v in r["found_by_view"].values())
        lines.append(
            f"| {r['setting']} | {r['recall']:.2f} ({r['found']}/{r['faces']}) "
            f"| {r['recall_small']:.2f} ({r['small_found']}/{r['small_faces']}) "
            f"| {views} "
            f"| {r['false_positives']} "
            f"| {r['false_positives_per_no_face_image']:.2f} | {r['median_ms']:.1f} | {r['max_ms']:.0f} "
            f"| {portrait_rate(r)} |"
        )
    return "\n".join(lines)


def draw_example(sample: Sample, results: list[dict[str, Any]], path: Path) -> None:
    """Ground truth in green, the default BlazeFace in red (score above, landmarks as dots), res10 in blue."""
    canvas = sample.image.copy()
    for face in sample.faces:
        cv2.rectangle(canvas, (face.x, face.y), (face.x + face.width, face.y + face.height), (0, 220, 0), 2)
    styles = {SETTINGS[0].label: ((0, 0, 255), -4), "ssd 300 px, thr 0.5": ((255, 160, 0), 14)}
    for r in results:
        if r["setting"] not in styles:
            continue
        colour, text_dy = styles[r["setting"]]
        for det in r["per_image"][sample.name]["detections"]:
            x, y, w, h = det["box"]
            cv2.rectangle(canvas, (x, y), (x + w, y + h), colour, 2)
            text_y = y + text_dy if text_dy < 0 else y + h + text_dy
            cv2.putText(canvas, f"{det['score']:.2f}", (x, text_y), cv2.FONT_HERSHEY_SIMPLEX, 0.45, colour, 1)
            for px, py in (det["landmarks"] or {}).values():
                cv2.circle(canvas, (round(px), round(py)), 2, colour, -1)
    legend = [("ground truth", (0, 220, 0)), ("blazeface, default", (0, 0, 255)), ("ssd (res10)", (255, 160, 0))]
    cv2.rectangle(canvas, (0, 0), (180, 8 + 18 * len(legend)), (0, 0, 0), -1)
    for i, (text, colour) in enumerate(legend):
        cv2.putText(canvas, text, (6, 18 + 18 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.5, colour, 1)
    # A 256-colour palette keeps the thin boxes crisp at less than half the size of a true-colour PNG.
    rgb = PilImage.fromarray(cv2.cvtColor(canvas, cv2.COLOR_BGR2RGB))
    rgb.quantize(colors=256, method=PilImage.Quantize.MEDIANCUT).save(path, optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per image; the median is kept")
    parser.add_argument("--json", type=Path, default=HERE / "detectors.json")
    parser.add_argument("--example", type=Path, default=HERE / "detectors_example.png")
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "datasets")
    args = parser.parse_args()

    cv2.setNumThreads(1)
    samples = build_samples()
    portraits = load_portraits(args.shared)
    results = [evaluate(setting, samples, args.repeats, portraits) for setting in SETTINGS]
    face_images = [s for s in samples if s.faces]
    machine = f"{cpu_model()}, OpenCV {cv2.__version__}, 1 thread, load average {os.getloadavg()[0]:.1f}"
    summary = (
        f"{len(samples)} images: {len(face_images)} with {sum(len(s.faces) for s in samples)} faces, "
        f"{len(samples) - len(face_images)} with none; match = IoU >= {MIN_IOU}; {machine}"
    )
    print(markdown(results))
    print()
    print(summary)
    for r in results:
        on_no_face = [f"{fp['image']} {fp['score']:.2f}" for fp in r["false_positive_list"] if fp["image"] in NO_FACE]
        if on_no_face:
            print(f"{r['setting']}: false positives on no-face photos: {', '.join(on_no_face)}")

    dataset = {
        s.name: {
            "size": [s.image.shape[1], s.image.shape[0]],
            "faces": [box_list(f) for f in s.faces],
            "views": s.views,
        }
        for s in samples
    }
    report = {
        "machine": machine,
        "repeats": args.repeats,
        "min_iou": MIN_IOU,
        "seed": SEED,
        "summary": summary,
        "results": results,
        "dataset": dataset,
    }
    args.json.write_text(json.dumps(report, indent=1) + "\n")
    draw_example(samples[len(FACE_SOURCES) + EXAMPLE_INDEX], results, args.example)


if __name__ == "__main__":
    main()
