# Two commands do everything: `make demo` and `make test` (`make exported` refreshes the committed exports).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo exported lint test test-fast install clean-venv gpu-check

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml web/package-lock.json
	# The export extra uses the `tensorflow` distribution (tf_keras needs it); a venv made before
	# had `tensorflow-cpu`, whose files the two would share: remove it first (a no-op otherwise).
	$(BIN)/python -m pip uninstall --quiet -y tensorflow-cpu
	$(BIN)/python -m pip install --quiet -e ".[export,keras2,quantize,plot,dev,serve,openvino,qnn]"
	$(BIN)/python -m pip install --quiet --no-deps "nvidia-pytriton==0.7.0"  # tritonserver binary only (see pyproject)
	# The browser: Chromium from the system's packages (root needed; said so otherwise), the npm
	# packages in web/node_modules (onnxruntime-web, TensorFlow.js), the TensorFlow.js converter
	# without its pins (see pyproject's `web` extra).
	command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq && apt-get install -y -qq chromium; } \
		|| echo "rnnedge web: install Chromium from the system's packages (apt-get install chromium) as root"
	command -v npm >/dev/null && (cd web && npm ci --no-audit --no-fund --ignore-scripts --silent) \
		|| echo "rnnedge web: install Node.js and npm (apt-get install nodejs npm), then run make install again"
	$(BIN)/python -m pip install --quiet -e ".[web]"
	$(BIN)/python -m pip install --quiet --no-deps "tensorflowjs==4.22.0" "tensorflow-hub==0.16.1"
	touch $(STAMP)

install: $(STAMP)

# Train the reference zoo, export each model to fused ONNX, check parity, quantize, benchmark.
# Writes demo-out/ (ignored by git), so a first run leaves the work tree clean.
demo: $(STAMP)
	$(BIN)/rnnedge demo --out demo-out --force

# Regenerate the committed exported/ on purpose (the runtime-only examples and tests read it).
exported: $(STAMP)
	$(BIN)/rnnedge demo --out exported --force

# The linter, with the rules pyproject.toml's [tool.ruff] sets (CI runs it before the tests).
lint: $(STAMP)
	$(BIN)/ruff check rnnedge tests tools

test: $(STAMP)
	$(BIN)/python -m pytest -q

# The inner loop: the tests that need no TensorFlow (tests/conftest.py's FAST_MODULES), about a minute.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m fast

# The zoo on CUDA and TensorRT (parity, placement, speed beside Keras on the GPU), within 8 minutes.
# Needs an NVIDIA GPU and onnxruntime-gpu (pip install 'rnnedge[gpu]'); elsewhere it says so and exits 2.
gpu-check: $(STAMP)
	$(BIN)/python tools/gpu_check.py

clean-venv:
	rm -rf $(VENV)
