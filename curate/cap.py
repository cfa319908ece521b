"""Cap: a seeded random subset of at most `size` rows goes on to the expensive stages.

Generation is the cost of curation. A small run (the offline default recipe, a smoke test on a
cluster) caps how many questions reach the reference models and the teacher; the report states the
cap. Rows are kept in pool order; the draw depends only on the seed and the input.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import datasets
import numpy as np

from .schema import CurateError


@dataclass
class CapSettings:
    """Attributes:
    size: the most rows that pass.
    seed: the seed of the draw.
    """

    size: int
    seed: int = 0

    def __post_init__(self) -> None:
        if self.size < 1:
            raise CurateError(f"cap: size must be >= 1, got {self.size}")


def cap(data: datasets.Dataset, settings: CapSettings) -> tuple[datasets.Dataset, dict[str, Any]]:
    keep = set(range(len(data)))
    if len(data) > settings.size:
        rng = np.random.default_rng(settings.seed)
        keep = set(rng.choice(len(data), size=settings.size, replace=False).tolist())
    reasons = ["" if i in keep else f"over the cap: {settings.size} rows go on" for i in range(len(data))]
    return data.add_column("drop_reason", reasons), {"cap": settings.size}
