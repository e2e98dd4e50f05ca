"""How much of a layer's captured tensor falls outside an int8 range, read batch by batch.

The window's coverage tab and the report's ``--eval`` column ask the same question of a capture: what
share of a layer's values lies below and above the range its position can hold. Both read the tensor
in batches (a capture can be larger than memory) and, where cross-layer equalization scaled the
layer's output channels, multiply by that per-channel scale first: the position was chosen on the
scaled tensor the int8 model holds, not on the captured one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np


def activation_batches(capture: Any, layer: str, max_samples: int | None = None,
                       scale: np.ndarray | None = None, batch_bytes: int = 32 << 20) -> Iterator[np.ndarray]:
    """``layer``'s captured tensor over its first ``max_samples`` samples (all when None), in batches of
    about ``batch_bytes`` of float32; times ``scale`` per channel when given."""
    shape = capture.activation_shape(layer)
    n = int(shape[0]) if max_samples is None else min(int(shape[0]), max_samples)
    per = max(1, int(np.prod(shape[1:], dtype=np.int64)) * 4)
    step = max(1, batch_bytes // per)
    for start in range(0, n, step):
        x = capture.activation(layer, slice(start, min(n, start + step)))
        yield x if scale is None else x * scale


@dataclass(frozen=True)
class RangeShares:
    """Counts of values below and above a range, of all values read, and the largest magnitude."""

    below: int
    above: int
    total: int
    absmax: float

    @property
    def below_share(self) -> float:
        """Share of values below the range (NaN when nothing was read)."""
        return self.below / self.total if self.total else math.nan

    @property
    def above_share(self) -> float:
        """Share of values above the range (NaN when nothing was read)."""
        return self.above / self.total if self.total else math.nan

    @property
    def outside_share(self) -> float | None:
        """Share of values outside the range on either side (None when nothing was read)."""
        return (self.below + self.above) / self.total if self.total else None


def range_shares(batches: Iterable[np.ndarray], lo: float, hi: float,
                 check: Callable[[], None] | None = None) -> RangeShares:
    """Count the values of ``batches`` strictly below ``lo`` and strictly above ``hi`` (a value on the
    bound is representable). ``check`` runs before each batch (a cancel point)."""
    below = above = total = 0
    absmax = 0.0
    for x in batches:
        if check is not None:
            check()
        if not x.size:
            continue
        below += int(np.count_nonzero(x < lo))
        above += int(np.count_nonzero(x > hi))
        total += x.size
        absmax = max(absmax, float(np.max(np.abs(x))))
    return RangeShares(below, above, total, absmax if total else math.nan)
