"""Detection datasets: loading (JSONL / COCO), validation, train/val splits.

Why this shape: records are checked when loaded (not mid-training), and every problem names
the file and line, because a bad box found after an hour of training is an hour lost. How
records become chat rows (box formats, the prompt) lives in `chat`.

JSONL: one record per line, `{"image": "rel/path.png", "objects": [{"label": "red square",
"bbox": [x1, y1, x2, y2]}]}`, pixels, image path relative to the JSONL file.
COCO: `images` / `annotations` / `categories`, bbox `[x, y, w, h]`, `file_name` relative to
the JSON file (or to an `images/` folder beside it).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from vlmtui.core.data.boxcoords import ROW_FIELD, declared_normalized, to_pixels
from vlmtui.core.errors import BadInput

SPLITS = ("train", "val")
VAL_PERCENT = 10
# Boxes may overshoot the image by this much (float rounding in exported annotations); they
# are clamped. Anything further out is an error.
EDGE_TOLERANCE = 1.0


@dataclass(frozen=True)
class DetectionObject:
    """One labelled box, pixels of the original image, `x1 <= x2`, `y1 <= y2`."""

    label: str
    bbox: tuple[float, float, float, float]


@dataclass(frozen=True)
class DetectionRecord:
    """One image and its objects. `source` is `file:line` (or `file: image N`) for messages."""

    image_path: Path
    width: int
    height: int
    objects: tuple[DetectionObject, ...]
    source: str = ""


# ---------------------------------------------------------------- loading and validation


def _image_size(path: Path, where: str) -> tuple[int, int]:
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise BadInput(f"{where}: image file not found: {path}")
    try:
        with Image.open(path) as img:
            return img.size
    except (UnidentifiedImageError, OSError) as exc:
        raise BadInput(f"{where}: cannot read image {path}: {exc}") from None


def _check_box(raw: Any, width: int, height: int, where: str) -> tuple[float, float, float, float]:
    """Validate an [x1, y1, x2, y2] pixel box against the image; clamp tiny overshoots."""
    if (
        not isinstance(raw, (list, tuple))
        or len(raw) != 4
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in raw)
        or not all(math.isfinite(v) for v in raw)
    ):
        raise BadInput(f"{where}: bbox must be 4 numbers [x1, y1, x2, y2], got {raw!r}")
    x1, y1, x2, y2 = (float(v) for v in raw)
    if x2 < x1:
        raise BadInput(f"{where}: bbox x2 < x1 ({x2:g} < {x1:g})")
    if y2 < y1:
        raise BadInput(f"{where}: bbox y2 < y1 ({y2:g} < {y1:g})")
    tol = EDGE_TOLERANCE
    if x1 < -tol or y1 < -tol or x2 > width + tol or y2 > height + tol:
        raise BadInput(
            f"{where}: bbox [{x1:g}, {y1:g}, {x2:g}, {y2:g}] is outside the {width}x{height} image"
        )
    return (max(0.0, x1), max(0.0, y1), min(float(width), x2), min(float(height), y2))


def _parse_jsonl_line(line: str, base: Path, where: str) -> DetectionRecord:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise BadInput(f"{where}: bad JSON: {exc.msg} (column {exc.colno})") from None
    except RecursionError:
        raise BadInput(f"{where}: bad JSON: nested too deeply") from None
    if not isinstance(row, dict):
        raise BadInput(f"{where}: expected a JSON object, got {type(row).__name__}")
    for key in ("image", "objects"):
        if key not in row:
            raise BadInput(f"{where}: missing key {key!r}")
    if not isinstance(row["image"], str) or not row["image"]:
        raise BadInput(f"{where}: 'image' must be a non-empty path string")
    if not isinstance(row["objects"], list):
        raise BadInput(f"{where}: 'objects' must be a list")
    image_path = (base / row["image"]).resolve()
    width, height = _image_size(image_path, where)
    normalized = declared_normalized(row, where)
    objects = []
    for i, obj in enumerate(row["objects"]):
        here = f"{where}: objects[{i}]"
        if not isinstance(obj, dict):
            raise BadInput(f"{here}: expected an object with 'label' and 'bbox'")
        for key in ("label", "bbox"):
            if key not in obj:
                raise BadInput(f"{here}: missing key {key!r}")
        if not isinstance(obj["label"], str) or not obj["label"].strip():
            raise BadInput(f"{here}: 'label' must be a non-empty string")
        raw = to_pixels(obj["bbox"], width, height) if normalized else obj["bbox"]
        box = _check_box(raw, width, height, here)
        objects.append(DetectionObject(obj["label"].strip(), box))
    return DetectionRecord(image_path, width, height, tuple(objects), where)


def load_jsonl(path: Path) -> list[DetectionRecord]:
    """Records of a JSONL file; blank lines are skipped. Errors name `file:line`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"{path}: cannot read: {exc}") from None
    records = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            records.append(_parse_jsonl_line(line, path.parent, f"{path}:{lineno}"))
    return records


