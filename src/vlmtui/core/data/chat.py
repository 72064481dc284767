"""Chat rows for detection training: the boxes written in each family's format, the prompt.

Why a module of its own: this is the one place that decides how an answer looks (box format,
coordinate space, the grounding prompt). Training writes it and evaluation mirrors it
(`eval.boxparse` reads it back, `eval.evaluate` reuses the user turn), so it is kept apart
from loading and validating annotation files in `datasets`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from vlmtui.core.data.datasets import DetectionObject, DetectionRecord
from vlmtui.core.errors import BadInput
from vlmtui.core.families import Family

GROUNDING_PROMPT = "Detect every object in the image. Report each with its label and bounding box."


def _image_params(processor_or_params: Any) -> tuple[int, int, int]:
    """(factor, min_pixels, max_pixels) from a processor, an image processor or a dict."""
    src = processor_or_params
    src = getattr(src, "image_processor", src)
    if isinstance(src, dict):
        get = src.get
        size = src.get("size") or {}
    else:

        def get(key: str, default: Any = None) -> Any:
            return getattr(src, key, default)

        size = getattr(src, "size", None) or {}
    size = dict(size) if not isinstance(size, dict) else size
    patch = int(get("patch_size", 14))
    merge = int(get("merge_size", 2))
    min_pixels = get("min_pixels") or size.get("shortest_edge") or size.get("min_pixels")
    max_pixels = get("max_pixels") or size.get("longest_edge") or size.get("max_pixels")
    if not min_pixels or not max_pixels:
        raise BadInput("image processor has no min_pixels/max_pixels (size) settings")
    return patch * merge, int(min_pixels), int(max_pixels)


def resized_size(width: int, height: int, processor_or_params: Any) -> tuple[int, int]:
    """(width, height) the processor resizes an image to (Qwen's `smart_resize`).

    Accepts a processor, its image processor, or a dict with `patch_size`, `merge_size`,
    `min_pixels`, `max_pixels`. Qwen2.5-VL's boxes are in these pixels.
    """
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

    factor, min_pixels, max_pixels = _image_params(processor_or_params)
    h, w = smart_resize(height, width, factor=factor, min_pixels=min_pixels, max_pixels=max_pixels)
    return w, h


def _norm1000(v: float, size: int) -> int:
    """A pixel coordinate as round(v / size * 1000), clamped to 0..1000 (Qwen2-VL, Qwen3-VL)."""
    return min(1000, max(0, round(v / size * 1000)))


def format_boxes(
    objects: Iterable[DetectionObject],
    family: Family,
    width: int,
    height: int,
    resized_w: int,
    resized_h: int,
) -> str:
    """The assistant's answer for `objects`, in the family's own box format.

    Qwen2-VL (`qwen2`): `<|object_ref_start|>label<|object_ref_end|><|box_start|>(x1,y1),(x2,y2)
    <|box_end|>` per object, no separator, coordinates round(v / size * 1000) in 0..1000 of the
    original image. Qwen2.5-VL (`qwen2.5`): one-line JSON `[{"bbox_2d": [x1, y1, x2, y2],
    "label": "..."}]`, integer pixels of the resized image. Qwen3-VL / Qwen3.5 (`qwen3`): the
    same JSON with Qwen2-VL's 0..1000 coordinates (the resize does not matter). No objects: ""
    (Qwen2-VL) or "[]" (the JSON formats).
    """
    objects = list(objects)
    if family.box_format == "qwen2":
        parts = []
        for obj in objects:
            x1, y1, x2, y2 = obj.bbox
            parts.append(
                f"<|object_ref_start|>{obj.label}<|object_ref_end|><|box_start|>"
                f"({_norm1000(x1, width)},{_norm1000(y1, height)}),"
                f"({_norm1000(x2, width)},{_norm1000(y2, height)})<|box_end|>"
            )
        return "".join(parts)
    if family.box_format == "qwen3":
        rows = [
            {
                "bbox_2d": [
                    _norm1000(obj.bbox[0], width),
                    _norm1000(obj.bbox[1], height),
                    _norm1000(obj.bbox[2], width),
                    _norm1000(obj.bbox[3], height),
                ],
                "label": obj.label,
            }
            for obj in objects
        ]
        return json.dumps(rows, ensure_ascii=False)
    if family.box_format == "qwen2.5":
        sx, sy = resized_w / width, resized_h / height

        def px(v: float, scale: float, limit: int) -> int:
            return min(limit, max(0, round(v * scale)))

        rows = []
        for obj in objects:
            x1, y1, x2, y2 = obj.bbox
            box = [px(x1, sx, resized_w), px(y1, sy, resized_h)]
            box += [px(x2, sx, resized_w), px(y2, sy, resized_h)]
            rows.append({"bbox_2d": box, "label": obj.label})
        return json.dumps(rows, ensure_ascii=False)
    raise BadInput(f"unknown box format {family.box_format!r}")


def build_conversation(
    record: DetectionRecord, family: Family, image_size_for_boxes: tuple[int, int]
) -> list[dict[str, Any]]:
    """Chat messages for one record: user = image + grounding prompt, assistant = boxes.

    `image_size_for_boxes` is the (width, height) the processor resizes this image to
    (`resized_size`); only Qwen2.5-VL's absolute-pixel format uses it. No system turn: the
    chat template adds Qwen's default one, exactly as at inference.
    """
    rw, rh = image_size_for_boxes
    answer = format_boxes(record.objects, family, record.width, record.height, rw, rh)
    return [
        {
            "role": "user",
            "content": [{"type": "image"}, {"type": "text", "text": GROUNDING_PROMPT}],
        },
        {"role": "assistant", "content": [{"type": "text", "text": answer}]},
    ]


def to_trl_dataset(records: Sequence[DetectionRecord], family: Family, processor: Any) -> Any:
    """A `datasets.Dataset` of TRL VLM rows `{"images": [path], "messages": [...], "source"}`.

    Images stay paths, decoded by the collator through `images.open_image`, so a file that
    breaks mid-run is reported with its annotation row (`source`), not as a bare OSError.
    """
    import datasets

    if not records:
        raise BadInput("no records to train on")
    rows = []
    for rec in records:
        size = resized_size(rec.width, rec.height, processor)
        rows.append(
            {
                "images": [str(rec.image_path)],
                "messages": build_conversation(rec, family, size),
                "source": rec.source,
            }
        )
    list_type = getattr(datasets, "List", None) or datasets.Sequence
    text = datasets.Value("string")
    features = datasets.Features(
        {
            "images": list_type(text),
            "messages": list_type(
                {"role": text, "content": list_type({"type": text, "text": text})}
            ),
            "source": text,
        }
    )
    return datasets.Dataset.from_list(rows, features=features)
