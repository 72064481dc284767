"""CLI tables at 80 columns: identifiers (recipe names, run ids, hosts) are never cut, paths
are shortened in the middle keeping their tail, `runs` has a header, says when there are no
runs, and a finished run's time stays what it took."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from vlmtui.cli import main
from vlmtui.cli.tables import fit_paths
from vlmtui.core.fleet.runs import Registry, RunRecord
from vlmtui.core.textfmt import clock, middle


@pytest.fixture(autouse=True)
def _80_columns(monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")


def whole(out: str, word: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(word)}(?![\w-])", out) is not None


def test_clock_and_middle() -> None:
    assert [clock(s) for s in (0, 59, 245, 3753, None)] == ["0:00", "0:59", "4:05", "1:02:33", "–"]
    path = "model.language_model.layers.27.self_attn.q_proj"
    short = middle(path, 30)
    assert len(short) == 30 and short.endswith(".self_attn.q_proj") and short.startswith("model")
    assert middle("short", 30) == "short"
    paths = fit_paths([path, "lm_head"], [["class", "Linear4bit"], ["state", "frozen"]], 50)
    assert paths[1] == "lm_head" and paths[0].endswith("q_proj") and len(paths[0]) <= 50 - 19


def test_runs_header_empty_line_and_frozen_time(tmp_path: Path, capsys) -> None:
    assert main(["runs"]) == 0
    assert "no runs yet" in capsys.readouterr().out

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    created = time.time() - 900  # launched 15 minutes ago, took 14 s
    status = {"state": "finished", "updated": created + 14}
    (run_dir / "status.json").write_text(json.dumps(status))
    long_id = "20250101-120000-abcd"
    Registry().add(
        RunRecord(
            id=long_id, recipe="r3-two-stage-copy", host="local", gpus="cpu",
            run_dir=str(run_dir), created=created, state="training", step=4, max_steps=4,
        )
    )  # fmt: skip
    assert main(["runs"]) == 0  # probes the host: finished, 14 s after its launch
    first = capsys.readouterr().out
    assert main(["runs"]) == 0  # the registry's cached final state keeps the end
    out = capsys.readouterr().out
    assert out == first
    header = next(line for line in out.splitlines() if line.strip()).split()
    assert header[:4] == ["run", "recipe", "where", "state"] and "time" in header
    row = next(line for line in out.splitlines() if long_id in line)
    assert whole(row, "r3-two-stage-copy") and whole(row, "local:cpu") and "finished" in row
    assert "0:14" in row and "15:" not in row


def test_recipes_names_whole_and_descriptions_wrap(capsys) -> None:
    from vlmtui.core.recipes.catalog import all_recipes
    from vlmtui.core.recipes.toml import copy_recipe

    recipes = all_recipes()
    copy_recipe(recipes["r1-llm-only"], recipes)  # `r1-llm-only-copy`, as the app makes it
    assert main(["recipes"]) == 0
    out = capsys.readouterr().out
    assert max(len(line) for line in out.splitlines()) <= 80
    for name in [*recipes, "r1-llm-only-copy"]:
        assert whole(out, name), f"{name} cut:\n{out}"
    assert "…" not in out


def _run_dir(root: Path, name: str, recipe: str) -> Path:
    d = root / name
    d.mkdir()
    (d / "run.json").write_text(json.dumps({"recipe": recipe, "model": "m"}))
    metrics = {"map": 0.41, "map50": 0.67, "recall": 0.55, "mean_iou": 0.61}
    metrics["parse_failure_rate"] = 1.0
    (d / "eval.json").write_text(json.dumps({"metrics": metrics, "n_images": 8}))
    (d / "events.jsonl").write_text(json.dumps({"step": 4, "loss": 0.25, "elapsed_s": 3.5}) + "\n")
    return d


def test_compare_keeps_ids_and_the_fail_column(tmp_path: Path, capsys) -> None:
    a = _run_dir(tmp_path, "20250101-120000-abcd", "r3-two-stage-copy")
    b = _run_dir(tmp_path, "20250101-120001-abce", "r1-llm-only")
    assert main(["compare", str(a), str(b)]) == 0
    out = capsys.readouterr().out
    for word in (a.name, b.name, "r3-two-stage-copy", "r1-llm-only", "fail", "100%"):
        assert whole(out, word), f"{word} cut:\n{out}"