def _coco_image_base(path: Path, file_name: str) -> Path:
    direct = path.parent / file_name
    if direct.exists():
        return direct
    for alt in (path.parent / "images" / file_name, path.parent.parent / "images" / file_name):
        if alt.exists():
            return alt
    return direct


def _read_coco(path: Path) -> tuple[dict[str, Any], dict[Any, str]]:
    """The parsed COCO object (its three lists checked) and category id -> name."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise BadInput(f"{path}:{exc.lineno}: bad JSON: {exc.msg}") from None
    except RecursionError:
        raise BadInput(f"{path}: bad JSON: nested too deeply") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"{path}: cannot read: {exc}") from None
    if not isinstance(data, dict):
        raise BadInput(f"{path}: COCO file must be a JSON object")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise BadInput(f"{path}: COCO file needs a list {key!r}")
    categories = {}
    for i, cat in enumerate(data["categories"]):
        where = f"{path}: categories[{i}]"
        if not isinstance(cat, dict) or "id" not in cat or "name" not in cat:
            raise BadInput(f"{where}: needs 'id' and 'name'")
        name = cat["name"]
        if not isinstance(name, str) or not name.strip():
            raise BadInput(f"{where}: 'name' must be a non-empty string, got {name!r}")
        categories[_coco_id(f"{where}.id", cat["id"])] = name.strip()
    return data, categories


def _coco_id(where: str, value: Any) -> int | str:
    """A COCO id: an integer or a string (a list or table cannot be looked up)."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise BadInput(f"{where}: expected an integer or string id, got {value!r}")
    return value


def _coco_images(
    path: Path, entries: list[Any]
) -> tuple[dict[Any, tuple[Path, int, int, str]], list[Any]]:
    """Image id -> (path, width, height, where), sizes checked, and the ids in file order."""
    images: dict[Any, tuple[Path, int, int, str]] = {}
    order = []
    for i, img in enumerate(entries):
        where = f"{path}: images[{i}]"
        if not isinstance(img, dict) or "id" not in img or "file_name" not in img:
            raise BadInput(f"{where}: needs 'id' and 'file_name'")
        if _coco_id(f"{where}.id", img["id"]) in images:
            raise BadInput(f"{where}: id {img['id']!r} repeats an earlier image's")
        image_path = _coco_image_base(path, str(img["file_name"])).resolve()
        width, height = _image_size(image_path, where)
        if ("width" in img and img["width"] != width) or (
            "height" in img and img["height"] != height
        ):
            raise BadInput(
                f"{where}: declared size {img.get('width')}x{img.get('height')} differs from "
                f"the file's {width}x{height}"
            )
        images[img["id"]] = (image_path, width, height, where)
        order.append(img["id"])
    return images, order


def _coco_object(
    ann: Any,
    where: str,
    images: dict[Any, tuple[Path, int, int, str]],
    categories: dict[Any, str],
) -> DetectionObject:
    """One annotation as a checked pixel xyxy object."""
    if not isinstance(ann, dict):
        raise BadInput(f"{where}: expected an object")
    for key in ("image_id", "category_id", "bbox"):
        if key not in ann:
            raise BadInput(f"{where}: missing key {key!r}")
    if _coco_id(f"{where}.image_id", ann["image_id"]) not in images:
        raise BadInput(f"{where}: image_id {ann['image_id']!r} is not in 'images'")
    if _coco_id(f"{where}.category_id", ann["category_id"]) not in categories:
        raise BadInput(f"{where}: category_id {ann['category_id']!r} is not in 'categories'")
    raw = ann["bbox"]
    numbers = isinstance(raw, list) and len(raw) == 4
    if not numbers or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in raw):
        raise BadInput(f"{where}: bbox must be 4 numbers [x, y, w, h], got {raw!r}")
    xyxy = [raw[0], raw[1], raw[0] + raw[2], raw[1] + raw[3]]
    _, width, height, _ = images[ann["image_id"]]
    return DetectionObject(categories[ann["category_id"]], _check_box(xyxy, width, height, where))


def load_coco(path: Path) -> list[DetectionRecord]:
    """Records of a COCO instances JSON (bbox xywh -> xyxy). One record per listed image."""
    path = Path(path)
    data, categories = _read_coco(path)
    images, order = _coco_images(path, data["images"])
    objects: dict[Any, list[DetectionObject]] = {k: [] for k in images}
    for i, ann in enumerate(data["annotations"]):
        obj = _coco_object(ann, f"{path}: annotations[{i}]", images, categories)
        objects[ann["image_id"]].append(obj)
    return [
        DetectionRecord(images[k][0], images[k][1], images[k][2], tuple(objects[k]), images[k][3])
        for k in order
    ]


