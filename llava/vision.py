"""Attention inside the vision tower, and per-token image maps that go through it.

**LLaVA / CLIP only.** This module knows the LLaVA-1.5 layout: a CLIP ViT whose encoder layers
have `self_attn.q_proj` / `k_proj` and no attention mask, a CLS token at position 0, image
tokens = the hidden states of `config.vision_feature_layer` (with `vision_feature_select_strategy`
"default": patches 1..N, CLS dropped; "full": CLS and patches). Other families (anyres crops,
SigLIP without CLS, Q-Former resamplers) need their own version.

Capture runs without eager attention: forward hooks on the vision attention modules recompute
`softmax(q k^T * scale)` from the module's own `q_proj` / `k_proj` on the hidden states it was
given (CLIP vision attention has no mask), in float32. The model keeps running SDPA; the hooks
are removed when the `with` block ends, even on exceptions.

Maps (numpy, shapes in docstrings):

* `mean_attention`: the mean over chosen layers (and heads), CLS row/column removed, rows
  renormalised: `[P, P]` patch-to-patch attention;
* `attention_rollout` (Abnar & Zuidema 2020): average heads, add the identity for the residual
  stream, renormalise rows, multiply through the layers; `[N, N]`, row i = how much vision token
  i at the feature layer draws on each input token. It stops at the layer the LLM reads
  (`vision_feature_layer=-2`: the penultimate layer's output, so the last layer is left out);
* `token_patch_matrix`: the `[V, P]` matrix from LLM image tokens to input patches;
* `combine_with_llm`: an LLM image-token weighting `[..., V]` (e.g. one generated token's
  attention on the image tokens) times that matrix -> `[..., P]`, a map on the patch grid that
  accounts for the mixing inside the vision tower. For "default", P == V, so the result uses the
  record's own `ImageLayout`.

For records (`strategy.vision=true`, `cli_llava.py`): `capture_token_patch` builds the `[V, P]`
matrices of `mean`, `rollout` and `vlm_visualizer` (VLM-Visualizer's per-layer renormalised mean)
inside the hooks, layer by layer, so a record stores `[V, P]` per aggregate, never `[L, H, N, N]`;
`vision_support` says in one line why another family is refused (`VLM.vision_capture` calls both).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator, Literal, Sequence

import numpy as np
import torch

from llava import compat
from utils.settings.choices import VisionAggregate, check_choice, options

Method = Literal["rollout", "mean"]


# ---- locating the tower ------------------------------------------------------------------------
def vision_tower(model: Any) -> torch.nn.Module:
    """The CLIP vision tower of a LLaVA model (`LlavaForConditionalGeneration` or a `VLM`)."""
    if not isinstance(model, torch.nn.Module):  # a llava.model.VLM
        model = model.model
    for path in ("model.vision_tower", "vision_tower"):
        obj: Any = model
        for part in path.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if isinstance(obj, torch.nn.Module):
            return obj
    raise TypeError(f"{type(model).__name__} has no vision_tower; llava/vision.py supports LLaVA (CLIP) models only")


def vision_attention_modules(tower: torch.nn.Module) -> list[torch.nn.Module]:
    """The encoder layers' self-attention modules, in layer order."""
    enc = compat.clip_transformer(tower)
    layers = getattr(getattr(enc, "encoder", None), "layers", None)
    if layers is None:
        raise TypeError(f"{type(tower).__name__}: no encoder.layers; not a CLIP vision tower")
    mods = [layer.self_attn for layer in layers]
    for m in mods:
        if not all(hasattr(m, a) for a in ("q_proj", "k_proj")):
            raise TypeError(f"{type(m).__name__} has no q_proj/k_proj; not a CLIP attention module")
    return mods


