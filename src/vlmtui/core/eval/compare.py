"""`vlmtui compare RUN...`: one row per run from the files its directory already holds.

Why a module of its own: comparing only reads what finished runs left behind (run.json,
events, eval.json) and never loads a model, while `evaluate` generates and scores; apart,
each stays small and one job.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vlmtui.core.errors import BadInput
from vlmtui.core.eval.evaluate import resolve_run
from vlmtui.core.model.loading import read_run_object
from vlmtui.core.rundir import (
    EVAL_JSON,
    RUN_JSON,
    STATUS,
    TRAINABLE_JSON,
    last_step_event,
    read_events,
    read_json,
)


def _train_time(events: list[dict[str, Any]]) -> float | None:
    """Sum over stages of the trainer's runtime, else of the last logged elapsed time."""
    runtimes = {
        e.get("stage", 1): e["summary"]["train_runtime"]
        for e in events
        if isinstance(e.get("summary"), dict) and "train_runtime" in e["summary"]
    }
    if runtimes:
        return float(sum(runtimes.values()))
    elapsed: dict[Any, float] = {}
    for e in events:
        if "elapsed_s" in e and e.get("elapsed_s") is not None:
            elapsed[e.get("stage", 1)] = float(e["elapsed_s"])
    return sum(elapsed.values()) if elapsed else None


def _trainable_params(run_dir: Path, info: dict[str, Any]) -> int | None:
    if info.get("trainable_params") is not None:
        return int(info["trainable_params"])
    status = read_json(run_dir / STATUS) or {}
    if status.get("trainable_params") is not None:
        return int(status["trainable_params"])
    stage_dirs = [Path(s["dir"]) for s in info.get("stages", []) if "dir" in s] or [run_dir]
    trainable = read_json(stage_dirs[-1] / TRAINABLE_JSON) or {}
    value = trainable.get("trainable_params")
    return int(value) if value is not None else None


def compare_row(run: str | Path) -> dict[str, Any]:
    """One comparison row from a run directory (or an eval-only baseline directory)."""
    run_dir = resolve_run(run)
    info = read_run_object(run_dir / RUN_JSON) or {}
    ev = read_run_object(run_dir / EVAL_JSON) or {}
    events = read_events(run_dir)
    if not info and not ev:
        raise BadInput(f"{run_dir}: neither run.json nor eval.json (not a run or eval directory)")
    last = last_step_event(events)
    metrics = ev.get("metrics") or {}
    if not isinstance(metrics, dict):
        raise BadInput(f"{run_dir / EVAL_JSON}: 'metrics' is not a JSON object")
    return {
        "run": str(run),
        "run_dir": str(run_dir),
        "recipe": info.get("recipe") or ev.get("recipe"),
        "model": info.get("model") or ev.get("model"),
        "trainable_params": _trainable_params(run_dir, info),
        "train_time_s": _train_time(events),
        "final_loss": last.get("loss") if last else None,
        "evaluated": bool(ev),
        "n_images": ev.get("n_images"),
        **{k: metrics.get(k) for k in ("map", "map50", "recall", "mean_iou")},
        "parse_failure_rate": metrics.get("parse_failure_rate"),
    }


def compare_rows(runs: Sequence[str | Path]) -> list[dict[str, Any]]:
    seen: dict[Path, str | Path] = {}
    for run in runs:
        run_dir = resolve_run(run).resolve()
        if run_dir in seen:
            raise BadInput(f"{run}: the same run as {seen[run_dir]}; name each run once")
        seen[run_dir] = run
    return [compare_row(r) for r in runs]
