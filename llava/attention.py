"""The one attention function: SDPA output + compact capture of image-token attention + interventions.

Registered once with transformers' `AttentionInterface` under `ATTN_IMPLEMENTATION`, with the
`sdpa` boolean mask builder registered under the same name in `AttentionMaskInterface` so that
padding masks arrive exactly as SDPA would see them.

With no active sink (see `utils.contracts.capture`) or for modules without `layer_idx` (the vision tower),
it *is* transformers' `sdpa_attention_forward`. Under an active sink, for each text layer it asks
`sink.plan(layer_idx, q_len, kv_len, batch, device)` for a `LayerPlan`, and then:

* computes the layer output with SDPA (interventions applied per head, see below);
* for the query rows the plan names only, computes `softmax(q k^T * scaling + mask)` over all keys
  in float32 and keeps the image-token columns (then the plan's `extra_cols`, e.g. the first
  token): `[B, H, Qs, V (+E)]`, handed to `sink.deliver(...)`.
  Memory is O(B x H x Qs x S) per layer; the full `[H, S, S]` matrix is never built.

Interventions (per head, only the heads the plan names):
* maskout `zero`: the head's output is zeroed (standard head ablation);
* maskout `uniform`: the head's query is zeroed, so its scores are all equal and it attends
  uniformly to the keys it may see;
* modify `image_reweight`: post-softmax weights on image keys x factor, renormalised, which is
  exactly an additive `log(factor)` bias on those logits (SDPA with a float mask);
* modify `logits_scale`: pre-softmax logits of image keys x factor (explicit attention for those
  heads only).
* maskout `visual_head` (Bi et al.'s released `maskout`, jing-bi/visual-head `llava/model/forward.py`):
  the head's logits are set to 0 *after* the causal/padding mask, so it attends uniformly to **all**
  keys, future and padding keys included (a leak inside the head, reproduced on purpose): every
  query row's output is the mean of all value vectors.
* modify `visual_head` (Bi et al.'s `modify` with the image-token map): the raw logits are
  multiplied by the factor before the mask, in prefill for query-key pairs that are both
  (highlighted) image tokens (text rows untouched), in a decoding step for the new token's logits
  to (highlighted) image keys. Every head of the layer when the plan says `modify_all_heads`.
A head both masked out (`uniform` or `visual_head`) and modified is not modified (maskout wins).
Captured rows show the intervened probabilities (for maskout `zero`: the head's attention before its
output is zeroed).
"""

from __future__ import annotations

import math
from functools import partial

import torch

from llava.compat import require_supported

require_supported()  # before the imports below, which older versions do not have

from transformers import AttentionInterface  # noqa: E402
from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward  # noqa: E402
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask  # noqa: E402

from utils.contracts.capture import LayerPlan, active_sink

ATTN_IMPLEMENTATION = "capture_sdpa"


def _image_key_mask(plan: LayerPlan, batch: int, kv_len: int, device, highlight: bool = False) -> torch.Tensor:
    """(B, kv_len) bool: True on image-token key columns (with `highlight`, only the highlighted ones)."""
    cols = plan.image_cols.to(device)
    m = torch.zeros(batch, kv_len, dtype=torch.bool, device=device)
    valid = plan.image_valid.to(device) if plan.image_valid is not None else torch.ones_like(cols, dtype=torch.bool)
    if highlight and plan.highlight_valid is not None:
        valid = valid & plan.highlight_valid.to(device)
    cols = cols.clamp(max=kv_len - 1)
    m.scatter_(1, cols, valid)
    return m


def _modify_keys(plan: LayerPlan, batch: int, kv_len: int, device) -> torch.Tensor:
    """(B, kv_len) bool: the key columns the modify mode acts on."""
    return _image_key_mask(plan, batch, kv_len, device, highlight=plan.modify_mode == "visual_head")


def _visual_head_factor(keys: torch.Tensor, rows_abs: torch.Tensor | None, factor: float) -> torch.Tensor:
    """(B, 1, R, S) multiplier of Bi et al.'s modify: `factor` where the query row and the key are both
    highlighted (prefill; `rows_abs` (B, R) = the rows' key positions), or where the key is
    (a decoding step, `rows_abs` None); 1 elsewhere."""
    if rows_abs is None:
        hit = keys[:, None, None, :]  # (B, 1, 1, S)
    else:
        hit = keys.gather(1, rows_abs)[:, None, :, None] & keys[:, None, None, :]  # (B, 1, R, S)
    one = torch.ones((), dtype=torch.float32, device=keys.device)
    return torch.where(hit, one * factor, one)