def feature_layer_count(config: Any) -> int:
    """How many vision encoder layers the LLM's image tokens have been through.

    hidden_states[k] is the output of k layers (0 = embeddings), so vision_feature_layer=-2 on a
    24-layer tower gives 23. A list of feature layers (concatenated features) uses the deepest.
    """
    n = int(config.vision_config.num_hidden_layers)
    vfl = config.vision_feature_layer
    vfls = list(vfl) if isinstance(vfl, (list, tuple)) else [vfl]
    return max(n + 1 + int(v) if int(v) < 0 else int(v) for v in vfls)


# ---- capture -------------------------------------------------------------------------------------
@dataclass
class VisionCapture:
    """What the hooks collected: per layer, one tensor per vision-tower call.

    Each tensor is (B, Hv, N, N) float32 (heads="all") or (B, N, N) (heads="mean"), on CPU.
    """

    layers: list[int]
    heads: str
    per_layer: dict[int, list[torch.Tensor]] = field(default_factory=dict)

    def attentions(self, call: int = -1) -> torch.Tensor:
        """(B, Lc, Hv, N, N) or (B, Lc, N, N): the captured layers of one vision-tower call."""
        if not self.per_layer or not any(self.per_layer.values()):
            raise RuntimeError("the vision tower did not run inside the capture block (no pixel_values?)")
        return torch.stack([self.per_layer[l][call] for l in self.layers], dim=1)


def _hidden_states(args: tuple, kwargs: dict) -> torch.Tensor:
    h = kwargs.get("hidden_states")
    return h if h is not None else args[0]


@torch.no_grad()
def _probs(module: torch.nn.Module, args: tuple, kwargs: dict) -> torch.Tensor:
    """(B, Hv, N, N) float32: softmax(q k^T * scale (+ mask)) recomputed from the module's own projections."""
    h = _hidden_states(args, kwargs)
    B, N, _ = h.shape
    d = module.head_dim
    q = module.q_proj(h).view(B, N, -1, d).transpose(1, 2).float()  # (B, Hv, N, d)
    k = module.k_proj(h).view(B, N, -1, d).transpose(1, 2).float()
    logits = torch.matmul(q, k.transpose(-1, -2)) * float(module.scale)  # (B, Hv, N, N)
    mask = kwargs.get("attention_mask")
    if mask is not None:
        logits = logits + mask.float()
    return torch.softmax(logits, dim=-1)


@contextmanager
def capture_vision_attention(model: Any, layers: Sequence[int] | None = None,
                             heads: Literal["all", "mean"] = "all") -> Iterator[VisionCapture]:
    """Record the vision tower's attention probabilities while the block runs (forward / generate).

    layers: vision layer indices (None = all). heads="mean" keeps the head average only (16x less
    memory for CLIP-L: per image and layer 577 x 577 floats instead of 16 x 577 x 577).
    """
    if heads not in ("all", "mean"):
        raise ValueError(f"heads={heads!r}: use all or mean")
    mods = vision_attention_modules(vision_tower(model))
    chosen = list(range(len(mods))) if layers is None else [int(l) for l in layers]
    bad = [l for l in chosen if not 0 <= l < len(mods)]
    if bad:
        raise ValueError(f"vision layers {bad} out of range (0..{len(mods) - 1})")
    cap = VisionCapture(layers=chosen, heads=heads)

    def make_hook(layer: int):
        def hook(module, args, kwargs, output):
            probs = _probs(module, args, kwargs)  # (B, Hv, N, N)
            if heads == "mean":
                probs = probs.mean(1)  # (B, N, N)
            cap.per_layer.setdefault(layer, []).append(probs.cpu())
        return hook

    handles = [mods[l].register_forward_hook(make_hook(l), with_kwargs=True) for l in chosen]
    try:
        yield cap
    finally:
        for hd in handles:
            hd.remove()


def vision_attention(vlm: Any, pixel_values: torch.Tensor, layers: Sequence[int] | None = None,
                     heads: Literal["all", "mean"] = "all") -> np.ndarray:
    """Run the vision tower alone on `pixel_values` (B, 3, S, S) and return its attention as numpy:
    (B, Lc, Hv, N, N) or (B, Lc, N, N)."""
    model = getattr(vlm, "model", vlm)
    tower = vision_tower(model)
    param = next(tower.parameters())
    with capture_vision_attention(model, layers, heads) as cap, torch.inference_mode():
        tower(pixel_values.to(device=param.device, dtype=param.dtype))
    return cap.attentions().numpy()


