#!/usr/bin/env bash
# make test-fc: the layer as Function Compute runs it. Builds dist/segflow-layer.zip, makes a Python 3.10
# environment holding only FC's python3.10 built-ins (scripts/fc-python310-builtins.txt) plus the test
# tools, unzips the layer as FC does (/opt/python) next to a copy of the function folders (the code
# package), and runs the on_upload and collect_jobs functional tests there: segflow is imported from the
# unzipped layer, never from the checkout (tests/conftest.py refuses anything else).
set -euo pipefail
cd "$(dirname "$0")/.."

find_python310() {
  local candidate
  for candidate in "${PYTHON310:-}" python3.10 \
      "$(command -v pyenv >/dev/null 2>&1 && pyenv root)"/versions/3.10*/bin/python3.10; do
    [ -n "$candidate" ] || continue
    if "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 10))' >/dev/null 2>&1; then
      echo "$candidate"
      return 0
    fi
  done
  return 1
}

if ! PY310=$(find_python310); then
  cat >&2 <<'MSG'
make test-fc: no Python 3.10 found. FC's python3.10 runtime is what the layer is deployed to, so these
tests must run on it. Install one (for example `pyenv install 3.10.13`, or your distribution's
python3.10 package) and run again, or point PYTHON310 at it: make test-fc PYTHON310=/path/to/python3.10
MSG
  exit 1
fi

ENV=.venv-fc310
STAMP="$ENV/.segflow-fc-ready"
if [ ! -f "$STAMP" ] || [ scripts/fc-python310-builtins.txt -nt "$STAMP" ] || [ "$0" -nt "$STAMP" ]; then
  rm -rf "$ENV"
  "$PY310" -m venv "$ENV"
  PIP=("$ENV/bin/python" -m pip --disable-pip-version-check -q)
  "${PIP[@]}" install --upgrade pip
  # The runtime's built-ins, exactly; then only test tools (PyAV and numpy make the test videos).
  "${PIP[@]}" install -r scripts/fc-python310-builtins.txt
  "${PIP[@]}" install 'pytest>=8' 'pytest-mock>=3.12' 'pytest-timeout>=2.2' 'av>=12' numpy \
    -c <("$ENV/bin/python" -m pip freeze)
  touch "$STAMP"
fi

"$ENV/bin/python" scripts/build_layer.py --out dist/segflow-layer.zip
FC_ROOT=build/fc
rm -rf "$FC_ROOT"
mkdir -p "$FC_ROOT/opt" "$FC_ROOT/code"
"$ENV/bin/python" -m zipfile -e dist/segflow-layer.zip "$FC_ROOT/opt"
cp -R functions/. "$FC_ROOT/code/"
find "$FC_ROOT/code" -name __pycache__ -prune -exec rm -rf {} +

echo "test-fc: $("$ENV/bin/python" --version) with $("$ENV/bin/python" -m pip freeze | grep -iE '^(oss2|pillow|requests)==' | tr '\n' ' ')"
# The layer from the zip; the checkout only for the tests and their tools (tests/, the local buckets and
# the fake API's signature check in engine/), which FC never runs.
export SEGFLOW_TEST_LAYER_DIR="$PWD/$FC_ROOT/opt/python"
export SEGFLOW_TEST_CODE_DIR="$PWD/$FC_ROOT/code"
export PYTHONPATH="$SEGFLOW_TEST_LAYER_DIR:$PWD/engine:$PWD"
exec "$ENV/bin/python" -m pytest -q -p no:cacheprovider \
  tests/functional/test_on_upload_*.py tests/functional/test_collect_jobs_*.py "$@"
