"""Tiny Qwen2 causal LMs with random weights, built from a config, for tests and benchmarks.

A random model almost never ends its thinking by itself, which would leave the forcing paths
untested. `build_tiny_model` therefore gives chosen tokens (the format's end token, end-of-sequence)
a bias, and does it with ordinary Qwen2 weights so the model saves, loads and runs anywhere a Qwen2
model does (transformers, vLLM): hidden dimension 0 is held constant through the network (the
embeddings write a constant there, no layer writes to it), so lm_head column 0 acts as a bias.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

VOCAB_SIZE = 151936  # Qwen2.5's embedding size; covers every id of both test tokenizers
QWEN_EOS, QWEN_PAD = 151645, 151643


def tiny_config(**overrides) -> Qwen2Config:
    """2 layers, hidden 128, 2 heads of size 64 (vLLM's CPU attention needs head size >= 64)."""
    values = dict(
        vocab_size=VOCAB_SIZE,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=4096,
        tie_word_embeddings=False,
        bos_token_id=None,
        eos_token_id=QWEN_EOS,
        pad_token_id=QWEN_PAD,
    )
    values.update(overrides)
    return Qwen2Config(**values)


@torch.no_grad()
def build_tiny_model(
    biases: dict[int, float] | None = None, seed: int = 0, logit_std: float = 1.0, init_std: float = 0.02
) -> Qwen2ForCausalLM:
    """A random tiny Qwen2 whose next-token logits have spread about `logit_std`, plus `biases`.

    `biases` maps token id -> the mean logit that token gets. Against 151,936 logits of spread 1
    (whose maximum is near 4.6), a mean near 4.5 makes a token the argmax at a fair share of steps
    (greedy tests); near 11.5 it gets about a third of the probability mass (sampling tests).
    """
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(tiny_config(initializer_range=init_std)).eval()
    constant = 4.0
    model.model.embed_tokens.weight[:, 0] = constant
    for layer in model.model.layers:
        layer.self_attn.o_proj.weight[0] = 0.0
        layer.mlp.down_proj.weight[0] = 0.0
    # Measure the final hidden states on a few random sequences to scale the head.
    probe = torch.randint(0, 151000, (4, 32))
    hidden = model.model(probe).last_hidden_state.reshape(-1, model.config.hidden_size)
    head = model.lm_head.weight
    head[:, 0] = 0.0
    spread = (hidden @ head.T).std()
    head.mul_(logit_std / spread)
    level = hidden[:, 0].mean()  # the (nearly) constant dimension after the final norm
    for token, offset in (biases or {}).items():
        # Calibrated: the token's logit averages `offset` over the probe, whatever its random row gives.
        head[token, 0] = (offset - (hidden @ head[token]).mean()) / level
    model.generation_config.eos_token_id = QWEN_EOS
    model.generation_config.pad_token_id = QWEN_PAD
    return model


def save_tiny_model(
    folder: Path, tokenizer_dir: Path, biases: dict[int, float] | None = None, seed: int = 0, init_std: float = 0.02
) -> Path:
    """Build, save (float32 safetensors) and copy the tokenizer beside it, so the folder loads as one."""
    from transformers import AutoTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    build_tiny_model(biases, seed, init_std=init_std).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(folder)
    return folder


def main() -> None:
    """`python -m tests.tiny_model OUT`: a tiny random s1-format model for `make eval`'s default recipe."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("out", type=Path)
    parser.add_argument(
        "--tokenizer", type=Path, default=Path(__file__).resolve().parents[2] / "shared/tokenizers/qwen2.5"
    )
    args = parser.parse_args()
    if not (args.tokenizer / "tokenizer.json").is_file():
        raise SystemExit(f"error: tokenizer {args.tokenizer} not found (pass --tokenizer)")
    # Ends its thinking (<|im_start|>) and its answer (end-of-sequence) often, like the test fixtures.
    save_tiny_model(args.out, args.tokenizer, {151644: 3.3, QWEN_EOS: 3.5}, seed=1, init_std=0.3)
    print(f"tiny model saved to {args.out}")


if __name__ == "__main__":
    main()
