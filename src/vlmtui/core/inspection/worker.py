"""A child process that computes recipe markings, so torch is imported once, off the app's
process, while the user is still looking at recipes, and quitting never waits for it: the
app kills the child (a thread stuck in a torch import cannot be stopped; a process can).

`InspectionWorker.mark` returns a `cache.Marking` and stores the inspection in the on-disk
cache; the child keeps one `CachedInspector` per model, so a second recipe on the same model only
re-marks. Requests are served one at a time over the child's stdin/stdout (length-prefixed
pickles; `multiprocessing` cannot spawn from inside a Textual app, whose stdio is replaced).
"""

from __future__ import annotations

import os
import pickle
import struct
import subprocess
import sys
import threading
from typing import Any

from vlmtui.core.errors import WorkFailed


def compute_marking(inspectors: dict[str, Any], model: str, recipe: Any) -> Any:
    """The recipe's marking of `model` (`cache.Marking`): from the disk cache, or computed
    with torch and stored there (one `CachedInspector` per model in `inspectors`)."""
    from vlmtui.core.inspection.cached import CachedInspector, app_marking
    from vlmtui.core.model.resolve import resolve_model

    if model not in inspectors:
        inspectors[model] = CachedInspector(resolve_model(model))
    return app_marking(inspectors[model].entry(recipe))


def _send(stream: Any, value: Any) -> None:
    data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(struct.pack("!Q", len(data)) + data)
    stream.flush()


def _receive(stream: Any) -> Any:
    head = stream.read(8)
    if len(head) < 8:
        raise EOFError("the other side closed the pipe")
    (size,) = struct.unpack("!Q", head)
    data = stream.read(size)
    if len(data) < size:
        raise EOFError("the other side closed the pipe")
    return pickle.loads(data)


def serve() -> None:
    """The child's loop over stdin/stdout: ("warm",) imports the libraries; ("mark", model,
    recipe) marks; ("demo",) creates the embedded demo if missing. The protocol keeps the
    real stdout; anything the libraries print goes to stderr (which the app discards)."""
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    inp = sys.stdin.buffer
    inspectors: dict[str, Any] = {}
    while True:
        try:
            request = _receive(inp)
        except EOFError:
            return
        try:
            if request[0] == "warm":
                import peft  # noqa: F401
                import torch  # noqa: F401
                import transformers  # noqa: F401

                _send(out, (True, None))
            elif request[0] == "demo":
                from vlmtui.core.model.demo import ensure_demo_assets
                from vlmtui.core.paths import demo_dir

                model, data = ensure_demo_assets(demo_dir())
                _send(out, (True, (str(model), str(data))))
            else:
                _send(out, (True, compute_marking(inspectors, request[1], request[2])))
        except Exception as exc:  # the caller re-raises it (BadInput stays BadInput)
            _send(out, (False, exc))


class InspectionWorker:
    """The client side: starts the child (`python -m vlmtui.core.inspection.worker`) on
    first use; one request at a time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._stopped = False

    def _call(self, *request: Any) -> Any:
        with self._lock:
            if self._stopped:
                raise WorkFailed("the inspection worker was stopped")
            if self._proc is None or self._proc.poll() is not None:
                self._proc = subprocess.Popen(
                    [sys.executable, "-m", "vlmtui.core.inspection.worker"],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL, start_new_session=True,
                )  # fmt: skip
            proc = self._proc
            try:
                _send(proc.stdin, request)
                ok, value = _receive(proc.stdout)
            except (EOFError, OSError, ValueError) as exc:
                raise WorkFailed(f"the inspection worker ended: {exc}") from None
        if not ok:
            raise value
        return value

    def warm(self) -> None:
        """Start the child and import torch there (returns when done)."""
        self._call("warm")

    def mark(self, model: str, recipe: Any) -> Any:
        return self._call("mark", model, recipe)

    def demo(self) -> tuple[str, str]:
        """The embedded demo's (model dir, data dir), created here if missing: in the child,
        so quitting kills it (a thread creating it made the app wait for it on quit)."""
        model, data = self._call("demo")
        return str(model), str(data)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self) -> None:
        """Kill the child now (it holds nothing worth saving); later calls fail."""
        self._stopped = True
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=1.0)


if __name__ == "__main__":
    serve()
