"""The whole `stage=batch` on the planted LLaVA-1.5-7B-geometry model (llava/planted) at growing sample counts.

Builds the planted checkpoint and its grounding set once (`llava.planted.build.save_planted`), then
for each N runs, in a fresh process (so peak RSS is honest), exactly what

    python localization_heads_finder.py model=planted model.name_or_path=<ckpt> data_file=<jsonl> \\
        output_dir=<fresh dir> end_index=N

runs (the composed config -> `lab.stages.run_stage` -> `batch_stage`), with timers wrapped around the
stage's own functions (nothing in lab/ is changed or replaced):

    load      the model loader (`llava.loader.model_loader`), called lazily by the collection
    collect   `lab.stages.batch.collect_batch` minus the load: rows -> attention/*.safetensors
    select    `lab.stages.batch.select_stage` minus its figures: analyze every record + select
    figures   `lab.stages.select._figures`: the layer x head heatmaps and the elbow curve
    explorer  `lab.stages.batch.write_run_index`: index.html (the offline explorer)

Then it opens each run's index.html in Chromium (Playwright) and times the load event and the first
map drawn (`#map-view[data-state="ready"]`), and prints the growth exponent of every phase: the
slope of log(seconds) against log(N).

    python benchmarks/bench_scale.py                                   # 100, 300, 1000 on the CPU
    python benchmarks/bench_scale.py --samples 100,300 --out /tmp/scale
    python benchmarks/bench_scale.py --device cuda --dtype bfloat16    # a lent GPU
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import ROOT, machine

PHASES = ("load", "collect", "select", "figures", "explorer")
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run"]


def peak_rss() -> int:
    """Peak resident set size of this process so far, bytes (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class Timers:
    """Seconds spent inside wrapped functions, by phase, and the peak RSS when each phase ended."""

    def __init__(self, cuda: bool):
        self.seconds: dict[str, float] = {}
        self.rss_after: dict[str, int] = {}
        self.cuda = cuda

    def _sync(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize()

    def wrap(self, name: str, fn):
        def timed(*args, **kwargs):
            self._sync()
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self._sync()
                self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0
                self.rss_after[name] = peak_rss()
        return timed


def compose(overrides: list[str]):
    """The entry point's config, composed in process as Hydra does from the command line."""
    from hydra import compose as hydra_compose, initialize_config_dir

    from utils.settings.declarations import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "config"), version_base="1.3"):
        return hydra_compose(config_name="localization_config", overrides=overrides)


def run_one(args) -> dict:
    """Child process: one whole stage=batch over the first `args.child` rows, timed by phase."""
    import torch

    import lab.stages.batch as batch_mod
    import lab.stages.select as select_mod
    from lab.stages import StageContext, run_stage
    from llava.loader import model_loader
    from llava.sam import sam_loader
    from utils.cli import output_dir
    from utils.settings.reading import settings_from_config

    n, planted, run_dir = args.child, Path(args.planted), Path(args.run_dir)
    overrides = ["model=planted", f"model.name_or_path={planted / 'checkpoint'}",
                 f"data_file={planted / 'data' / 'planted_grounding.jsonl'}", f"output_dir={run_dir}",
                 f"end_index={n}", f"model.device={args.device}", f"model.dtype={args.dtype}", *args.override]
    if args.batch_size:
        overrides.append(f"batch_size={args.batch_size}")
    cuda = args.device.startswith("cuda")
    t = Timers(cuda)
    t_start = time.perf_counter()
    cfg = compose(overrides)
    s = settings_from_config(cfg)  # as utils.cli.run_entry does; run_stage accepts the frozen settings
    ctx = StageContext(t.wrap("load", model_loader(s.model)), output_dir(s), sam_loader=sam_loader(s.grounding.sam))
    # the stage's own functions, looked up through the modules that call them
    batch_mod.collect_batch = t.wrap("collect_total", batch_mod.collect_batch)
    batch_mod.select_stage = t.wrap("select_total", batch_mod.select_stage)
    select_mod._figures = t.wrap("figures", select_mod._figures)
    batch_mod.write_run_index = t.wrap("explorer", batch_mod.write_run_index)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    result = run_stage(s, ctx)
    stage_s = time.perf_counter() - t0
    sec = t.seconds
    phases = {"load": sec["load"], "collect": sec["collect_total"] - sec["load"],
              "select": sec["select_total"] - sec["figures"], "figures": sec["figures"], "explorer": sec["explorer"]}
    records = sorted((run_dir / "attention").glob("*.safetensors"))
    index = run_dir / "index.html"
    return {
        "n": n, "records": len(records), "collected": result["collect"], "phases": phases,
        "stage_s": stage_s, "startup_s": t0 - t_start,
        "other_s": stage_s - sum(phases.values()),
        "samples_per_s": len(records) / phases["collect"],
        "peak_rss": peak_rss(), "rss_after": {k: t.rss_after[k] for k in ("load", "collect_total", "select_total", "explorer")},
        "cuda_peak": torch.cuda.max_memory_allocated() if cuda else None,
        "record_bytes": sum(f.stat().st_size for f in records),
        "index_bytes": index.stat().st_size, "index": str(index),
        "heads": [list(map(int, h)) for h in result["select"]["heads"]],
    }