def load_records(path: Path) -> list[DetectionRecord]:
    """Records of one annotation file: `.jsonl` is JSONL, `.json` is COCO."""
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"{path}: dataset file not found")
    if path.suffix == ".jsonl":
        return load_jsonl(path)
    if path.suffix == ".json":
        return load_coco(path)
    raise BadInput(f"{path}: unknown dataset format (expected .jsonl or COCO .json)")


def _split_key(record: DetectionRecord, base: str) -> int:
    rel = os.path.relpath(record.image_path, base) if base else str(record.image_path)
    return int(hashlib.sha1(rel.replace(os.sep, "/").encode()).hexdigest()[:12], 16)


def split_records(
    records: Sequence[DetectionRecord],
) -> tuple[list[DetectionRecord], list[DetectionRecord]]:
    """Deterministic ~90/10 train/val split by a stable hash of each image path.

    The hash uses paths relative to the images' common folder, so moving the dataset does
    not change the split. With 2+ records, val is never empty (the smallest hash goes there).
    """
    if not records:
        return [], []
    base = os.path.commonpath([str(r.image_path.parent) for r in records])
    keys = [_split_key(r, base) for r in records]
    is_val = [k % 100 < VAL_PERCENT for k in keys]
    if not any(is_val) and len(records) >= 2:
        is_val[keys.index(min(keys))] = True
    train = [r for r, v in zip(records, is_val, strict=True) if not v]
    val = [r for r, v in zip(records, is_val, strict=True) if v]
    return train, val


def load_split(
    data: Path, split: str = "train", *, allow_normalized: bool = False
) -> list[DetectionRecord]:
    """Records of one split of a dataset directory or single annotation file.

    A directory uses `split.jsonl` or `split.json`; if it has neither but holds exactly one
    `.jsonl`/`.json` file, that file is split deterministically (see `split_records`), as is
    a single file given directly. Boxes all within [0, 1] are refused unless
    `allow_normalized` (then scaled to pixels; see `boxcoords`).
    """
    return check_pixel_boxes(_load_split(Path(data), split), allow_normalized)


def _load_split(data: Path, split: str) -> list[DetectionRecord]:
    if split not in SPLITS:
        raise BadInput(f"unknown split {split!r} (known: {', '.join(SPLITS)})")
    if data.is_dir():
        for suffix in (".jsonl", ".json"):
            candidate = data / f"{split}{suffix}"
            if candidate.is_file():
                records = load_records(candidate)
                break
            if candidate.exists():
                raise BadInput(f"{candidate}: not a file (expected the {split} annotations)")
        else:
            files = sorted(p for p in data.iterdir() if p.suffix in (".jsonl", ".json"))
            # Splitting one file is only safe when the folder has no per-split files at all;
            # otherwise val could overlap train.jsonl.
            if len(files) != 1 or files[0].stem in SPLITS:
                raise BadInput(
                    f"{data}: no {split}.jsonl or {split}.json"
                    + (f" (found {', '.join(p.name for p in files)})" if files else "")
                )
            return _pick(split_records(load_records(files[0])), split)
    elif data.is_file():
        return _pick(split_records(load_records(data)), split)
    else:
        raise BadInput(f"{data}: dataset not found")
    if not records:
        raise BadInput(f"{candidate}: no records")
    return records


def _pick(
    parts: tuple[list[DetectionRecord], list[DetectionRecord]], split: str
) -> list[DetectionRecord]:
    records = parts[SPLITS.index(split)]
    if not records:
        raise BadInput(f"the dataset has no records for the {split} split")
    return records


def _all_within_unit(records: Sequence[DetectionRecord]) -> bool:
    boxes = [o.bbox for r in records for o in r.objects]
    return bool(boxes) and all(0.0 <= v <= 1.0 for box in boxes for v in box)


def check_pixel_boxes(
    records: list[DetectionRecord], allow_normalized: bool
) -> list[DetectionRecord]:
    """Refuse a dataset whose boxes all lie in [0, 1], or scale it when allowed."""
    if not _all_within_unit(records):
        return records
    if not allow_normalized:
        first = next(r for r in records if r.objects)
        box = ", ".join(f"{v:g}" for v in first.objects[0].bbox)
        raise BadInput(
            f"{first.source}: every box in the dataset lies within [0, 1] (first: [{box}]): "
            "these look like normalised coordinates, but boxes are pixels; scale them, mark "
            f'the rows "{ROW_FIELD}": true, or pass --allow-normalized'
        )
    return [
        replace(
            r,
            objects=tuple(
                replace(o, bbox=tuple(to_pixels(list(o.bbox), r.width, r.height)))
                for o in r.objects
            ),
        )
        for r in records
    ]
