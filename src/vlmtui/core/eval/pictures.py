"""Pictures of what a run predicts: gold and predicted boxes on the image, and the same image
from several runs side by side (`eval --save-images`, `compare --save-images`).

Small images are upscaled (nearest neighbour, so pixels stay sharp) to at least `MIN_SIDE`.
Gold and predicted boxes have two fixed styles that read on any object colour: gold is a
solid white line, predictions a dashed magenta line, both with a black edge; labels sit on a
filled box of the style's colour; a legend strip explains the styles under the image.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlmtui.core.errors import BadInput

MIN_SIDE = 448
DEFAULT_PICTURES = 8
"""`eval RUN` draws this many of its first images into the run dir (`--pictures`)."""
GOLD = (255, 255, 255)
PRED = (255, 0, 200)
EDGE = (0, 0, 0)
LEGEND_H = 22
DASH = 8


@dataclass(frozen=True)
class Box:
    label: str
    xyxy: tuple[float, float, float, float]


@dataclass(frozen=True)
class Picture:
    """One picture the run's last eval drew (gold and predicted boxes on an image)."""

    path: str
    """Where it is on the run's host."""
    gold: int | None = None
    pred: int | None = None
    """Box counts, when eval.json lists them."""

    @property
    def name(self) -> str:
        return self.path.rpartition("/")[2]


def _font(size: int) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one bitmap size only
        return ImageFont.load_default()


def _dashed(draw: Any, xyxy: Sequence[float], color: tuple[int, int, int], width: int) -> None:
    x1, y1, x2, y2 = xyxy
    for a, b, horizontal in (((x1, y1), (x2, y1), True), ((x1, y2), (x2, y2), True),
                             ((x1, y1), (x1, y2), False), ((x2, y1), (x2, y2), False)):  # fmt: skip
        start, end = (a[0], b[0]) if horizontal else (a[1], b[1])
        pos = start
        while pos < end:
            stop = min(pos + DASH, end)
            seg = [(pos, a[1]), (stop, a[1])] if horizontal else [(a[0], pos), (a[0], stop)]
            draw.line(seg, fill=EDGE, width=width + 2)
            draw.line(seg, fill=color, width=width)
            pos += 2 * DASH


def _label(draw: Any, xy: tuple[float, float], text: str, color: tuple[int, int, int]) -> None:
    """A label on a filled background, moved inside the picture: a predicted box may run past
    the image's edge, and its label must still be read."""
    font = _font(12)
    width, height = draw.im.size
    left, top, right, bottom = draw.textbbox(xy, text, font=font)
    dx = max(3 - left, min(0, width - 3 - right))
    dy = max(2 - top, min(0, height - 2 - bottom))
    xy = (xy[0] + dx, xy[1] + dy)
    left, top, right, bottom = left + dx, top + dy, right + dx, bottom + dy
    draw.rectangle([left - 2, top - 1, right + 2, bottom + 1], fill=color, outline=EDGE)
    draw.text(xy, text, fill=EDGE, font=font)


