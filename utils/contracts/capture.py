"""The meeting point between the attention function (llava/) and the station (lab/).

A station activates a *sink* for the duration of a run; the attention function looks it up on
every call. Using a ContextVar (not a module global) means nested or concurrent runs (threads,
asyncio tasks) each see their own sink, and leaving the context always restores the previous one.

The sink is duck-typed; llava/attention.py documents the methods it calls.
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterator

if TYPE_CHECKING:
    import torch


@dataclass
class LayerPlan:
    """What one attention call must do; built by the sink (the station) for each layer call.

    Shapes: B batch, Qs captured rows, Vmax image columns (padded with 0 where `image_valid` is False).
    """

    image_cols: "torch.Tensor"  # (B, Vmax) long: key positions of image tokens (padded-batch frame)
    rows: "torch.Tensor | None" = None  # (B, Qs) long: query rows (in this call's q frame) to capture
    capture_heads: "torch.Tensor | None" = None  # (Hc,) long, None = all heads
    maskout_heads: list[int] = field(default_factory=list)
    maskout_mode: str = "zero"
    modify_heads: list[int] = field(default_factory=list)
    modify_factor: float = 1.0
    modify_mode: str = "image_reweight"
    image_valid: "torch.Tensor | None" = None  # (B, Vmax) bool, None = all valid
    defer: bool = False  # a decoding step without interventions: hand the query to sink.defer(...)
    # (B, E) long: more key columns to capture, appended after the image columns (e.g. the sample's
    # first token, for per-layer renormalisation); never touched by interventions
    extra_cols: "torch.Tensor | None" = None
    extra_valid: "torch.Tensor | None" = None  # (B, E) bool, None = all valid
    modify_all_heads: bool = False  # modify every head of the layer (modify_mode="visual_head" with no heads named)
    highlight_valid: "torch.Tensor | None" = None  # (B, Vmax) bool: image columns inside the highlight box (None = all)

    @property
    def intervenes(self) -> bool:
        modifies = bool(self.modify_heads) or self.modify_all_heads
        return bool(self.maskout_heads) or (modifies and self.modify_factor != 1.0)


_ACTIVE_SINK: ContextVar[Any | None] = ContextVar("attention_sink", default=None)


def active_sink() -> Any | None:
    """The sink of the innermost active run in this context, or None."""
    return _ACTIVE_SINK.get()


@contextmanager
def activate(sink: Any) -> Iterator[Any]:
    """Make `sink` the active one inside the `with` block; always restored afterwards."""
    token = _ACTIVE_SINK.set(sink)
    try:
        yield sink
    finally:
        _ACTIVE_SINK.reset(token)
