"""Per-process state of a training run: which rank writes the run files, and how a stop
signal reaches the training loop.

Kept apart from the trainer code because the stage loop, the trainer construction and stage
saving all consult it, and none of them should own it.
"""

from __future__ import annotations

import os
import signal
from typing import Any


class StopRequested(BaseException):
    """SIGTERM or SIGINT arrived outside the training loop: end as `stopped`.

    A BaseException, like KeyboardInterrupt, so that no library's `except Exception`
    swallows it or turns it into a failure while a model is loading.
    """


class StopState:
    """Where a stop signal lands: inside the training loop it is only recorded (the progress
    callback turns it into a save); outside it, it raises StopRequested at once."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.training = False

    def handler(self, signum: int, _frame: Any) -> None:
        self.signum = signum
        if not self.training:
            raise StopRequested(signal.Signals(signum).name)


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0