# ---- maps ------------------------------------------------------------------------------------------
def _head_mean(att: np.ndarray) -> np.ndarray:
    """[L, H, N, N] -> [L, N, N]; [L, N, N] passes through."""
    a = np.asarray(att, dtype=np.float64)
    if a.ndim == 4:
        return a.mean(1)
    if a.ndim != 3 or a.shape[-1] != a.shape[-2]:
        raise ValueError(f"expected vision attention [L, H, N, N] or [L, N, N], got {a.shape}")
    return a


def _renorm_rows(m: np.ndarray) -> np.ndarray:
    s = m.sum(-1, keepdims=True)
    return np.divide(m, s, out=np.zeros_like(m), where=s > 0)


def mean_attention(att: np.ndarray, layers: Sequence[int] | None = None, drop_cls: bool = True) -> np.ndarray:
    """[P, P] (or [N, N] with drop_cls=False): mean over the chosen layers (and heads) of one image's
    vision attention `[L, (H,) N, N]`, CLS row and column removed, rows renormalised."""
    a = _head_mean(att)
    if layers is not None:
        a = a[list(layers)]
    m = a.mean(0)
    if drop_cls:
        m = _renorm_rows(m[1:, 1:])
    return m


def attention_rollout(att: np.ndarray, num_layers: int | None = None, residual: bool = True) -> np.ndarray:
    """[N, N] attention rollout of one image's vision attention `[L, (H,) N, N]` (layers 0..L-1 in order).

    Heads averaged, identity added for the residual stream, rows renormalised, then multiplied
    through the first `num_layers` layers (None = all): R = A_{n-1} ... A_1 A_0.
    """
    a = _head_mean(att)
    if num_layers is not None:
        if not 0 <= num_layers <= a.shape[0]:
            raise ValueError(f"num_layers={num_layers} but {a.shape[0]} layers were captured")
        a = a[:num_layers]
    n = a.shape[-1]
    eye = np.eye(n)
    r = eye.copy()
    for layer in a:
        step = _renorm_rows(layer + eye) if residual else layer
        r = step @ r
    return r


def token_patch_matrix(att: np.ndarray, config: Any, method: Method = "rollout",
                       layers: Sequence[int] | None = None) -> np.ndarray:
    """[V, P]: for each LLM image token, its weights over the P input patches (rows sum to 1).

    att: one image's vision attention `[L, (H,) N, N]` over all L layers (capture without
    `layers=`). rollout stops at the layer the LLM reads (`feature_layer_count(config)`); mean
    averages `layers` (default: the same layers). "default" strategy: tokens = patches (V = P =
    N - 1); "full": tokens = CLS + patches (V = N).
    """
    a = _head_mean(att)
    n_used = feature_layer_count(config)
    if a.shape[0] < n_used:
        raise ValueError(f"{a.shape[0]} vision layers captured but the LLM reads the output of layer {n_used - 1}; "
                         "capture all layers")
    strategy = getattr(config, "vision_feature_select_strategy", "default")
    if method == "rollout":
        r = attention_rollout(a, n_used)  # (N, N)
    elif method == "mean":
        r = mean_attention(a, layers if layers is not None else range(n_used), drop_cls=False)
    else:
        raise ValueError(f"method={method!r}: use rollout or mean")
    rows = r[1:] if strategy == "default" else r
    return _renorm_rows(rows[:, 1:])


def combine_with_llm(token_weights: Any, matrix: np.ndarray) -> np.ndarray:
    """[..., P] = LLM weights on the image tokens `[..., V]` @ `matrix [V, P]`.

    The mass is kept: each map sums to the LLM's total weight on the image tokens.
    """
    w = np.asarray(token_weights, dtype=np.float64)
    m = np.asarray(matrix, dtype=np.float64)
    if w.shape[-1] != m.shape[0]:
        raise ValueError(f"{w.shape[-1]} image-token weights but the matrix maps {m.shape[0]} tokens")
    return w @ m


