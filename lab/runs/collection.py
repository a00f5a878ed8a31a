"""Resumable batch collection over JSONL rows: one record per row, failures recorded, nothing lost.

* Every record is written atomically, so a run killed at any moment (even SIGKILL) leaves only
  complete records; rerunning reuses them (unless `overwrite=true`) and does the rest.
* A record is reused only when its fingerprint (lab/records/provenance.py) matches this run. Records of
  another model, strategy or `max_new_tokens` stop the run before any work, naming the file and
  the difference (`overwrite=true` replaces them, or use another output_dir). A row whose image or
  query changed, a record without a fingerprint (older tool), an unreadable record or one holding
  another sample is collected again and counted; the old file is kept in `attention/replaced/`.
* A row that fails (unreadable image, file name, model error, invalid attention, figure) is written
  to the manifest with its reason and the batch goes on; a failing batch is retried one row at a
  time so one bad row never sinks its neighbours. A figure failure keeps the row's record.
* Disk full and other write errors end the run with one line; what was written stays, and the next
  run resumes. The manifest survives torn lines (utils.io.append_jsonl), and every row of a run ends
  up in it (rows found on disk are added when the manifest lacks them).
* `shard=i/n` splits the rows across processes; each shard keeps its own manifest. Temp files are
  cleaned only when no live process can own them (utils.runlock, utils.io.temp_owner).
"""

from __future__ import annotations

import errno
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from lab.records.provenance import SAMPLE_KEYS, difference, image_id, model_part, run_fingerprint, sample_fingerprint
from lab.records.record import AttentionRecord, record_path
from lab.capture.station import Strategy, collect
from utils.console import printable
from utils.data import Row, file_stem, parse_shard
from utils.errors import SettingError, UserError
from utils.io import append_jsonl, host_tag, pid_alive, read_jsonl_lenient, temp_owner
from utils.images import load_image
from utils.contracts.vlm import VisionLanguageModel

log = logging.getLogger(__name__)

PER_ROW_ERRNOS = {errno.ENAMETOOLONG, errno.EINVAL, errno.EILSEQ}  # this row's file name; other rows may work


class WriteError(UserError):
    """Writing failed in a way no other row escapes (disk full, read-only, I/O error): the run ends."""


RUN_ENDING = (WriteError, SettingError)  # raised through a row's work: no other row escapes them


@dataclass
class BatchSummary:
    ok: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (id, reason)
    again: list[tuple[str, str]] = field(default_factory=list)  # (id, why its record was collected again)
    manifest: Path | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"ok": len(self.ok), "skipped_existing": len(self.skipped), "failed": len(self.failed),
                "collected_again": len(self.again),
                "failures": [{"id": i, "reason": r} for i, r in self.failed],
                "manifest": str(self.manifest) if self.manifest else None, "seconds": round(self.seconds, 2)}

    def text(self) -> str:
        s = (f"collected {len(self.ok)} record(s), skipped {len(self.skipped)} already on disk, "
             f"{len(self.failed)} failed")
        if self.again:
            i, r = self.again[0]
            s += (f"; {len(self.again)} of the collected replaced records made otherwise (e.g. {_short(i)}: {r}; "
                  "old files kept in attention/replaced/)")
        if self.failed:
            s += f" (reasons in {self.manifest}):\n" + "\n".join(f"  {_short(i)}: {printable(r)}" for i, r in self.failed[:20])
            if len(self.failed) > 20:
                s += f"\n  ... and {len(self.failed) - 20} more"
        return s


def _short(text: str, n: int = 60) -> str:
    """`text` shortened to `n` characters, control characters escaped (it is printed)."""
    text = printable(text)
    return text if len(text) <= n else text[: n - 3] + "..."


def manifest_path(output_dir: Path, shard: str | None) -> Path:
    if shard:
        i, n = parse_shard(shard)
        return output_dir / f"manifest.shard{i}-of-{n}.jsonl"
    return output_dir / "manifest.jsonl"


