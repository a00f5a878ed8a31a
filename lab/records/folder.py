"""What a folder of records holds, checked by every reader (stage=select, visualize mode=batch, the
explorer) before its records are used.

* Names: a record whose `sample_id` is not the one its file name says (a copied or renamed file)
  is an error naming the file and, when it exists, the sample's own file: selecting over it would
  count one sample twice and another never.
* Rows: a stage selects over the records of its run's rows only (`run_records`: its data_file's
  rows, else the ids the run's manifests name); a record of an earlier data file or a copied one is
  named and left out.
* A live writer: a folder whose run (`<run>/.lock`, utils/runlock.py) is held by a live process
  is refused with one line naming the holder (wait for it, then read).
* Completeness: stage=batch writes, next to each manifest, `<manifest>.plan.json` (rows this run
  or shard was given, rows in the selected range before sharding). A folder whose manifests have
  not reached every planned row is refused, or with `allow_partial=true` read with the number of
  missing rows printed and kept (heads.json `records.missing_rows`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Collection

from lab.records.record import AttentionRecord, record_file
from utils.console import printable
from utils.data import file_stem
from utils.errors import UserError
from utils.io import atomic_write_json, read_jsonl_lenient
from utils.runlock import live_holder


def check_record_name(path: Path, rec: AttentionRecord) -> None:
    """The record at `path` must hold the sample its file name says (utils.data.file_stem)."""
    sid = rec.meta.sample_id
    own = record_file(path.parent, sid)
    if path.name == own.name:
        return
    also = (f"; {own} holds that sample too: two records of one sample" if own.exists()
            else f"; its own file would be {own.name}")
    raise UserError(f"{path} holds sample {sid[:80]!r}, not {path.stem!r} as its name says (a copied or renamed "
                    f"record?){also}; delete or move the wrong file, or collect it again")


@dataclass
class NameCheck:
    """Incremental: check_record_name per record, and no sample held by two files of a listing."""

    seen: dict[str, Path] = field(default_factory=dict)

    def add(self, path: Path, rec: AttentionRecord) -> None:
        check_record_name(Path(path), rec)
        sid = rec.meta.sample_id
        if sid in self.seen and self.seen[sid] != Path(path):
            raise UserError(f"{path} and {self.seen[sid]} both hold sample {sid[:80]!r}; keep one of them")
        self.seen[sid] = Path(path)


def run_folder_of(records: Path) -> Path:
    """The run folder that holds a folder of records (`<run>/attention` -> `<run>`)."""
    return records.parent if records.name == "attention" else records


def refuse_live_writer(records: Path, own_run: Path | None = None) -> None:
    """One line when another live process holds the lock of the run writing `records`.

    Args:
        own_run: this process's own output folder when it holds that lock itself (skipped)."""
    run = run_folder_of(Path(records))
    if own_run is not None and run.resolve() == Path(own_run).resolve():
        return
    who = live_holder(run)
    if who:
        raise UserError(f"{records} is still being written by another run ({who}); wait for it to finish, "
                        "then run this again")


def folder_notes(records: Path) -> list[str]:
    """What the explorer says about a folder it lists: a live writer, rows missing (never refused:
    a page of what is there is still useful, and it is said)."""
    run = run_folder_of(Path(records))
    notes = []
    who = live_holder(run)
    if who:
        notes.append(f"{records} is still being written by another run ({who}); this page shows what was there")
    c = completeness(run)
    if c is not None and c.missing:
        notes.append(f"the run is incomplete: {c.missing} of {c.planned} planned rows have no record nor failure yet")
    return notes


def run_records(folder: Path, files: list[Path], ids: Collection[str] | None, data_file: Any = None) -> list[Path]:
    """The records of `files` that are rows of the run: of the sample `ids` given (a stage's data_file
    rows), else, when the run folder has manifests, of the ids they name; other records (an earlier
    data file's, a copied one) are left out, named in one printed line. No manifest and no ids: all.

    Args:
        folder: the folder of records `files` are in.
        ids: the rows' sample ids (None: the manifests say).
        data_file: where `ids` come from, for the printed line.
    """
    why = f"not among the rows of data_file={data_file}"
    if ids is None:
        run = run_folder_of(Path(folder))
        ids, why = manifest_ids(run), f"named by none of the manifests in {run}"
    if ids is None:
        return files
    names = {record_file(folder, i).name for i in ids}
    kept = [f for f in files if f.name in names]
    strays = [f.name for f in files if f.name not in names]
    if strays and not kept:
        raise UserError(f"none of the {len(files)} records in {folder} is a row of this run ({why}); "
                        "pass the data_file= they were collected from, or attention_dir= of their own folder")
    if strays:
        shown = ", ".join(printable(n) for n in strays[:5]) + (f" and {len(strays) - 5} more" if len(strays) > 5 else "")
        print(f"note: left out {len(strays)} record(s) in {folder} that are not rows of this run ({why}): {shown}")
    return kept


