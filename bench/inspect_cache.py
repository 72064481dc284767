"""`vlmtui inspect` a second time: the inspection cache against a fresh build.

For Qwen/Qwen2-VL-72B-Instruct (a shipped config, nothing to download) and each view below,
runs the real CLI in fresh processes with an empty data dir (`VLMTUI_HOME` in a temporary
folder): the cold run imports torch, builds the meta model and stores the entry; the warm
run reads it. Checks that the warm run's stdout is the cold run's, byte for byte, then
prints the median seconds of each and the ratio warm / cold. Target: ≤ 0.3.
Usage: python bench/inspect_cache.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

MODEL = "Qwen/Qwen2-VL-72B-Instruct"
VIEWS = {
    "summary": ["--recipe", "r1-llm-only"],
    "json+tree": ["--recipe", "r4-joint", "--json", "--tree"],
    "fsdp x4": ["--recipe", "r1-llm-only", "--gpus", "4", "--strategy", "fsdp"],
    "diff": ["--diff", "r1-llm-only", "r4-joint"],
}


def timed(cmd: list[str], home: str) -> tuple[float, bytes]:
    t = time.perf_counter()
    out = subprocess.run(
        cmd, check=True, capture_output=True, env={**os.environ, "VLMTUI_HOME": home}
    ).stdout
    return time.perf_counter() - t, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    exe = shutil.which("vlmtui", path=os.path.dirname(sys.executable)) or "vlmtui"
    print(f"{'view':12} {'cold s':>7} {'warm s':>7} {'warm/cold':>9}")
    worst = 0.0
    for name, view in VIEWS.items():
        cmd = [exe, "inspect", MODEL, *view]
        colds, warms = [], []
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory(prefix="vlmtui-bench-") as home:
                cold_s, cold_out = timed(cmd, home)
                warm_s, warm_out = timed(cmd, home)
            if warm_out != cold_out:
                sys.exit(f"{name}: the warm output differs from the cold one")
            colds.append(cold_s)
            warms.append(warm_s)
        cold, warm = statistics.median(colds), statistics.median(warms)
        worst = max(worst, warm / cold)
        print(f"{name:12} {cold:7.2f} {warm:7.2f} {warm / cold:9.2f}")
    print(f"worst warm/cold: {worst:.2f} (target <= 0.3); outputs identical")
    print(
        f"(median of {args.repeats}; {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f})"
    )
    if worst > 0.3:
        sys.exit(1)


if __name__ == "__main__":
    main()
