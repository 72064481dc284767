"""Fault suite, data (issue 11 items 9 and 12): broken images and normalised boxes are named
by their annotation row, before step 1 where possible, and in status.json where users look."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from vlmtui.core.errors import BadInput
from vlmtui.core.model.loading import Device

CPU = Device("cpu")


def vlmtui(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vlmtui", *args], capture_output=True, text=True, check=False
    )


def truncate(path: Path) -> None:
    """Cut an image after its header: it opens and reports a size, but cannot be decoded."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.fixture()
def data_copy(shapes_data_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(shapes_data_dir, tmp_path / "data"))


def row_image(data: Path, line: int) -> Path:
    row = json.loads((data / "train.jsonl").read_text().splitlines()[line - 1])
    return (data / row["image"]).resolve()


def test_truncated_image_is_found_before_step_1_and_lands_in_status(
    qwen2_vl_dir: Path, data_copy: Path, tmp_path: Path
) -> None:
    image = row_image(data_copy, 11)
    truncate(image)
    out = tmp_path / "run"
    # Stands in for `launch`: the launcher writes exactly this pending status before the start.
    out.mkdir()
    (out / "status.json").write_text(json.dumps({"state": "pending", "run_id": "x"}))
    proc = vlmtui(
        "train", "--recipe", "r2-vision-only", "--model", str(qwen2_vl_dir),
        "--data", str(data_copy), "--output", str(out), "--max-steps", "30",
    )  # fmt: skip
    message = f"{data_copy / 'train.jsonl'}:11: cannot read image {image}: image file is truncated"
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"vlmtui: {message}") and proc.stderr.count("\n") == 1
    assert "[vlmtui] checking 13 images" in proc.stdout
    status = json.loads((out / "status.json").read_text())
    assert status["state"] == "failed" and status["error"].startswith(message)
    assert status["exit_code"] == 2
    assert not (out / "events.jsonl").exists()  # no step ran


@pytest.mark.slow
def test_image_broken_mid_run_saves_a_checkpoint_and_names_the_row(
    qwen2_vl_dir: Path, data_copy: Path, tmp_path: Path
) -> None:
    from transformers import TrainerCallback

    from vlmtui.core.data.chat import to_trl_dataset
    from vlmtui.core.data.datasets import load_split
    from vlmtui.core.data.images import DataError, validate_images
    from vlmtui.core.recipes.recipe import BUILTIN_RECIPES
    from vlmtui.core.training.checkpoints import incomplete_reason
    from vlmtui.core.training.fitting import FitOptions, fit
    from vlmtui.core.training.prepare import prepare_stage

    records = load_split(data_copy, "train")
    validate_images(records)
    recipe = BUILTIN_RECIPES["r2-vision-only"]
    stage = prepare_stage(qwen2_vl_dir, recipe, CPU)
    rows = to_trl_dataset(records, stage.family, stage.processor)

    class BreakImages(TrainerCallback):
        """The disk goes bad after step 2: every image is cut short."""

        def on_step_end(self, args, state, control, **kw) -> None:
            if state.global_step == 2:
                for rec in records:
                    truncate(rec.image_path)

    options = FitOptions(max_steps=13, callbacks=(BreakImages(),))
    with pytest.raises(DataError) as err:
        fit(stage, recipe, rows, tmp_path, CPU, options)
    match = re.fullmatch(
        rf"{re.escape(str(data_copy / 'train.jsonl'))}:(\d+): cannot read image (\S+): "
        r"image file is truncated.* \(at step (\d+); saved checkpoint-(\d+): fix the file, "
        r"then --resume\)",
        str(err.value),
    )
    assert match, str(err.value)
    line, image, step, saved = match.groups()
    assert Path(image) == row_image(data_copy, int(line))
    assert step == saved and int(step) >= 2
    assert incomplete_reason(tmp_path / "checkpoints" / f"checkpoint-{step}") is None


def test_normalised_boxes_are_refused_naming_the_first_row(
    qwen2_vl_dir: Path, data_copy: Path, tmp_path: Path
) -> None:
    from vlmtui.core.data.datasets import load_split

    train = data_copy / "train.jsonl"
    pixels = load_split(data_copy, "train")
    rows = [json.loads(x) for x in train.read_text().splitlines()]
    for row, rec in zip(rows, pixels, strict=True):
        for obj in row["objects"]:
            x1, y1, x2, y2 = obj["bbox"]
            obj["bbox"] = [x1 / rec.width, y1 / rec.height, x2 / rec.width, y2 / rec.height]
    train.write_text("".join(json.dumps(r) + "\n" for r in rows))
    first = ", ".join(f"{v:g}" for v in rows[0]["objects"][0]["bbox"])

    proc = vlmtui(
        "train", "--recipe", "r2-vision-only", "--model", str(qwen2_vl_dir),
        "--data", str(data_copy), "--output", str(tmp_path / "run"),
    )  # fmt: skip
    assert (proc.returncode, proc.stderr) == (
        2,
        f"vlmtui: {train}:1: every box in the dataset lies within [0, 1] (first: [{first}]): "
        "these look like normalised coordinates, but boxes are pixels; scale them, mark the "
        'rows "normalized": true, or pass --allow-normalized\n',
    )
    with pytest.raises(BadInput):
        load_split(data_copy, "train")

    def close(a: object, b: object) -> bool:
        return all(abs(x - y) < 1e-6 for x, y in zip(a, b, strict=True))  # type: ignore[call-overload]

    allowed = load_split(data_copy, "train", allow_normalized=True)
    assert all(
        close(o.bbox, p.bbox)
        for r, q in zip(allowed, pixels, strict=True)
        for o, p in zip(r.objects, q.objects, strict=True)
    )
    for row in rows:
        row["normalized"] = True
    train.write_text("".join(json.dumps(r) + "\n" for r in rows))
    declared = load_split(data_copy, "train")
    assert [r.objects for r in declared] == [r.objects for r in allowed]
