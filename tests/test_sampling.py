"""Under sampling, budget forcing is equal in distribution to the rules: the probability the model
gives to ending thinking becomes the probability of a wait; masking the end token would not be."""

import math

import pytest
import torch

from decode import Budget, Sampling, generate, get_format, prompt_ids
from decode.rules.sampling import first_argmax
from tests.conftest import IM_START
from tests.tiny_model import QWEN_EOS, build_tiny_model

PROMPT = [{"role": "user", "content": "What is the smallest prime above 100?"}]
N = 1600  # samples per setting
BATCH = 200


# Biases that give ending thinking a fair share of the mass under each setting: against the whole
# vocabulary (about 11 over the spread-1 logits) or against the 20 tokens top-k keeps (about 5).
WIDE = {IM_START: 11.2, QWEN_EOS: 9.0}
TOP20 = {IM_START: 5.3, QWEN_EOS: 4.8}
_models: dict[tuple, torch.nn.Module] = {}


def model_with(biases: dict[int, float]) -> torch.nn.Module:
    key = tuple(sorted(biases.items()))
    if key not in _models:
        _models[key] = build_tiny_model(biases, seed=2)
    return _models[key]


@pytest.fixture(scope="module")
def sampling_model():
    return model_with(WIDE)


def first_step_distribution(model, tokenizer, sampling: Sampling) -> torch.Tensor:
    """The model's next-token distribution after the prompt, warped by hand (not by the decoder)."""
    ids = prompt_ids(tokenizer, PROMPT, get_format("s1"))
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0, -1].double()
    logits = logits / (sampling.temperature or 1.0)
    if sampling.top_k:
        kth = logits.topk(sampling.top_k).values[-1]
        logits = logits.masked_fill(logits < kth, -math.inf)
    probs = torch.softmax(logits, -1)
    if sampling.top_p < 1:
        order = probs.argsort(descending=True)
        before = probs[order].cumsum(0) - probs[order]  # mass strictly above each token
        drop = order[before >= sampling.top_p]
        probs[drop] = 0
        probs = probs / probs.sum()
    return probs


def sample_first_tokens(model, tokenizer, sampling, seed):
    """First generated token and waits count of N budget-forced samples (minimum budget 5)."""
    firsts, waits = [], []
    for i in range(N // BATCH):
        results = generate(
            model,
            tokenizer,
            [PROMPT] * BATCH,
            budget=Budget(min_thinking_tokens=5),
            sampling=sampling,
            batch_size=BATCH,
            max_new_tokens=1,
            seed=seed + 1000 * i,
        )
        firsts += [r.completion_ids[0] for r in results]
        waits += [r.waits for r in results]
    return torch.tensor(firsts), torch.tensor(waits)


def masked_first_tokens(model, tokenizer, sampling, seed):
    """The rejected alternative: forbid the end tokens and sample from what is left."""
    ids = prompt_ids(tokenizer, PROMPT, get_format("s1"))
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0, -1]
    logits[[IM_START, QWEN_EOS]] = -math.inf
    probs = sampling.probabilities(logits[None])[0]
    return torch.multinomial(probs, N, replacement=True, generator=torch.Generator().manual_seed(seed))


SETTINGS = [
    (Sampling(temperature=1.0), WIDE),
    (Sampling(temperature=0.7, top_k=20), TOP20),
    (Sampling(temperature=1.0, top_p=0.9), WIDE),
]


@pytest.mark.parametrize("sampling, biases", SETTINGS, ids=["t1", "t0.7-top_k20", "top_p0.9"])
def test_wait_rate_equals_end_probability_and_masking_fails(sampling, biases, tokenizers):
    tokenizer = tokenizers["s1"]
    sampling_model = model_with(biases)
    wait = get_format("s1").tokens(tokenizer).wait[0]
    probs = first_step_distribution(sampling_model, tokenizer, sampling)
    p_end = float(probs[IM_START] + probs[QWEN_EOS])
    assert 0.1 < p_end < 0.6, p_end  # a test with power needs a real chance of ending

    firsts, waits = sample_first_tokens(sampling_model, tokenizer, sampling, seed=7)
    sigma = math.sqrt(p_end * (1 - p_end) / N)
    injected = float((waits == 1).double().mean())
    assert abs(injected - p_end) < 4.5 * sigma, (injected, p_end, sigma)
    # The first token is the wait exactly when a wait was injected (the model's own "Wait" is rare).
    p_wait = float(probs[wait])
    assert abs(float((firsts == wait).double().mean()) - (p_end + p_wait)) < 4.5 * sigma
    # Every other token keeps the model's probability (masking would scale it by 1 / (1 - p_end)).
    others = probs.clone()
    others[[IM_START, QWEN_EOS, wait]] = 0
    for token in others.topk(5).indices.tolist():
        p = float(probs[token])
        rate = float((firsts == token).double().mean())
        assert abs(rate - p) < 4.5 * math.sqrt(p * (1 - p) / N) + 1e-9, (token, rate, p)

    # Masking renormalises the end's probability onto the other tokens: no wait, and the test sees it.
    masked = masked_first_tokens(sampling_model, tokenizer, sampling, seed=7)
    masked_rate = float((masked == wait).double().mean())
    assert abs(masked_rate - p_end) > 10 * sigma


def test_sampling_is_reproducible_with_a_seed(sampling_model, tokenizers):
    tokenizer = tokenizers["s1"]
    kwargs = dict(
        budget=Budget(min_thinking_tokens=4, max_thinking_tokens=12, max_answer_tokens=4),
        sampling=Sampling(temperature=0.9, top_p=0.95),
        batch_size=4,
        seed=3,
    )
    a = generate(sampling_model, tokenizer, [PROMPT] * 4, **kwargs)
    b = generate(sampling_model, tokenizer, [PROMPT] * 4, **kwargs)
    assert [r.completion_ids for r in a] == [r.completion_ids for r in b]
    assert len({tuple(r.completion_ids) for r in a}) > 1  # it does sample
    for r in a:
        assert 4 <= r.thinking_tokens <= 12


@pytest.mark.parametrize("vocab", [7, 2048, 151936, 151643 + 1])
def test_first_argmax_matches_torch_argmax_ties_included(vocab):
    """The greedy proposal must be generate's own argmax, first index on ties, on any vocabulary size."""
    g = torch.Generator().manual_seed(vocab)
    scores = torch.randn(6, vocab, generator=g)
    scores[1] = scores[1].round()  # many ties, across blocks
    scores[2] = 0.0  # all equal: index 0
    scores[3] = float("-inf")
    scores[3, -1] = 1.0  # the maximum in the last (short) block
    scores[4, vocab // 2 :] = scores[4].max() + 1  # ties from the middle on
    scores[5] = float("-inf")  # nothing allowed: argmax is index 0
    for dtype in (torch.float32, torch.bfloat16, torch.float64):
        x = scores.to(dtype)
        assert torch.equal(first_argmax(x), x.argmax(dim=-1))