def _leaky_uniform(plan: LayerPlan) -> list[int]:
    """Heads masked out Bi et al.'s way (uniform over all keys, the mask overwritten)."""
    return list(plan.maskout_heads) if plan.maskout_mode == "visual_head" else []


def _visible(attention_mask: torch.Tensor | None, rows: torch.Tensor | None, q_len: int, kv_len: int, batch: int, device) -> torch.Tensor:
    """(B, 1, R, kv_len) bool of keys each query row may see, exactly as SDPA sees them.

    `rows` (B, R) selects query rows (None = all q_len rows). A missing mask means SDPA's own
    causal rule: upper-left aligned when q_len > 1 (transformers crops keys to q_len then), all
    keys for a single decoding query.
    """
    if attention_mask is not None:
        if attention_mask.dtype != torch.bool:
            attention_mask = attention_mask == 0  # additive float mask: 0 = visible
        m = attention_mask.to(device).expand(batch, -1, -1, -1)  # (B, 1|H, q, kv)
        m = m[:, :1]
        if rows is not None:
            idx = rows[:, None, :, None].expand(batch, 1, rows.shape[1], m.shape[-1])
            m = m.gather(2, idx)
        return m
    r = rows if rows is not None else torch.arange(q_len, device=device).expand(batch, q_len)
    cols = torch.arange(kv_len, device=device)
    if q_len == 1:
        return torch.ones(batch, 1, r.shape[1], kv_len, dtype=torch.bool, device=device)
    return (cols[None, None, None, :] <= r[:, None, :, None]) & (cols < q_len)


def _capture_logits(module, q: torch.Tensor, key: torch.Tensor, scaling: float) -> torch.Tensor:
    """(B, H, R, S) plain logits; GQA without copying the keys: the g query heads of a key/value
    head are stacked on the row axis of one matmul (head h = kv_head * g + j, as repeat_kv orders them)."""
    b, h, r, d = q.shape
    hkv = key.shape[1]
    g = h // hkv
    if g == 1:
        return torch.matmul(q, key.transpose(2, 3)) * scaling
    out = torch.matmul(q.reshape(b, hkv, g * r, d), key.transpose(2, 3)) * scaling  # (B, Hkv, g*R, S)
    return out.view(b, h, r, key.shape[2])


def _logits(module, q: torch.Tensor, key: torch.Tensor, scaling: float, plan: LayerPlan, img_keys: torch.Tensor | None,
            rows_abs: torch.Tensor | None = None) -> torch.Tensor:
    """(B, H, R, S) attention logits for query rows `q` (B, H, R, D), with per-head interventions.

    img_keys (B, S): the keys the modify mode acts on (`_modify_keys`); rows_abs (B, R): the rows'
    key positions (None in a decoding step), used by modify `visual_head`."""
    key = repeat_kv(key, getattr(module, "num_key_value_groups", 1))  # (B, H, S, D)
    logits = torch.matmul(q, key.transpose(2, 3)) * scaling  # (B, H, R, S)
    if plan.maskout_heads and plan.maskout_mode == "uniform":
        logits[:, plan.maskout_heads] = 0.0
    modify_heads = _modify_heads(plan, q.shape[1])
    if modify_heads:
        img = img_keys[:, None, None, :]  # (B, 1, 1, S)
        sub = logits[:, modify_heads]
        if plan.modify_mode == "image_reweight":
            bias = math.log(plan.modify_factor) if plan.modify_factor > 0 else float("-inf")
            sub = torch.where(img, sub + bias, sub)
        elif plan.modify_mode == "visual_head":
            sub = sub * _visual_head_factor(img_keys, rows_abs, plan.modify_factor).to(sub.dtype)
        else:  # logits_scale
            sub = torch.where(img, sub * plan.modify_factor, sub)
        logits[:, modify_heads] = sub
    return logits


