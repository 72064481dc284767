"""`vlmtui inspect` on 72B models: time after imports, against a hand-written baseline.

For Qwen2-VL-72B and Qwen2.5-VL-72B with r1-llm-only and r4-joint: the time from the call
to the finished summary (a fresh `ModelInspector`: meta build, the recipe's quantization,
PEFT injection, freeze policy, guard, tree marking data, JSON dict with the memory
estimate), all imports done beforehand. Baselines, done by hand in the same run:

  A  `accelerate.init_empty_weights()` + `from_config` + `tie_weights` + PEFT
     `get_peft_model` (the recipe's anchored LoRA targets) + summing `requires_grad` numels.
     PEFT initialises LoRA weights on the CPU here, as a plain script would.
  B  the same with `get_peft_model` under `torch.device("meta")` (what vlmtui does): the
     fair floor, since PEFT's per-adapter work then dominates.

Then a cold process: `vlmtui inspect Qwen/Qwen2-VL-72B-Instruct --recipe r1-llm-only --json`
against `python -c "import transformers, peft"`.
Targets: <= 0.5 s after imports, <= 1.2x the baseline, cold process <= 2x the import.
Usage: python bench/inspect_speed.py [--repeats 3]
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
import warnings

MODELS = ("Qwen/Qwen2-VL-72B-Instruct", "Qwen/Qwen2.5-VL-72B-Instruct")
RECIPES = ("r1-llm-only", "r4-joint")


def ours(model: str, recipe: object) -> int:
    from vlmtui.core.inspection.memory import MemoryAssumptions
    from vlmtui.core.inspection.meta import ModelInspector

    data = ModelInspector(model).inspect(recipe).to_dict(MemoryAssumptions())
    return data["trainable_params"]


def baseline(model: str, recipe: object, meta_peft: bool) -> int:
    import torch
    import transformers
    from accelerate import init_empty_weights
    from peft import get_peft_model

    from vlmtui.core.model.resolve import config_object, resolve_model
    from vlmtui.core.recipes.policy import build_lora_config_for_recipe

    ref = resolve_model(model)
    config = config_object(ref)
    with init_empty_weights():
        m = getattr(transformers, ref.family.model_class)._from_config(config)
    m.tie_weights()
    lora = build_lora_config_for_recipe(recipe, ref.family)
    if meta_peft:
        with torch.device("meta"):
            m = get_peft_model(m, lora)
    else:
        m = get_peft_model(m, lora)
    return sum(p.numel() for p in m.parameters() if p.requires_grad)


def timed(fn, *args) -> tuple[float, float, int]:
    """(wall seconds, this process's CPU seconds, result). On a busy machine the CPU time
    is the better estimate of the wall time on an idle one."""
    t, c = time.perf_counter(), time.process_time()
    out = fn(*args)
    return time.perf_counter() - t, time.process_time() - c, out


def cold(cmd: list[str], repeats: int) -> float:
    """Median wall seconds of `cmd`, each run with an empty data dir: `vlmtui inspect` would
    otherwise serve the repeats from the inspection cache (bench/inspect_cache.py times that)."""
    times = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory(prefix="vlmtui-bench-") as home:
            t = time.perf_counter()
            subprocess.run(
                cmd, check=True, capture_output=True, env={**os.environ, "VLMTUI_HOME": home}
            )
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    t = time.perf_counter()
    import accelerate  # noqa: F401
    import peft  # noqa: F401
    import torch  # noqa: F401
    import transformers

    from vlmtui.core.recipes.recipe import BUILTIN_RECIPES

    for cls in ("Qwen2VLForConditionalGeneration", "Qwen2_5_VLForConditionalGeneration"):
        getattr(transformers, cls)
    import bitsandbytes  # noqa: F401
    from transformers.quantizers import AutoHfQuantizer  # noqa: F401

    print(f"imports: {time.perf_counter() - t:.2f} s (not counted below)")
    # Warm-up: the first PEFT call in a process pays one-time set-up (regex tables).
    ours("Qwen/Qwen2-VL-2B-Instruct", BUILTIN_RECIPES["r4-joint"])
    baseline("Qwen/Qwen2-VL-2B-Instruct", BUILTIN_RECIPES["r4-joint"], True)

    print(
        f"{'model':30} {'recipe':12} {'vlmtui':>13} {'base A':>13} {'base B':>13}"
        f" {'/A':>5} {'/B':>5}  trainable   (wall s / cpu s)"
    )
    worst_abs = worst_cpu = worst_ratio = 0.0
    for model in MODELS:
        for name in RECIPES:
            recipe = BUILTIN_RECIPES[name]
            runs: dict[str, list[tuple[float, float]]] = {"o": [], "a": [], "b": []}
            for _ in range(args.repeats):
                w, c, n_ours = timed(ours, model, recipe)
                runs["o"].append((w, c))
                w, c, _ = timed(baseline, model, recipe, False)
                runs["a"].append((w, c))
                w, c, n_base = timed(baseline, model, recipe, True)
                runs["b"].append((w, c))
            med = {
                k: (statistics.median(x[0] for x in v), statistics.median(x[1] for x in v))
                for k, v in runs.items()
            }
            (wo, co), (wa, ca), (wb, cb) = med["o"], med["a"], med["b"]
            worst_abs, worst_cpu = max(worst_abs, wo), max(worst_cpu, co)
            worst_ratio = max(worst_ratio, wo / wb)
            # r1's baseline does not quantize; the trainable count is the same regardless.
            same = "same" if n_ours == n_base else f"baseline {n_base:,}"
            print(
                f"{model:30} {name:12} {wo:5.2f} / {co:5.2f} {wa:5.2f} / {ca:5.2f}"
                f" {wb:5.2f} / {cb:5.2f} {wo / wa:5.2f} {wo / wb:5.2f}  {n_ours:,} ({same})"
            )
    print(f"worst after imports: {worst_abs:.2f} s wall, {worst_cpu:.2f} s CPU (target <= 0.5 s)")
    print(f"worst wall ratio to baseline B: {worst_ratio:.2f}x (target <= 1.2x)")

    exe = shutil.which("vlmtui", path=os.path.dirname(sys.executable)) or "vlmtui"
    imp = cold([sys.executable, "-c", "import transformers, peft"], args.repeats)
    cmd = [exe, "inspect", MODELS[0], "--recipe", "r1-llm-only", "--json"]
    cli = cold(cmd, args.repeats)
    small = cold(
        [exe, "inspect", "Qwen/Qwen2-VL-2B-Instruct", "--recipe", "r4-joint", "--json"],
        args.repeats,
    )
    print(f"cold `python -c 'import transformers, peft'`: {imp:.2f} s")
    print(
        f"cold `vlmtui inspect {MODELS[0]} --recipe r1-llm-only --json`: {cli:.2f} s "
        f"= {cli / imp:.2f}x (target <= 2x)"
    )
    print(
        f"cold `vlmtui inspect Qwen/Qwen2-VL-2B-Instruct --recipe r4-joint --json`: "
        f"{small:.2f} s = {small / imp:.2f}x"
    )
    print(
        f"(median of {args.repeats}; {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f})"
    )


if __name__ == "__main__":
    main()
