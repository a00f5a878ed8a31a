"""Qwen3-VL: Qwen2-VL's geometry (16 px patches, 2x2 merge, one grid over the resized image) with
interleaved M-RoPE and deepstack.

Deepstack adds the features of some vision layers to the hidden states of the image positions after
the first text layers (`_deepstack_process`, between decoder layers); it changes what the next layer's
attention sees, not how attention is computed, so the capture (inside the attention function) stays
exact: tests/test_families_tester_configs.py checks it against eager attention on transformers' tester config.
Interleaved M-RoPE is applied to q/k before the attention function, so it is in the captured logits.
"""

from __future__ import annotations

from llava.families.base import QwenVL


class Qwen3VL(QwenVL):
    """`image` grid (h/merge) x (w/merge) from `image_grid_thw`; only `<|image_pad|>` tokens are in V."""

    name = "qwen3_vl"

    def __init__(self):
        super().__init__("Qwen3VLProcessor")

