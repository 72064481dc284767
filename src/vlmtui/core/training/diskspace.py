"""Free space: a pre-flight estimate before training, and a true reason when a disk fills.

A full disk used to surface as "ended without a final state" long after the cause. The
estimate is deliberately simple and on the safe side: each checkpoint holds the trainable
tensors plus AdamW's two moments of the same size; up to `keep + 1` exist at once (the kept
ones and the one being written), and the final save is the trainable set (adapters) or the
whole model (full fine-tune).
"""

from __future__ import annotations

import errno
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlmtui.core.errors import BadInput

MIB = 1 << 20
# Tokenizer, processor, trainer state, RNG and run files: small, but not nothing.
OVERHEAD_BYTES = 16 * MIB
ADAMW_STATES = 2


@dataclass(frozen=True)
class SpaceNeed:
    """Bytes a run will write at its peak, and how the figure was reached."""

    trainable_bytes: int
    final_bytes: int
    keep_checkpoints: int

    @property
    def checkpoint_bytes(self) -> int:
        return self.trainable_bytes * (1 + ADAMW_STATES)

    @property
    def total_bytes(self) -> int:
        checkpoints = (self.keep_checkpoints + 1) * self.checkpoint_bytes
        return checkpoints + self.final_bytes + OVERHEAD_BYTES


def free_bytes(path: Path) -> int:
    """Free bytes on the filesystem that holds `path` (or its nearest existing parent)."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def mib(n: int) -> str:
    return f"{n / MIB:.1f}"


def ensure_free(path: Path, need: SpaceNeed) -> None:
    """Refuse (BadInput) when `path` has less room than the run needs."""
    free = free_bytes(path)
    if free < need.total_bytes:
        raise BadInput(
            f"not enough free space at {path}: {mib(free)} MiB free, the run needs about "
            f"{mib(need.total_bytes)} MiB ({need.keep_checkpoints + 1} checkpoints of "
            f"{mib(need.checkpoint_bytes)} MiB with optimizer state, final weights "
            f"{mib(need.final_bytes)} MiB)"
        )


def need_from_counts(
    trainable_params: int,
    total_params: int,
    *,
    adapters: bool,
    bytes_per_param: int = 4,
    keep_checkpoints: int = 2,
) -> SpaceNeed:
    """The SpaceNeed from parameter counts (`vlmtui inspect`'s meta-device figures), for a
    pre-flight before anything is loaded, such as `launch` checking the host's run folder."""
    trainable = trainable_params * bytes_per_param
    final = trainable if adapters else total_params * bytes_per_param
    return SpaceNeed(trainable, final, keep_checkpoints)


def need_for_model(model: Any, keep_checkpoints: int) -> SpaceNeed:
    """The SpaceNeed of training `model`'s trainable parameters (a loaded model)."""
    trainable = total = 0
    for _, p in model.named_parameters():
        size = p.numel() * p.element_size()
        total += size
        trainable += size if p.requires_grad else 0
    adapters = hasattr(model, "peft_config")
    return SpaceNeed(trainable, trainable if adapters else total, keep_checkpoints)


# torch.save reports a full disk only as a failed stream ("unexpected pos 576 vs 534",
# "iostream error", "file write failed"): with little space left, that is the cause.
WRITE_FAILURES = ("unexpected pos", "iostream error", "file write failed")
LOW_SPACE_BYTES = OVERHEAD_BYTES


def _chain(exc: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in out:
        out.append(current)
        current = current.__cause__ or current.__context__
    return out


def is_enospc(exc: BaseException) -> bool:
    """Whether `exc` or anything in its chain says the disk is full (libraries re-wrap)."""
    for current in _chain(exc):
        if isinstance(current, OSError) and current.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "No space left on device" in str(current):
            return True
    return False


def disk_full_reason(exc: BaseException, path: Path) -> str | None:
    """ "no space left on device (N MiB free at PATH)" when that is why `exc` happened."""
    free = free_bytes(path)
    failed_write = any(w in str(e) for e in _chain(exc) for w in WRITE_FAILURES)
    if is_enospc(exc) or (failed_write and free < LOW_SPACE_BYTES):
        return f"no space left on device ({mib(free)} MiB free at {path})"
    return None
