#!/usr/bin/env bash
# make test-fc: the layer as Function Compute runs it. Builds dist/segflow-layer.zip, takes the Python 3.10
# environment holding only FC's python3.10 built-ins plus the test tools (scripts/fc-python310-env.sh),
# unzips the layer as FC does (/opt/python, read-only) next to a copy of the function folders (the code
# package), and runs the layer's functional tests (tests/layer/functional: the handlers, their hardening, the
# client over HTTP) there: segflow is imported from the
# unzipped layer, never from the checkout (tests/conftest.py refuses anything else).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=$(bash scripts/fc-python310-env.sh)
"$PY" scripts/build_layer.py --python310 "$PY" --out dist/segflow-layer.zip
FC_ROOT=build/fc
[ -d "$FC_ROOT" ] && chmod -R u+w "$FC_ROOT"
rm -rf "$FC_ROOT"
mkdir -p "$FC_ROOT/opt" "$FC_ROOT/code"
"$PY" -m zipfile -e dist/segflow-layer.zip "$FC_ROOT/opt"
cp -R functions/. "$FC_ROOT/code/"
find "$FC_ROOT/code" -name __pycache__ -prune -exec rm -rf {} +
chmod -R a-w "$FC_ROOT/opt" "$FC_ROOT/code"

echo "test-fc: $("$PY" --version) with $("$PY" -m pip freeze | grep -iE '^(oss2|pillow|requests)==' | tr '\n' ' ')"
# The layer from the zip; the checkout only for the tests and their tools (tests/, the local buckets in
# cli/ and the fake API's signature check in engine/), which FC never runs.
export SEGFLOW_TEST_LAYER_DIR="$PWD/$FC_ROOT/opt/python"
export SEGFLOW_TEST_CODE_DIR="$PWD/$FC_ROOT/code"
export PYTHONPATH="$SEGFLOW_TEST_LAYER_DIR:$PWD/engine:$PWD/cli:$PWD"
exec "$PY" -m pytest -q -p no:cacheprovider tests/layer/functional "$@"