def image_token_maps(vlm: Any, pixel_values: torch.Tensor, token_weights: Any, method: Method = "rollout",
                     layers: Sequence[int] | None = None) -> np.ndarray:
    """One image: vision attention -> [V, P] matrix -> the LLM weights `[..., V]` as patch maps `[..., P]`."""
    att = vision_attention(vlm, pixel_values[:1], heads="mean")[0]  # (L, N, N)
    return combine_with_llm(token_weights, token_patch_matrix(att, vlm.model.config, method, layers))


# ---- compact capture for records (strategy.vision=true) -------------------------------------------
VISION_AGGREGATES = options(VisionAggregate)  # the one declaration: utils/settings/choices.py

_UNSUPPORTED = {
    "llava_next": "each image is a base view plus anyres crops whose high-res tokens are unpadded, so its tokens "
                  "are not one patch grid",
    "llava_onevision": "each image is a base view plus anyres crops (unpadded, pooled), so its tokens are not one "
                       "patch grid",
    "qwen2_vl": "its tower attends within windows of 14 px patches and merges 2x2 patches per token",
    "qwen2_5_vl": "its tower attends within windows of 14 px patches and merges 2x2 patches per token",
    "gemma3": "its SigLIP tower's patches are average-pooled into the image tokens",
    "internvl": "each image is several 448 px tiles plus a thumbnail, each tile's 2x2 patches pixel-shuffled "
                "into one token",
    "qwen3_vl": "its tower merges 2x2 patches per token and feeds deepstack features of inner layers to the "
                "language model",
    "idefics3": "each image is several tiles plus a global image, each tile's patch blocks pixel-shuffled into "
                "one token",
    "smolvlm": "each image is several tiles plus a global image, each tile's patch blocks pixel-shuffled into "
               "one token",
}


def vision_support(model: Any) -> str | None:
    """None when `capture_token_patch` supports the model, else the reason in one line."""
    model = getattr(model, "model", model) if not isinstance(model, torch.nn.Module) else model
    mt = model.config.model_type
    if mt != "llava":
        why = _UNSUPPORTED.get(mt, "its vision tower is not a CLIP/SigLIP ViT whose patches are the image tokens")
        return (f"the vision-tower view supports LLaVA-1.5-style models only (one CLIP/SigLIP image per prompt, "
                f"image tokens = patches); {mt}: {why}")
    try:
        vision_attention_modules(vision_tower(model))
    except TypeError as e:
        return f"the vision-tower view needs a CLIP/SigLIP tower: {e}"
    return None


