#!/usr/bin/env bash
# Send one image to POST /predict with curl and print the JSON answer (exits non-zero on a 4xx/5xx).
# Usage: examples/predict.sh photo.jpg [http://127.0.0.1:8000]
set -euo pipefail
curl --silent --show-error --fail-with-body \
    --form "image=@$1" \
    "${2:-http://127.0.0.1:8000}/predict?min_confidence=0.6"
