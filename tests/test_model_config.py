"""End-of-sequence ids: one rule (the tokenizer's and a generation config's, merged) for a loaded model,
a model folder and the vLLM processor."""

from __future__ import annotations

import json
from types import SimpleNamespace

from decode.prepare.model_config import eos_ids, folder_eos_ids, folder_generation_config


def test_eos_ids_merge_the_tokenizer_and_a_generation_config() -> None:
    tokenizer = SimpleNamespace(eos_token_id=2)
    assert eos_ids(tokenizer) == [2]
    assert eos_ids(tokenizer, SimpleNamespace(eos_token_id=5)) == [2, 5]
    assert eos_ids(tokenizer, SimpleNamespace(eos_token_id=[7, 2])) == [2, 7]
    assert eos_ids(SimpleNamespace(eos_token_id=None), SimpleNamespace(eos_token_id=None)) == []


def test_a_folder_gives_the_ids_its_generation_config_names(tmp_path) -> None:
    tokenizer = SimpleNamespace(eos_token_id=1)
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": [9, 3]}))
    assert folder_eos_ids(str(tmp_path), tokenizer) == [1, 3, 9]
    assert folder_eos_ids(str(tmp_path / "absent"), tokenizer) == [1]  # no generation config: the tokenizer's
    assert folder_eos_ids(None, tokenizer) == [1]
    assert folder_generation_config(None) is None