def open_in_chromium(pages: list[str], repeats: int) -> dict[str, dict]:
    """Median seconds from navigation to the load event and to the first map drawn, per page."""
    from playwright.sync_api import sync_playwright

    out = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        try:
            for path in pages:
                load, ready, errors = [], [], []
                for _ in range(repeats):
                    page = browser.new_page(viewport={"width": 1400, "height": 1000})
                    page.on("pageerror", lambda e: errors.append(str(e)))
                    t0 = time.perf_counter()
                    page.goto(Path(path).resolve().as_uri(), wait_until="load", timeout=300_000)
                    t1 = time.perf_counter()
                    page.wait_for_selector('#map-view[data-state="ready"]', timeout=300_000)
                    t2 = time.perf_counter()
                    load.append(t1 - t0)
                    ready.append(t2 - t0)
                    page.close()
                out[path] = {"load_s": statistics.median(load), "ready_s": statistics.median(ready),
                             "errors": sorted(set(errors))}
        finally:
            browser.close()
    return out


def slope(ns: list[int], values: list[float]) -> float | None:
    """Least-squares slope of log(value) against log(N): 1 = linear, 0 = constant."""
    pts = [(math.log(n), math.log(v)) for n, v in zip(ns, values) if v > 0]
    if len(pts) < 2:
        return None
    mx = sum(x for x, _ in pts) / len(pts)
    my = sum(y for _, y in pts) / len(pts)
    sxx = sum((x - mx) ** 2 for x, _ in pts)
    return sum((x - mx) * (y - my) for x, y in pts) / sxx if sxx else None


def mb(n: float) -> str:
    return f"{n / 1e6:.2f} MB"


