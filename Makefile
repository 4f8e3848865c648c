# segflow — one entry point for setup, tests, the local demo, the layer and the benchmarks.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.segflow-setup-done

.PHONY: setup models demo test test-fast test-fc lint layer engine-fc bench clean

# Virtual environment, the package (layer + engine + test tools) and the engine's model weights.
$(STAMP): pyproject.toml scripts/setup.sh
	bash scripts/setup.sh
	touch $(STAMP)

setup: $(STAMP)

models: setup
	$(VENV)/bin/segflow models install

# README command 1: set everything up and run the main job on the local engine over sample inputs.
demo: setup
	$(VENV)/bin/segflow run --samples --out segflow-out

# The cp310 wheels of the engine's Function Compute package (~300 MB in build/engine-fc/wheels), fetched once
# from PyPI for make engine-fc and the tests that build it (tests reach nothing beyond loopback); make demo
# does without them.
ENGINE_FC_WHEELS := build/engine-fc/.wheels-ready
$(ENGINE_FC_WHEELS): scripts/engine-fc-requirements.txt | setup
	$(PY) scripts/build_engine_fc.py --download-only
	touch $@

# README command 2: set everything up and run the whole test suite.
test: setup $(ENGINE_FC_WHEELS)
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q tests/layer/unit tests/engine/unit tests/cli/unit tests/project

lint: setup
	$(VENV)/bin/ruff check shared engine cli functions tests bench scripts
	$(VENV)/bin/ruff format --check shared engine cli functions tests bench scripts
	$(VENV)/bin/mypy

# The layer zip: exactly the handlers' import closure under python/ (no vendored packages: FC's
# python3.10 built-ins are pinned in scripts/fc-python310-builtins.txt).
layer:
	$(PYTHON) scripts/build_layer.py --out dist/segflow-layer.zip

# The engine as a Function Compute custom-runtime package (custom.debian10, Python 3.10): the engine, the
# cp310 wheels its actions need and the ISNet weights. ACTIONS=cutout (or a comma list of actions and groups)
# leaves the rest out; see docs/engine-on-fc.md.
ACTIONS ?= all
engine-fc: setup $(ENGINE_FC_WHEELS)
	$(PY) scripts/build_engine_fc.py --actions $(ACTIONS) --out dist/segflow-engine-fc.zip

# The handlers' functional tests on Python 3.10 with only FC's built-in package versions, importing the
# layer from the unzipped zip (needs a Python 3.10: PYTHON310=/path/to/python3.10 if it is not found).
test-fc:
	bash scripts/test-fc.sh

# rembg is only the engine benchmark's baseline (same ISNet weights); --no-deps because it would pull
# opencv-python-headless over the opencv-contrib build mediapipe uses.
bench: setup
	bash scripts/fc-python310-env.sh >/dev/null
	$(PIP) install -q --disable-pip-version-check --no-deps 'rembg==2.0.86' 'pooch>=1.8' platformdirs tqdm
	$(PY) bench/report.py

# Everything the checkout made: the environments (1.3 GB with the model weights), the demo's outputs, the
# layer zip and the tools' caches. Leaves your own files (a --out elsewhere) alone.
clean:
	rm -rf $(VENV) .venv-fc310 dist build segflow.egg-info .pytest_cache .mypy_cache .ruff_cache segflow-out
	find shared engine cli functions tests bench scripts -name __pycache__ -type d -prune -exec rm -rf {} +
