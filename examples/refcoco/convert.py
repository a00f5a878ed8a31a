"""RefCOCO annotations -> this tool's JSONL (`id`, `prompt`, `image_path`, `bbox` [x, y, w, h] in original
pixels, `group` = split, `mask` = the annotation's COCO segmentation: polygons, or RLE for crowd
annotations, original pixels), one file per split, plus a seeded draw from the train split.

Two layouts researchers have (docs: examples/refcoco/README.md):

* refer (lichengunc/refer): `refs(unc).p` (a pickled list of refs: ref_id, ann_id, image_id, split,
  sentences[{sent_id, sent, raw, tokens}]) + `instances.json` (COCO: images, annotations with `bbox`
  [x, y, w, h]) + the COCO train2014 images. One row per sentence; the box is the ref's annotation's.
  The pickle is read by `plain_pickle.load_plain_pickle`, which builds plain containers only.
* lmms (lmms-lab/RefCOCO, as lmms-eval reads it): parquet files `data/{split}-NNNNN-of-NNNNN.parquet`
  with columns question_id, image {bytes, path}, answer [expressions], bbox [x, y, w, h], file_name.
  One row per expression (as lmms-eval explodes `answer`); images are written out once per COCO image.
  This layout has no train split.

    python -m examples.refcoco.convert refer --refs 'data/refcoco/refs(unc).p' --instances data/refcoco/instances.json \\
        --images data/images/mscoco/images/train2014 --out data/refcoco_jsonl --draw 1000 --seed 0
    python -m examples.refcoco.convert lmms --parquet data/RefCOCO/data --out data/refcoco_lmms
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from examples.refcoco.plain_pickle import load_plain_pickle
from utils.errors import UserError
from utils.masks import check_mask

PARQUET_NAME = re.compile(r"^(?P<split>[A-Za-z]+)-\d{5}-of-\d{5}\.parquet$")
REF_KEYS = ("ref_id", "ann_id", "image_id", "split", "sentences")


def _rel(path: Path, base: Path) -> str:
    """Image path as the JSONL stores it: relative to the JSONL's folder (the tool resolves it from there)."""
    return os.path.relpath(path.resolve(), base.resolve())


def refer_rows(refs_path: Path, instances_path: Path, images: Path, out: Path, text: str = "sent") -> list[dict]:
    """One row per sentence of every ref (see the module docstring)."""
    refs = load_plain_pickle(refs_path)
    if not isinstance(refs, list):
        raise UserError(f"{refs_path}: expected a list of refs, got {type(refs).__name__}")
    try:
        inst = json.loads(Path(instances_path).read_text())
        anns = {a["id"]: a for a in inst["annotations"]}
        imgs = {im["id"]: im for im in inst["images"]}
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"{instances_path}: not a COCO instances file ({type(e).__name__}: {e})") from None
    rows = []
    for i, ref in enumerate(refs):
        missing = [k for k in REF_KEYS if not isinstance(ref, dict) or k not in ref]
        if missing:
            raise UserError(f"{refs_path}: ref #{i} lacks {', '.join(missing)}")
        ann, img = anns.get(ref["ann_id"]), imgs.get(ref["image_id"])
        if ann is None or img is None:
            what = f"annotation {ref['ann_id']}" if ann is None else f"image {ref['image_id']}"
            raise UserError(f"{instances_path}: {what} of ref {ref['ref_id']} is not there")
        for sent in ref["sentences"]:
            if text not in sent:
                raise UserError(f"{refs_path}: sentence {sent.get('sent_id')} of ref {ref['ref_id']} has no {text!r}")
            rows.append({"id": f"{ref['ref_id']}_{sent['sent_id']}", "prompt": str(sent[text]).strip(),
                         "image_path": _rel(images / img["file_name"], out), "bbox": [float(v) for v in ann["bbox"]],
                         "group": str(ref["split"]), "ref_id": ref["ref_id"],
                         **_mask(ann.get("segmentation"), f"{instances_path}: annotation {ref['ann_id']}")})
    return rows


def _mask(seg, where: str) -> dict:
    """{"mask": the COCO segmentation (polygons, or RLE for crowd annotations)} when there is one and
    it is well-formed (utils/masks.py check_mask), {} when there is none; a malformed one is an error."""
    if seg is None or seg == [] or seg == {}:
        return {}
    if isinstance(seg, list):
        seg = [[float(v) for v in ring] for ring in seg if isinstance(ring, (list, tuple))] or seg
    err = check_mask(seg)
    if err:
        raise UserError(f"{where}: segmentation {err}")
    return {"mask": seg}


def _parquet_files(root: Path) -> list[tuple[str, Path]]:
    files = [root] if root.is_file() else sorted(root.rglob("*.parquet"))
    out = []
    for f in files:
        m = PARQUET_NAME.match(f.name)
        if not m:
            raise UserError(f"{f}: not named <split>-NNNNN-of-NNNNN.parquet (the lmms-lab layout)")
        out.append((m.group("split"), f))
    if not out:
        raise UserError(f"no parquet files under {root}")
    return out


