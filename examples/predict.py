"""Send one image to POST /predict with httpx and print one line per face.

Usage: python examples/predict.py photo.jpg [http://127.0.0.1:8000]
"""

import sys
from pathlib import Path

import httpx


def predict(path: Path, base_url: str = "http://127.0.0.1:8000") -> dict:
    """The /predict JSON for one image file; a 4xx/5xx answer exits with the service's message."""
    with path.open("rb") as image:
        response = httpx.post(f"{base_url}/predict", files={"image": image}, params={"min_confidence": 0.6}, timeout=30)
    if response.is_error:
        sys.exit(f"HTTP {response.status_code}: {response.json()['detail']}")
    return response.json()


if __name__ == "__main__":
    result = predict(Path(sys.argv[1]), *sys.argv[2:3])
    for face in result["faces"]:
        box, gender = face["box"], face["gender"]
        print(
            f"{face['label']}: female {gender['female']:.2f}, male {gender['male']:.2f}, "
            f"box {box['width']}x{box['height']} at ({box['x']}, {box['y']})"
        )