def clean_stale_temp_files(folder: Path, exclusive_since: float | None = None) -> list[Path]:
    """Remove temp files of writes interrupted by a kill, never a live writer's.

    A temp file is stale when its owner (host + pid in its name) is this host's and that process
    is gone, or, when this run holds the folder's lock exclusively (`exclusive_since` = when it took
    it), when it is older than the lock and not owned by a live process of this host."""
    removed = []
    if not folder.is_dir():
        return removed
    me = host_tag()
    for p in folder.glob(".*.tmp"):
        owner = temp_owner(p.name)
        live = owner is not None and owner[0] == me and pid_alive(owner[1])
        try:
            old = exclusive_since is not None and p.lstat().st_mtime < exclusive_since
        except FileNotFoundError:
            continue
        dead = owner is not None and owner[0] == me and not live
        if not live and (dead or old):
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def _fatal(e: OSError, path: Path | str) -> WriteError:
    return WriteError(f"cannot write {path}: {e.strerror or e} (errno {e.errno}); the records finished so far are kept: "
                     "fix it (e.g. free disk space) and run again to resume")


def _manifest_ok(manifest: Path) -> dict[str, str]:
    """id -> file of rows whose last manifest line says ok."""
    last: dict[str, dict] = {}
    for m in read_jsonl_lenient(manifest):
        if isinstance(m.get("id"), str):
            last[m["id"]] = m
    return {i: m.get("file", "") for i, m in last.items() if m.get("status") == "ok"}


def _set_aside(path: Path) -> None:
    """Keep a record that is about to be replaced in `attention/replaced/` (never lose one)."""
    dest = path.parent / "replaced" / path.name
    dest.parent.mkdir(exist_ok=True)
    os.replace(path, dest)


def collect_rows(
    rows: list[Row],
    *,
    output_dir: Path,
    load_vlm: Callable[[], VisionLanguageModel],
    strategy: Strategy,
    batch_size: int = 8,
    max_new_tokens: int = 0,
    overwrite: bool = False,
    shard: str | None = None,
    on_record: Callable[[AttentionRecord, Row], dict | None] | None = None,
    progress: bool = True,
    exclusive_since: float | None = None,
) -> BatchSummary:
    """Collect a record for every row into `<output_dir>/attention/`; see the module docstring.

    Args:
        rows: the rows to collect (validated).
        output_dir: the run folder; records go to its `attention/`.
        load_vlm: loads the model, called only when some row needs collecting.
        strategy: what to capture (and intervene).
        batch_size / max_new_tokens: rows per forward, generation length.
        overwrite: collect every row again (old records set aside in `attention/replaced/`).
        shard: `i/n`: this process's manifest (`manifest.shard<i>-of-<n>.jsonl`).
        on_record: `(rec, row) -> fields for the row's manifest line` (e.g. {"figure": path}); an
            exception there is recorded as the row's `figure_error`.
        progress: show a progress bar.
        exclusive_since: when this process took the output folder's lock exclusively (temp-file
            clean-up), None when shards may share it.
    """
    t0 = time.perf_counter()
    summary = BatchSummary(manifest=manifest_path(output_dir, shard))
    clean_stale_temp_files(output_dir / "attention", exclusive_since)
    in_manifest = _manifest_ok(summary.manifest)
    again: dict[str, str] = {}
    todo, found = _plan(rows, output_dir, strategy, max_new_tokens, overwrite, again)
    if todo or found:
        vlm = load_vlm()
        strategy.check_against(vlm.num_layers, vlm.num_heads)  # once, right after loading: not once per row
        todo += _check_found(found, output_dir, vlm, strategy, max_new_tokens, again, summary, in_manifest)
        todo.sort(key=lambda r: r.line)
        summary.again = [(r.id, again[r.id]) for r in todo if r.id in again]
        job = _Collector(vlm, strategy, output_dir, max_new_tokens, summary, again, on_record)
        job.collect_all(todo, max(1, batch_size), progress)
    summary.seconds = time.perf_counter() - t0
    return summary