def lmms_rows(root: Path, out: Path, images_out: Path) -> list[dict]:
    """One row per expression of every parquet row; the images' bytes are written to `images_out`."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise UserError("reading the lmms-lab parquet layout needs pyarrow: pip install pyarrow") from None
    from PIL import Image

    images_out.mkdir(parents=True, exist_ok=True)
    rows, written = [], {}
    for split, f in _parquet_files(root):
        table = pq.read_table(f)
        need = {"question_id", "image", "answer", "bbox", "file_name"}
        if not need <= set(table.column_names):
            raise UserError(f"{f}: missing columns {sorted(need - set(table.column_names))}")
        cols = sorted(need | ({"segmentation"} & set(table.column_names)))
        for r in table.select(cols).to_pylist():
            name = re.sub(r"_\d+(\.\w+)$", r"\1", r["file_name"])  # the ref-style suffix off: one file per image
            if name not in written:
                data, src = (r["image"] or {}).get("bytes"), (r["image"] or {}).get("path")
                if data is None:
                    if not src or not (f.parent / src).exists():
                        raise UserError(f"{f}: question {r['question_id']} has no image bytes and no readable path")
                    data = (f.parent / src).read_bytes()
                with Image.open(io.BytesIO(data)) as im:
                    fmt = (im.format or "PNG").lower()
                stem = Path(name).stem
                target = images_out / f"{stem}.{'jpg' if fmt == 'jpeg' else fmt}"
                target.write_bytes(data)
                written[name] = target
            seg = r.get("segmentation")
            mask = _mask([list(seg)] if seg else None, f"{f}: question {r['question_id']}")
            for k, expr in enumerate(r["answer"] or []):
                rows.append({"id": f"{r['question_id']}_{k}", "prompt": str(expr).strip(),
                             "image_path": _rel(written[name], out), "bbox": [float(v) for v in r["bbox"]],
                             "group": split, **mask})
    return rows


def draw(rows: list[dict], n: int, seed: int, unit: str = "sentence") -> list[dict]:
    """`n` rows drawn without replacement (numpy default_rng(seed)), in file order. unit="ref": `n` refs,
    one sentence each (drawn too)."""
    rng = np.random.default_rng(seed)
    if unit == "ref":
        by_ref: dict = defaultdict(list)
        for r in rows:
            by_ref[r.get("ref_id", r["id"])].append(r)
        keys = list(by_ref)
        picked = rng.choice(len(keys), size=min(n, len(keys)), replace=False)
        chosen = [by_ref[keys[int(i)]][int(rng.integers(len(by_ref[keys[int(i)]])))] for i in sorted(picked)]
        return chosen
    idx = rng.choice(len(rows), size=min(n, len(rows)), replace=False)
    return [rows[int(i)] for i in sorted(idx)]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    keep = ("id", "prompt", "image_path", "bbox", "group", "mask")
    path.write_text("".join(json.dumps({k: r[k] for k in keep if k in r}) + "\n" for r in rows))
    return path


def convert(args: argparse.Namespace) -> dict[str, Path]:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.layout == "refer":
        rows = refer_rows(Path(args.refs), Path(args.instances), Path(args.images), out, args.text)
    else:
        rows = lmms_rows(Path(args.parquet), out, Path(args.images_out) if args.images_out else out / "images")
    by_split: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_split[r["group"]].append(r)
    files = {split: write_jsonl(out / f"{split}.jsonl", rs) for split, rs in sorted(by_split.items())}
    for split, rs in sorted(by_split.items()):
        print(f"{split}: {len(rs)} rows -> {files[split]}")
    if args.draw:
        if "train" not in by_split:
            raise UserError(f"--draw needs a train split; this {args.layout} data has {sorted(by_split)}")
        drawn = draw(by_split["train"], int(args.draw), int(args.seed), args.draw_unit)
        files["draw"] = write_jsonl(out / f"train_draw{args.draw}_seed{args.seed}.jsonl", drawn)
        print(f"draw: {len(drawn)} of {len(by_split['train'])} train rows (seed {args.seed}, per {args.draw_unit}) "
              f"-> {files['draw']}")
    return files


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m examples.refcoco.convert", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="layout", required=True)
    a = sub.add_parser("refer", help="refs(unc).p + instances.json + COCO train2014 images")
    a.add_argument("--refs", required=True, help="refs(unc).p (or refs(google).p)")
    a.add_argument("--instances", required=True, help="instances.json of the same dataset folder")
    a.add_argument("--images", required=True, help="folder of the COCO train2014 images")
    a.add_argument("--text", choices=("sent", "raw"), default="sent",
                   help="sent: lower-cased, no punctuation (default); raw: as typed")
    b = sub.add_parser("lmms", help="lmms-lab/RefCOCO parquet files (data/<split>-NNNNN-of-NNNNN.parquet)")
    b.add_argument("--parquet", required=True, help="a parquet file or a folder searched recursively")
    b.add_argument("--images-out", default=None, help="where the images are written (default <out>/images)")
    for s in (a, b):
        s.add_argument("--out", required=True, help="output folder: <split>.jsonl (+ the draw)")
        s.add_argument("--draw", type=int, default=0, help="also write a seeded draw of N train rows (the paper: 1000)")
        s.add_argument("--seed", type=int, default=0)
        s.add_argument("--draw-unit", choices=("sentence", "ref"), default="sentence",
                       help="draw sentences (default) or refs (one sentence each)")
    return p


def main(argv: list[str] | None = None) -> dict[str, Path]:
    args = parser().parse_args(argv)
    try:
        return convert(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(UserError.exit_code)


if __name__ == "__main__":
    main()
