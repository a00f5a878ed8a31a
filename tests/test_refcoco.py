"""examples/refcoco: the restricted pickle reader, both converters (layouts from the refer toolkit's
refer.py and lmms-eval's refcoco tasks / the lmms-lab/RefCOCO parquet card), the seeded draw, and the
recipe end to end on fabricated files with the toy model (fabricated images too)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from helpers import make_cfg

from examples.refcoco import convert
from examples.refcoco.plain_pickle import load_plain_pickle
from lab.stages import StageContext, run_stage
from llava.model import load_vlm
from llava.toy.scenes import make_scene
from utils.data import load_rows
from utils.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data" / "refcoco"
TOY = str(ROOT / "llava" / "toy" / "checkpoint")
SEEDS = [7001, 7002, 7003, 7004]
SPLITS = ["train", "train", "val", "testA"]


def expected_refs() -> list[dict]:
    """The refs the fixture files hold (tests/data/refcoco/README.md), built here from the toy scenes."""
    refs, ref_id, sent_id = [], 50, 900
    for i, seed in enumerate(SEEDS):
        for j, obj in enumerate(make_scene(seed, n_objects=2).objects):
            raw = [f"The {obj.color} {obj.shape}.", f"{obj.color} one"]
            if i == 0 and j == 0:
                raw[1] = f"{obj.color} caf\u00e9 thing"
            sents = []
            for r in raw:
                sent = r.lower().rstrip(".")
                sents.append({"tokens": sent.split(), "raw": r, "sent_id": sent_id, "sent": sent})
                sent_id += 1
            refs.append({"ref_id": ref_id, "ann_id": 3000 + 10 * i + j, "image_id": 400000 + i, "category_id": 1,
                         "split": "testB" if (i, j) == (3, 1) else SPLITS[i],
                         "file_name": f"COCO_train2014_{400000 + i:012d}_{j + 1}.jpg",
                         "sent_ids": [s["sent_id"] for s in sents], "sentences": sents})
            ref_id += 1
    return refs


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    """instances.json + train2014 JPEGs for the fixture refs (COCO layout; boxes [x, y, w, h] in pixels)."""
    root = tmp_path_factory.mktemp("refer")
    images = root / "images" / "mscoco" / "images" / "train2014"
    images.mkdir(parents=True)
    inst = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "thing", "supercategory": "toy"}]}
    for i, seed in enumerate(SEEDS):
        scene = make_scene(seed, n_objects=2)
        name = f"COCO_train2014_{400000 + i:012d}.jpg"
        scene.render().save(images / name, quality=95)
        inst["images"].append({"id": 400000 + i, "file_name": name, "width": scene.width, "height": scene.height})
        for j, obj in enumerate(scene.objects):
            x, y, w, h = obj.bbox
            inst["annotations"].append({"id": 3000 + 10 * i + j, "image_id": 400000 + i, "category_id": 1,
                                        "bbox": [float(v) for v in obj.bbox], "area": float(w * h), "iscrowd": 0,
                                        "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]]})
    (root / "refcoco").mkdir()
    (root / "refcoco" / "instances.json").write_text(json.dumps(inst))
    return root, images


@pytest.mark.parametrize("name", ["refs(unc).p0", "refs(unc).p2", "refs(unc).p4", "refs(unc).py2"])
def test_plain_pickle_reads_every_fixture(name):
    assert load_plain_pickle(DATA / name) == expected_refs()


def test_plain_pickle_refuses_code(tmp_path):
    evil = tmp_path / "evil.p"
    evil.write_bytes(b"cos\nsystem\n(S'echo owned'\ntR.")  # protocol 0: os.system("echo owned")
    with pytest.raises(UserError, match="refused opcode GLOBAL at byte 0"):
        load_plain_pickle(evil)
    evil.write_bytes(b"\x80\x04\x8c\x02os\x94\x8c\x06system\x94\x93\x94.")  # protocol 4 STACK_GLOBAL
    with pytest.raises(UserError, match="STACK_GLOBAL"):
        load_plain_pickle(evil)
    evil.write_bytes(b"\x80\x02]q\x00(K\x01")  # truncated
    with pytest.raises(UserError, match="truncated"):
        load_plain_pickle(evil)


def _refer_args(coco, out, *extra):
    root, images = coco
    return ["refer", "--refs", str(DATA / "refs(unc).py2"), "--instances", str(root / "refcoco" / "instances.json"),
            "--images", str(images), "--out", str(out), *extra]


def test_refer_layout_to_jsonl(coco, tmp_path):
    files = convert.main(_refer_args(coco, tmp_path))
    assert sorted(files) == ["testA", "testB", "train", "val"]
    rows = {split: load_rows(str(p), ("bbox",)) for split, p in files.items()}
    assert [len(rows[s]) for s in ("train", "val", "testA", "testB")] == [8, 4, 2, 2]  # one row per sentence
    refs = expected_refs()
    first = rows["train"][0]
    assert first.id == "50_900" and first.prompt == refs[0]["sentences"][0]["sent"] and first.group == "train"
    scene = make_scene(SEEDS[0], n_objects=2)
    assert first.bbox == [float(v) for v in scene.objects[0].bbox]
    assert Path(first.image_path).exists() and Path(first.image_path).name == "COCO_train2014_000000400000.jpg"
    assert rows["train"][1].prompt.endswith("caf\u00e9 thing")  # the Python 2 UTF-8 str, decoded
    raw = convert.main(_refer_args(coco, tmp_path / "raw", "--text", "raw"))
    assert load_rows(str(raw["train"]))[0].prompt == "The " + first.prompt[4:] + "."


def test_seeded_train_draw(coco, tmp_path):
    a = convert.main(_refer_args(coco, tmp_path / "a", "--draw", "5", "--seed", "3"))["draw"].read_text()
    b = convert.main(_refer_args(coco, tmp_path / "b", "--draw", "5", "--seed", "3"))["draw"].read_text()
    train_ids = {json.loads(x)["id"] for x in (tmp_path / "a" / "train.jsonl").read_text().splitlines()}
    ids = [json.loads(x)["id"] for x in a.splitlines()]
    assert a == b and len(ids) == 5 == len(set(ids)) and set(ids) <= train_ids
    c = convert.main(_refer_args(coco, tmp_path / "c", "--draw", "5", "--seed", "4"))["draw"].read_text()
    assert c != a
    per_ref = convert.main(_refer_args(coco, tmp_path / "d", "--draw", "10", "--draw-unit", "ref"))["draw"]
    refs = [json.loads(x)["id"].split("_")[0] for x in per_ref.read_text().splitlines()]
    assert len(refs) == 4 == len(set(refs))  # 4 train refs, one sentence each


def test_refer_errors_name_the_problem(coco, tmp_path):
    root, images = coco
    bad = tmp_path / "instances.json"
    inst = json.loads((root / "refcoco" / "instances.json").read_text())
    inst["annotations"] = inst["annotations"][1:]
    bad.write_text(json.dumps(inst))
    with pytest.raises(SystemExit) as e:
        convert.main(["refer", "--refs", str(DATA / "refs(unc).p2"), "--instances", str(bad), "--images", str(images),
                      "--out", str(tmp_path / "o")])
    assert e.value.code == 2


def _lmms_parquet(folder: Path, coco) -> Path:
    """lmms-lab/RefCOCO layout (dataset card + datasets' Image feature): data/<split>-NNNNN-of-NNNNN.parquet."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    root, images = coco
    V = lambda d: {"dtype": d, "id": None, "_type": "Value"}  # noqa: E731
    S = lambda d: {"feature": V(d), "length": -1, "id": None, "_type": "Sequence"}  # noqa: E731
    feat = {"question_id": V("string"), "image": {"decode": True, "id": None, "_type": "Image"},
            "question": V("string"), "answer": S("string"), "segmentation": S("float32"), "bbox": S("float32"),
            "iscrowd": V("int8"), "file_name": V("string")}
    schema = pa.schema([("question_id", pa.string()), ("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
                        ("question", pa.string()), ("answer", pa.list_(pa.string())),
                        ("segmentation", pa.list_(pa.float32())), ("bbox", pa.list_(pa.float32())),
                        ("iscrowd", pa.int8()), ("file_name", pa.string())]
                       ).with_metadata({"huggingface": json.dumps({"info": {"features": feat}})})
    data = folder / "data"
    data.mkdir(parents=True)
    for split, pick in (("val", [(2, 0), (2, 1)]), ("testA", [(3, 0)]), ("testB", [(3, 1)])):
        cols = {k: [] for k in schema.names}
        for i, j in pick:
            obj = make_scene(SEEDS[i], n_objects=2).objects[j]
            jpeg = (images / f"COCO_train2014_{400000 + i:012d}.jpg").read_bytes()
            x, y, w, h = obj.bbox
            cols["question_id"].append(str(3000 + 10 * i + j))
            cols["image"].append({"bytes": jpeg, "path": None})
            cols["question"].append("Please carefully observe the area circled in the image and come up with a caption for the area.")
            cols["answer"].append([f"the {obj.color} {obj.shape}", f"{obj.color} one"])
            cols["segmentation"].append([x, y, x + w, y, x + w, y + h, x, y + h])
            cols["bbox"].append([float(v) for v in obj.bbox])
            cols["iscrowd"].append(0)
            cols["file_name"].append(f"COCO_train2014_{400000 + i:012d}_{j + 1}.jpg")
        pq.write_table(pa.Table.from_pydict(cols, schema=schema), data / f"{split}-00000-of-00001.parquet")
    return data


def test_lmms_layout_to_jsonl(coco, tmp_path):
    pytest.importorskip("pyarrow")
    data = _lmms_parquet(tmp_path / "RefCOCO", coco)
    files = convert.main(["lmms", "--parquet", str(data), "--out", str(tmp_path / "out")])
    val = load_rows(str(files["val"]), ("bbox",))
    assert len(val) == 4 and [r.id for r in val[:2]] == ["3020_0", "3020_1"]  # answer exploded, as lmms-eval does
    obj = make_scene(SEEDS[2], n_objects=2).objects[0]
    assert val[0].bbox == [float(v) for v in obj.bbox] and val[0].prompt == f"the {obj.color} {obj.shape}"
    assert val[0].mask == [[float(v) for v in (obj.bbox[0], obj.bbox[1], obj.bbox[0] + obj.bbox[2], obj.bbox[1],
                                                 obj.bbox[0] + obj.bbox[2], obj.bbox[1] + obj.bbox[3],
                                                 obj.bbox[0], obj.bbox[1] + obj.bbox[3])]]  # the parquet's polygon
    written = sorted((tmp_path / "out" / "images").iterdir())
    assert [p.name for p in written] == ["COCO_train2014_000000400002.jpg", "COCO_train2014_000000400003.jpg"]
    from PIL import Image

    with Image.open(io.BytesIO(written[0].read_bytes())) as im:
        assert im.size == (make_scene(SEEDS[2], n_objects=2).width, make_scene(SEEDS[2], n_objects=2).height)
    with pytest.raises(SystemExit):  # no train split in this layout
        convert.main(["lmms", "--parquet", str(data), "--out", str(tmp_path / "o2"), "--draw", "3"])


@pytest.fixture(scope="module")
def toy_vlms():
    return {"paper": load_vlm(TOY, device="cpu", dtype="float32"),
            "kang_release": load_vlm(TOY, device="cpu", dtype="float32", prompt_template="referseg", image_aspect="pad")}


@pytest.mark.parametrize("method", ["paper", "kang_release"])
def test_recipe_end_to_end(coco, tmp_path, toy_vlms, method):
    """README recipe: convert -> batch on the train draw -> select -> evaluate on val / testA / testB."""
    files = convert.main(_refer_args(coco, tmp_path / "jsonl", "--draw", "6", "--seed", "0"))
    vlm = toy_vlms[method]
    sel_dir = tmp_path / f"{method}_train"
    common = [f"method={method}", "batch_size=4"]
    res = run_stage(make_cfg("stage=batch", *common, f"data_file={files['draw']}", f"output_dir={sel_dir}"),
                    StageContext(loader=lambda: vlm, output_dir=sel_dir))
    assert res["collect"]["ok"] == 6
    heads = json.loads((sel_dir / "heads.json").read_text())
    assert heads["heads"]
    for split in ("val", "testA", "testB"):
        out = tmp_path / f"{method}_{split}"
        ev = run_stage(make_cfg("stage=evaluate", *common, f"data_file={files[split]}", f"output_dir={out}",
                                f"heads_file={sel_dir / 'heads.json'}"),
                       StageContext(loader=lambda: vlm, output_dir=out))
        metrics = json.loads(Path(ev["metrics_file"]).read_text())
        assert metrics["selected_heads"]["n"] == len(load_rows(str(files[split])))
        assert 0.0 <= metrics["selected_heads"]["miou"] <= 1.0
        # the split's numbers as lmms-eval's refcoco_bbox_rec_<split> task names them (group = split)
        assert metrics["by_group"][split]["selected_heads"]["lmms_eval"] == metrics["selected_heads"]["lmms_eval"]
        assert metrics["selected_heads"]["iou_thresholds"]["0.5"] == metrics["selected_heads"]["acc@0.5"]
    rec = next((sel_dir / "attention").glob("*.safetensors"))
    from lab.records.record import AttentionRecord

    assert AttentionRecord.load(rec).meta.prompt_template == ("referseg" if method == "kang_release" else "chat")
    if method == "kang_release":  # the release's own box path: every val sample with its own top-5 heads
        out = tmp_path / "release_val_per_sample"
        ev = run_stage(make_cfg("stage=evaluate", *common, f"data_file={files['val']}", f"output_dir={out}"),
                       StageContext(loader=lambda: vlm, output_dir=out))
        metrics = json.loads(Path(ev["metrics_file"]).read_text())
        assert metrics["settings"]["per_sample_heads"] and metrics["selected_heads"]["n"] == 4


def test_refer_rows_carry_the_segmentation_as_mask(coco, tmp_path):
    from utils.masks import decode_mask, mask_box_xywh

    files = convert.main(_refer_args(coco, tmp_path))
    first = load_rows(str(files["train"]), ("bbox", "mask"))[0]
    scene = make_scene(SEEDS[0], n_objects=2)
    m = decode_mask(first.mask, (scene.width, scene.height))
    x, y, w, h = first.bbox
    assert list(mask_box_xywh(m)) == pytest.approx([x, y, w, h], abs=1.0)  # the fixture's polygon is the box


def test_refer_bad_segmentation_names_the_annotation(coco, tmp_path):
    root, images = coco
    inst = json.loads((root / "refcoco" / "instances.json").read_text())
    ann_id = expected_refs()[0]["ann_id"]
    next(a for a in inst["annotations"] if a["id"] == ann_id)["segmentation"] = [[1, 2, 3]]
    bad = tmp_path / "instances.json"
    bad.write_text(json.dumps(inst))
    with pytest.raises(UserError, match=f"annotation {ann_id}: segmentation"):
        convert.refer_rows(DATA / "refs(unc).p2", bad, images, tmp_path)