def annotate(image: Any, gold: Sequence[Box], pred: Sequence[Box], title: str = "") -> Any:
    """A new RGB image: `image` upscaled, boxes drawn, a legend strip (and title) below."""
    from PIL import Image, ImageDraw

    src = image.convert("RGB")
    scale = max(1, -(-MIN_SIDE // max(1, min(src.size))))
    img = src.resize((src.width * scale, src.height * scale), Image.Resampling.NEAREST)
    draw = ImageDraw.Draw(img)
    for b in gold:
        xyxy = [v * scale for v in b.xyxy]
        draw.rectangle(xyxy, outline=EDGE, width=4)
        draw.rectangle([v + (1 if i < 2 else -1) for i, v in enumerate(xyxy)], outline=GOLD,
                       width=2)  # fmt: skip
        _label(draw, (xyxy[0] + 3, xyxy[1] + 3), b.label, GOLD)
    for b in pred:
        xyxy = [v * scale for v in b.xyxy]
        _dashed(draw, xyxy, PRED, 2)
        _label(draw, (xyxy[0] + 3, max(0.0, xyxy[3] - 17)), b.label, PRED)
    out = Image.new("RGB", (img.width, img.height + LEGEND_H), (255, 255, 255))
    out.paste(img, (0, 0))
    legend = ImageDraw.Draw(out)
    y = img.height + 4
    legend.rectangle([4, y, 28, y + 14], fill=(128, 128, 128))
    legend.rectangle([6, y + 2, 26, y + 12], outline=EDGE, width=4)
    legend.rectangle([7, y + 3, 25, y + 11], outline=GOLD, width=2)
    legend.text((32, y), "gold", fill=EDGE, font=_font(12))
    _dashed(legend, [80, y + 2, 100, y + 12], PRED, 2)
    legend.text((106, y), "predicted", fill=EDGE, font=_font(12))
    if title:
        legend.text((190, y), title, fill=EDGE, font=_font(12))
    return out


def save_images(
    records: Sequence[Any], answers: Sequence[Any], out_dir: Path, limit: int | None = None
) -> list[Path]:
    """Each record's image (the first `limit`) with its gold and the answer's predicted
    boxes (`eval`)."""
    from PIL import Image

    out_dir = _out_dir(out_dir)
    paths = []
    pairs = list(zip(records, answers, strict=True))[:limit]
    for i, (rec, a) in enumerate(pairs):
        gold = [Box(o.label, tuple(o.bbox)) for o in rec.objects]
        pred = [Box(b.label, (b.x1, b.y1, b.x2, b.y2)) for b in a.parse.boxes]
        with Image.open(rec.image_path) as src:
            img = annotate(src, gold, pred)
        path = out_dir / f"{i:04d}_{Path(rec.image_path).stem}.png"
        img.save(path)
        paths.append(path)
    return paths


def pictures_of(run_dir: str, ev: dict[str, Any] | None) -> tuple[Picture, ...]:
    """The pictures eval.json's `pictures` lists, as `save_eval_pictures` wrote it (`dir`
    relative to the run dir, or absolute); a malformed entry lists none rather than failing
    the reader."""
    listed = (ev or {}).get("pictures")
    if not isinstance(listed, dict) or not isinstance(listed.get("dir"), str):
        return ()
    where = posixpath.join(run_dir, listed["dir"])
    out = []
    for f in listed.get("files") or ():
        if isinstance(f, dict) and isinstance(f.get("file"), str) and "/" not in f["file"]:
            gold, pred = f.get("gold"), f.get("pred")
            out.append(Picture(
                posixpath.join(where, f["file"]),
                gold if isinstance(gold, int) else None,
                pred if isinstance(pred, int) else None,
            ))  # fmt: skip
    return tuple(out)


def save_eval_pictures(
    records: Sequence[Any], answers: Sequence[Any], out_dir: Path, listed_dir: str,
    limit: int | None, clear: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """Draw the pictures and describe them for eval.json's `pictures`: `dir` as `listed_dir`
    (relative to the run dir, or absolute) and per file its source image and box counts.
    `clear`: pictures a previous eval left in `out_dir` go first, so the folder matches."""
    if clear:
        for old in Path(out_dir).glob("[0-9][0-9][0-9][0-9]_*.png"):
            old.unlink(missing_ok=True)
    paths = save_images(records, answers, out_dir, limit)
    files = [
        {"file": p.name, "image": str(rec.image_path), "gold": len(rec.objects),
         "pred": len(a.parse.boxes)}
        for p, rec, a in zip(paths, records, answers, strict=False)
    ]  # fmt: skip
    return {"dir": listed_dir, "files": files}


def _out_dir(out_dir: Path) -> Path:
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BadInput(f"--save-images: cannot create {out_dir}: {exc}") from None
    return out_dir


def _predictions(run_dir: Path) -> dict[str, list[Box]]:
    """image path -> predicted boxes, from a run's eval_predictions.jsonl."""
    path = run_dir / "eval_predictions.jsonl"
    if not path.is_file():
        raise BadInput(f"{run_dir}: no eval_predictions.jsonl (run `vlmtui eval` on it first)")
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        out[row["image"]] = [Box(b["label"], tuple(b["bbox"])) for b in row.get("boxes", [])]
    return out


def save_comparison(
    runs: Sequence[tuple[str, Path]], gold: dict[str, list[Box]], out_dir: Path, limit: int = 16
) -> list[Path]:
    """For each image every run evaluated (at most `limit`), one picture with a panel per run
    (`compare --save-images`). `runs`: (name, run dir); `gold`: image path -> gold boxes."""
    from PIL import Image

    out_dir = _out_dir(out_dir)
    preds = [(name, _predictions(d)) for name, d in runs]
    common = [img for img in preds[0][1] if all(img in p for _, p in preds[1:])]
    paths = []
    for i, image in enumerate(common[:limit]):
        with Image.open(image) as src:
            panels = [annotate(src, gold.get(image, []), p[image], name) for name, p in preds]
        sheet = Image.new("RGB", (sum(p.width for p in panels) + 8 * (len(panels) - 1),
                                  max(p.height for p in panels)), (255, 255, 255))  # fmt: skip
        x = 0
        for panel in panels:
            sheet.paste(panel, (x, 0))
            x += panel.width + 8
        path = out_dir / f"{i:04d}_{Path(image).stem}.png"
        sheet.save(path)
        paths.append(path)
    return paths
