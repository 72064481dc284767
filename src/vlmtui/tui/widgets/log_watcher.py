"""Tails one run's output in a background thread and hands new lines to the UI, coalesced.

The toolong shape: the thread reads only new bytes (through `Sources.open_log`, local file or
SSH `tail -c +N`), splits them into lines and keeps at most `max_lines` pending ones (older
ones are dropped: the view would drop them anyway). It calls `notify()` only when no
notification is outstanding, so however fast a run writes, at most one message waits in the
UI's queue; while one is outstanding the thread reads less often, so a busy UI slows the
tail down instead of the tail flooding the UI.
"""

from __future__ import annotations

import codecs
import threading
from collections import deque
from collections.abc import Callable

from vlmtui.tui.sources import LogReader

READ_BYTES = 1 << 20


class LogWatcher:
    """One thread per followed run. `take()` returns the pending lines; `stop()` ends it."""

    def __init__(
        self,
        run_id: str,
        open_log: Callable[[str], LogReader],
        notify: Callable[[], object],
        on_error: Callable[[str], object],
        max_lines: int = 5000,
        interval_s: float = 0.1,
    ) -> None:
        self.run_id = run_id
        self._open_log = open_log
        self._notify = notify
        self._on_error = on_error
        self._pending: deque[str] = deque(maxlen=max_lines)
        self._partial = ""
        self._lock = threading.Lock()
        self._outstanding = False
        self._stop = threading.Event()
        self.interval_s = interval_s
        self.lines_read = 0
        self.reader: LogReader | None = None
        self.thread = threading.Thread(target=self._run, name=f"vlmtui-log-{run_id}", daemon=True)

    def start(self) -> LogWatcher:
        self.thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def take(self) -> list[str]:
        """The lines read since the last call (at most `max_lines`, the newest)."""
        with self._lock:
            lines = list(self._pending)
            self._pending.clear()
            self._outstanding = False
        return lines

    def _run(self) -> None:
        try:
            reader = self.reader = self._open_log(self.run_id)
        except Exception as exc:  # reported to the user, the watcher ends
            self._on_error(str(exc))
            return
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        failures = 0
        while not self._stop.is_set():
            try:
                chunk = reader.read(READ_BYTES)
            except Exception as exc:  # a host dropping out: retry a few times, then report
                failures += 1
                if failures >= 5:
                    self._on_error(str(exc))
                    return
                self._stop.wait(1.0 * failures)
                continue
            failures = 0
            if chunk:
                self._add(decoder.decode(chunk))
                if len(chunk) == READ_BYTES:
                    continue  # more is waiting: read on before sleeping
            with self._lock:
                backed_up = self._outstanding
            # The UI has not taken the last batch: read less often until it catches up.
            self._stop.wait(self.interval_s * (5 if backed_up else 1))

    def _add(self, text: str) -> None:
        text = self._partial + text
        parts = text.split("\n")
        self._partial = parts.pop()
        if len(self._partial) > 10_000:  # a runaway line without newline: show it anyway
            parts.append(self._partial)
            self._partial = ""
        if not parts:
            return
        total = len(parts)
        parts = (
            [p.rstrip("\r") for p in parts[-self._pending.maxlen :]]
            if self._pending.maxlen
            else parts
        )
        with self._lock:
            self._pending.extend(parts)
            self.lines_read += total
            should_notify = not self._outstanding
            self._outstanding = True
        if should_notify:
            self._notify()
