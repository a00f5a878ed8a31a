"""The toy-model numbers of docs/fidelity.md: each quantity under this project's default and under the
option that reproduces the released code (all through this project's options; the tests compare those
options with re-implementations of the release).

    python benchmarks/fidelity_toy.py --out /tmp/fidelity      # ~1-2 min on 2 CPU cores; prints JSON

Records: the 240-row toy grounding set, collected once with the chat prompt (method=paper) and once
with the release's referseg prompt (method=kang_release).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hydra import compose, initialize_config_dir  # noqa: E402

from lab.analysis.per_sample import analyze_sample  # noqa: E402
from lab.criteria import elbow_threshold  # noqa: E402
from lab.criteria.entropy import entropy_components  # noqa: E402
from lab.criteria.variants import bottom_row_any_cell  # noqa: E402
from lab.criteria.entropy import bottom_row_share  # noqa: E402
from lab.records.record import AttentionRecord  # noqa: E402
from lab.stages import StageContext, run_stage  # noqa: E402
from lab.capture.station import Strategy, collect  # noqa: E402
from llava.model import load_vlm  # noqa: E402
from utils.settings.declarations import register_configs  # noqa: E402
from utils.data import load_rows  # noqa: E402

register_configs()
TOY = str(ROOT / "llava" / "toy" / "checkpoint")
DATA = str(ROOT / "examples" / "toy" / "toy_grounding.jsonl")


def cfg(*overrides):
    with initialize_config_dir(config_dir=str(ROOT / "config"), version_base="1.3"):
        return compose(config_name="localization_config", overrides=list(overrides))


def stage(vlm, out, *overrides):
    out = Path(out)
    return run_stage(cfg(*overrides, f"output_dir={out}", f"data_file={DATA}"), StageContext(loader=lambda: vlm, output_dir=out))


def metrics(path):
    m = json.loads(Path(path).read_text())["selected_heads"]
    return {"acc@0.5": round(m["acc@0.5"], 3), "miou": round(m["miou"], 3), "pointing": round(m["pointing"], 3)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="/tmp/fidelity_toy")
    out = Path(ap.parse_args().out)
    chat = load_vlm(TOY, device="cpu", dtype="float32")
    refer = load_vlm(TOY, device="cpu", dtype="float32", prompt_template="referseg", image_aspect="pad")
    R: dict = {}

    # --- whole methods -------------------------------------------------------------------------
    stage(chat, out / "paper", "stage=evaluate")
    R["paper"] = {"heads": json.loads((out / "paper" / "metrics.json").read_text())["heads"],
                  **metrics(out / "paper" / "metrics.json")}
    stage(refer, out / "release", "stage=evaluate", "method=kang_release")
    rel_heads = json.loads((out / "release" / "heads.json").read_text())
    R["kang_release"] = {"tally_top5": [[h["layer"], h["head"], h["frequency"]] for h in rel_heads["heads"]],
                         **metrics(out / "release" / "metrics.json")}
    # the same release records, but each sample's own heads' cells placed through the layout
    stage(refer, out / "release", "stage=evaluate", "method=kang_release", "grounding.geometry=layout")
    R["kang_release_layout_geometry"] = metrics(out / "release" / "metrics.json")
    stage(refer, out / "release", "stage=evaluate", "method=kang_release", "grounding.geometry=layout",
          "grounding.region=largest")
    R["kang_release_layout_largest_region"] = metrics(out / "release" / "metrics.json")
    heads_file = out / "paper" / "heads.json"
    for name, extra in {"paper_region_all": ["grounding.region=all"], "paper_geometry_stretch": ["grounding.geometry=stretch"],
                        "paper_region_all_stretch": ["grounding.region=all", "grounding.geometry=stretch"],
                        "paper_release_box": ["grounding.region=all", "grounding.geometry=stretch", "grounding.sigma=1.0"]}.items():
        stage(chat, out / "paper", "stage=evaluate", f"heads_file={heads_file}", *extra)
        R[name] = metrics(out / "paper" / "metrics.json")
    # the prompt alone: method=paper on referseg records
    pr = stage(refer, out / "paper_referseg", "stage=batch", "model.prompt_template=referseg")
    R["paper_with_referseg_prompt"] = {"heads": [list(h) for h in pr["select"]["heads"]]}
    # layer rule alone on the chat records
    lr = stage(chat, out / "paper_excl", "stage=evaluate", "selection.exclude_layers=[0,1]")
    R["paper_exclude_0_1"] = {"heads": json.loads((out / "paper_excl" / "metrics.json").read_text())["heads"],
                              **metrics(out / "paper_excl" / "metrics.json")}

    # --- per-map and per-sample quantities on the chat records ------------------------------------
    del lr
    recs = [AttentionRecord.load(p) for p in sorted((out / "paper" / "attention").glob("*.safetensors"))]
    maps = np.stack([r.layout.to_grid(r.image_attention[0]) for r in recs])  # (N, L, H, R, C)
    N, L, H, Rr, C = maps.shape
    flat = maps.reshape(-1, Rr, C)
    a = flat.reshape(len(flat), -1)
    ours = a > a.mean(1, keepdims=True)
    thr0 = np.maximum(a - a.mean(1, keepdims=True), 0) > 0
    v1 = np.maximum(a - a.mean(1, keepdims=True), 0) > 0.001
    v2 = np.maximum(a - 2 * a.mean(1, keepdims=True), 0) > 0.001
    R["binarisation_maps"] = {"maps": int(len(a)), "threshold0_differs": int((ours != thr0).any(1).sum()),
                              "v1_differs": int((ours != v1).any(1).sum()), "v2_differs": int((ours != v2).any(1).sum())}
    e_ours = analyze_sample(maps[0].reshape(L, H, -1), (Rr, C), exclude_layers=()).entropy  # warm-up / sanity
    del e_ours
    from lab.criteria import spatial_entropy_batch

    e_def, _ = spatial_entropy_batch(flat)
    e_v1, _ = entropy_components(flat, mean_factor=1.0, binarize_threshold=0.001, component_weight="relu_mass")[:2]
    e_v2, _ = entropy_components(flat, mean_factor=2.0, binarize_threshold=0.001, component_weight="relu_mass")[:2]
    R["component_weights"] = {"v1_zero_ours_positive": int(((e_v1 == 0) & (e_def > 0)).sum()),
                              "v2_zero_ours_positive": int(((e_v2 == 0) & (e_def > 0)).sum()),
                              "v2_scores_exactly_0": int(((e_v2 == 0) & (np.isfinite(e_v2))).sum())}
    share = bottom_row_share(flat)
    R["bottom_row_maps"] = {"share_gt_0.5": int((share > 0.5).sum()),
                            "any_cell_gt_0.05": int(bottom_row_any_cell(flat, 0.05).sum()), "maps": int(len(flat))}
    s = maps.sum(axis=(-1, -2))  # (N, L, H)
    differ = 0
    for n in range(N):
        k = elbow_threshold(s[n].ravel(), "kneedle").threshold
        c = elbow_threshold(s[n].ravel(), "chord_raw").threshold
        differ += int(((s[n] >= k) != (s[n] >= c)).any())
    mean_k = elbow_threshold(s.mean(0).ravel(), "kneedle")
    mean_c = elbow_threshold(s.mean(0).ravel(), "chord_raw")
    R["elbow"] = {"per_sample_curves": N, "kneedle_vs_chord_raw_c1_set_differs": differ,
                  "mean_curve_kneedle_kept": mean_k.n_kept, "mean_curve_chord_raw_kept": mean_c.n_kept,
                  "mean_curve_chord_kept": elbow_threshold(s.mean(0).ravel(), "chord").n_kept}

    # --- interventions and the query row (Bi et al.) ---------------------------------------------
    rows = load_rows(DATA, ("answer",))
    items = [(r.image_path, r.prompt, r.id, r.image_path) for r in rows]
    sel = [[1, 0], [1, 3], [2, 2]]

    def accuracy(strategy):
        good = 0
        for i in range(0, len(items), 16):
            for rec, row in zip(collect(chat, items[i:i + 16], strategy, max_new_tokens=2), rows[i:i + 16]):
                good += rec.meta.generated_text.split()[0:1] == [row.answer]
        return round(good / len(rows), 3)

    R["answers"] = {"none": accuracy(Strategy(capture=False))}
    for mode in ("zero", "uniform", "visual_head"):
        R["answers"][f"maskout_{mode}_selected"] = accuracy(Strategy(maskout=sel, maskout_mode=mode, capture=False))
    R["answers"]["modify_visual_head_x2_all_heads"] = accuracy(Strategy(modify_mode="visual_head", modify_factor=2.0, capture=False))
    R["answers"]["modify_logits_scale_x2_selected"] = accuracy(Strategy(modify=sel, modify_mode="logits_scale", modify_factor=2.0, capture=False))
    # the attention of the masked heads' rows: visual_head vs uniform (all query rows of 16 samples)
    diffs = []
    for mode in ("uniform", "visual_head"):
        recs_m = collect(chat, items[:16], Strategy(maskout=sel, maskout_mode=mode, query_positions="all_input"))
        diffs.append(np.stack([r.image_attention[:, [1, 1, 2], [0, 3, 2]] for r in recs_m]))  # (N, Q, 3, V)
    d = np.abs(diffs[0] - diffs[1])
    R["maskout_rows"] = {"last_row_max_abs_diff": float(d[:, -1].max()), "earlier_rows_max_abs_diff": float(d[:, :-1].max())}
    # query row: last input token vs first generated token, which head attends most to the image
    last = collect(chat, items[:64], Strategy())
    first = collect(chat, items[:64], Strategy(query_positions="first_generated"), max_new_tokens=2)
    top = lambda rs: np.stack([r.image_attention[0].sum(-1) for r in rs]).mean(0)  # noqa: E731  (L, H)
    tl, tf = top(last), top(first)
    R["query_row"] = {"last_input_top3": [list(map(int, np.unravel_index(i, tl.shape))) for i in np.argsort(-tl.ravel())[:3]],
                      "first_generated_top3": [list(map(int, np.unravel_index(i, tf.shape))) for i in np.argsort(-tf.ravel())[:3]],
                      "mean_s_img_last_input": round(float(tl.mean()), 3), "mean_s_img_first_generated": round(float(tf.mean()), 3)}
    print(json.dumps(R, indent=1))
    (out / "fidelity_toy.json").write_text(json.dumps(R, indent=1))


if __name__ == "__main__":
    main()
