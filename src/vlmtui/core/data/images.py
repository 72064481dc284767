"""Reading dataset images so a broken one is named by its annotation row, not found mid-run.

Loading a dataset reads each image's header (size); `validate_images` decodes every image in
full before step 1, because a truncated file has a valid header and used to surface at step
21 as a bare "OSError: image file is truncated" with no file or row. Training opens images
through `open_image`, so a file that breaks after the check still names `file:row`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vlmtui.core.errors import BadInput

if TYPE_CHECKING:
    from vlmtui.core.data.datasets import DetectionRecord

PROGRESS_EVERY_S = 2.0


class DataError(BadInput):
    """A dataset image that cannot be read; the message starts with the annotation `file:row`."""


def open_image(path: str | Path, source: str = "") -> Any:
    """The decoded RGB image at `path`; DataError names `source` (file:row) and the cause."""
    from PIL import Image, UnidentifiedImageError

    where = f"{source}: " if source else ""
    try:
        with Image.open(path) as img:
            img.load()
            return img.convert("RGB") if img.mode != "RGB" else img.copy()
    except FileNotFoundError:
        raise DataError(f"{where}image file not found: {path}") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"{where}cannot read image {path}: {exc}") from None


def check_image(path: Path, size: tuple[int, int], source: str) -> None:
    """Decode `path` in full (cheaply for JPEG) and compare its size with the annotation's."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            if img.size != size:
                raise DataError(
                    f"{source}: image {path} is {img.size[0]}x{img.size[1]}, "
                    f"was {size[0]}x{size[1]} when the dataset was read"
                )
            if img.format == "JPEG":
                # 1/8-scale decode for speed; the whole entropy-coded stream is still read.
                img.draft(img.mode, (max(1, size[0] // 8), max(1, size[1] // 8)))
            img.load()
    except FileNotFoundError:
        raise DataError(f"{source}: image file not found: {path}") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"{source}: cannot read image {path}: {exc}") from None


def validate_images(records: Sequence[DetectionRecord], say: Callable[[str], None] = print) -> None:
    """Decode every record's image before training, with a progress line every few seconds.

    Threads, because Pillow releases the GIL while decoding; results come back in record
    order, so the error reported is the first broken row.
    """
    total = len(records)
    say(f"[vlmtui] checking {total} images")
    last = time.monotonic()

    def check(rec: DetectionRecord) -> None:
        check_image(rec.image_path, (rec.width, rec.height), rec.source)

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        for i, _ in enumerate(pool.map(check, records), start=1):
            if time.monotonic() - last >= PROGRESS_EVERY_S:
                say(f"[vlmtui] checked {i}/{total} images")
                last = time.monotonic()
    say(f"[vlmtui] checked {total}/{total} images: all readable")
