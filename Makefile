# Every target sets up what it needs from nothing: python3, make and the package registries.
PYTHON ?= python3
VENV := .venv
PADDLE_VENV := .venv-paddle
MODEL ?= PP-OCRv4_mobile_det
SOURCE ?=
DEFAULT_MODEL := models/PP-OCRv4_mobile_det/inference.onnx
# PaddleOCR is only the reference for parity tests and benchmarks. It needs opencv-contrib-python,
# which cannot share a venv with our opencv-python-headless (both ship the cv2 package).
REFERENCE_PACKAGES := paddleocr==3.7.0
PIP_QUIET := --quiet --disable-pip-version-check

.PHONY: install paddle-env models export demo test bench server-net clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install $(PIP_QUIET) -e '.[test]'
	touch $@

paddle-env: $(PADDLE_VENV)/.installed

$(PADDLE_VENV)/.installed: pyproject.toml
	rm -rf $(PADDLE_VENV)
	$(PYTHON) -m venv $(PADDLE_VENV)
	$(PADDLE_VENV)/bin/pip install $(PIP_QUIET) -e '.[export,test]'
	$(PADDLE_VENV)/bin/pip uninstall $(PIP_QUIET) -y opencv-python-headless
	$(PADDLE_VENV)/bin/pip install $(PIP_QUIET) $(REFERENCE_PACKAGES)
	touch $@

models: $(DEFAULT_MODEL)

$(DEFAULT_MODEL): $(PADDLE_VENV)/.installed
	$(PADDLE_VENV)/bin/python -m tools.export --model PP-OCRv4_mobile_det

export: $(PADDLE_VENV)/.installed
	$(PADDLE_VENV)/bin/python -m tools.export --model '$(MODEL)' $(if $(SOURCE),--source '$(SOURCE)')

demo: $(VENV)/.installed $(DEFAULT_MODEL)
	$(VENV)/bin/python -m tools.dev.sample_image output/demo/sample.png
	$(VENV)/bin/detect -i output/demo/sample.png --save-path output/demo
	@echo "demo: boxes drawn in output/demo/sample_res.png, JSON in output/demo/sample_res.json"

test: $(VENV)/.installed $(PADDLE_VENV)/.installed $(DEFAULT_MODEL)
	DETECTOR_PADDLE_PYTHON=$(abspath $(PADDLE_VENV))/bin/python DETECTOR_REQUIRE_REFERENCE=1 \
		$(VENV)/bin/python -m pytest -q -ra

# With SOURCE, the model is exported (and verified) into .cache/bench first, leaving models/ alone.
# PaddleOCR's onnxruntime engine runs the same source unrewritten (REFERENCE, default: exported with
# --no-rewrites); models with Paddle weights also run on PaddleOCR's Paddle engine. For an ONNX-only
# model (PP-OCRv6): make bench MODEL=PP-OCRv6_small_det REFERENCE=<official inference.onnx>
BENCH_ONNX = $(if $(SOURCE),.cache/bench/$(MODEL)/inference.onnx,models/$(MODEL)/inference.onnx)
REFERENCE ?=
BENCH_SOURCE = $(if $(REFERENCE),$(SOURCE),$(or $(SOURCE),.cache/sources/$(MODEL)))
BENCH_REFERENCE = $(or $(REFERENCE),.cache/bench/$(MODEL)/reference.onnx)

bench: $(PADDLE_VENV)/.installed $(DEFAULT_MODEL)
	$(if $(SOURCE),$(PADDLE_VENV)/bin/python -m tools.export --model '$(MODEL)' --source '$(SOURCE)' --output '$(BENCH_ONNX)')
	$(if $(REFERENCE),,$(PADDLE_VENV)/bin/python -m tools.export --model '$(MODEL)' --source '$(BENCH_SOURCE)' --output '$(BENCH_REFERENCE)' --no-rewrites)
	$(PADDLE_VENV)/bin/python -m tools.dev.bench --model '$(MODEL)' --onnx '$(BENCH_ONNX)' --reference-onnx '$(BENCH_REFERENCE)' $(if $(BENCH_SOURCE),--source '$(BENCH_SOURCE)')

# PP-OCRv4_server_det rebuilt with random weights (official weights are not reachable here): for proof and benchmarks.
SERVER_NET := .cache/server_net/PP-OCRv4_server_det
server-net: $(PADDLE_VENV)/.installed
	$(PADDLE_VENV)/bin/python -m tools.dev.ppocrv4_server_det --output $(SERVER_NET)

clean:
	rm -rf $(VENV) $(PADDLE_VENV) output .pytest_cache