def _softmax(logits: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
    """Softmax over the visible keys; a row that sees no key (a padding query) is all zeros, as in SDPA,
    so no NaN reaches the padded positions' values."""
    logits = logits.float().masked_fill(~visible, float("-inf"))
    return torch.softmax(logits, dim=-1).masked_fill(~visible.any(-1, keepdim=True), 0.0)


def _modify_heads(plan: LayerPlan, n_heads: int) -> list[int]:
    """Heads to modify: a head masked out `uniform` or `visual_head` stays so (maskout wins over modify)."""
    if not (plan.modify_heads or plan.modify_all_heads) or plan.modify_factor == 1.0:
        return []
    heads = list(range(n_heads)) if plan.modify_all_heads else list(plan.modify_heads)
    if plan.maskout_heads and plan.maskout_mode in ("uniform", "visual_head"):
        return [h for h in heads if h not in plan.maskout_heads]
    return heads


def _intervened_output(module, query, key, value, attention_mask, dropout, scaling, is_causal, plan: LayerPlan, kwargs) -> torch.Tensor:
    """SDPA output (B, q, H, D) with the plan's per-head interventions applied."""
    batch, n_heads, q_len, _ = query.shape
    kv_len = key.shape[2]
    device = query.device
    if plan.maskout_heads and plan.maskout_mode == "uniform":
        query = query.clone()
        query[:, plan.maskout_heads] = 0.0  # equal scores -> uniform over the visible keys
    mask = attention_mask
    scale_heads: list[int] = []
    modify_heads = _modify_heads(plan, n_heads)
    if modify_heads:
        img_keys = _modify_keys(plan, batch, kv_len, device)
        if plan.modify_mode == "image_reweight":
            visible = _visible(attention_mask, None, q_len, kv_len, batch, device)  # (B, 1, q, kv)
            bias = math.log(plan.modify_factor) if plan.modify_factor > 0 else float("-inf")
            fmask = torch.zeros(batch, n_heads, q_len, kv_len, dtype=query.dtype, device=device)
            head_sel = torch.zeros(n_heads, dtype=torch.bool, device=device)
            head_sel[modify_heads] = True
            fmask = fmask.masked_fill(head_sel[None, :, None, None] & img_keys[:, None, None, :], bias)
            fmask = fmask.masked_fill(~visible, float("-inf"))
            mask = fmask
        else:
            scale_heads = modify_heads
    out, _ = sdpa_attention_forward(
        module, query, key, value, mask, dropout=dropout, scaling=scaling, is_causal=is_causal if mask is None else False, **kwargs
    )  # (B, q, H, D)
    if scale_heads:
        visible = _visible(attention_mask, None, q_len, kv_len, batch, device)
        sub_plan = LayerPlan(image_cols=plan.image_cols, image_valid=plan.image_valid, modify_heads=list(range(len(scale_heads))),
                             modify_factor=plan.modify_factor, modify_mode=plan.modify_mode)
        k = repeat_kv(key, getattr(module, "num_key_value_groups", 1))[:, scale_heads]
        v = repeat_kv(value, getattr(module, "num_key_value_groups", 1))[:, scale_heads]
        rows_abs = None if q_len == 1 else (torch.arange(q_len, device=device) + (kv_len - q_len)).expand(batch, q_len)
        logits = _logits(_NoGroups, query[:, scale_heads], k, scaling, sub_plan, img_keys, rows_abs)
        probs = _softmax(logits, visible).to(v.dtype)
        out = out.clone()
        out[:, :, scale_heads] = torch.matmul(probs, v).transpose(1, 2)
    leaky = _leaky_uniform(plan)
    if leaky:  # softmax(0) over all kv keys (future and padding too): every row = mean of all values
        v = repeat_kv(value, getattr(module, "num_key_value_groups", 1))[:, leaky]  # (B, h, S, D)
        out = out.clone()
        out[:, :, leaky] = v.float().mean(dim=2).to(out.dtype)[:, None]  # (B, 1, h, D) over every row
    if plan.maskout_heads and plan.maskout_mode == "zero":
        out = out.clone()
        out[:, :, plan.maskout_heads] = 0.0
    return out


class _NoGroups:
    num_key_value_groups = 1


def capture_sdpa_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs,
):
    """transformers attention interface: query (B, H, q, D), key/value (B, Hkv, kv, D) -> ((B, q, H, D), None)."""
    sink = active_sink()
    layer_idx = getattr(module, "layer_idx", None)
    if sink is None or layer_idx is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, is_causal=is_causal, **kwargs)
    batch, _, q_len, head_dim = query.shape
    kv_len = key.shape[2]
    plan: LayerPlan | None = sink.plan(layer_idx, q_len=q_len, kv_len=kv_len, batch=batch, device=query.device)
    if plan is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, is_causal=is_causal, **kwargs)
    scale = scaling if scaling is not None else head_dim**-0.5

    if plan.intervenes:
        out = _intervened_output(module, query, key, value, attention_mask, dropout, scale, is_causal, plan, kwargs)
    else:
        out, _ = sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, is_causal=is_causal, **kwargs)

    if plan.rows is not None and plan.rows.numel() > 0:
        rows = plan.rows.to(query.device)  # (B, Qs)
        n_heads = query.shape[1]
        if plan.defer and q_len == 1 and hasattr(sink, "defer"):
            vis = None if attention_mask is None else _visible(attention_mask, rows, 1, kv_len, batch, query.device)[:, 0, 0]
            sink.defer(layer_idx, query, key, vis, kv_len, partial(_finish_deferred, scale=scale, plan=plan))
            return out, None
        if q_len == 1:  # a decoding step: the only row
            q_sel = query
        else:
            q_sel = query.gather(2, rows[:, None, :, None].expand(batch, n_heads, rows.shape[1], head_dim))  # (B, H, Qs, D)
        if plan.intervenes:
            img_keys = _modify_keys(plan, batch, kv_len, query.device) if _modify_heads(plan, n_heads) else None
            rows_abs = None if q_len == 1 else rows + (kv_len - q_len)
            logits = _logits(module, q_sel, key, scale, plan, img_keys, rows_abs)  # (B, H, Qs, S)
        else:
            logits = _capture_logits(module, q_sel, key, scale)  # (B, H, Qs, S)
        if q_len == 1 and attention_mask is None:  # one decoding query without padding sees every key
            probs = torch.softmax(logits.float(), dim=-1)
        else:
            probs = _softmax(logits, _visible(attention_mask, rows, q_len, kv_len, batch, query.device))
        leaky = _leaky_uniform(plan)
        if leaky:
            probs[:, leaky] = 1.0 / kv_len  # uniform over every key, the mask overwritten
        cols, valid = _capture_cols(plan, query.device)
        cols = cols.clamp(max=kv_len - 1)
        probs = probs.gather(3, cols[:, None, None, :].expand(batch, n_heads, rows.shape[1], cols.shape[1]))  # (B, H, Qs, Vmax+E)
        if valid is not None:
            probs = probs * valid[:, None, None, :]
        if plan.capture_heads is not None:
            probs = probs.index_select(1, plan.capture_heads.to(probs.device))
        sink.deliver(layer_idx, probs)
    return out, None