class TokenPatchCapture:
    """Per vision-tower call, the `[B, V, P]` token->patch matrices of the chosen aggregates, built
    layer by layer in the hooks (float64 on the tower's device; only running sums / one running
    product are kept, never `[L, H, N, N]`).

    Per layer l < n_used (the layers whose output the LLM reads), A_l = head mean of the softmax
    `[B, N, N]`; rows = image tokens (`default`: N-1 patch rows, CLS row dropped; `full`: all N),
    columns = the P patches (CLS column dropped):
      mean            rownorm((1/n) sum_l A_l)[rows, cls:]
      rollout         rownorm(R[rows, cls:]),  R = prod_l rownorm(A_l + I)  (Abnar & Zuidema)
      vlm_visualizer  (1/n) sum_l rownorm(A_l[rows, cls:])  (VLM-Visualizer's aggregate_vit_attention)
    """

    def __init__(self, aggregates: Sequence[str], n_used: int, cls: int, strategy: str, side: int, meta: dict):
        self.aggregates, self.n_used, self.cls, self.side = list(aggregates), n_used, cls, side
        self.rows = slice(1, None) if strategy == "default" else slice(None)
        self.meta = meta
        self._acc: dict[str, torch.Tensor] = {}
        self.calls: list[dict[str, torch.Tensor]] = []

    def _renorm(self, m: torch.Tensor) -> torch.Tensor:
        s = m.sum(-1, keepdim=True)
        return torch.where(s > 0, m / torch.where(s > 0, s, 1.0), 0.0)

    def add_layer(self, layer: int, probs: torch.Tensor) -> None:
        a = probs.mean(1).double()  # (B, N, N) head mean
        if layer == 0:
            self._acc = {}
        acc = self._acc
        if "mean" in self.aggregates:
            acc["mean"] = acc.get("mean", 0) + a
        if "vlm_visualizer" in self.aggregates:
            acc["vlm_visualizer"] = acc.get("vlm_visualizer", 0) + self._renorm(a[:, self.rows, self.cls:])
        if "rollout" in self.aggregates:
            eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
            step = self._renorm(a + eye)
            acc["rollout"] = step @ acc["rollout"] if "rollout" in acc else step
        if layer == self.n_used - 1:
            out = {}
            if "mean" in acc:
                out["mean"] = self._renorm((acc["mean"] / self.n_used)[:, self.rows, self.cls:])
            if "rollout" in acc:
                out["rollout"] = self._renorm(acc["rollout"][:, self.rows, self.cls:])
            if "vlm_visualizer" in acc:
                out["vlm_visualizer"] = acc["vlm_visualizer"] / self.n_used
            self.calls.append({k: v.float().cpu() for k, v in out.items()})  # (B, V, P) each
            self._acc = {}

    def result(self, b: int) -> tuple[dict[str, np.ndarray], dict]:
        """Sample b's `{aggregate: [V, P] float32}` and the metadata a record stores with them."""
        if not self.calls:
            raise RuntimeError("the vision tower did not run inside the capture block (no pixel_values?)")
        last = self.calls[-1]
        return {k: v[b].numpy() for k, v in last.items()}, dict(self.meta)


@contextmanager
def capture_token_patch(model: Any, aggregates: Sequence[str] = VISION_AGGREGATES) -> Iterator[TokenPatchCapture]:
    """Hooks on the vision layers the LLM reads; yields a `TokenPatchCapture` filled while the block
    runs (forward / generate). Raises UserError naming the reason for unsupported families."""
    from utils.errors import UserError

    model = model.model if not isinstance(model, torch.nn.Module) else model
    why = vision_support(model)
    if why:
        raise UserError(why)
    if not aggregates:
        raise UserError(f"vision aggregates []: name at least one of {', '.join(VISION_AGGREGATES)}")
    for a in aggregates:
        check_choice("vision aggregate", a, VisionAggregate)
    config = model.config
    vc = config.vision_config
    tower = vision_tower(model)
    mods = vision_attention_modules(tower)
    enc = getattr(tower, "vision_model", tower)
    cls = 1 if getattr(getattr(enc, "embeddings", None), "class_embedding", None) is not None else 0
    side = int(vc.image_size) // int(vc.patch_size)
    n_used = feature_layer_count(config)
    strategy = getattr(config, "vision_feature_select_strategy", "default")
    meta = {"aggregates": list(aggregates), "patch_rows": side, "patch_cols": side, "cls": cls,
            "vision_layers": len(mods), "feature_layers": n_used, "vision_heads": int(vc.num_attention_heads),
            "select_strategy": strategy, "tower": str(vc.model_type),
            "rows": "image tokens (the record's V axis)" + (", token k = patch k+1 (first patch dropped)"
                                                              if strategy == "default" and not cls else ""),
            "cols": "input patches, row-major on patch_rows x patch_cols"}
    cap = TokenPatchCapture(aggregates, n_used, cls, strategy, side, meta)

    def make_hook(layer: int):
        def hook(module, args, kwargs, output):
            cap.add_layer(layer, _probs(module, args, kwargs))
        return hook

    handles = [mods[l].register_forward_hook(make_hook(l), with_kwargs=True) for l in range(n_used)]
    try:
        yield cap
    finally:
        for hd in handles:
            hd.remove()