def _reason(e: Exception) -> str:
    """A row's failure in one line: a UserError's own words, else the exception's type and start."""
    return str(e) if isinstance(e, UserError) else f"{type(e).__name__}: {str(e)[:500]}"


@dataclass
class _Collector:
    """One collection's state: collects batches of rows, stores each record and its manifest line,
    records failures (a failing batch is retried row by row)."""

    vlm: VisionLanguageModel
    strategy: Strategy
    output_dir: Path
    max_new_tokens: int
    summary: BatchSummary
    again: dict[str, str]  # id -> why its record is collected again
    on_record: Callable[[AttentionRecord, Row], dict | None] | None

    def collect_all(self, todo: list[Row], batch_size: int, progress: bool) -> None:
        """Every row of `todo`, `batch_size` at a time, under a progress bar."""
        from tqdm import tqdm

        bar = tqdm(total=len(todo), desc="collect", unit="sample", disable=not progress)
        try:  # the bar is closed (its line ended) before any error line is printed
            for start in range(0, len(todo), batch_size):
                chunk = todo[start: start + batch_size]
                self.collect_chunk(chunk)
                bar.update(len(chunk))
        finally:
            bar.close()

    def collect_chunk(self, chunk: list[Row]) -> None:
        items = []
        for row in chunk:
            try:
                items.append((row, load_image(row.image_path)))
            except UserError as e:
                self.fail(row, str(e))
        if not items:
            return
        try:
            self.run(items)
        except RUN_ENDING:
            raise
        except Exception as e:  # noqa: BLE001 - model / processor errors are per-row failures
            self.one_by_one(items, e)

    def run(self, items: list[tuple[Row, Any]]) -> None:
        recs = collect(self.vlm, [(img, row.prompt, row.id, row.image_path) for row, img in items], self.strategy,
                       max_new_tokens=self.max_new_tokens)
        for (row, _), rec in zip(items, recs):
            self.store(row, rec)

    def one_by_one(self, items: list[tuple[Row, Any]], e: Exception) -> None:
        """A batch failed in the model: retry its rows one at a time so only the bad row fails."""
        if len(items) == 1:
            self.fail(items[0][0], _reason(e))
            return
        log.warning("batch failed (%s); retrying its %d rows one by one", printable(_reason(e)[:200]), len(items))
        done = {i for i, _ in self.summary.failed} | set(self.summary.ok)
        for item in items:
            if item[0].id in done:
                continue
            try:
                self.run([item])
            except RUN_ENDING:
                raise
            except Exception as e1:  # noqa: BLE001
                self.fail(item[0], _reason(e1))

    def write(self, entry: dict) -> None:
        try:
            append_jsonl(self.summary.manifest, entry)
        except OSError as e:
            raise _fatal(e, self.summary.manifest) from None

    def fail(self, row: Row, reason: str) -> None:
        self.summary.failed.append((row.id, reason))
        self.write({"id": row.id, "line": row.line, "file": file_stem(row.id), "status": "failed", "reason": reason,
                    "image_path": row.image_path})

    def store(self, row: Row, rec: AttentionRecord) -> None:
        """Write the row's record (setting aside the one it replaces) and its manifest line."""
        path = record_path(self.output_dir, row.id)
        rec.meta.extra.update(row.meta())
        try:
            if row.id in self.again and os.path.lexists(path):
                _set_aside(path)
            rec.save(path)
        except UserError as e:  # e.g. the model produced non-finite attention
            self.fail(row, str(e))
            return
        except OSError as e:
            if e.errno in PER_ROW_ERRNOS:
                self.fail(row, f"cannot write {path}: {e.strerror or e}")
                return
            raise _fatal(e, path) from None
        entry = {"id": row.id, "line": row.line, "file": file_stem(row.id), "status": "ok", "record": str(path),
                 "answer": rec.meta.generated_text}
        if row.id in self.again:
            entry["collected_again"] = self.again[row.id]
        if self.on_record is not None:
            try:
                entry.update(self.on_record(rec, row) or {})
            except SettingError:
                raise
            except Exception as e:  # noqa: BLE001 - a figure never sinks the batch; the record stands
                entry["figure_error"] = f"{type(e).__name__}: {str(e)[:300]}"
                log.warning("no figure for %s: %s", printable(row.id), printable(entry["figure_error"]))
        self.write(entry)
        self.summary.ok.append(row.id)


