"""The one choke point for NVML (nvidia-ml-py), as nvitop's libnvml is.

It initialises lazily on first use (under a lock), shuts down at exit, and turns every NVML
error on a field into None ("not available") instead of an exception. When NVML cannot
start at all (no driver, no library) `snapshot` says why and `gpus.py` falls back.
`VLMTUI_NVML=off` skips NVML (tests on GPU machines use it to get the stand-in nvidia-smi).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import threading
from typing import Any


class _Nvml:
    """Every NVML call goes through here: lazy init once, shutdown at exit, None on errors."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._error: str | None = None
        self._module: Any = None

    def _init(self) -> Any:
        if self._module is None and self._error is None:
            try:
                import pynvml
            except ImportError:
                self._error = "nvidia-ml-py is not installed"
                return None
            try:
                pynvml.nvmlInit()
            except pynvml.NVMLError as exc:
                self._error = str(exc) or type(exc).__name__
                return None
            self._module = pynvml
            atexit.register(self._shutdown)
        return self._module

    def _shutdown(self) -> None:
        with self._lock:
            if self._module is not None:
                # Shutting down at exit: an error here has no one left to report to.
                with contextlib.suppress(self._module.NVMLError):
                    self._module.nvmlShutdown()
                self._module = None

    def reset(self) -> None:
        """Forget the init result (tests swap the pynvml module)."""
        self._shutdown()
        self._error = None

    def snapshot(self) -> tuple[list[dict[str, Any]] | None, str | None]:
        """(GPU dicts, None) or (None, why NVML is not available).

        `VLMTUI_NVML=off` skips NVML (then an nvidia-smi on PATH is used, if any)."""
        if os.environ.get("VLMTUI_NVML", "").lower() in ("0", "off", "no"):
            return None, "NVML disabled by VLMTUI_NVML"
        with self._lock:
            nv = self._init()
            if nv is None:
                return None, self._error
            count = self._call(nv.nvmlDeviceGetCount)
            if count is None:
                return None, "NVML could not count the GPUs"
            return [self._device(nv, i) for i in range(count)], None

    def _call(self, fn: Any, *args: Any) -> Any:
        """fn(*args), or None when NVML reports the value as unavailable or unsupported."""
        try:
            return fn(*args)
        except self._module.NVMLError:
            return None

    def _device(self, nv: Any, i: int) -> dict[str, Any]:
        h = self._call(nv.nvmlDeviceGetHandleByIndex, i)
        if h is None:
            return {"index": i, "name": f"GPU {i} (NVML cannot open it)", "processes": []}
        name = self._call(nv.nvmlDeviceGetName, h)
        uuid = self._call(nv.nvmlDeviceGetUUID, h)
        util = self._call(nv.nvmlDeviceGetUtilizationRates, h)
        mem = self._call(nv.nvmlDeviceGetMemoryInfo, h)
        temp = self._call(nv.nvmlDeviceGetTemperature, h, nv.NVML_TEMPERATURE_GPU)
        power_mw = self._call(nv.nvmlDeviceGetPowerUsage, h)
        procs = self._call(nv.nvmlDeviceGetComputeRunningProcesses, h) or []
        return {
            "index": i,
            "name": name.decode() if isinstance(name, bytes) else (name or f"GPU {i}"),
            "uuid": uuid.decode() if isinstance(uuid, bytes) else uuid,
            "util": None if util is None else float(util.gpu),
            "mem_used_mib": None if mem is None else mem.used / 2**20,
            "mem_total_mib": None if mem is None else mem.total / 2**20,
            "temp_c": None if temp is None else float(temp),
            "power_w": None if power_mw is None else power_mw / 1000.0,
            "processes": [
                {
                    "pid": int(p.pid),
                    "gpu_mem_mib": None if not p.usedGpuMemory else p.usedGpuMemory / 2**20,
                    **_proc_owner(int(p.pid)),
                }
                for p in procs
            ],
        }


NVML = _Nvml()


def _proc_owner(pid: int) -> dict[str, str | None]:
    """Command and user of a local process from /proc; None where it cannot be read."""
    name = user = None
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            raw = fh.read()
        name = raw.replace(b"\0", b" ").decode(errors="replace").strip()[:200] or None
        import pwd

        user = pwd.getpwuid(os.stat(f"/proc/{pid}").st_uid).pw_name
    except (OSError, KeyError):
        pass  # another user's or a finished process: unknown fields stay None
    return {"name": name, "user": user}