def _capture_cols(plan: LayerPlan, device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(B, Vmax + E) key columns to keep (image columns, then `plan.extra_cols`) and their validity (or None)."""
    cols = plan.image_cols.to(device)
    if plan.extra_cols is None:
        return cols, None if plan.image_valid is None else plan.image_valid.to(device)
    extra = plan.extra_cols.to(device)
    if plan.image_valid is None and plan.extra_valid is None:
        return torch.cat([cols, extra], dim=1), None
    iv = plan.image_valid.to(device) if plan.image_valid is not None else torch.ones_like(cols, dtype=torch.bool)
    ev = plan.extra_valid.to(device) if plan.extra_valid is not None else torch.ones_like(extra, dtype=torch.bool)
    return torch.cat([cols, extra], dim=1), torch.cat([iv, ev], dim=1)


def _finish_deferred(queries: list, key: torch.Tensor, visibles: list, kv_lens: list, *, scale: float,
                     plan: LayerPlan) -> torch.Tensor:
    """(B, Hc, T, Vmax) image attention of T deferred decoding steps of one layer, in one batch.

    queries: T tensors (B, H, 1, D); key: the layer's last key tensor (B, Hkv, S, D), of which step t
    saw the first kv_lens[t] columns (and, with padding, `visibles[t]` (B, kv_lens[t]) of them).
    """
    q = torch.cat(queries, dim=2)  # (B, H, T, D)
    batch, n_heads, steps, _ = q.shape
    s = key.shape[2]
    logits = _capture_logits(None, q, key, scale)  # (B, H, T, S)
    cols_s = torch.arange(s, device=q.device)
    lens = torch.tensor(kv_lens, device=q.device)
    vis = (cols_s[None, :] < lens[:, None])[None].expand(batch, steps, s)  # (B, T, S)
    if any(v is not None for v in visibles):
        rows = [torch.nn.functional.pad(v.to(q.device), (0, s - v.shape[-1])) if v is not None
                else (cols_s < kl)[None].expand(batch, s) for v, kl in zip(visibles, kv_lens)]
        vis = vis & torch.stack(rows, dim=1)
    probs = _softmax(logits, vis[:, None])  # (B, H, T, S)
    cols, valid = _capture_cols(plan, q.device)
    cols = cols.clamp(max=s - 1)
    probs = probs.gather(3, cols[:, None, None, :].expand(batch, n_heads, steps, cols.shape[1]))  # (B, Hc, T, Vmax+E)
    if valid is not None:
        probs = probs * valid[:, None, None, :]
    if plan.capture_heads is not None:
        probs = probs.index_select(1, plan.capture_heads.to(probs.device))
    return probs


_REGISTERED = False


def register() -> str:
    """Register the function (idempotent) and return its implementation name for `attn_implementation=`."""
    global _REGISTERED
    if not _REGISTERED:
        AttentionInterface.register(ATTN_IMPLEMENTATION, capture_sdpa_attention)
        AttentionMaskInterface.register(ATTN_IMPLEMENTATION, sdpa_mask)
        _REGISTERED = True
    return ATTN_IMPLEMENTATION
