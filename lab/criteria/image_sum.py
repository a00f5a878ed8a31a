"""Criterion 1's quantity and the layer rule: S_img (attention mass on the image) and excluded layers."""

from __future__ import annotations

from typing import Iterable

import numpy as np


def layer_mask(n_layers: int, exclude_layers: Iterable[int] = (0, 1)) -> np.ndarray:
    """Boolean ``[n_layers]``: True for layers that take part. Negative indices count from the
    end; indices outside ``[-n_layers, n_layers)`` are ignored (so the default ``(0, 1)`` is safe
    on a 1-layer toy model)."""
    keep = np.ones(n_layers, dtype=bool)
    for l in exclude_layers:
        l = int(l)
        if -n_layers <= l < n_layers:
            keep[l] = False
    return keep


def excluded_list(n_layers: int, exclude_layers: Iterable[int]) -> list[int]:
    return [int(i) for i in np.flatnonzero(~layer_mask(n_layers, exclude_layers))]


def image_attention_sum(image_attention: np.ndarray) -> np.ndarray:
    """Criterion 1, ``S_img``: the attention mass on the image tokens, ``[..., V] -> [...]``.

    For a capture ``[L, H, V]`` this is ``[L, H]``; for ``[N, L, H, V]`` it is ``[N, L, H]``.
    Summed in float64.
    """
    a = np.asarray(image_attention)
    if a.ndim < 1:
        raise ValueError("image_attention needs a trailing image-token axis V")
    return a.sum(axis=-1, dtype=np.float64)
