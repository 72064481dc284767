"""`vlmtui inspect`: model resolution, published sizes, JSON contract, errors, and the identity
with what `vlmtui train` actually trains."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from vlmtui.cli import main
from vlmtui.core.errors import BadInput
from vlmtui.core.model.resolve import resolve_model, shipped_model_ids
from vlmtui.core.recipes.recipe import BUILTIN_RECIPES

# (published count or None, exact count computed from the configs; ../shared/FACTS.md and
# ../shared/model-configs/SOURCES.md)
COUNTS = {
    "Qwen/Qwen2-VL-2B-Instruct": (2.21e9, 2_208_985_600),
    "Qwen/Qwen2-VL-7B-Instruct": (8.29e9, 8_291_375_616),
    "Qwen/Qwen2-VL-72B-Instruct": (73.4e9, 73_405_560_320),
    # No published count was found for the 3B; the exact computed count is still checked.
    "Qwen/Qwen2.5-VL-3B-Instruct": (None, 3_754_622_976),
    "Qwen/Qwen2.5-VL-7B-Instruct": (8.29e9, 8_292_166_656),
    # Lingshu-32B (same architecture) as published by a parameter-count script.
    "Qwen/Qwen2.5-VL-32B-Instruct": (33_452_718_336, 33_452_718_336),
    "Qwen/Qwen2.5-VL-72B-Instruct": (73.4e9, 73_410_777_344),
}

# Qwen3-VL / Qwen3.5 / Qwen3.6: the published totals (HF `safetensors.total`), exact
# (../shared/model-configs/SOURCES.md). Qwen3.5/3.6 checkpoints add an MTP head that
# transformers does not build; inspect reports it as `mtp_params` beside the model.
# Tied lm_head: the five `True` models.
QWEN3_PUBLISHED = {
    "Qwen/Qwen3-VL-2B-Instruct": (2_127_532_032, True),
    "Qwen/Qwen3-VL-4B-Instruct": (4_437_815_808, True),
    "Qwen/Qwen3-VL-8B-Instruct": (8_767_123_696, False),
    "Qwen/Qwen3-VL-32B-Instruct": (33_357_390_064, False),
    "Qwen/Qwen3-VL-30B-A3B-Instruct": (31_070_754_032, False),
    "Qwen/Qwen3-VL-235B-A22B-Instruct": (235_670_022_896, False),
    "Qwen/Qwen3.5-0.8B": (873_438_784, True),
    "Qwen/Qwen3.5-2B": (2_274_069_824, True),
    "Qwen/Qwen3.5-4B": (4_659_865_088, True),
    "Qwen/Qwen3.5-9B": (9_653_104_368, False),
    "Qwen/Qwen3.5-27B": (27_781_427_952, False),
    "Qwen/Qwen3.5-35B-A3B": (35_951_822_704, False),
    "Qwen/Qwen3.5-122B-A10B": (125_086_497_008, False),
    "Qwen/Qwen3.5-397B-A17B": (403_397_928_944, False),
    "Qwen/Qwen3.6-27B": (27_781_427_952, False),
    "Qwen/Qwen3.6-35B-A3B": (35_951_822_704, False),
}

# Families whose box format the data path writes today (the Qwen3 families' `qwen3` format
# comes with data/datasets.py's change): the train-vs-inspect comparison trains on data.
QWEN2_FAMILIES = ["qwen2-vl", "qwen2.5-vl"]


@pytest.fixture(autouse=True)
def _wide_terminal(monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # Rich wraps table cells to the terminal width


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    rc = main(["inspect", *args])
    out = capsys.readouterr()
    return rc, out.out, out.err


def inspect_json(capsys, *args: str) -> dict:
    rc, out, err = run_cli(capsys, *args, "--json")
    assert rc == 0, err
    return json.loads(out)


def test_shipped_ids() -> None:
    assert shipped_model_ids() == sorted([*COUNTS, *QWEN3_PUBLISHED])


@pytest.mark.parametrize("model_id", sorted(QWEN3_PUBLISHED))
def test_qwen3_shipped_total_equals_published(model_id: str) -> None:
    from vlmtui.core.inspection.meta import ModelInspector

    published, tied = QWEN3_PUBLISHED[model_id]
    insp = ModelInspector(model_id)
    data = insp.inspect(None).to_dict()
    assert data["checkpoint_params"] == data["total_params"] + data["mtp_params"] == published
    assert (data["mtp_params"] > 0) == ("Qwen3.5" in model_id or "Qwen3.6" in model_id)
    summary = insp.base_summary()
    assert summary.areas["other"].params == 0
    if tied:  # one tensor, listed under the embedding: lm_head's area holds nothing
        assert data["tied_head"] == "model.language_model.embed_tokens.weight"
        assert summary.areas["lm_head"].params == 0
    else:
        assert data["tied_head"] is None and summary.areas["lm_head"].params > 0


@pytest.mark.parametrize("model_id", sorted(COUNTS))
def test_shipped_model_total_matches_published(model_id: str) -> None:
    from vlmtui.core.inspection.meta import ModelInspector

    published, exact = COUNTS[model_id]
    insp = ModelInspector(model_id)
    total = insp.inspect(None).to_dict()["total_params"]
    assert total == exact
    if published is not None:
        assert abs(total - published) / published < 0.005
    assert insp.base_summary().areas["other"].params == 0


def test_72b_r1_json_offline(capsys, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    data = inspect_json(capsys, "Qwen/Qwen2-VL-72B-Instruct", "--recipe", "r1-llm-only")
    for key in ("model", "family", "recipe", "total_params", "trainable_params", "areas"):
        assert key in data
    assert data["model"] == "Qwen/Qwen2-VL-72B-Instruct" and data["family"] == "qwen2-vl"
    assert data["recipe"] == "r1-llm-only" and data["source"] == "shipped"
    assert abs(data["total_params"] - 73.4e9) / 73.4e9 < 0.005
    assert data["base_params"] == 73_405_560_320
    assert data["total_params"] == data["base_params"] + data["trainable_params"]  # + LoRA
    assert set(data["areas"]) == {"vision", "projector", "llm", "lm_head", "other"}
    assert data["areas"]["vision"]["trainable"] == 0
    assert data["areas"]["projector"]["trainable"] == 0
    assert data["areas"]["llm"]["trainable"] == data["trainable_params"] > 0
    assert len(data["lora_modules"]) == 80 * 7
    assert all(m.startswith("model.language_model.") for m in data["lora_modules"])
    assert len(data["quantized_modules"]) == 80 * 7
    assert all(".lora_" in n for n in data["trainable_names"])
    assert data["guard"].startswith("passed")
    (mem,) = data["memory"]
    assert mem["weights_by_dtype"]["nf4"] > 0 and mem["total"] > mem["weights"]


def test_unknown_model_id_lists_shipped(capsys) -> None:
    rc, out, err = run_cli(capsys, "Qwen/Qwen9-VL-1B")
    assert rc == 2 and out == ""
    assert err.count("\n") == 1 and "Qwen/Qwen2-VL-72B-Instruct" in err


def test_unknown_model_cold_process_one_line() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "vlmtui", "inspect", "no/such-model", "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "shipped:" in proc.stderr


def test_unsupported_family_one_line(capsys, tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llava"}))
    rc, _, err = run_cli(capsys, str(tmp_path))
    assert rc == 2 and err.count("\n") == 1
    assert "llava" in err and "not a supported family" in err


@pytest.mark.parametrize("extra", [{"hidden_size": "wide"}, {"vision_config": 5}])
def test_broken_config_one_line(capsys, tmp_path: Path, extra: dict) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen2_vl", **extra}))
    rc, out, err = run_cli(capsys, str(tmp_path), "--json")
    assert rc == 2 and out == "" and err.count("\n") == 1
    assert "cannot build Qwen2VLForConditionalGeneration" in err


def test_dir_without_config(capsys, tmp_path: Path) -> None:
    rc, _, err = run_cli(capsys, str(tmp_path))
    assert rc == 2 and "without config.json" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--recipe", "r4-joint", "--filter", "blocks.("], "--filter"),
        (["--tree", "--expand", "[a-"], "--expand"),
        (["--recipe", "r9"], "unknown recipe"),
        (["--recipe", "r1-llm-only", "--diff", "r1-llm-only", "r4-joint"], "--diff"),
        (["--recipe", "r1-llm-only", "--gpu-mem", "0"], "--gpu-mem"),
    ],
)
def test_bad_arguments_one_line(capsys, args: list[str], message: str) -> None:
    rc, out, err = run_cli(capsys, "Qwen/Qwen2-VL-2B-Instruct", *args)
    assert rc == 2 and out == "" and err.count("\n") == 1 and message in err


def test_guard_refusal_is_bad_input(capsys, tmp_path: Path) -> None:
    f = tmp_path / "r.toml"
    f.write_text('[recipe.nothing]\nvision = { mode = "full", patterns = ["nomatch"] }\n')
    rc, out, err = run_cli(
        capsys, "Qwen/Qwen2-VL-2B-Instruct", "--recipe", "nothing", "--recipes", str(f)
    )
    assert rc == 2 and out == "" and err.count("\n") == 1
    assert "refused" in err and "matches no parameter" in err


def test_hf_cache_model(capsys, monkeypatch, tmp_path: Path) -> None:
    cfg = json.loads(
        (
            Path(__file__).parents[1] / "src/vlmtui/data/model-configs/Qwen2-VL-2B-Instruct.json"
        ).read_text()
    )
    cfg["num_hidden_layers"] = 2
    repo = tmp_path / "hub" / "models--someone--tiny-vl"
    snap = repo / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    (snap / "config.json").write_text(json.dumps(cfg))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    ref = resolve_model("someone/tiny-vl")
    assert ref.source == "hf-cache" and ref.config_path == snap / "config.json"
    data = inspect_json(capsys, "someone/tiny-vl", "--recipe", "r1-llm-only")
    assert data["source"] == "hf-cache" and len(data["lora_modules"]) == 2 * 7
    # A cached copy of a shipped id wins over the shipped config.
    shipped = repo.parent / "models--Qwen--Qwen2-VL-2B-Instruct"
    shutil.copytree(repo, shipped)
    assert resolve_model("Qwen/Qwen2-VL-2B-Instruct").source == "hf-cache"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    assert resolve_model("Qwen/Qwen2-VL-2B-Instruct").source == "shipped"
    assert resolve_model("Qwen2-VL-2B-Instruct").name == "Qwen/Qwen2-VL-2B-Instruct"
    with pytest.raises(BadInput):
        resolve_model("someone/tiny-vl")


def test_local_checkpoint_dir(capsys, qwen2_vl_dir: Path) -> None:
    data = inspect_json(capsys, str(qwen2_vl_dir), "--recipe", "r4-joint")
    assert data["source"] == "dir" and data["family"] == "qwen2-vl"
    assert data["areas"]["vision"]["trainable"] > 0 and data["areas"]["projector"]["trainable"] == 0


def test_two_stage_json(capsys) -> None:
    data = inspect_json(capsys, "Qwen/Qwen2-VL-2B-Instruct", "--recipe", "r3-two-stage")
    s1, s2 = data["stages"]
    assert (s1["recipe"], s2["recipe"]) == ("r2-vision-only", "r1-llm-only")
    assert s1["areas"]["llm"]["trainable"] == 0 and s1["quantized_modules"] == []
    assert s2["areas"]["vision"]["trainable"] == 0 and len(s2["quantized_modules"]) == 28 * 7
    assert data["trainable_params"] == s1["trainable_params"] + s2["trainable_params"]
    assert data["areas"]["vision"]["trainable"] == s1["areas"]["vision"]["trainable"]
    assert data["areas"]["llm"]["trainable"] == s2["areas"]["llm"]["trainable"]
    assert data["total_params"] == s2["total_params"]
    assert len(data["memory"]) == 2


def test_no_recipe(capsys) -> None:
    data = inspect_json(capsys, "Qwen/Qwen2.5-VL-3B-Instruct")
    assert data["recipe"] is None and data["trainable_params"] == 0 and data["stages"] == []
    assert data["total_params"] == 3_754_622_976


def test_human_output(capsys) -> None:
    rc, out, err = run_cli(
        capsys, "Qwen/Qwen2-VL-2B-Instruct", "--recipe", "r1-llm-only", "--gpu-mem", "24"
    )
    assert rc == 0, err
    for text in ("vision", "projector", "lm_head", "guard: passed", "fits in 24 GiB per GPU"):
        assert text in " ".join(out.split()), text


def test_tree_and_filter(capsys) -> None:
    rc, out, _ = run_cli(
        capsys, "Qwen/Qwen2-VL-2B-Instruct", "--recipe", "r4-joint", "--tree", "--filter", "qkv"
    )
    assert rc == 0
    assert "blocks.0–31 ×32" in out and "layers.0–27 ×28" in out
    assert "model.visual.blocks.{0–31}.attn.qkv ×32" in out
    data = inspect_json(
        capsys, "Qwen/Qwen2-VL-2B-Instruct", "--recipe", "r4-joint", "--tree", "--filter", "qkv$"
    )
    (matches,) = data["matches"]
    assert matches == [
        {
            "name": "model.visual.blocks.{0–31}.attn.qkv",
            "count": 32,
            "class": "Linear",
            "area": "vision",
            "params": 4_919_040,
            "trainable": 16 * (1280 + 3840),
            "lora_params": 16 * (1280 + 3840),
            "state": "lora",
            "quant": "",
        }
    ]
    assert data["tree"][0]["state"] == "lora"
    rc, out, _ = run_cli(
        capsys, "Qwen/Qwen2-VL-2B-Instruct", "--recipe", "r4-joint", "--tree", "--expand"
    )
    assert "blocks.0–31" not in out and "── lora   31 " in out


def test_diff(capsys) -> None:
    data = inspect_json(capsys, "Qwen/Qwen2-VL-2B-Instruct", "--diff", "r2-vision-only", "r4-joint")
    assert data["diff"] == ["r2-vision-only", "r4-joint"]
    assert set(data["areas_differ"]) == {"vision", "projector", "llm"}
    assert data["areas"]["projector"]["r4-joint"]["mode"] == "frozen"
    names = {c["name"]: c for c in data["changes"]}
    assert names["model.visual.merger"]["r2-vision-only"] == "full"
    assert names["model.visual.merger"]["r4-joint"] == "frozen"
    qkv = names["model.visual.blocks.{0–31}.attn.qkv"]
    assert (qkv["r2-vision-only"], qkv["r4-joint"], qkv["count"]) == ("full", "lora", 32)
    rc, out, _ = run_cli(capsys, "Qwen/Qwen2-VL-2B-Instruct", "--diff", "r1-llm-only", "r4-joint")
    assert rc == 0 and "model.visual.blocks.{0–31}.attn.qkv ×32" in " ".join(out.split())


def test_compare_recipes_is_what_diff_prints(capsys) -> None:
    """The core comparison the CLI renders: stage modes joined, `changes` are `state_changes`
    (`views.diff_trees`, what the app's compare shows), and `to_json` is the CLI's JSON."""
    from vlmtui.core.inspection.compare import compare_recipes, state_changes
    from vlmtui.core.inspection.memory import MemoryAssumptions
    from vlmtui.core.inspection.meta import ModelInspector
    from vlmtui.core.recipes.catalog import get_recipe

    model = "Qwen/Qwen2-VL-2B-Instruct"
    insp = ModelInspector(model)
    a, b = (insp.inspect(get_recipe(n)) for n in ("r2-vision-only", "r3-two-stage"))
    diff = compare_recipes(insp.tree(), a, b, MemoryAssumptions())
    assert diff.areas["llm"][1]["mode"] == "frozen→lora"
    assert diff.areas["vision"][1]["mode"] == "full→frozen"
    assert diff.areas_differ == ["vision", "projector", "llm"]
    assert diff.changes == state_changes(insp.tree(), a, b) != ()
    cli = inspect_json(capsys, model, "--diff", "r2-vision-only", "r3-two-stage")
    assert json.loads(json.dumps(diff.to_json())) == cli


# --- identity with training -------------------------------------------------------------


def trained_names(stage_dir: Path) -> set[str]:
    data = json.loads((stage_dir / "trainable.json").read_text())
    return set(data["optimizer_params"])


@pytest.mark.slow
@pytest.mark.parametrize("family_name", QWEN2_FAMILIES)
@pytest.mark.parametrize("recipe_name", list(BUILTIN_RECIPES))
def test_inspect_trainable_names_equal_what_train_trained(
    capsys, demo_model_dirs, shapes_data_dir: Path, tmp_path: Path, family_name, recipe_name
) -> None:
    model = demo_model_dirs[family_name]
    out = tmp_path / "run"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "vlmtui",
            "train",
            "--recipe",
            recipe_name,
            "--model",
            str(model),
            "--data",
            str(shapes_data_dir),
            "--output",
            str(out),
            "--max-steps",
            "2",
            "--gpu",
            "cpu",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = inspect_json(capsys, str(model), "--recipe", recipe_name)
    if BUILTIN_RECIPES[recipe_name].stages:
        dirs = [out / f"stage{i}" for i in range(1, len(data["stages"]) + 1)]
    else:
        dirs = [out]
    assert len(dirs) == len(data["stages"])
    union: set[str] = set()
    for stage, stage_dir in zip(data["stages"], dirs, strict=True):
        trained = trained_names(stage_dir)
        assert trained, stage_dir
        assert set(stage["trainable_names"]) == trained, stage["recipe"]
        union |= trained
    assert set(data["trainable_names"]) == union
