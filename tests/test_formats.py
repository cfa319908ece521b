import json

import pytest

from decode import PRESETS, FormatError, ThinkingFormat, get_format
from decode.rules.formats import AFTER_END, AT_END, BEFORE_END


def test_s1_preset_resolves_on_qwen25(tokenizers):
    tok = tokenizers["s1"]
    ft = get_format("s1").tokens(tok)
    im_start = tok.convert_tokens_to_ids("<|im_start|>")
    assert ft.end == {im_start}
    assert ft.eos == {tok.eos_token_id}
    assert tok.decode(list(ft.open)) == "<|im_start|>think\n"
    assert tok.decode(list(ft.wait)) == "Wait"
    assert [pos for _, pos in ft.close] == [AT_END, AFTER_END, AFTER_END]
    assert [pos for _, pos in ft.force][:2] == [BEFORE_END, AT_END]
    assert tok.decode([t for t, _ in ft.force]) == "\n<|im_start|>answer\nFinal Answer:"
    assert ft.close_suffix == "answer\n"


def test_think_preset_resolves_on_think_tokenizer(tokenizers):
    tok = tokenizers["think"]
    ft = get_format("think").tokens(tok)
    assert ft.end == {tok.convert_tokens_to_ids("</think>")}
    assert tok.decode([t for t, _ in ft.force]) == "\n</think>\n\nFinal Answer:"
    assert ft.close_suffix == "\n\n"


def test_think_preset_refused_where_end_is_not_one_token(tokenizers):
    # Qwen2.5 has no </think> token: it splits into '</', 'think', '>'.
    with pytest.raises(FormatError, match=r"'</think>' must be one token, got 3"):
        get_format("think").tokens(tokenizers["s1"])


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(force="\nFinal Answer:"), "force string .* contains no end-of-thinking token"),
        (dict(close="answer\n"), "close string .* contains no end-of-thinking token"),
        (dict(wait="<|im_start|>Wait"), "wait string .* must not contain"),
        (dict(wait="Hmm<|im_end|>"), "wait string .* must not contain"),
        (dict(end=("not one token",)), "must be one token"),
    ],
)
def test_custom_format_that_does_not_tokenize_is_refused(tokenizers, fields, message):
    base = dict(
        name="custom",
        open="<|im_start|>think\n",
        end=("<|im_start|>",),
        close="<|im_start|>answer\n",
        force="\n<|im_start|>answer\nFinal Answer:",
    )
    with pytest.raises(FormatError, match=message):
        ThinkingFormat(**{**base, **fields}).tokens(tokenizers["s1"])


def test_custom_format_from_strings_and_json(tokenizers, tmp_path):
    fmt = ThinkingFormat("mine", "<think>\n", "</think>", "</think>\n", "\n</think>\nAnswer:", "Hmm")
    assert fmt.end == ("</think>",)
    ft = fmt.tokens(tokenizers["think"])
    assert tokenizers["think"].decode(list(ft.wait)) == "Hmm"
    path = tmp_path / "mine.json"
    path.write_text(
        json.dumps({"open": "<think>\n", "end": ["</think>"], "close": "</think>\n", "force": "\n</think>\nAnswer:"})
    )
    loaded = get_format(str(path))
    assert loaded.name == "mine" and loaded.end == ("</think>",) and loaded.wait == "Wait"


def test_bad_format_specs():
    with pytest.raises(FormatError, match="unknown thinking format 'r1'"):
        get_format("r1")
    with pytest.raises(FormatError, match="'wait' must be a string"):
        PRESETS["s1"].with_wait(None)
    assert PRESETS["s1"].with_wait("").wait == ""  # s1's "without string": nothing in the end's place
    with pytest.raises(FormatError, match="at least one"):
        ThinkingFormat("x", "a", (), "b", "c")


def test_bad_format_json(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(FormatError, match="bad.json: not valid JSON"):
        get_format(str(bad))
    bad.write_text(json.dumps({"open": "a", "ends": ["b"]}))
    with pytest.raises(FormatError, match="fields: name, open, end"):
        get_format(str(bad))
