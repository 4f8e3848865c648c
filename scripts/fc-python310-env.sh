#!/usr/bin/env bash
# The Python 3.10 environment FC's python3.10 runtime amounts to, for the layer's tests and benchmarks:
# .venv-fc310 with exactly the runtime's built-in packages (scripts/fc-python310-builtins.txt) plus test
# tools. Creates or refreshes it when needed and prints its interpreter's path.
set -euo pipefail
cd "$(dirname "$0")/.."

find_python310() {
  local candidate
  for candidate in "${PYTHON310:-}" python3.10 \
      "$(command -v pyenv >/dev/null 2>&1 && pyenv root)"/versions/3.10*/bin/python3.10 \
      "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.10*/bin/python3.10; do
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
no Python 3.10 found. FC's python3.10 runtime is what the layer is deployed to, so its tests run on it.
Install one (for example `pyenv install 3.10.13`, or your distribution's python3.10 package) and run
again, or point PYTHON310 at it: make test-fc PYTHON310=/path/to/python3.10
MSG
  exit 1
fi

ENV=.venv-fc310
STAMP="$ENV/.segflow-fc-ready"
if [ ! -f "$STAMP" ] || [ scripts/fc-python310-builtins.txt -nt "$STAMP" ] || [ "$0" -nt "$STAMP" ]; then
  rm -rf "$ENV"
  "$PY310" -m venv "$ENV"
  PIP=("$ENV/bin/python" -m pip --disable-pip-version-check -q)
  "${PIP[@]}" install --upgrade pip >&2
  # The runtime's built-ins, exactly; then only test tools (PyAV and numpy make the test videos; waitress
  # serves the local buckets' presigned URLs), never moving a built-in's version.
  "${PIP[@]}" install -r scripts/fc-python310-builtins.txt >&2
  "${PIP[@]}" install 'pytest>=8' 'pytest-mock>=3.12' 'pytest-timeout>=2.2' 'av>=12' numpy 'waitress>=3.0.1,<4' \
    -c <("$ENV/bin/python" -m pip freeze) >&2
  touch "$STAMP"
fi
echo "$PWD/$ENV/bin/python"
