"""AttentionStation and Strategy: what to capture / intervene, activated as a context manager.

Notebook use, three steps (load, run under a context, read tensors):

    vlm = llava.load_vlm("llava/toy/checkpoint")
    station = AttentionStation()
    batch = vlm.prepare([(image, "what shape is the red object?")])
    with station.run(Strategy(), batch) as run:
        vlm.generate(batch, max_new_tokens=4)
    run.image_attention(0)          # (Q, L, H, V) float32 for sample 0

The station implements the sink protocol read by `llava/attention.py` (`plan`, `deliver`),
and is activated through `utils.contracts.capture` (a ContextVar): nothing leaks outside the `with` block,
even on exceptions, and nested runs see their own strategy.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
import numbers
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import torch

from lab.records.record import VISION_AGGREGATES
from utils.contracts.capture import LayerPlan, activate
from utils.settings.declarations import StrategyConfig
from utils.settings.reading import rules
from utils.errors import UserError
from utils.contracts.vlm import VisionLanguageModel

if TYPE_CHECKING:
    from lab.records.record import AttentionRecord

_CHECKS = rules(StrategyConfig, "strategy.")  # the declared value checks, one per field


def _plain(v: Any) -> Any:
    """Tuples as lists and integer-like scalars (numpy) as ints, so the declared checks and the
    fingerprint (lab/records/provenance.py) see the values a composed config would give."""
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, numbers.Integral) and not isinstance(v, bool):
        return int(v)
    return v


@dataclass(frozen=True)
class Strategy(StrategyConfig):
    """What one run captures and how it intervenes: the `strategy` settings group
    (utils/settings/declarations.py `StrategyConfig`: its fields, defaults and value checks) plus
    `capture`. `strategy_from_settings` builds it from the settings; Python callers construct it
    directly (`Strategy(maskout=[[1, 0]])`).

    query_positions: "last_input" (default: the token that produces the answer), "generated"
    (every generated token's query: row t is the query that produced generated token t),
    "all_input" (every prompt position), "first_generated" (only the query of the first generated
    token, i.e. the first decoding step: what Bi et al.'s released `analyize` records), or a list of
    prompt positions (negative = from the end; the settings' `positions`, folded in here).
    layers / heads: text-model indices to capture (None = all).
    maskout / modify: [[layer, head], ...] (0-based text-model indices).
    maskout_mode "visual_head" / modify_mode "visual_head": Bi et al.'s released semantics
    (llava/attention.py); with modify_mode "visual_head" an empty `modify` list means every head
    of every layer, as in their code. highlight_box: [x, y, w, h] in original pixels; modify
    `visual_head` then acts only on image tokens whose cell overlaps the box (positive area).
    steps: apply interventions on every forward ("all") or only during prefill ("prefill").
    vision: also record the vision tower's compact token->patch matrices (`vision_aggregates`, each
    `[V, P]`) through the model's `vision_capture` (LLaVA-1.5-style models; others are refused).
    capture: record attention at all (False: interventions only, e.g. the ablation's answers).
    """

    capture: bool = True

    def __post_init__(self) -> None:
        qp = _plain(self.query_positions)
        if isinstance(qp, list):  # explicit positions given as query_positions (Python callers)
            self._set("positions", qp)
        if self.positions is not None:
            self._set("query_positions", _plain(self.positions))
            self._set("positions", None)  # one place: query_positions holds them (and the fingerprint)
        for name in ("layers", "heads", "maskout", "modify", "vision_aggregates", "highlight_box"):
            self._set(name, _plain(getattr(self, name)))
        self._check_declared()
        if self.highlight_box is not None:
            if self.modify_mode != "visual_head":
                raise UserError("strategy.highlight_box applies to strategy.modify_mode=visual_head only")
            self._set("highlight_box", [float(x) for x in self.highlight_box])
        if self.vision and not self.vision_aggregates:
            raise UserError(f"strategy.vision_aggregates=[] with strategy.vision=true: name at least one of "
                            f"{', '.join(VISION_AGGREGATES)}")

    def _check_declared(self) -> None:
        """Every field's declared check (the same as at compose time); a list of query positions is
        checked as `strategy.positions`."""
        values = {f.name: getattr(self, f.name) for f in fields(StrategyConfig)}
        if isinstance(values["query_positions"], list):
            values["positions"], values["query_positions"] = values["query_positions"], None
        for key, check in _CHECKS.items():
            name = key.split(".", 1)[1]
            if name == "query_positions" and values[name] is None:
                continue
            why = check(values[name])
            if why:
                shown = repr(values[name]) if isinstance(values[name], str) else values[name]
                raise UserError(f"{key}={shown} {why}")

    def _set(self, name: str, value: Any) -> None:
        """Normalise a field while the frozen object is being built (lists of ints, floats)."""
        object.__setattr__(self, name, value)

    def check_against(self, num_layers: int, num_heads: int) -> None:
        """Out-of-range indices are a user error naming the key, not an IndexError deep in a layer."""
        for name in ("maskout", "modify"):
            for layer, head in getattr(self, name):
                if not (0 <= layer < num_layers and 0 <= head < num_heads):
                    raise UserError(
                        f"strategy.{name} has [{layer}, {head}] but the text model has {num_layers} layers x {num_heads} heads"
                    )
        for name, n in (("layers", num_layers), ("heads", num_heads)):
            vals = getattr(self, name)
            if vals is not None and any(not 0 <= v < n for v in vals):
                raise UserError(f"strategy.{name}={vals} out of range (0..{n - 1})")

    @property
    def modify_all_heads(self) -> bool:
        """modify_mode=visual_head with no heads named: every head of every layer (Bi et al.'s code)."""
        return self.modify_mode == "visual_head" and not self.modify and self.modify_factor != 1.0

    def intervenes(self) -> bool:
        return bool(self.maskout) or bool(self.modify) or self.modify_all_heads

    def interventions(self) -> dict[str, Any]:
        d = {
            "maskout": self.maskout,
            "maskout_mode": self.maskout_mode,
            "modify": self.modify,
            "modify_factor": self.modify_factor,
            "modify_mode": self.modify_mode,
            "steps": self.steps,
        }
        if self.modify_mode == "visual_head":
            d.update({"modify_all_heads": self.modify_all_heads, "highlight_box": self.highlight_box})
        return d


def warn_visual_head_padding(maskout_mode: str, masks_heads: bool, batch_size: int, key: str = "strategy") -> str | None:
    """Print (and return) one line when Bi et al.'s released maskout runs in padded batches, else None.

    Their uniform rows leak into padding keys, so a left-padded batch's answers differ from the same
    rows alone (docs/fidelity.md: 3 of 240 toy answers, logits up to 0.31); batch_size=1 reproduces
    the release exactly, and the project's own modes (zero, uniform) do not depend on padding.

    Args:
        maskout_mode: `strategy.maskout_mode` / `ablation.maskout_mode`.
        masks_heads: whether any head is masked out (strategy.maskout non-empty; always for ablate).
        batch_size: rows per forward.
        key: the settings group named in the line (`strategy` or `ablation`).
    """
    if maskout_mode != "visual_head" or not masks_heads or batch_size <= 1:
        return None
    line = (f"warning: {key}.maskout_mode=visual_head with batch_size={batch_size}: the release's maskout leaks into "
            "padding keys, so answers depend on the batch's padding (3 of 240 toy answers differ); batch_size=1 "
            "reproduces the release exactly (docs/fidelity.md)")
    print(line)
    return line


def strategy_from_settings(s: StrategyConfig) -> Strategy:
    """The Strategy of a run from its `strategy` settings group (`positions` overrides `query_positions`)."""
    return Strategy(**{f.name: getattr(s, f.name) for f in fields(StrategyConfig)})


@dataclass
class RunInputs:
    """What the station must know about a batch: its padding and where the image tokens are.

    attention_mask: (B, S) 0/1 of the padded batch; image_cols: per sample, the key positions of
    its image tokens in the padded frame (any family: llava/ computes them).
    """

    attention_mask: torch.Tensor
    image_cols: Sequence[torch.Tensor]
    layouts: Sequence[Any] | None = None  # ImageLayout per sample: needed by strategy.highlight_box


class StationRun:
    """One active run: receives the attention function's calls and keeps what it captured."""

    def __init__(self, strategy: Strategy, inputs: RunInputs, num_layers: int | None = None):
        self.strategy = strategy
        am = inputs.attention_mask
        self.batch, self.seq_len = am.shape
        self.device = am.device
        lengths = am.long().sum(-1)
        # Left padding puts the prompt at the end; for right padding the same arithmetic holds with
        # first_pos 0. first_pos = index of the first real token.
        first = torch.argmax(am.long(), dim=-1)
        last = am.shape[1] - 1 - torch.argmax(am.long().flip(-1), dim=-1)
        self.first_pos = first
        self.last_pos = last
        self.lengths = lengths
        vmax = max(int(c.numel()) for c in inputs.image_cols) if inputs.image_cols else 0
        cols = torch.zeros(self.batch, vmax, dtype=torch.long)
        valid = torch.zeros(self.batch, vmax, dtype=torch.bool)
        for b, c in enumerate(inputs.image_cols):
            cols[b, : c.numel()] = c.long().cpu()
            valid[b, : c.numel()] = True
        self.num_image_tokens = [int(c.numel()) for c in inputs.image_cols]
        self.image_cols = cols.to(self.device)
        self.image_valid = None if bool(valid.all()) else valid.to(self.device)
        self.highlight = None
        if strategy.highlight_box is not None:
            if inputs.layouts is None:
                raise UserError("strategy.highlight_box needs the batch's image layouts (RunInputs.layouts)")
            self.highlight = highlight_columns(inputs.layouts, strategy.highlight_box, vmax).to(self.device)
        self._decode_rows = torch.zeros(self.batch, 1, dtype=torch.long, device=self.device)
        self._calls: dict[int, int] = {}
        self._pending: dict[int, dict] = {}
        self._cpu: torch.Tensor | None = None
        self._cpu_steps = -1
        self._captured: dict[int, list[torch.Tensor]] = {}  # layer -> per step (B, Hc, Qs, Vmax)
        self._heads_t = None if strategy.heads is None else torch.tensor(strategy.heads, dtype=torch.long)
        self._maskout: dict[int, list[int]] = {}
        for layer, head in strategy.maskout:
            self._maskout.setdefault(layer, []).append(head)
        self._modify: dict[int, list[int]] = {}
        for layer, head in strategy.modify:
            self._modify.setdefault(layer, []).append(head)
        self.num_layers = num_layers

    # ---- the sink protocol (called by llava/attention.py) -------------------------------
    def _rows(self, step: int, q_len: int) -> torch.Tensor | None:
        qp = self.strategy.query_positions
        if qp == "generated":
            if step == 0:
                return self.last_pos[:, None]
            return self._decode_rows
        if qp == "first_generated":  # the first generated token is the query of decoding step 1
            return self._decode_rows if step == 1 else None
        if step != 0:
            return None
        if qp == "last_input":
            return self.last_pos[:, None]
        if qp == "all_input":
            return torch.arange(q_len, device=self.device).expand(self.batch, q_len)
        pos = torch.tensor(qp, dtype=torch.long, device=self.device)  # positions in each unpadded prompt
        rel = torch.where(pos[None, :] < 0, self.lengths[:, None] + pos[None, :], pos[None, :])
        if bool(((rel < 0) | (rel >= self.lengths[:, None])).any()):
            raise UserError(f"strategy.query_positions={qp} is outside a prompt of {int(self.lengths.min())} tokens")
        return self.first_pos[:, None] + rel

    def plan(self, layer_idx: int, q_len: int, kv_len: int, batch: int, device) -> Any:
        step = self._calls.get(layer_idx, 0)
        self._calls[layer_idx] = step + 1
        s = self.strategy
        capture = s.capture and (s.layers is None or layer_idx in s.layers)
        rows = self._rows(step, q_len) if capture else None
        interv = step == 0 or s.steps == "all"
        maskout = self._maskout.get(layer_idx, []) if interv else []
        modify = self._modify.get(layer_idx, []) if interv else []
        modify_all = interv and s.modify_all_heads
        if rows is None and not maskout and not modify and not modify_all:
            return None
        cols, valid = self.image_cols, self.image_valid
        first, first_valid = self.first_pos[:, None], None  # the first token's column: captured after the image's
        total = self.seq_len + step  # keys the model has seen so far (prompt + generated)
        shifted = step > 0 and kv_len < total
        if shifted:
            # a sliding-window cache (e.g. Gemma 3's local layers) keeps only the last kv_len keys:
            # shift absolute positions into the cache's frame; columns that fell out get weight 0
            cols = self.image_cols - (total - kv_len)
            inside = cols >= 0
            valid = inside if valid is None else (valid & inside)
            cols = cols.clamp(min=0)
            first = first - (total - kv_len)
            first_valid = first >= 0
            first = first.clamp(min=0)
        return LayerPlan(
            image_cols=cols,
            image_valid=valid,
            rows=rows,
            capture_heads=self._heads_t,
            maskout_heads=maskout,
            maskout_mode=s.maskout_mode,
            modify_heads=modify,
            modify_factor=s.modify_factor,
            modify_mode=s.modify_mode,
            defer=(rows is not None and step > 0 and q_len == 1 and not shifted and not maskout and not modify
                   and not modify_all),
            modify_all_heads=modify_all,
            highlight_valid=self.highlight,
            extra_cols=first,
            extra_valid=first_valid,
        )

    def deliver(self, layer_idx: int, probs: torch.Tensor) -> None:
        self._flush(layer_idx)
        self._captured.setdefault(layer_idx, []).append(probs.detach())

    def defer(self, layer_idx: int, query: torch.Tensor, key: torch.Tensor, visible: torch.Tensor | None,
              kv_len: int, finish) -> None:
        """Keep a decoding step's query; `finish` computes all kept steps of a layer in one go later.

        Many tiny per-step softmaxes cost more in overhead than in arithmetic; one batched
        computation over the last key tensor (keys only grow) gives the same numbers."""
        pend = self._pending.setdefault(layer_idx, {"q": [], "visible": [], "kv_len": []})
        pend["q"].append(query)
        pend["visible"].append(visible)
        pend["kv_len"].append(kv_len)
        pend["key"], pend["finish"] = key, finish

    def _flush(self, layer_idx: int | None = None) -> None:
        for layer in ([layer_idx] if layer_idx is not None else list(self._pending)):
            pend = self._pending.pop(layer, None)
            if pend:
                probs = pend["finish"](pend["q"], pend["key"], pend["visible"], pend["kv_len"])
                self._captured.setdefault(layer, []).append(probs.detach())

    # ---- results ------------------------------------------------------------------------
    @property
    def layers(self) -> list[int]:
        """Layers with something captured (computed already, or deferred decoding steps)."""
        return sorted(set(self._captured) | set(self._pending))

    @property
    def steps(self) -> int:
        """Forward calls seen (1 for a plain forward; prefill + decode steps for generate)."""
        return max(self._calls.values()) if self._calls else 0

    def _gathered(self) -> torch.Tensor:
        """(B, Q, L, Hc, Vmax + 1) float32 on CPU (last column: the first token); one transfer per layer, made once.

        Layers may live on different GPUs (device_map=auto), so each goes to the CPU on its own."""
        if self._pending:
            self._flush()
            self._cpu = None
        if self._cpu is None or self._cpu_steps != self.steps:
            layers = self.layers
            if not layers:
                raise RuntimeError("nothing was captured: did the model run with attn_implementation='capture_sdpa'?")
            per_layer = [torch.cat(self._captured[layer], dim=2).float().cpu() for layer in layers]  # (B, Hc, Q, Vmax+1)
            self._cpu = torch.stack(per_layer, dim=1).permute(0, 3, 1, 2, 4)  # (B, Q, L, Hc, Vmax+1)
            self._cpu_steps = self.steps
        return self._cpu

    def image_attention(self, b: int, num_steps: int | None = None) -> torch.Tensor:
        """(Q, L, H, V) float32 on CPU for sample b; `num_steps` trims generated rows to the sample's length."""
        out = self._gathered()[b]  # (Q, L, Hc, Vmax+1)
        if num_steps is not None:
            out = out[:num_steps]
        return out[..., : self.num_image_tokens[b]].contiguous()

    def first_attention(self, b: int, num_steps: int | None = None) -> torch.Tensor:
        """(Q, L, H) float32 on CPU: sample b's attention on its own first prompt token (BOS for
        LLaMA tokenizers), for weightings that zero that column and renormalise (lab/analysis/token_maps.py)."""
        out = self._gathered()[b, ..., -1]  # (Q, L, Hc)
        return (out[:num_steps] if num_steps is not None else out).contiguous()


def highlight_columns(layouts: Sequence[Any], box_xywh: Sequence[float], vmax: int) -> torch.Tensor:
    """(B, Vmax) bool: image tokens whose cell (in original pixels, through each sample's layout)
    overlaps the box with positive area, as Bi et al.'s `bbox_highlight` tests cells (strict overlap
    on both axes; their grid is stretched over the image they are given, ours follows the layout)."""
    x, y, w, h = (float(v) for v in box_xywh)
    out = torch.zeros(len(layouts), vmax, dtype=torch.bool)
    for b, layout in enumerate(layouts):
        for g in layout.grids:
            for r in range(g.rows):
                for c in range(g.cols):
                    t = g.token_index[r * g.cols + c]
                    if t < 0:
                        continue
                    x0, y0, x1, y1 = layout.cell_box(r, c, grid=g.name, clip=False)
                    if max(x0, x) < min(x1, x + w) and max(y0, y) < min(y1, y + h):
                        out[b, t] = True
    return out


class AttentionStation:
    """Collects what the attention function reports; one `run` per forward/generate call."""

    def __init__(self) -> None:
        self.last_run: StationRun | None = None

    @contextmanager
    def run(self, strategy: Strategy, inputs: RunInputs) -> Iterator[StationRun]:
        run = StationRun(strategy, inputs)
        self.last_run = run
        with activate(run):
            yield run


def collect(vlm: VisionLanguageModel, samples: Sequence[Any], strategy: Strategy, *, max_new_tokens: int = 0,
            station: AttentionStation | None = None) -> list["AttentionRecord"]:
    """Run one batch through `vlm` under `strategy` and return one AttentionRecord per sample.

    Args:
        vlm: the model (utils/contracts/vlm.py `VisionLanguageModel`, e.g. llava.model.VLM).
        samples: (image, query[, id[, image_path]]) tuples or samples `vlm.prepare` takes.
        strategy: what to capture and how to intervene.
        max_new_tokens: generation length; generation runs when > 0 or the strategy captures
            generated tokens.
        station: the station to run under (a fresh one by default).
    """
    from lab.records.provenance import model_part, run_fingerprint

    strategy.check_against(vlm.num_layers, vlm.num_heads)
    run_fp = run_fingerprint(model_part(vlm), strategy, max_new_tokens)
    batch = vlm.prepare(samples)
    run, vis, generated = _run_model(vlm, batch, strategy, max_new_tokens, station or AttentionStation())
    return [_record(vlm, batch, b, _Captured(run, vis, generated[b]), strategy, run_fp) for b in range(len(batch.samples))]


@dataclass
class _Captured:
    """What one batch's run left for sample b's record: the station run, the vision capture, its generated ids."""

    run: StationRun
    vision: Any  # the model's vision capture (`result(b)`), or None
    generated: torch.Tensor  # (G,) this sample's generated ids


def _run_model(vlm: VisionLanguageModel, batch: Any, strategy: Strategy, max_new_tokens: int,
               station: AttentionStation) -> tuple[StationRun, Any, list[torch.Tensor]]:
    """Forward (or generate) the prepared batch under the station; the run, the vision capture, the generated ids."""
    qp = strategy.query_positions
    do_generate = max_new_tokens > 0 or qp in ("generated", "first_generated")
    least = 2 if qp == "first_generated" else 1  # the first generated token is a query in decoding step 1
    vision = _vision_capture(vlm, strategy) if strategy.vision else nullcontext()
    with station.run(strategy, RunInputs(batch.attention_mask, batch.image_cols, batch.layouts)) as run, vision as vis:
        if do_generate:
            generated = vlm.generate(batch, max_new_tokens=max(max_new_tokens, least))
        else:
            vlm.forward(batch)
            generated = [torch.zeros(0, dtype=torch.long) for _ in range(len(batch))]
    return run, vis, generated


def _query_attention(run: StationRun, strategy: Strategy, batch: Any, b: int, gen: torch.Tensor,
                     num_heads: int) -> tuple[torch.Tensor, torch.Tensor, list[int], str]:
    """Sample b's captured rows: (image attention (Q, L, H, V), first-token attention (Q, L, H),
    the query positions in the unpadded sequence, the query mode); `num_heads`: heads captured."""
    qp = strategy.query_positions
    s_len = int(batch.input_ids[b].numel())
    if not strategy.capture:
        return torch.zeros(0, 0, num_heads, batch.layouts[b].num_tokens), torch.zeros(0, 0, num_heads), [], "none"
    if qp == "generated":
        att = run.image_attention(b, num_steps=int(gen.numel()))
        first = run.first_attention(b, num_steps=int(gen.numel()))
        return att, first, [s_len - 1 + t for t in range(att.shape[0])], "generated"
    if qp == "first_generated" and not run.layers:
        sample = batch.samples[b]
        raise UserError(f"strategy.query_positions=first_generated: generation ended after one token for "
                        f"every sample of the batch (sample {sample.sample_id or b}), so no decoding step "
                        "took the first generated token as its query")
    att, first = run.image_attention(b), run.first_attention(b)
    if qp == "first_generated":
        return att, first, [s_len], "first_generated"
    if qp == "last_input":
        return att, first, [s_len - 1], "last_input"
    if qp == "all_input":
        off = batch.pad_offsets[b]
        return att[off: off + s_len], first[off: off + s_len], list(range(s_len)), "all_input"
    return att, first, [p if p >= 0 else s_len + p for p in qp], "positions"


def _record(vlm: VisionLanguageModel, batch: Any, b: int, cap: _Captured, strategy: Strategy,
            run_fp: dict[str, Any]) -> "AttentionRecord":
    """Sample b's AttentionRecord: its captured attention, ids and metadata (fingerprint included)."""
    import numpy as np

    from lab.records.provenance import image_id, sample_fingerprint
    from lab.records.record import AttentionRecord, RecordMeta

    sample, ids, gen = batch.samples[b], batch.input_ids[b], cap.generated
    heads = list(strategy.heads if strategy.heads is not None else range(vlm.num_heads))
    att, first, qpos, mode = _query_attention(cap.run, strategy, batch, b, gen, len(heads))
    all_ids = torch.cat([ids.cpu(), gen.cpu()])
    meta = RecordMeta(
        sample_id=sample.sample_id or f"sample_{b}",
        model_id=vlm.model_id,
        model_type=vlm.model_type,
        num_layers=vlm.num_layers,
        num_heads=vlm.num_heads,
        layers=list(cap.run.layers if strategy.capture else []),
        heads=heads,
        prompt=batch.prompts[b],
        query=sample.query,
        query_mode=mode,
        query_positions=qpos,
        query_tokens=vlm.tokens(all_ids[qpos].tolist()) if qpos else [],
        image_path=sample.image_path,
        image_size=list(sample.image.size),
        image_aspect=vlm.image_aspect,
        layout=batch.layouts[b].to_dict(),
        prompt_template=vlm.prompt_template,
        generated_text=vlm.decode(gen) if gen.numel() else "",
        generated_tokens=vlm.tokens(gen.tolist()) if gen.numel() else [],
        interventions=strategy.interventions() if strategy.intervenes() else {},
        dtype=str(getattr(vlm.model, "dtype", "")).replace("torch.", ""),
        fingerprint={**run_fp, **sample_fingerprint(sample.query, image_id(sample.image, sample.image_path))}
        if strategy.capture else {},
    )
    matrices: dict[str, np.ndarray] = {}
    if cap.vision is not None:  # tokens = patches (LLaVA-1.5): the patch grid covers the token grid's box
        matrices, meta.vision = cap.vision.result(b)
        meta.vision["box"] = list(batch.layouts[b].grid().box)
    return AttentionRecord(
        image_attention=att.numpy().astype(np.float32),
        input_ids=ids.cpu().numpy().astype(np.int64),
        meta=meta,
        generated_ids=gen.cpu().numpy().astype(np.int64) if gen.numel() else None,
        first_attention=first.numpy().astype(np.float32) if strategy.capture else None,
        vision=matrices,
    )


def _vision_capture(vlm: VisionLanguageModel, strategy: Strategy):
    """The model's context manager for the vision tower's token->patch matrices (duck-typed:
    `vlm.vision_capture(aggregates)` yields an object with `result(b) -> ({name: [V, P]}, meta)`)."""
    capture = getattr(vlm, "vision_capture", None)
    if capture is None:
        raise UserError(f"strategy.vision=true but the model object {type(vlm).__name__} has no vision_capture()")
    return capture(list(strategy.vision_aggregates))
