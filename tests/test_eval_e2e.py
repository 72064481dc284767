"""`vlmtui eval` / `vlmtui compare`: the generate-parse-score path, eval.json, the table.

The fast tests drive `generate_answers` with a stand-in model that "generates" the gold
answer (as `chat.format_boxes` writes it, through the real tokenizer), so the decode, box
mapping and scoring are checked against known boxes; the slow one trains and evaluates the
tiny model through the CLI.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from vlmtui.cli import main
from vlmtui.core.eval.boxparse import ParseResult, PredBox

EVAL_FIELDS = {
    "version",
    "model",
    "recipe",
    "run_dir",
    "base",
    "weights",
    "family",
    "data",
    "split",
    "limit",
    "batch_size",
    "max_new_tokens",
    "device",
    "n_images",
    "metrics",
    "per_label",
    "counts",
    "parse_failures",
    "timing",
    "created",
}
METRIC_FIELDS = {
    "map",
    "map50",
    "recall",
    "mean_iou",
    "precision50",
    "recall50",
    "parse_failure_rate",
}
COUNT_FIELDS = {
    "images",
    "gold_boxes",
    "pred_boxes",
    "matched",
    "unknown_label_preds",
    "truncated_outputs",
    "unparseable_images",
    "images_with_invalid_boxes",
    "candidate_boxes",
    "invalid_boxes",
    "invalid_box_rate",
    "duplicate_boxes",
    "valid_boxes",
    "not_a_box",
    "answer_forms",
    "invalid_by_reason",
}


# ---------------------------------------------------------------- stand-in model


class GoldModel:
    """Answers each prompt with a scripted text, the way `generate` returns token ids."""

    def __init__(self, tokenizer, answers: list[str], eos_id: int) -> None:
        self.tokenizer = tokenizer
        self.answers = list(answers)
        self.device = "cpu"
        self.generation_config = SimpleNamespace(eos_token_id=[eos_id])
        self.eos_id = eos_id
        self.calls: list[dict] = []

    def generate(self, input_ids, attention_mask=None, **kw):
        import torch

        self.calls.append({"padding": attention_mask[:, 0].tolist(), **kw})
        rows = []
        for _ in range(input_ids.shape[0]):
            text = self.answers.pop(0)
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"] + [self.eos_id]
            rows.append(ids[: kw["max_new_tokens"]])
        width = max(len(r) for r in rows)
        pad = self.tokenizer.pad_token_id
        new = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
        return torch.cat([input_ids, new], dim=1)


def _odd_sized_dataset(root: Path) -> Path:
    """Images of different sizes and aspect ratios, so padding and resizing both matter."""
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    (root / "images").mkdir(exist_ok=True)
    rows = []
    specs = [
        ((112, 112), [("red square", [10, 12, 60, 70]), ("blue circle", [70, 5, 110, 40])]),
        ((60, 200), [("red square", [5, 20, 55, 120])]),
        ((300, 90), [("green triangle", [100, 10, 280, 85])]),
        ((90, 90), []),
    ]
    for i, (size, objs) in enumerate(specs):
        Image.new("RGB", size, (230, 230, 230)).save(root / "images" / f"{i}.png")
        objects = [{"label": lab, "bbox": box} for lab, box in objs]
        rows.append(json.dumps({"image": f"images/{i}.png", "objects": objects}))
    (root / "val.jsonl").write_text("\n".join(rows) + "\n")
    return root


@pytest.mark.parametrize("family_name", ["qwen2-vl", "qwen2.5-vl"])
def test_gold_answers_round_trip_to_perfect_scores(family_name, tmp_path):
    from vlmtui.core.data.chat import format_boxes, resized_size
    from vlmtui.core.data.datasets import load_split
    from vlmtui.core.eval.evaluate import generate_answers, score
    from vlmtui.core.families import family_by_name
    from vlmtui.core.model.demo import build_processor

    family = family_by_name(family_name)
    processor = build_processor(family_name)
    tok = processor.tokenizer
    records = load_split(_odd_sized_dataset(tmp_path / "d"), "val")
    answers = []
    for r in records:
        rw, rh = resized_size(r.width, r.height, processor)
        answers.append(format_boxes(r.objects, family, r.width, r.height, rw, rh))
    model = GoldModel(tok, answers, tok.convert_tokens_to_ids("<|im_end|>"))
    seen = []
    tok.padding_side = side = "right"
    out = generate_answers(
        model, processor, family, records, batch_size=3, max_new_tokens=200, on_batch=seen.append
    )
    assert tok.padding_side == side  # left padding only while generating
    assert seen == [3, 1]
    assert model.calls[0]["do_sample"] is False
    assert 0 in model.calls[0]["padding"]  # prompts differ in length: left padded
    assert [a.text for a in out] == answers
    assert all(a.finished for a in out)
    for rec, a in zip(records, out, strict=True):
        assert len(a.parse.boxes) == len(rec.objects)
        for b, o in zip(a.parse.boxes, rec.objects, strict=True):
            assert b.label == o.label
            # rounding to 0-1000 or to integer resized pixels costs at most ~1 original pixel
            scale = max(rec.width, rec.height) / 1000 if family_name == "qwen2-vl" else 1
            tol = max(1.0, scale) + max(rec.width / a.resized[0], rec.height / a.resized[1])
            assert b.xyxy == pytest.approx(o.bbox, abs=tol)
    result = score(records, out)
    assert result["metrics"]["map50"] == pytest.approx(1.0)
    assert result["metrics"]["recall50"] == pytest.approx(1.0)
    assert result["metrics"]["mean_iou"] > 0.9
    assert result["metrics"]["parse_failure_rate"] == 0.0
    assert set(result["metrics"]) == METRIC_FIELDS
    assert set(result["counts"]) == COUNT_FIELDS
    assert set(result["per_label"]) == {"red square", "blue circle", "green triangle"}
    assert result["parse_failures"] == []


def test_truncated_and_garbage_answers_are_counted(tmp_path):
    from vlmtui.core.data.datasets import load_split
    from vlmtui.core.eval.evaluate import generate_answers, score
    from vlmtui.core.families import QWEN2_VL
    from vlmtui.core.model.demo import build_processor

    processor = build_processor("qwen2-vl")
    tok = processor.tokenizer
    records = load_split(_odd_sized_dataset(tmp_path / "d"), "val")
    answers = [
        "<|object_ref_start|>red square<|object_ref_end|><|box_start|>(89,107),(536,625)<|box_end|>"
        "<|object_ref_start|>blue circle<|object_ref_end|><|box_start|>(625,45),(98",
        "I cannot see anything",
        "<|object_ref_start|>green triangle<|object_ref_end|><|box_start|>(1,1),(0,0)<|box_end|>",
        "",
    ]
    model = GoldModel(tok, answers, tok.convert_tokens_to_ids("<|im_end|>"))
    out = generate_answers(model, processor, QWEN2_VL, records, batch_size=4, max_new_tokens=30)
    assert [a.finished for a in out] == [False, True, True, True]  # first hit the cap
    result = score(records, out)
    c = result["counts"]
    assert (c["unparseable_images"], c["truncated_outputs"], c["invalid_boxes"]) == (2, 1, 2)
    assert result["metrics"]["parse_failure_rate"] == pytest.approx(2 / 4)
    assert len(result["parse_failures"]) == 3
    assert result["metrics"]["recall50"] == pytest.approx(1 / 4)


def test_save_images_upscales_and_draws_two_fixed_styles_with_a_legend(tmp_path):
    """The fault: a gold box drawn in green vanished on a green object, and 112 px images were
    too small to read. Gold is white with a black edge, predictions dashed magenta, on any
    object colour; the image is upscaled and a legend strip is added."""
    from PIL import Image

    from vlmtui.core.data.datasets import load_split
    from vlmtui.core.eval.evaluate import Generated
    from vlmtui.core.eval.pictures import GOLD, LEGEND_H, MIN_SIDE, PRED, save_images

    records = load_split(_odd_sized_dataset(tmp_path / "d"), "val")[:1]
    pred = PredBox("red square", 30, 30, 90, 100)
    answers = [Generated("", ParseResult((pred,), 1, 0), (112, 112), True)]
    (path,) = save_images(records, answers, tmp_path / "imgs")
    img = Image.open(path).convert("RGB")
    with Image.open(records[0].image_path) as src:
        w, h = src.size
    scale = -(-MIN_SIDE // min(w, h))
    assert img.size == (w * scale, h * scale + LEGEND_H) and min(img.size) >= MIN_SIDE
    top_edge = [img.getpixel((x, 12 * scale + 1)) for x in range(12 * scale, 58 * scale)]
    assert img.getpixel((40 * scale, 12 * scale)) == (0, 0, 0)  # its black edge
    assert GOLD in top_edge  # gold top edge (10,12)-(60,12), white whatever the object
    bottom = [img.getpixel((x, 100 * scale)) for x in range(32 * scale, 88 * scale)]
    assert PRED in bottom and GOLD not in bottom  # predicted: magenta dashes
    legend = [img.getpixel((x, h * scale + LEGEND_H // 2)) for x in range(img.width)]
    assert PRED in legend and (0, 0, 0) in legend


def test_a_box_past_the_edge_keeps_its_label_inside_the_picture():
    """The fault: a predicted box that ran past the bottom edge put its label below the image,
    where the legend strip covered it."""
    from PIL import Image

    from vlmtui.core.eval.pictures import PRED, Box, annotate

    src = Image.new("RGB", (112, 112), (40, 160, 40))
    out = annotate(src, [], [Box("red square", (80.0, 90.0, 140.0, 150.0))])
    picture = out.crop((0, 0, out.width, 112 * 4))  # without the legend strip
    # the label's magenta fill, wholly inside the picture, near its bottom-right corner
    fill = [
        (x, y)
        for y in range(picture.height - 30, picture.height)
        for x in range(picture.width - 120, picture.width)
        if picture.getpixel((x, y)) == PRED
    ]
    assert len(fill) > 300, "no label fill at the bottom-right corner"
    assert max(x for x, _ in fill) < picture.width - 1
    assert max(y for _, y in fill) < picture.height - 1


# ---------------------------------------------------------------- compare


def _write(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, list):
        path.write_text("".join(json.dumps(e) + "\n" for e in data))
    else:
        path.write_text(json.dumps(data))


def _fake_eval(map_: float) -> dict:
    return {
        "recipe": "x",
        "n_images": 5,
        "metrics": {
            "map": map_,
            "map50": 0.9,
            "recall": 0.6,
            "mean_iou": 0.8,
            "parse_failure_rate": 0.2,
        },
    }


@pytest.fixture
def run_dirs(tmp_path):
    r1 = tmp_path / "run-r1"
    _write(r1 / "run.json", {"recipe": "r1-llm-only", "model": "m", "trainable_params": 1234})
    _write(
        r1 / "events.jsonl",
        [
            {"phase": "training", "stage": 1},
            {"stage": 1, "step": 1, "loss": 2.5, "elapsed_s": 1.0},
            {"stage": 1, "step": 2, "loss": 1.25, "elapsed_s": 2.5},
            {"phase": "saving", "stage": 1},
        ],
    )
    _write(r1 / "eval.json", _fake_eval(0.5))
    r3 = tmp_path / "run-r3"
    _write(
        r3 / "run.json",
        {
            "recipe": "r3-two-stage",
            "stages": [{"dir": str(r3 / "stage1")}, {"dir": str(r3 / "stage2")}],
        },
    )
    _write(r3 / "stage2" / "trainable.json", {"trainable_params": 777})
    _write(
        r3 / "events.jsonl",
        [
            {"stage": 1, "step": 1, "loss": 3.0, "elapsed_s": 4.0},
            {"stage": 1, "summary": {"train_runtime": 10.0}},
            {"stage": 2, "step": 1, "loss": 0.75, "elapsed_s": 3.0},
            {"stage": 2, "summary": {"train_runtime": 5.5}},
        ],
    )
    base = tmp_path / "base"
    _write(base / "eval.json", {**_fake_eval(0.1), "recipe": "base", "model": "m"})
    return r1, r3, base


def test_compare_json_rows(run_dirs, capsys):
    r1, r3, base = run_dirs
    assert main(["compare", str(r1), str(r3), str(base), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["recipe"] for r in rows] == ["r1-llm-only", "r3-two-stage", "base"]
    assert [r["trainable_params"] for r in rows] == [1234, 777, None]
    assert [r["train_time_s"] for r in rows] == [2.5, 15.5, None]
    assert [r["final_loss"] for r in rows] == [1.25, 0.75, None]
    assert [r["map"] for r in rows] == [0.5, None, 0.1]
    assert [r["evaluated"] for r in rows] == [True, False, True]
    assert rows[0]["parse_failure_rate"] == 0.2 and rows[0]["mean_iou"] == 0.8


def test_compare_table(run_dirs, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    r1, r3, base = run_dirs
    assert main(["compare", str(r1), str(r3), str(base)]) == 0
    out = capsys.readouterr().out
    for text in ("run-r1", "r3-two-stage", "base", "1.2K", "777", "15.5s", "1.25", "0.500", "20%"):
        assert text in out


def test_runs_are_found_by_registry_id(run_dirs, tmp_path, capsys):
    import time

    from vlmtui.core.fleet.registry import Registry, RunRecord

    r1 = run_dirs[0]
    reg = Registry()
    common = {"recipe": "r1-llm-only", "gpus": "0", "created": time.time(), "state": "finished"}
    reg.add(RunRecord(id="20250101-abc", host="local", run_dir=str(r1), **common))
    reg.add(RunRecord(id="20250101-xyz", host="gpu2", run_dir="/elsewhere/run", **common))
    assert main(["compare", "20250101-ab", "--json"]) == 0  # unique id prefix
    (row,) = json.loads(capsys.readouterr().out)
    assert (row["run"], row["run_dir"], row["map"]) == ("20250101-ab", str(r1), 0.5)
    assert main(["compare", "20250101-xyz"]) == 2  # run dir lives on another host
    assert main(["compare", "20250101"]) == 2  # ambiguous
    assert main(["compare", "nosuchrun"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert "gpu2" in err[0] and "ambiguous" in err[1] and "unknown run" in err[2]


def test_compare_and_eval_refuse_bad_input(run_dirs, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["compare", str(tmp_path / "nope")]) == 2
    assert main(["compare", str(tmp_path / "empty")]) == 2
    r1 = run_dirs[0]
    assert main(["eval", "--data", str(tmp_path)]) == 2  # neither RUN nor --base
    assert main(["eval", str(r1), "--base", str(r1), "--data", str(tmp_path)]) == 2
    assert main(["eval", "--base", str(r1), "--data", str(tmp_path)]) == 2  # no --output
    assert main(["eval", str(r1), "--data", str(tmp_path / "nope")]) == 2
    data = _odd_sized_dataset(tmp_path / "d")
    assert main(["eval", str(r1), "--data", str(data), "--limit", "0"]) == 2
    assert main(["eval", str(r1), "--data", str(data), "--pictures", "-1"]) == 2
    assert main(["eval", str(r1), "--data", str(data)]) == 2  # not finished: no weights.json
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert all(line.startswith("vlmtui: ") for line in err.strip().splitlines())


# ---------------------------------------------------------------- end to end (slow)


@pytest.mark.slow
def test_train_eval_compare_end_to_end(
    qwen2_vl_dir, shapes_data_dir, tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv("COLUMNS", "200")
    run = tmp_path / "r1"
    argv = ["train", "--recipe", "r1-llm-only", "--model", str(qwen2_vl_dir)]
    argv += ["--data", str(shapes_data_dir), "--output", str(run), "--max-steps", "2"]
    assert main(argv) == 0
    capsys.readouterr()

    imgs = tmp_path / "imgs"
    argv = ["eval", str(run), "--data", str(shapes_data_dir), "--limit", "4", "--json"]
    argv += ["--batch-size", "2", "--max-new-tokens", "24", "--save-images", str(imgs)]
    assert main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    report = json.loads((run / "eval.json").read_text())
    assert printed == report
    assert set(report) >= EVAL_FIELDS
    assert set(report["metrics"]) == METRIC_FIELDS
    assert set(report["counts"]) == COUNT_FIELDS
    assert report["recipe"] == "r1-llm-only" and report["model"] == str(qwen2_vl_dir)
    assert report["family"] == "qwen2-vl" and report["base"] is False
    assert report["weights"] == "adapter"
    n = report["n_images"]
    assert 1 <= n <= 4 and report["counts"]["images"] == n
    assert report["counts"]["gold_boxes"] > 0
    assert 0.0 <= report["metrics"]["parse_failure_rate"] <= 1.0
    assert report["metrics"]["map"] is not None
    assert report["timing"]["total_s"] >= report["timing"]["generate_s"] > 0
    assert len((run / "eval_predictions.jsonl").read_text().splitlines()) == n
    assert len(list(imgs.glob("*.png"))) == n
    # --save-images: every image there, listed for the app by absolute path, none in the run
    assert report["pictures"]["dir"] == str(imgs.resolve())
    listed = report["pictures"]["files"]
    assert sorted(f["file"] for f in listed) == sorted(p.name for p in imgs.glob("*.png"))
    assert sum(f["gold"] for f in listed) == report["counts"]["gold_boxes"]
    assert not (run / "eval_images").exists()

    base_out = tmp_path / "base"
    argv = ["eval", "--base", str(qwen2_vl_dir), "--data", str(shapes_data_dir)]
    argv += ["--output", str(base_out), "--limit", "2", "--max-new-tokens", "8"]
    assert main(argv) == 0
    base = json.loads((base_out / "eval.json").read_text())
    assert base["recipe"] == "base" and base["base"] is True and base["n_images"] <= 2
    # by default the first pictures go into the output dir's eval_images, listed relatively
    drawn = sorted(p.name for p in (base_out / "eval_images").glob("*.png"))
    assert base["pictures"]["dir"] == "eval_images" and len(drawn) == base["n_images"]
    assert [f["file"] for f in base["pictures"]["files"]] == drawn
    assert main([*argv, "--pictures", "1"]) == 0  # a new eval replaces the old pictures
    assert len(list((base_out / "eval_images").glob("*.png"))) == 1
    capsys.readouterr()

    assert main(["compare", str(run), str(base_out), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["recipe"] for r in rows] == ["r1-llm-only", "base"]
    assert rows[0]["final_loss"] is not None and rows[0]["train_time_s"] > 0
    assert rows[0]["trainable_params"] > 0
    assert rows[0]["map"] == report["metrics"]["map"]
    assert main(["compare", str(run), str(base_out)]) == 0
    table = capsys.readouterr().out
    assert "r1-llm-only" in table and "base" in table


def test_compare_save_images_puts_each_runs_picture_side_by_side(tmp_path, capsys):
    from PIL import Image

    from vlmtui.cli import main
    from vlmtui.core.data.datasets import load_split

    data = _odd_sized_dataset(tmp_path / "d")
    records = load_split(data, "val")[:2]
    runs = []
    for name, shift in (("run-a", 0), ("run-b", 20)):
        d = tmp_path / name
        _write(d / "run.json", {"recipe": name, "model": "m"})
        _write(d / "eval.json", {"data": str(data), "split": "val", "metrics": {}})
        preds = [
            {"image": str(r.image_path), "boxes": [{"label": "red square", "score": None,
             "bbox": [10 + shift, 12, 60 + shift, 70]}]}
            for r in records
        ]  # fmt: skip
        _write(d / "eval_predictions.jsonl", preds)
        runs.append(str(d))
    out = tmp_path / "side"
    assert main(["compare", *runs, "--save-images", str(out)]) == 0
    pictures = sorted(out.glob("*.png"))
    assert len(pictures) == 2
    sheet = Image.open(pictures[0])
    with Image.open(records[0].image_path) as src:
        scale = -(-448 // min(src.size))
        panel_w = src.width * scale
    assert sheet.width == 2 * panel_w + 8  # two panels, one per run, same image
    assert "wrote 2 side-by-side images" in capsys.readouterr().err
