"""Drop the libraries' known noise from train / eval / demo output (and so from output.log),
keeping every other warning.

Dropped, each seen on every run and none actionable by a vlmtui user:
- FutureWarnings raised inside transformers, trl, peft, accelerate and torch (deprecations
  of arguments vlmtui does not pass itself);
- transformers' "Loading weights" and "Writing model shards" progress bars, and the Hub's;
- bitsandbytes' "Failed to load CPU gemm_4bit_forward from kernels-community" (an optional
  kernel package; the CPU path works without it).
Anything else (a UserWarning, a new message) still shows.
"""

from __future__ import annotations

import logging
import warnings

LIBRARIES = r"(transformers|trl|peft|accelerate|torch)(\.|$)"
NOISY_LOG_LINES: dict[str, tuple[str, ...]] = {
    "bitsandbytes.backends.cpu.ops": (
        "Failed to load CPU gemm_4bit_forward from kernels-community",
    ),
}


class _DropKnown(logging.Filter):
    def __init__(self, starts: tuple[str, ...]) -> None:
        super().__init__()
        self.starts = starts

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.starts)


def quiet_libraries() -> None:
    """Install the filters (idempotent); call before the libraries load a model."""
    warnings.filterwarnings("ignore", category=FutureWarning, module=LIBRARIES)
    for name, starts in NOISY_LOG_LINES.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropKnown) for f in logger.filters):
            logger.addFilter(_DropKnown(starts))
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:
        pass
    try:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    except ImportError:
        pass