def manifest_ids(run: Path) -> set[str] | None:
    """Every sample id the run's manifests (`manifest*.jsonl`) name, whatever its status; None: no manifest."""
    manifests = sorted(Path(run).glob("manifest*.jsonl"))
    if not manifests:
        return None
    return {m["id"] for p in manifests for m in read_jsonl_lenient(p) if isinstance(m.get("id"), str)}


# ---------------------------------------------------------------------------------------------
# plans: how many rows a batch run (or shard) was given
# ---------------------------------------------------------------------------------------------
def plan_path(manifest: Path) -> Path:
    """`manifest.shard0-of-2.jsonl` -> `manifest.shard0-of-2.plan.json`."""
    return manifest.with_name(manifest.name[: -len(".jsonl")] + ".plan.json")


def write_plan(manifest: Path, rows: int, in_range: int, shard: str | None, data_file: Any) -> None:
    """Say, next to the manifest, how many rows this run must account for (before it collects any)."""
    atomic_write_json(plan_path(manifest), {"rows": int(rows), "in_range": int(in_range), "shard": shard or None,
                                            "data_file": str(data_file)})


@dataclass
class Completeness:
    """planned: rows of the selected range; reached: rows some manifest accounts for (ok or failed);
    detail: per manifest, e.g. "manifest.shard1-of-2.jsonl holds 184 of 600 rows"."""

    planned: int = 0
    reached: int = 0
    detail: list[str] = field(default_factory=list)

    @property
    def missing(self) -> int:
        return max(0, self.planned - self.reached)


def _reached(manifest: Path) -> int:
    last: dict[str, str] = {}
    for m in read_jsonl_lenient(manifest):
        if isinstance(m.get("id"), str):
            last[m["id"]] = m.get("status", "")
    return sum(1 for s in last.values() if s in ("ok", "failed"))


def completeness(run: Path) -> Completeness | None:
    """How complete the batch run in `run` is, from its plans and manifests (None: no plan there).
    Plans are grouped by shard count; the most complete group counts (a whole run after a broken
    sharded one completes the folder)."""
    groups: dict[int, list[tuple[Path, dict]]] = {}
    for p in sorted(run.glob("manifest*.plan.json")):
        try:
            d = json.loads(p.read_text(encoding="utf-8"))
            n = int(str(d.get("shard") or "0/1").split("/")[1])
            groups.setdefault(n, []).append((p, d))
        except (OSError, ValueError, TypeError, IndexError):
            continue
    best: Completeness | None = None
    for n, plans in groups.items():
        c = Completeness(planned=max(int(d["in_range"]) for _, d in plans))
        for p, d in plans:
            man = p.with_name(p.name[: -len(".plan.json")] + ".jsonl")
            got = min(_reached(man), int(d["rows"]))
            c.reached += got
            if got < int(d["rows"]):
                c.detail.append(f"{man.name} holds {got} of {d['rows']} rows")
        if n > 1 and len(plans) < n:
            c.detail.append(f"{n - len(plans)} of {n} shards never started")
        if best is None or c.missing < best.missing:
            best = c
    return best


def check_complete(records: Path, allow_partial: bool) -> int:
    """Refuse a folder whose run has rows missing (or, with allow_partial, print how many); returns
    the number of missing rows (0 when complete or when no plan says)."""
    c = completeness(run_folder_of(Path(records)))
    if c is None or c.missing == 0:
        return 0
    why = f"{c.missing} of {c.planned} planned rows have no record nor failure yet ({'; '.join(c.detail[:3])})"
    if not allow_partial:
        raise UserError(f"{records}: the run is incomplete: {why}; finish it (the same command resumes), "
                        "or pass allow_partial=true to select over what is there")
    print(f"warning: allow_partial=true: selecting over an incomplete run: {why}")
    return c.missing
