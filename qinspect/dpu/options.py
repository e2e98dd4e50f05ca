"""The quantizer options that change pof2s results, named like ``vai_q_tensorflow2``'s keywords.

One :class:`QuantizerOptions` travels from every entry point (the CLI's flags, the report, the
window's settings) to the rewrites and the calibration, so a result can always say which options
produced it. Defaults are the quantizer's own (``VitisQuantizer.quantize_model`` with no keyword).

What each option does in the quantizer (its optimize pipeline, read from vai_q_tensorflow2 3.5):

- ``include_cle``: cross-layer equalization after BN folding (:mod:`qinspect.dpu.cle`).
- ``cle_steps``: how many times the four CLE patterns are applied over the whole model.
- ``cle_to_relu6``: the CLE patterns drop their activation conditions, so pairs joined by a ReLU6 (or
  a padded ReLU) are equalized too. Equalizing across a cap changes the function (``relu6(s * x) / s``
  is not ``relu6(x)``); the float reference keeps the float model's cap, scaled per channel.
- ``convert_relu6_to_relu``: every ``ReLU(max_value=6.0)`` layer loses its cap before anything else
  (so it becomes an equalization candidate, and the TF-op hard-sigmoid pattern no longer matches it).
  It changes the function; the float reference keeps the cap.
- ``calib_batch_size``: calibration batch size (each batch re-chooses every position; a vote follows).
- ``target``: the DPU family the model is compiled for, where it changes the arithmetic: DPUCADF8H's
  activations are int8 in [-127, 127] (DPU_NUMERICS.md section 1), which the quantizer reproduces with
  ``narrow_range`` on its input and activation quantizers (its strategy config; no keyword of
  ``quantize_model``). Positions are then chosen for that range (the non-overflow bound divides by -127,
  min-MSE clips there) and every activation code is at least -127. Weights keep [-128, 127]. Empty: any
  other family (their activations use the full [-128, 127]).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

DEFAULT_CALIB_BATCH = 32
# DPU families, for --target; those whose activations are int8 in [-127, 127] are listed again below.
TARGETS = ("DPUCZDX8G", "DPUCV2DX8G", "DPUCVDX8G", "DPUCVDX8H", "DPUCAHX8H", "DPUCAHX8L", "DPUCADF8H")
NARROW_ACTIVATION_TARGETS = frozenset({"DPUCADF8H"})


@dataclass(frozen=True)
class QuantizerOptions:
    """The pof2s quantizer options the emulator reproduces (``vai_q_tensorflow2`` keyword names)."""

    include_cle: bool = True
    cle_steps: int = 10
    cle_to_relu6: bool = False
    convert_relu6_to_relu: bool = False
    calib_batch_size: int = DEFAULT_CALIB_BATCH
    target: str = ""

    def __post_init__(self) -> None:
        if self.target and self.target not in TARGETS:
            raise ValueError(f"unknown DPU target {self.target!r} (known: {', '.join(TARGETS)})")
        if self.cle_steps < 1:
            raise ValueError(f"cle_steps must be at least 1 (got {self.cle_steps})")
        if self.calib_batch_size < 1:
            raise ValueError(f"calib_batch_size must be at least 1 (got {self.calib_batch_size})")

    def with_(self, **changes: Any) -> QuantizerOptions:
        """A copy with some options changed."""
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, keyed by the quantizer's keyword names."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> QuantizerOptions:
        """From :meth:`to_dict` output (unknown keys are ignored, missing ones take the defaults)."""
        data = data or {}
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)

    def describe(self) -> str:
        """One line naming the options that differ from the quantizer's defaults ("default options" else)."""
        default = QuantizerOptions()
        changed = [f"{k}={v}" for k, v in self.to_dict().items()
                   if k != "calib_batch_size" and getattr(default, k) != v]
        return ", ".join(changed) if changed else "default options"

    @property
    def narrow_activations(self) -> bool:
        """True when the target's activations are int8 in [-127, 127] (DPUCADF8H)."""
        return self.target in NARROW_ACTIVATION_TARGETS

    @property
    def changes_function(self) -> bool:
        """True when the quantized model computes another function than the float one by design."""
        return self.convert_relu6_to_relu or (self.include_cle and self.cle_to_relu6)

    def weight_differences(self, other: QuantizerOptions) -> list[str]:
        """The options that give the model other weights under ``other`` than under these (every option
        but the calibration batch size and the target), as ``name=value`` of ``other``: positions chosen under one set
        belong to its weights alone."""
        mine, theirs = self.to_dict(), other.to_dict()
        return [f"{k}={theirs[k]!r}" for k in mine if k not in ("calib_batch_size", "target") and mine[k] != theirs[k]]


def option_text(change: dict[str, Any]) -> str:
    """``{"cle_to_relu6": True}`` -> ``"cle_to_relu6=True"``: an option change as it reads in the call."""
    return ", ".join(f"{k}={v!r}" for k, v in change.items())