def _plan(rows: list[Row], output_dir: Path, strategy: Strategy, max_new_tokens: int, overwrite: bool,
          again: dict[str, str]) -> tuple[list[Row], list[tuple[Row, AttentionRecord]]]:
    """Rows to collect, and rows whose record on disk may be reused (its model is checked once the
    model is loaded). Records of another strategy / max_new_tokens stop the run here, before the
    model loads."""
    pre = run_fingerprint(None, strategy, max_new_tokens)
    todo, found = [], []
    for row in rows:
        path = record_path(output_dir, row.id)
        if overwrite or not os.path.lexists(path):
            todo.append(row)
            continue
        try:
            rec = AttentionRecord.load(path)
        except UserError as e:
            log.warning("%s", e)
            again[row.id] = f"the old file was unreadable ({str(e)[:200]})"
            todo.append(row)
            continue
        if rec.meta.sample_id != row.id:
            again[row.id] = f"the old file held sample {_short(rec.meta.sample_id)!r}"
            todo.append(row)
            continue
        if not rec.meta.fingerprint:
            again[row.id] = "the old record has no fingerprint (made by an older version)"
            todo.append(row)
            continue
        diff = difference(rec.meta.fingerprint, pre, ("version", "strategy", "max_new_tokens"))
        if diff:
            raise UserError(f"{path} was made with other settings ({diff}); run with the same settings, use another "
                            f"output_dir=, or overwrite=true to replace the records in {path.parent}")
        found.append((row, rec))
    return todo, found


def _check_found(found, output_dir: Path, vlm: VisionLanguageModel, strategy: Strategy, max_new_tokens: int, again: dict[str, str],
                 summary: BatchSummary, in_manifest: dict[str, str]) -> list[Row]:
    """Records on disk against the loaded model and each row's image and query: reuse (and make sure
    the manifest names them), collect again, or stop when another model made them."""
    full = run_fingerprint(model_part(vlm), strategy, max_new_tokens)
    todo = []
    for row, rec in found:
        diff = difference(rec.meta.fingerprint, full, ("model",))
        if diff:
            raise UserError(f"{rec.path} was made by another model ({diff}; model_id {_short(rec.meta.model_id)!r} there, "
                            f"{_short(str(vlm.model_id))!r} now); "
                            f"use another output_dir=, or overwrite=true to replace the records in {rec.path.parent}")
        img = image_id(None, row.image_path)
        sdiff = difference(rec.meta.fingerprint, sample_fingerprint(row.prompt, img), SAMPLE_KEYS)
        if sdiff and img == "unknown" and not sdiff.startswith("query"):
            log.warning("%s: image %s cannot be read now; keeping the record made from it", row.id, row.image_path)
            sdiff = None
        if sdiff:
            again[row.id] = sdiff.replace("image:", "the image changed:", 1) if sdiff.startswith("image") else sdiff
            todo.append(row)
            continue
        summary.skipped.append(row.id)
        if in_manifest.get(row.id) != file_stem(row.id):
            try:
                append_jsonl(summary.manifest, {"id": row.id, "line": row.line, "file": file_stem(row.id), "status": "ok",
                                                "record": str(rec.path), "answer": rec.meta.generated_text,
                                                "found_on_disk": True})
            except OSError as e:
                raise _fatal(e, summary.manifest) from None
    return todo
