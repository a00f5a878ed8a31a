"""Resumable batch collection over JSONL rows: one record per row, failures recorded, nothing lost.

* Every record is written atomically, so a run killed at any moment (even SIGKILL) leaves only
  complete records; rerunning skips them (unless `overwrite=true`) and does the rest.
* A row that fails at run time (missing/corrupt image, prompt too long, ...) is written to the
  manifest with its reason and the batch goes on; a failing batch is retried one row at a time so
  one bad row never sinks its neighbours.
* `shard=i/n` splits the rows across processes; each shard keeps its own manifest.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from lab.records import AttentionRecord, record_path
from lab.stations import Strategy, collect
from utils.data import Row, parse_shard
from utils.errors import UserError
from utils.io import append_jsonl, load_image

log = logging.getLogger(__name__)


@dataclass
class BatchSummary:
    ok: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (id, reason)
    manifest: Path | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"ok": len(self.ok), "skipped_existing": len(self.skipped), "failed": len(self.failed),
                "failures": [{"id": i, "reason": r} for i, r in self.failed],
                "manifest": str(self.manifest) if self.manifest else None, "seconds": round(self.seconds, 2)}

    def text(self) -> str:
        s = (f"collected {len(self.ok)} record(s), skipped {len(self.skipped)} already on disk, "
             f"{len(self.failed)} failed")
        if self.failed:
            s += f" (reasons in {self.manifest}):\n" + "\n".join(f"  {i}: {r}" for i, r in self.failed[:20])
            if len(self.failed) > 20:
                s += f"\n  ... and {len(self.failed) - 20} more"
        return s


def manifest_path(output_dir: Path, shard: str | None) -> Path:
    if shard:
        i, n = parse_shard(shard)
        return output_dir / f"manifest.shard{i}-of-{n}.jsonl"
    return output_dir / "manifest.jsonl"


def _clean_stale_temp_files(folder: Path) -> None:
    """Temp files of writes interrupted by a kill (atomic writes never leave a partial record)."""
    if folder.exists():
        for p in folder.glob(".*.tmp"):
            p.unlink(missing_ok=True)


def _existing_ok(path: Path) -> bool:
    if not path.exists():
        return False
    try:
        AttentionRecord.load(path)
        return True
    except UserError as e:
        log.warning("%s is unreadable (%s); collecting it again", path, e)
        return False


def collect_rows(
    rows: list[Row],
    *,
    output_dir: Path,
    load_vlm: Callable[[], Any],
    strategy: Strategy,
    batch_size: int = 8,
    max_new_tokens: int = 0,
    overwrite: bool = False,
    shard: str | None = None,
    on_record: Callable[[AttentionRecord, Row], None] | None = None,
    progress: bool = True,
) -> BatchSummary:
    """Collect a record for every row into `<output_dir>/attention/`; see the module docstring."""
    from tqdm import tqdm

    t0 = time.perf_counter()
    summary = BatchSummary(manifest=manifest_path(output_dir, shard))
    _clean_stale_temp_files(output_dir / "attention")
    todo: list[Row] = []
    for row in rows:
        if not overwrite and _existing_ok(record_path(output_dir, row.id)):
            summary.skipped.append(row.id)
        else:
            todo.append(row)
    if not todo:
        summary.seconds = time.perf_counter() - t0
        return summary
    vlm = load_vlm()

    def fail(row: Row, reason: str) -> None:
        summary.failed.append((row.id, reason))
        append_jsonl(summary.manifest, {"id": row.id, "line": row.line, "status": "failed", "reason": reason,
                                        "image_path": row.image_path})

    def run(items: list[tuple[Row, Any]]) -> None:
        recs = collect(vlm, [(img, row.prompt, row.id, row.image_path) for row, img in items], strategy,
                       max_new_tokens=max_new_tokens)
        for (row, _), rec in zip(items, recs):
            rec.meta.extra.update(row.meta())
            path = rec.save(record_path(output_dir, row.id))
            summary.ok.append(row.id)
            append_jsonl(summary.manifest, {"id": row.id, "line": row.line, "status": "ok", "record": str(path),
                                            "answer": rec.meta.generated_text})
            if on_record is not None:
                on_record(rec, row)

    bar = tqdm(total=len(todo), desc="collect", unit="sample", disable=not progress)
    for start in range(0, len(todo), max(1, batch_size)):
        chunk = todo[start: start + max(1, batch_size)]
        items = []
        for row in chunk:
            try:
                items.append((row, load_image(row.image_path)))
            except UserError as e:
                fail(row, str(e))
        if items:
            try:
                run(items)
            except (UserError, RuntimeError, ValueError) as e:
                if len(items) == 1:
                    fail(items[0][0], f"{type(e).__name__}: {e}" if not isinstance(e, UserError) else str(e))
                else:  # isolate the row that broke the batch; the others still finish
                    log.warning("batch failed (%s); retrying its %d rows one by one", e, len(items))
                    for item in items:
                        if item[0].id in summary.ok:
                            continue
                        try:
                            run([item])
                        except (UserError, RuntimeError, ValueError) as e1:
                            fail(item[0], str(e1) if isinstance(e1, UserError) else f"{type(e1).__name__}: {e1}")
        bar.update(len(chunk))
    bar.close()
    summary.seconds = time.perf_counter() - t0
    return summary
