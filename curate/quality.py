"""Quality: drop rows with missing required fields and rows that break formatting rules (s1 §2).

s1 removed questions whose trace or grade had failed ("API errors"), then questions with formatting
problems: ASCII-art diagrams, references to images that are not there, inconsistent numbering. Here
each rule is data in the recipe (a regular expression over a field, with sources it does not apply
to), or one of a few named checks that a regular expression cannot express; the report counts what
each rule removed. A row is dropped by the first rule it breaks, in the recipe's order.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import datasets

from .schema import CurateError

PART_NUMBER = re.compile(r"(?:^|\n)\s*(?:\((\d{1,2})\)|(\d{1,2})[.)]\s)")


def inconsistent_numbering(text: str) -> bool:
    """Numbered parts ("(1)", "1.", "2)" at line starts) that do not run 1, 2, 3, ... without gaps."""
    numbers = [int(a or b) for a, b in PART_NUMBER.findall(text)]
    if len(numbers) < 2:
        return bool(numbers) and numbers[0] > 1
    unique = list(dict.fromkeys(numbers))
    return unique != list(range(1, len(unique) + 1))


CHECKS: dict[str, Callable[[str], bool]] = {"inconsistent_numbering": inconsistent_numbering}


@dataclass
class QualityRule:
    """One formatting rule: a row whose `field` matches drops out, unless its source is exempt.

    Attributes:
        name: the rule's name in the report.
        pattern: a regular expression (Python `re`, searched anywhere in the field).
        check: instead of a pattern, a named check: "inconsistent_numbering".
        field: the column the rule reads.
        except_sources: a regular expression; rows whose `source` matches it are exempt.
        ignore_case: match the pattern without regard to case.
    """

    name: str
    pattern: str | None = None
    check: str | None = None
    field: str = "question"
    except_sources: str | None = None
    ignore_case: bool = False

    def __post_init__(self) -> None:
        if (self.pattern is None) == (self.check is None):
            raise CurateError(f"quality rule {self.name!r}: give exactly one of 'pattern' or 'check'")
        if self.check is not None and self.check not in CHECKS:
            raise CurateError(f"quality rule {self.name!r}: unknown check {self.check!r}; known: {sorted(CHECKS)}")
        try:
            self._regex = re.compile(self.pattern, re.IGNORECASE if self.ignore_case else 0) if self.pattern else None
            self._exempt = re.compile(self.except_sources, re.IGNORECASE) if self.except_sources else None
        except re.error as err:
            raise CurateError(f"quality rule {self.name!r}: invalid regular expression ({err})") from None

    def breaks(self, row: dict[str, Any]) -> bool:
        if self._exempt is not None and self._exempt.search(row.get("source") or ""):
            return False
        text = row.get(self.field) or ""
        if self._regex is not None:
            return self._regex.search(text) is not None
        return CHECKS[self.check or ""](text)


@dataclass
class QualitySettings:
    """Settings of a quality stage.

    Attributes:
        required: columns that must be present and non-empty (e.g. `thinking_trajectories` after the
            traces stage: a failed trace is s1's "API error").
        rules: formatting rules (see `QualityRule`), applied in order.
        min_question_chars: drop questions shorter than this.
    """

    required: list[str] = field(default_factory=lambda: ["question"])
    rules: list[QualityRule] = field(default_factory=list)
    min_question_chars: int = 0


def quality(data: datasets.Dataset, settings: QualitySettings) -> tuple[datasets.Dataset, dict[str, Any]]:
    """The input with a `drop_reason` column ("" = kept), and counts per rule."""
    missing_columns = [name for name in settings.required if name not in data.column_names]
    if missing_columns:
        raise CurateError(
            f"quality: required column(s) {missing_columns} are not in the data (columns: {data.column_names}); "
            "put this quality stage after the stage that adds them"
        )
    for rule in settings.rules:
        if rule.field not in data.column_names:
            raise CurateError(f"quality rule {rule.name!r}: field {rule.field!r} is not a column ({data.column_names})")
    error_columns = [name for name in data.column_names if name.endswith("_error")]
    counts = {rule.name: 0 for rule in settings.rules}

    def judge(row: dict[str, Any]) -> dict[str, str]:
        for name in settings.required:
            if row.get(name) in (None, "", []):
                errors = "; ".join(str(row[c]) for c in error_columns if row.get(c))
                return {"drop_reason": f"missing field: {name}" + (f" ({errors})" if errors else "")}
        if len(row.get("question") or "") < settings.min_question_chars:
            return {"drop_reason": f"too short: under {settings.min_question_chars} characters"}
        for rule in settings.rules:
            if rule.breaks(row):
                return {"drop_reason": f"rule: {rule.name}"}
        return {"drop_reason": ""}

    out = data.map(judge, desc="quality", load_from_cache_file=False)
    for reason in out["drop_reason"]:
        if reason.startswith("rule: "):
            counts[reason[len("rule: ") :]] += 1
    return out, {"rule_counts": counts}
