"""Detection datasets: JSONL/COCO loading, validation errors, box formats, shapes, CLI."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from vlmtui.core.data.chat import (
    GROUNDING_PROMPT,
    build_conversation,
    format_boxes,
    resized_size,
    to_trl_dataset,
)
from vlmtui.core.data.datasets import (
    DetectionObject,
    DetectionRecord,
    load_records,
    load_split,
    split_records,
)
from vlmtui.core.data.shapes import make_shapes_dataset
from vlmtui.core.errors import BadInput
from vlmtui.core.families import QWEN2_5_VL, QWEN2_VL

PARAMS = {"patch_size": 14, "merge_size": 2, "min_pixels": 56 * 56, "max_pixels": 112 * 112}
REPO = Path(__file__).resolve().parents[1]


def _image(path: Path, size=(200, 100)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (255, 255, 255)).save(path)


def _jsonl(tmp_path: Path, rows: list) -> Path:
    _image(tmp_path / "imgs" / "a.png")
    _image(tmp_path / "imgs" / "b.png", (64, 48))
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


GOOD = {"image": "imgs/a.png", "objects": [{"label": "red square", "bbox": [20, 10, 100, 50]}]}


def test_jsonl_loads_records_relative_to_the_file(tmp_path):
    path = _jsonl(
        tmp_path,
        [GOOD, "", {"image": "imgs/b.png", "objects": []}],
    )
    recs = load_records(path)
    assert recs == [
        DetectionRecord(
            (tmp_path / "imgs/a.png").resolve(),
            200,
            100,
            (DetectionObject("red square", (20.0, 10.0, 100.0, 50.0)),),
            f"{path}:1",
        ),
        DetectionRecord((tmp_path / "imgs/b.png").resolve(), 64, 48, (), f"{path}:3"),
    ]
    with pytest.raises(AttributeError):
        recs[0].width = 3  # frozen


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "bad JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"objects": []}', "missing key 'image'"),
        ('{"image": "imgs/a.png"}', "missing key 'objects'"),
        ('{"image": "imgs/nope.png", "objects": []}', "image file not found"),
        ('{"image": "imgs/a.png", "objects": [{"bbox": [0, 0, 1, 1]}]}', "missing key 'label'"),
        ('{"image": "imgs/a.png", "objects": [{"label": "x"}]}', "missing key 'bbox'"),
        ('{"image": "imgs/a.png", "objects": [{"label": "x", "bbox": [0, 0, 1]}]}', "4 numbers"),
        ('{"image": "imgs/a.png", "objects": [{"label": "x", "bbox": [50, 0, 40, 9]}]}', "x2 < x1"),
        ('{"image": "imgs/a.png", "objects": [{"label": "x", "bbox": [0, 50, 9, 40]}]}', "y2 < y1"),
        ('{"image": "imgs/a.png", "objects": [{"label": "x", "bbox": [0, 0, 250, 9]}]}', "outside"),
        ('{"image": "imgs/a.png", "objects": [{"label": "x", "bbox": [-5, 0, 9, 9]}]}', "outside"),
    ],
)
def test_each_malformed_jsonl_line_names_file_and_line(tmp_path, line, message):
    path = _jsonl(tmp_path, [GOOD, GOOD, line])
    with pytest.raises(BadInput) as exc:
        load_records(path)
    text = str(exc.value)
    assert text.startswith(f"{path}:3: "), text
    assert message in text
    assert "\n" not in text


def test_a_tiny_overshoot_is_clamped(tmp_path):
    row = {"image": "imgs/a.png", "objects": [{"label": "x", "bbox": [-0.5, 0, 200.4, 100]}]}
    (rec,) = load_records(_jsonl(tmp_path, [row]))
    assert rec.objects[0].bbox == (0.0, 0.0, 200.0, 100.0)


def _coco(tmp_path: Path, annotations: list) -> Path:
    _image(tmp_path / "images" / "a.png")
    _image(tmp_path / "images" / "b.png", (64, 48))
    data = {
        "images": [
            {"id": 7, "file_name": "a.png", "width": 200, "height": 100},
            {"id": 9, "file_name": "images/b.png"},
        ],
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
        "annotations": annotations,
    }
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(data, indent=1))
    return path


def test_coco_converts_xywh_and_keeps_images_without_boxes(tmp_path):
    path = _coco(
        tmp_path,
        [
            {"id": 1, "image_id": 7, "category_id": 2, "bbox": [10, 20, 30, 40]},
            {"id": 2, "image_id": 7, "category_id": 1, "bbox": [0, 0, 200, 100]},
        ],
    )
    a, b = load_records(path)
    assert a.image_path == (tmp_path / "images/a.png").resolve()
    assert (a.width, a.height) == (200, 100)
    assert a.objects == (
        DetectionObject("dog", (10.0, 20.0, 40.0, 60.0)),
        DetectionObject("cat", (0.0, 0.0, 200.0, 100.0)),
    )
    assert (b.width, b.height, b.objects) == (64, 48, ())


@pytest.mark.parametrize(
    ("ann", "message"),
    [
        ({"image_id": 7, "category_id": 1, "bbox": [150, 0, 60, 10]}, "outside"),
        ({"image_id": 7, "category_id": 1, "bbox": [10, 0, -5, 10]}, "x2 < x1"),
        ({"image_id": 7, "category_id": 5, "bbox": [0, 0, 1, 1]}, "category_id 5"),
        ({"image_id": 8, "category_id": 1, "bbox": [0, 0, 1, 1]}, "image_id 8"),
        ({"image_id": 7, "category_id": 1}, "missing key 'bbox'"),
    ],
)
def test_malformed_coco_annotation_is_named(tmp_path, ann, message):
    ok = {"image_id": 7, "category_id": 1, "bbox": [0, 0, 1, 1]}
    path = _coco(tmp_path, [ok, ann])
    with pytest.raises(BadInput) as exc:
        load_records(path)
    assert str(exc.value).startswith(f"{path}: annotations[1]: ")
    assert message in str(exc.value)


def test_coco_bad_json_names_the_line(tmp_path):
    path = tmp_path / "instances.json"
    path.write_text('{\n "images": [],\n "annotations": [,]\n}')
    with pytest.raises(BadInput, match=r"instances\.json:3: bad JSON"):
        load_records(path)


def test_load_split_directory_and_single_file(tmp_path, shapes_data_dir):
    train, val = load_split(shapes_data_dir, "train"), load_split(shapes_data_dir, "val")
    assert (len(train), len(val)) == (13, 3)
    with pytest.raises(BadInput, match="unknown split"):
        load_split(shapes_data_dir, "test")
    with pytest.raises(BadInput, match="not found"):
        load_split(tmp_path / "missing", "train")
    # A single file: split deterministically, disjoint, val non-empty.
    single = tmp_path / "all.jsonl"
    lines = (shapes_data_dir / "train.jsonl").read_text().splitlines()
    lines = [
        json.dumps(dict(json.loads(x), image=str(shapes_data_dir / json.loads(x)["image"])))
        for x in lines
    ]
    single.write_text("\n".join(lines) + "\n")
    tr, va = load_split(single, "train"), load_split(single, "val")
    assert va and len(tr) + len(va) == 13
    assert not {r.image_path for r in tr} & {r.image_path for r in va}
    assert load_split(single, "val") == va
    # A directory with just that one file splits it the same way.
    assert load_split(tmp_path, "val") == va
    assert split_records([]) == ([], [])
    # train.jsonl without val.jsonl is an error, never a split of train.jsonl (overlap).
    only_train = tmp_path / "only-train"
    only_train.mkdir()
    (only_train / "train.jsonl").write_text(single.read_text())
    assert len(load_split(only_train, "train")) == 13
    with pytest.raises(BadInput, match=r"no val\.jsonl or val\.json \(found train\.jsonl\)"):
        load_split(only_train, "val")


def test_format_boxes_qwen2_normalises_to_0_1000():
    objs = [
        DetectionObject("red square", (20, 10, 100, 50)),
        DetectionObject("a b", (0, 0, 200, 100)),
    ]
    text = format_boxes(objs, QWEN2_VL, 200, 100, 999, 999)
    assert text == (
        "<|object_ref_start|>red square<|object_ref_end|>"
        "<|box_start|>(100,100),(500,500)<|box_end|>"
        "<|object_ref_start|>a b<|object_ref_end|><|box_start|>(0,0),(1000,1000)<|box_end|>"
    )
    # rounding: 1/3 of 1000 -> 333, 2/3 -> 667
    one = format_boxes([DetectionObject("x", (1, 2, 2, 3))], QWEN2_VL, 3, 3, 0, 0)
    assert "(333,667),(667,1000)" in one
    assert format_boxes([], QWEN2_VL, 10, 10, 10, 10) == ""


def test_format_boxes_qwen3_is_json_in_0_1000_whatever_the_resize():
    qwen3 = dataclasses.replace(QWEN2_5_VL, name="qwen3-test", box_format="qwen3")
    objs = [
        DetectionObject("red square", (20, 10, 100, 50)),
        DetectionObject("straße", (1, 2, 2, 3)),
    ]
    text = format_boxes(objs, qwen3, 200, 100, 140, 56)
    assert text == (
        '[{"bbox_2d": [100, 100, 500, 500], "label": "red square"}, '
        '{"bbox_2d": [5, 20, 10, 30], "label": "straße"}]'
    )
    assert format_boxes(objs, qwen3, 200, 100, 999, 999) == text  # resize does not matter
    assert format_boxes([], qwen3, 10, 10, 28, 28) == "[]"
    with pytest.raises(BadInput, match="unknown box format 'yolo'"):
        format_boxes(objs, dataclasses.replace(qwen3, box_format="yolo"), 200, 100, 140, 56)


def test_resized_size_and_qwen25_boxes_in_resized_pixels():
    # smart_resize(500, 1000, factor 28, max 12544) -> 56 x 140
    assert resized_size(1000, 500, PARAMS) == (140, 56)
    assert resized_size(112, 112, PARAMS) == (112, 112)
    assert resized_size(30, 30, PARAMS) == (56, 56)  # min_pixels scales up
    objs = [DetectionObject("red square", (100, 50, 500, 250))]
    text = format_boxes(objs, QWEN2_5_VL, 1000, 500, 140, 56)
    assert json.loads(text) == [{"bbox_2d": [14, 6, 70, 28], "label": "red square"}]
    assert text == '[{"bbox_2d": [14, 6, 70, 28], "label": "red square"}]'
    assert format_boxes([], QWEN2_5_VL, 10, 10, 28, 28) == "[]"


def test_resized_size_matches_the_real_processor(qwen25_vl_dir):
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(qwen25_vl_dir)
    for w, h in [(1000, 500), (37, 91), (112, 112), (300, 200)]:
        rw, rh = resized_size(w, h, processor)
        assert resized_size(w, h, processor.image_processor) == (rw, rh)
        grid = processor.image_processor(images=[Image.new("RGB", (w, h))])["image_grid_thw"]
        assert grid.tolist() == [[1, rh // 14, rw // 14]]


def test_build_conversation_and_trl_rows(shapes_data_dir, qwen25_vl_dir):
    from transformers import AutoProcessor

    rec = load_split(shapes_data_dir, "val")[0]
    msgs = build_conversation(rec, QWEN2_VL, (112, 112))
    assert msgs[0] == {
        "role": "user",
        "content": [{"type": "image"}, {"type": "text", "text": GROUNDING_PROMPT}],
    }
    answer = msgs[1]["content"][0]["text"]
    assert msgs[1]["role"] == "assistant"
    assert answer == format_boxes(rec.objects, QWEN2_VL, 112, 112, 112, 112)
    processor = AutoProcessor.from_pretrained(qwen25_vl_dir)
    ds = to_trl_dataset([rec], QWEN2_5_VL, processor)
    row = ds[0]
    # Rows keep the path and their annotation row; the collator decodes (naming the row).
    assert row["images"] == [str(rec.image_path)] and row["source"] == rec.source
    assert row["messages"][1]["content"][0]["text"] == format_boxes(
        rec.objects, QWEN2_5_VL, 112, 112, 112, 112
    )
    with pytest.raises(BadInput):
        to_trl_dataset([], QWEN2_5_VL, processor)


def test_shapes_dataset_is_deterministic_with_exact_boxes(tmp_path, shapes_data_dir):
    import numpy as np

    again = make_shapes_dataset(tmp_path / "again", n=16, seed=0)
    for name in ("train.jsonl", "val.jsonl", "images/00003.png"):
        assert (again / name).read_bytes() == (shapes_data_dir / name).read_bytes()
    other = make_shapes_dataset(tmp_path / "other", n=16, seed=1)
    assert (other / "train.jsonl").read_bytes() != (again / "train.jsonl").read_bytes()
    recs = load_split(again, "train") + load_split(again, "val")
    assert len(recs) == 16
    for rec in recs:
        assert 1 <= len(rec.objects) <= 3
        pixels = np.asarray(Image.open(rec.image_path).convert("RGB")).astype(int)
        colours, counts = np.unique(pixels.reshape(-1, 3), axis=0, return_counts=True)
        background = colours[counts.argmax()]
        for obj in rec.objects:
            x1, y1, x2, y2 = (int(v) for v in obj.bbox)
            # Tight: inside the box some pixel differs from the background on every edge row/column.
            region = np.abs(pixels[y1:y2, x1:x2] - background).sum(-1) > 0
            assert region.size, (rec.source, obj)
            assert region[0].any() and region[-1].any(), (rec.source, obj)
            assert region[:, 0].any() and region[:, -1].any(), (rec.source, obj)
            lo_y, lo_x = max(0, y1 - 1), max(0, x1 - 1)
            ring = np.abs(pixels[lo_y : y2 + 1, lo_x : x2 + 1] - background).sum(-1) > 0
            assert ring.sum() == region.sum(), (rec.source, obj)  # nothing outside the box
    with pytest.raises(BadInput):
        make_shapes_dataset(tmp_path / "bad", n=1)


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    return subprocess.run(
        [sys.executable, "-m", "vlmtui", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=120,
    )


def test_cli_demo_data_then_a_bad_dataset_exits_2_with_one_line(tmp_path, qwen2_vl_dir):
    out = tmp_path / "shapes"
    done = _cli("demo", "data", str(out), "--n", "6", "--seed", "3")
    assert done.returncode == 0, done.stderr
    assert len((out / "train.jsonl").read_text().splitlines()) == 5
    assert len((out / "val.jsonl").read_text().splitlines()) == 1
    lines = (out / "train.jsonl").read_text().splitlines()
    row = json.loads(lines[1])
    row["objects"][0]["bbox"] = [60, 5, 10, 20]
    lines[1] = json.dumps(row)
    (out / "train.jsonl").write_text("\n".join(lines) + "\n")
    bad = _cli(
        "train",
        "--recipe",
        "r2-vision-only",
        "--model",
        str(qwen2_vl_dir),
        "--data",
        str(out),
        "--output",
        str(tmp_path / "run"),
        "--gpu",
        "cpu",
        "--max-steps",
        "1",
    )
    assert bad.returncode == 2, bad.stderr
    assert bad.stderr.count("\n") == 1, bad.stderr
    assert "Traceback" not in bad.stderr
    assert f"{out / 'train.jsonl'}:2: objects[0]: bbox x2 < x1" in bad.stderr
    small = _cli("demo", "data", str(tmp_path / "x"), "--n", "1")
    assert small.returncode == 2 and small.stderr.count("\n") == 1, small.stderr
