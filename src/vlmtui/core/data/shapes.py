"""Synthetic detection data: coloured shapes on plain backgrounds with exact boxes.

Why: tests, benchmarks and the app's embedded default need a dataset that is made offline,
deterministically, in a second, and whose boxes are right to the pixel.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vlmtui.core.errors import BadInput

COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 200, 30),
    "purple": (140, 60, 180),
    "orange": (240, 130, 20),
}
SHAPES = ("square", "circle", "triangle")


def _draw_shape(draw: Any, shape: str, box: tuple[int, int, int, int], rgb: Any) -> None:
    """Draw so that the shape's pixels span exactly [x1, x2) x [y1, y2)."""
    x1, y1, x2, y2 = box
    if shape == "square":
        draw.rectangle([x1, y1, x2 - 1, y2 - 1], fill=rgb)
    elif shape == "circle":
        draw.ellipse([x1, y1, x2 - 1, y2 - 1], fill=rgb)
    else:
        draw.polygon([(x1, y2 - 1), (x2 - 1, y2 - 1), ((x1 + x2 - 1) // 2, y1)], fill=rgb)


def _overlaps(a: Sequence[int], b: Sequence[int], gap: int = 2) -> bool:
    return not (
        a[2] + gap <= b[0] or b[2] + gap <= a[0] or a[3] + gap <= b[1] or b[3] + gap <= a[1]
    )


def _shape_image(rng: Any, size: tuple[int, int]) -> tuple[Any, list[dict[str, Any]]]:
    from PIL import Image, ImageDraw

    w, h = size
    bg = tuple(rng.randint(200, 250) for _ in range(3))
    img = Image.new("RGB", (w, h), bg)
    draw = ImageDraw.Draw(img)
    boxes: list[tuple[int, int, int, int]] = []
    objects = []
    lo, hi = max(8, min(w, h) // 7), max(10, min(w, h) // 2)
    for _ in range(rng.randint(1, 3)):
        for _attempt in range(20):
            side = rng.randint(lo, hi)
            sw = side if rng.random() < 0.5 else rng.randint(lo, hi)
            x1, y1 = rng.randint(0, w - sw), rng.randint(0, h - side)
            box = (x1, y1, x1 + sw, y1 + side)
            if not any(_overlaps(box, b) for b in boxes):
                break
        else:
            continue
        shape = rng.choice(SHAPES)
        colour = rng.choice(sorted(COLOURS))
        _draw_shape(draw, shape, box, COLOURS[colour])
        boxes.append(box)
        objects.append({"label": f"{colour} {shape}", "bbox": list(box)})
    return img, objects


def make_shapes_dataset(
    out_dir: Path, n: int = 64, seed: int = 0, size: tuple[int, int] = (112, 112)
) -> Path:
    """Write `n` synthetic images of coloured shapes with exact boxes + train/val JSONL.

    Deterministic for a given (n, seed, size). Every 5th image goes to `val.jsonl` (~80/20).
    Boxes are tight: a shape's pixels span exactly [x1, x2) x [y1, y2).
    """
    import random

    if n < 2:
        raise BadInput(f"--n must be at least 2 (one train and one val image), got {n}")
    if min(size) < 28:
        raise BadInput(f"image size must be at least 28x28, got {size[0]}x{size[1]}")
    out_dir = Path(out_dir)
    images_dir = out_dir / "images"
    try:
        images_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BadInput(f"{out_dir}: cannot create: {exc}") from None
    rng = random.Random(seed)
    lines: dict[str, list[str]] = {"train": [], "val": []}
    for i in range(n):
        img, objects = _shape_image(rng, size)
        name = f"images/{i:05d}.png"
        img.save(out_dir / name)
        split = "val" if i % 5 == 4 or (n < 5 and i == n - 1) else "train"
        lines[split].append(json.dumps({"image": name, "objects": objects}))
    for split, rows in lines.items():
        (out_dir / f"{split}.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return out_dir