def report(runs: list[dict], browser: dict[str, dict]) -> None:
    ns = [r["n"] for r in runs]
    print("\n| N | load | collect | samples/s | select | figures | explorer | other | stage total | peak RSS | "
          "record / sample | index.html | open: load event | open: first map |")
    print("| --- " * 15 + "|")
    for r in runs:
        ph, b = r["phases"], browser.get(r["index"], {})
        print(f"| {r['n']:,} | {ph['load']:.2f} s | {ph['collect']:.1f} s | {r['samples_per_s']:.2f} | "
              f"{ph['select']:.2f} s | {ph['figures']:.2f} s | {ph['explorer']:.2f} s | {r['other_s']:.2f} s | "
              f"{r['stage_s']:.1f} s | {r['peak_rss'] / 2**20:,.0f} MiB | "
              f"{r['record_bytes'] / max(r['records'], 1) / 1e3:.1f} kB | {mb(r['index_bytes'])} | "
              + (f"{b['load_s']:.2f} s | {b['ready_s']:.2f} s |" if b else "- | - |"))
    for r in runs:
        if r["cuda_peak"] is not None:
            print(f"N={r['n']}: CUDA peak allocated {r['cuda_peak'] / 2**20:,.0f} MiB")
        print(f"N={r['n']}: peak RSS after load / collect / select / explorer: "
              + " / ".join(f"{v / 2**20:,.0f}" for v in r["rss_after"].values()) + " MiB; "
              f"selected heads {r['heads']}; collect summary {r['collected'].get('collected', r['collected'])}")
    for path, b in browser.items():
        if b["errors"]:
            print(f"page errors in {path}: {b['errors']}")
    if len(ns) < 2:
        return
    print(f"\ngrowth exponents (slope of log seconds vs log N over N = {', '.join(map(str, ns))}; 1 = linear):")
    series = {p: [r["phases"][p] for r in runs] for p in PHASES}
    series["stage total"] = [r["stage_s"] for r in runs]
    series["record bytes"] = [r["record_bytes"] for r in runs]
    series["index.html bytes"] = [r["index_bytes"] for r in runs]
    if all(r["index"] in browser for r in runs):
        series["open: first map"] = [browser[r["index"]]["ready_s"] for r in runs]
    for name, values in series.items():
        k = slope(ns, values)
        print(f"  {name:18s} {k:+.2f}" if k is not None else f"  {name:18s} -")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", default="100,300,1000", help="comma-separated sample counts N")
    ap.add_argument("--device", default="cpu", help="model.device: cpu | cuda | cuda:N | auto")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"], help="model.dtype")
    ap.add_argument("--out", default=None, help="working folder (default: a new temporary one)")
    ap.add_argument("--planted", default=None, help="an existing `python -m llava.planted` folder with >= max N rows")
    ap.add_argument("--seed", type=int, default=0, help="seed of the planted build")
    ap.add_argument("--batch-size", type=int, default=0, help="batch_size= (0: the config's default)")
    ap.add_argument("--open-repeats", type=int, default=3, help="page opens per run in Chromium (median)")
    ap.add_argument("--no-browser", action="store_true", help="skip the Chromium timing")
    ap.add_argument("--override", action="append", default=[], help="extra Hydra override for every run")
    ap.add_argument("--previous", default=None,
                    help="bench_scale.json of an earlier invocation: its runs join the table and the exponents "
                         "(their pages are opened again); N values given in --samples are measured anew")
    ap.add_argument("--child", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--run-dir", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print("RESULT " + json.dumps(run_one(args)), flush=True)
        return
    import tempfile

    ns = sorted({int(v) for v in args.samples.split(",")})
    out = Path(args.out or tempfile.mkdtemp(prefix="bench_scale_")).resolve()
    out.mkdir(parents=True, exist_ok=True)
    print(f"machine: {machine()}")
    import torch
    import transformers

    print(f"torch {torch.__version__}, transformers {transformers.__version__}, device {args.device}, "
          f"dtype {args.dtype}, load average {os.getloadavg()[0]:.2f}")
    planted = Path(args.planted).resolve() if args.planted else out / "planted"
    jsonl = planted / "data" / "planted_grounding.jsonl"
    have = sum(1 for _ in jsonl.open()) if jsonl.exists() else 0
    if have < max(ns):
        from llava.planted.build import save_planted

        t0 = time.perf_counter()
        save_planted(planted, args.seed, None, max(ns))
        print(f"built the planted model and {max(ns)} scenes in {planted} in {time.perf_counter() - t0:.1f} s")
    runs = []
    if args.previous:
        runs = [r for r in json.loads(Path(args.previous).read_text())["runs"] if r["n"] not in ns]
        print(f"from {args.previous}: N = {', '.join(str(r['n']) for r in runs)}")
    for n in ns:
        run_dir = out / f"run_{n}"
        if run_dir.exists():
            import shutil

            shutil.rmtree(run_dir)  # a fresh folder: nothing resumed
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(n), "--planted", str(planted),
               "--run-dir", str(run_dir), "--device", args.device, "--dtype", args.dtype,
               "--batch-size", str(args.batch_size), *[f"--override={o}" for o in args.override]]
        print(f"\nN={n}: {' '.join(cmd)}", flush=True)
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode or not lines:
            sys.exit(f"N={n} failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        r = json.loads(lines[-1][len("RESULT "):])
        runs.append(r)
        print(f"N={n}: stage {r['stage_s']:.1f} s, collect {r['samples_per_s']:.2f} samples/s, "
              f"load average {os.getloadavg()[0]:.2f}", flush=True)
    runs.sort(key=lambda r: r["n"])
    browser = {} if args.no_browser else open_in_chromium([r["index"] for r in runs], args.open_repeats)
    report(runs, browser)
    (out / "bench_scale.json").write_text(json.dumps({"runs": runs, "browser": browser}, indent=2) + "\n")
    print(f"\nraw numbers: {out / 'bench_scale.json'}")


if __name__ == "__main__":
    main()
