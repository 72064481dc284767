"""Bad input at the command line, found by probing every command (the developers' guide: one
line naming the file, field or value, exit code 2, no traceback, no half-written run). Each
case runs the real `vlmtui` process with a private VLMTUI_HOME (conftest) and asserts the
exact stderr line and exit code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BAD_UTF8 = b"\xff\xfe[recipe.a]\n"


def vlmtui(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [sys.executable, "-m", "vlmtui", *args],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **(env or {})},
    )


def refused(proc: subprocess.CompletedProcess[str], line: str) -> None:
    assert (proc.returncode, proc.stderr) == (2, f"vlmtui: {line}\n"), proc.stdout


# ------------------------------------------------------------------------------ recipes

RECIPE_CASES = {
    "not-utf8": (BAD_UTF8, "not a text file (byte 0xff at offset 0 is not UTF-8)"),
    "extends-list": (
        b"[recipe.a]\nextends = ['r1-llm-only']\n",
        "recipe 'a': extends: expected a recipe name, got ['r1-llm-only']",
    ),
    "lr-nan": (
        b"[recipe.a]\nextends = 'r1-llm-only'\nlearning_rate = nan\n",
        "recipe 'a': learning_rate: expected a finite number, got nan",
    ),
    "lr-inf": (
        b"[recipe.a]\nextends = 'r1-llm-only'\nlearning_rate = inf\n",
        "recipe 'a': learning_rate: expected a finite number, got inf",
    ),
    "area-lr-nan": (
        b"[recipe.a]\nextends = 'r1-llm-only'\nllm = { mode = 'lora', learning_rate = nan }\n",
        "recipe 'a': llm.learning_rate: expected a finite number, got nan",
    ),
    "huge-steps": (
        b"[recipe.a]\nextends = 'r1-llm-only'\nmax_steps = 9223372036854775807\n",
        "recipe 'a': max_steps: must be at most 2147483647, got 9223372036854775807",
    ),
    "dropout-1": (
        b"[recipe.a]\nextends = 'r1-llm-only'\nlora = { dropout = 1.0 }\n",
        "recipe 'a': lora.dropout: must be less than 1, got 1.0",
    ),
    "warmup-3": (
        b"[recipe.a]\nextends = 'r1-llm-only'\nwarmup_ratio = 3.0\n",
        "recipe 'a': warmup_ratio: must be less than 1, got 3.0",
    ),
}


@pytest.mark.parametrize("case", sorted(RECIPE_CASES))
def test_bad_recipe_file_is_refused(tmp_path: Path, case: str) -> None:
    content, message = RECIPE_CASES[case]
    path = tmp_path / f"{case}.toml"
    path.write_bytes(content)
    refused(vlmtui("recipes", "--recipes", str(path)), f"{path}: {message}")


def test_non_utf8_file_in_the_recipes_folder_is_skipped(_isolated_vlmtui_home: Path) -> None:
    folder = _isolated_vlmtui_home / "config" / "recipes"
    folder.mkdir(parents=True)
    (folder / "bin.toml").write_bytes(BAD_UTF8)
    proc = vlmtui("recipes", "--json")
    assert proc.returncode == 0
    assert proc.stderr == (
        f"vlmtui: warning: {folder / 'bin.toml'}: not a text file (byte 0xff at offset 0 is "
        "not UTF-8) (skipped this file)\n"
    )


# ------------------------------------------------------------------------ hosts.toml, gpus

HOSTS_CASES = {
    "not-utf8": (b"\xff\xfe[hosts.a]\n", "not a text file (byte 0xff at offset 0 is not UTF-8)"),
    "not-toml": (
        b"[hosts.a\n",
        "not valid TOML (Expected ']' at the end of a table declaration (at line 1, column 9))",
    ),
    "hosts-list": (b"hosts = [1]\n", "'hosts' must be a table of [hosts.NAME] tables"),
    "port-float": (
        b"[hosts.a]\ntarget = 'h'\nport = 22.5\n",
        "hosts.a.port: expected a port number 1-65535, got 22.5",
    ),
    "port-big": (
        b"[hosts.a]\ntarget = 'h'\nport = 70000\n",
        "hosts.a.port: expected a port number 1-65535, got 70000",
    ),
    "timeout-nan": (
        b"[hosts.a]\ntarget = 'h'\nconnect_timeout = nan\n",
        "hosts.a.connect_timeout: expected a positive number, got nan",
    ),
    "timeout-inf": (
        b"[hosts.a]\ntarget = 'h'\ntimeout = inf\n",
        "hosts.a.timeout: expected a positive number, got inf",
    ),
}


@pytest.mark.parametrize("case", sorted(HOSTS_CASES))
def test_bad_hosts_toml_is_refused_by_every_hosts_command(
    _isolated_vlmtui_home: Path, case: str
) -> None:
    """`hosts` and `hosts add` refuse it, and so does `hosts remove` when the file cannot be
    parsed (a bad field is what `remove` is for); the file stays as it was."""
    content, message = HOSTS_CASES[case]
    path = _isolated_vlmtui_home / "config" / "hosts.toml"
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    commands = [["hosts"], ["hosts", "add", "box", "u@h"]]
    if "." not in message.split(":")[0]:
        commands.append(["hosts", "remove", "a"])
    for args in commands:
        refused(vlmtui(*args), f"{path}: {message}")
    assert path.read_bytes() == content


def test_hosts_toml_that_is_a_directory(_isolated_vlmtui_home: Path) -> None:
    path = _isolated_vlmtui_home / "config" / "hosts.toml"
    path.mkdir(parents=True)
    refused(vlmtui("hosts", "add", "b", "u@h"), f"{path}: cannot read hosts file (Is a directory)")


def test_hosts_add_does_not_write_over_a_broken_host(_isolated_vlmtui_home: Path) -> None:
    path = _isolated_vlmtui_home / "config" / "hosts.toml"
    path.parent.mkdir(parents=True)
    path.write_text("[hosts.a]\ntarget = 'h'\nport = 0\n")
    refused(
        vlmtui("hosts", "add", "box", "u@h"), f"{path}: hosts.a.port: expected a port number "
        "1-65535, got 0",
    )  # fmt: skip
    assert vlmtui("hosts", "add", "a", "h", "--port", "22").returncode == 0  # the fix works
    assert "port = 22" in path.read_text()


# `{hosts}` stands for the private home's hosts.toml.
NUMBER_CASES = [
    (["hosts", "add", "box", "u@h", "--port", "70000"],
     "{hosts}: hosts.box.port: expected a port number 1-65535, got 70000"),
    (["gpus", "--timeout", "nan"], "--timeout: expected a positive number of seconds, got nan"),
    (["gpus", "--timeout", "0"], "--timeout: expected a positive number of seconds, got 0.0"),
    (["stop", "x", "--grace", "nan"], "--grace: expected 0 or more seconds, got nan"),
    (["stop", "x", "--grace", "-1"], "--grace: expected 0 or more seconds, got -1.0"),
]  # fmt: skip


@pytest.mark.parametrize(("args", "line"), NUMBER_CASES)
def test_bad_numbers_for_hosts_gpus_and_stop(
    _isolated_vlmtui_home: Path, args: list[str], line: str
) -> None:
    hosts = _isolated_vlmtui_home / "config" / "hosts.toml"
    refused(vlmtui(*args), line.format(hosts=hosts))
    assert not hosts.exists()


# ---------------------------------------------------------------------------- VLMTUI_HOME


@pytest.mark.parametrize("below", ["", "sub"])
@pytest.mark.parametrize("args", [["runs"], ["hosts", "add", "a", "h"], ["recipes"], []])
def test_vlmtui_home_that_is_a_file(tmp_path: Path, below: str, args: list[str]) -> None:
    """Every command, the app included (no args), says so before its first mkdir."""
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    proc = vlmtui(*args, env={"VLMTUI_HOME": str(a_file / below)})
    refused(proc, f"VLMTUI_HOME: {a_file} is not a directory")


# ----------------------------------------------------------------- train and eval --base


def _broken_checkpoint(good: Path, where: Path, how: str) -> Path:
    """A copy of the tiny checkpoint `good`, broken one way."""
    import json
    import shutil

    shutil.copytree(good, where)
    config = where / "config.json"
    if how == "config-list":
        config.write_text("[1, 2]")
    elif how == "config-type":
        data = json.loads(config.read_text())
        data["text_config"]["num_hidden_layers"] = "two"
        config.write_text(json.dumps(data))
    elif how == "no-weights":
        (where / "model.safetensors").unlink()
    elif how == "no-processor":
        for name in ("processor_config.json", "tokenizer.json", "tokenizer_config.json"):
            (where / name).unlink(missing_ok=True)
    return where


CHECKPOINT_CASES = {
    "config-list": "{m}/config.json: expected a JSON object",
    "config-type": "{m}/config.json: cannot build Qwen2VLForConditionalGeneration from this "
    "config (StrictDataclassFieldValidationError: Validation error for field "
    "'num_hidden_layers': TypeError: Field 'num_hidden_layers' expected int, got str "
    "(value: 'two'))",
    "no-weights": "{m}: no weights (none of model.safetensors, model.safetensors.index.json, "
    "pytorch_model.bin, pytorch_model.bin.index.json)",
    "no-processor": "{m}: cannot load its processor (tokenizer and image processor): OSError: ",
}


@pytest.mark.slow  # each refusal loads torch, builds on the meta device, loads a processor
@pytest.mark.parametrize("how", sorted(CHECKPOINT_CASES))
def test_broken_checkpoint_is_refused_before_the_run_starts(
    qwen2_vl_dir: Path, shapes_data_dir: Path, tmp_path: Path, how: str
) -> None:
    """Found by `from_pretrained` these were tracebacks with exit 1 after the run directory
    (train) was made; now `train` and `eval --base` refuse them and write nothing."""
    model = _broken_checkpoint(qwen2_vl_dir, tmp_path / "model", how)
    expected = "vlmtui: " + CHECKPOINT_CASES[how].format(m=model)
    out = tmp_path / "out"
    train = vlmtui(
        "train", "--recipe", "r2-vision-only", "--model", str(model), "--data",
        str(shapes_data_dir), "--output", str(out), "--max-steps", "1",
    )  # fmt: skip
    base = vlmtui(
        "eval", "--base", str(model), "--output", str(out), "--data", str(shapes_data_dir)
    )
    for proc in (train, base):
        assert proc.returncode == 2 and "Traceback" not in proc.stderr
        assert proc.stderr.startswith(expected) and proc.stderr.count("\n") == 1, proc.stderr
    assert not out.exists()


@pytest.mark.parametrize(
    ("flag", "value", "line"),
    [
        ("--save-steps", "0", "--save-steps: must be at least 1, got 0"),
        ("--seed", "-1", "--seed: must be 0 to 4294967295, got -1"),
        ("--seed", str(2**32), f"--seed: must be 0 to 4294967295, got {2**32}"),
    ],
)
def test_bad_train_numbers(
    qwen2_vl_dir: Path, shapes_data_dir: Path, tmp_path: Path, flag: str, value: str, line: str
) -> None:
    """--seed -1 reached numpy's set_seed: a traceback and a failed run directory."""
    out = tmp_path / "out"
    proc = vlmtui(
        "train", "--recipe", "r2-vision-only", "--model", str(qwen2_vl_dir), "--data",
        str(shapes_data_dir), "--output", str(out), flag, value,
    )  # fmt: skip
    refused(proc, line)
    assert not out.exists()


def test_eval_max_new_tokens_zero_is_refused_like_minus_one(tmp_path: Path) -> None:
    """0 was read as 'not given' and silently became the default."""
    proc = vlmtui("eval", "--base", str(tmp_path), "--output", str(tmp_path / "o"), "--data",
                  str(tmp_path), "--max-new-tokens", "0")  # fmt: skip
    refused(proc, "--max-new-tokens: must be at least 1, got 0")


# ---------------------------------------------------------------------------- datasets

_IMG = '{"id": 1, "file_name": "00000.png"}'
_CAT = '{"id": 1, "name": "a"}'


def _coco(images: str = _IMG, ann: str = "", cats: str = _CAT) -> str:
    return f'{{"images": [{images}], "annotations": [{ann}], "categories": [{cats}]}}'


def _ann(image_id: str = "1", category_id: str = "1", bbox: str = "[1, 1, 3, 3]") -> str:
    return f'{{"image_id": {image_id}, "category_id": {category_id}, "bbox": {bbox}}}'


DATA_CASES = {
    # name: (file name, content, message after "{file}")
    "coco-image-id-list": ("train.json", _coco(images='{"id": [1], "file_name": "00000.png"}'),
                           ": images[0].id: expected an integer or string id, got [1]"),
    "coco-ann-image-id-list": ("train.json", _coco(ann=_ann(image_id="[1]")),
                               ": annotations[0].image_id: expected an integer or string id, "
                               "got [1]"),
    "coco-category-id-table": ("train.json", _coco(ann=_ann(category_id="{}")),
                               ": annotations[0].category_id: expected an integer or string id, "
                               "got {}"),
    "coco-bbox-strings": ("train.json", _coco(ann=_ann(bbox='["a", "b", "c", "d"]')),
                          ": annotations[0]: bbox must be 4 numbers [x, y, w, h], got "
                          "['a', 'b', 'c', 'd']"),
    "coco-empty-category-name": ("train.json", _coco(cats='{"id": 1, "name": ""}'),
                                 ": categories[0]: 'name' must be a non-empty string, got ''"),
    "coco-repeated-image-id": ("train.json",
                               _coco(images=f'{_IMG}, {{"id": 1, "file_name": "00001.png"}}'),
                               ": images[1]: id 1 repeats an earlier image's"),
    "jsonl-deep": ("train.jsonl", "[" * 100_000 + "]" * 100_000, ":1: bad JSON: nested too deeply"),
    "coco-deep": ("train.json", "[" * 100_000 + "]" * 100_000, ": bad JSON: nested too deeply"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(DATA_CASES))
def test_malformed_dataset_is_refused_naming_the_entry(
    qwen2_vl_dir: Path, shapes_data_dir: Path, tmp_path: Path, case: str
) -> None:
    """Unhashable ids and deep nesting were tracebacks; a repeated image id and an empty
    category name trained silently."""
    name, content, message = DATA_CASES[case]
    data = tmp_path / "data"
    data.mkdir()
    (data / "images").symlink_to(shapes_data_dir / "images")
    (data / name).write_text(content)
    out = tmp_path / "out"
    proc = vlmtui(
        "train", "--recipe", "r2-vision-only", "--model", str(qwen2_vl_dir), "--data",
        str(data), "--output", str(out),
    )  # fmt: skip
    refused(proc, f"{data / name}{message}")
    assert not out.exists()


def test_split_file_that_is_a_directory(qwen2_vl_dir: Path, tmp_path: Path) -> None:
    """Was "no train.jsonl or train.json (found train.jsonl)"."""
    (tmp_path / "data" / "train.jsonl").mkdir(parents=True)
    proc = vlmtui(
        "train", "--recipe", "r2-vision-only", "--model", str(qwen2_vl_dir), "--data",
        str(tmp_path / "data"), "--output", str(tmp_path / "out"),
    )  # fmt: skip
    refused(
        proc, f"{tmp_path / 'data' / 'train.jsonl'}: not a file (expected the train annotations)"
    )


# ------------------------------------------------------------- compare, empty RUN and MODEL


def _fake_run(
    where: Path, run_json: str = '{"recipe": "r1-llm-only"}', eval_json: str = ""
) -> Path:
    """A run directory as compare reads it: only its files (compare never loads a model)."""
    where.mkdir()
    (where / "run.json").write_text(run_json)
    if eval_json:
        (where / "eval.json").write_text(eval_json)
    return where


def test_compare_refuses_the_same_run_twice(tmp_path: Path) -> None:
    run = _fake_run(tmp_path / "run")
    refused(vlmtui("compare", str(run), f"{run}/"), f"{run}/: the same run as {run}; name each "
            "run once")  # fmt: skip


@pytest.mark.parametrize(
    ("run_json", "eval_json", "broken"),
    [
        ("{broken", "", "run.json"),
        ('{"recipe": "r1-llm-only"}', "[1, 2]", "eval.json"),
        ('{"recipe": "r1-llm-only"}', '"text"', "eval.json"),
    ],
)
def test_compare_names_a_damaged_run_file(
    tmp_path: Path, run_json: str, eval_json: str, broken: str
) -> None:
    """A list in eval.json was an AttributeError traceback; broken run.json was reported as
    'neither run.json nor eval.json'."""
    run = _fake_run(tmp_path / "run", run_json, eval_json)
    refused(vlmtui("compare", str(run)), f"{run / broken}: not a JSON object (damaged, or not "
            "written by vlmtui)")  # fmt: skip


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["logs", ""], "RUN is empty: give a run id (see `vlmtui runs`)"),
        (["stop", " "], "RUN is empty: give a run id (see `vlmtui runs`)"),
        (["launch", "--resume", ""], "RUN is empty: give a run id (see `vlmtui runs`)"),
        (["eval", "", "--data", "."], "RUN is empty: give a run id or a run directory"),
        (["compare", ""], "RUN is empty: give a run id or a run directory"),
        (["inspect", ""], "MODEL is empty: give a checkpoint directory or a model id"),
    ],
)
def test_empty_run_or_model_is_refused(args: list[str], line: str) -> None:
    """'' matched every run id as a prefix ("ambiguous"), and eval/compare/inspect took it as
    the working directory."""
    refused(vlmtui(*args), line)


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_inspect_gpu_mem_must_be_finite(value: str) -> None:
    """nan printed "fits in nan GiB" and NaN (not JSON) in --json."""
    proc = vlmtui("inspect", "Qwen/Qwen2-VL-2B-Instruct", "--gpu-mem", value, "--json")
    refused(proc, f"--gpu-mem: expected a finite number, got {value}")


# ---------------------------------------------------------------------- launch and demo


def test_launch_refuses_more_cpu_processes_than_the_machine_has(
    qwen2_vl_dir: Path, shapes_data_dir: Path, _isolated_vlmtui_home: Path
) -> None:
    """--nproc 99999 --gpu cpu started torchrun with 99999 workers; no run row is left."""
    import os

    many = str(max(2, os.cpu_count() or 1) + 1)
    proc = vlmtui(
        "launch", "--recipe", "r2-vision-only", "--model", str(qwen2_vl_dir), "--data",
        str(shapes_data_dir), "--gpu", "cpu", "--nproc", many,
    )  # fmt: skip
    refused(proc, f"--nproc: {many} processes, but this machine has {os.cpu_count()} CPUs")
    assert vlmtui("runs", "--json").stdout.strip() == "[]"


def test_launch_empty_gpu_is_refused(qwen2_vl_dir: Path, shapes_data_dir: Path) -> None:
    """--gpu '' was read as 'auto'; `train --gpu ''` refused it."""
    proc = vlmtui(
        "launch", "--recipe", "r2-vision-only", "--model", str(qwen2_vl_dir), "--data",
        str(shapes_data_dir), "--gpu", "",
    )  # fmt: skip
    refused(proc, "--gpu: expected 'auto', 'cpu', an index or a list like 0,1; got ''")
    assert vlmtui("runs", "--json").stdout.strip() == "[]"


def test_demo_model_under_a_file(tmp_path: Path) -> None:
    """Exit 1 ('cannot write the demo model') after building it; `demo data` said exit 2."""
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    refused(
        vlmtui("demo", "model", str(a_file / "sub")),
        f"{a_file / 'sub'}: cannot create: [Errno 20] Not a directory: '{a_file / 'sub'}'",
    )


# ------------------------------------------------------------------ damaged run directories


@pytest.mark.parametrize("supervisor", ['{"pid": "abc", "starttime": [1]}', "[1]"])
def test_damaged_run_files_do_not_take_runs_down(
    _isolated_vlmtui_home: Path, supervisor: str
) -> None:
    """A launch.json with a text `created`, a supervisor.json with a text pid: `runs --rebuild`
    was a ValueError traceback, and once such a row was in, every `runs` was one too."""
    import json

    run = _isolated_vlmtui_home / "data" / "runs" / "r-damaged"
    run.mkdir(parents=True)
    launch = {"id": "r-damaged", "created": "yesterday", "nproc": "x", "max_steps": "x"}
    (run / "launch.json").write_text(json.dumps(launch))
    (run / "supervisor.json").write_text(supervisor)
    rebuilt = vlmtui("runs", "--rebuild", "--json")
    assert rebuilt.returncode == 0 and "Traceback" not in rebuilt.stderr, rebuilt.stderr
    rows = json.loads(rebuilt.stdout)
    assert [(r["id"], r["max_steps"]) for r in rows] == [("r-damaged", None)]
    again = vlmtui("runs")
    assert again.returncode == 0 and again.stderr == "", again.stderr


@pytest.mark.parametrize("flag", ["--output", "--save-images"])
def test_eval_output_folders_are_checked_before_generating(tmp_path: Path, flag: str) -> None:
    """--output under a file was a FileExistsError traceback after every image was generated;
    --save-images was refused, but only then. Now both are refused first (a stand-in run dir:
    the check comes before any model loads)."""
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    (tmp_path / "data").mkdir()
    args = ["eval", "--base", str(tmp_path), "--data", str(tmp_path / "data")]
    args += ["--output", str(tmp_path / "out")] if flag == "--save-images" else []
    refused(vlmtui(*args, flag, str(a_file / "x")), f"{flag}: {a_file} is not a directory")


# ------------------------------------------------------------------- FIFOs as config files


def test_fifo_config_files_are_refused_not_read(_isolated_vlmtui_home: Path) -> None:
    """A FIFO named like a config file blocked the read forever: `recipes --recipes FIFO`
    hung, and one in the recipes folder hung every command that lists recipes."""
    import os

    from vlmtui.core.errors import BadInput
    from vlmtui.core.settings import load_settings

    config = _isolated_vlmtui_home / "config"
    (config / "recipes").mkdir(parents=True)
    fifo = config / "recipes" / "f.toml"
    os.mkfifo(fifo)
    refused(vlmtui("recipes", "--recipes", str(fifo)), f"{fifo}: cannot read recipe file (not a "
            "regular file)")  # fmt: skip
    listed = vlmtui("recipes", "--json")
    assert listed.returncode == 0 and f"{fifo}: cannot read recipe file" in listed.stderr
    hosts = config / "hosts.toml"
    os.mkfifo(hosts)
    refused(vlmtui("hosts"), f"{hosts}: cannot read hosts file (not a regular file)")
    settings = config / "settings.toml"  # read by the app only: its loader, directly
    os.mkfifo(settings)
    with pytest.raises(BadInput, match="cannot read settings file \\(not a regular file\\)"):
        load_settings()


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ("[1]", "not a JSON object (damaged, or not written by vlmtui)"),
        ('{"kind": "adapter"}', "path: expected a path, got None"),
        ('{"kind": "adapter", "path": "a"}', "base_model: expected a path, got None"),
        ('{"kind": "lora", "path": "a"}', "kind: expected 'full' or 'adapter', got 'lora'"),
    ],
)
def test_eval_names_a_damaged_weights_json(tmp_path: Path, weights: str, message: str) -> None:
    """A list was an AttributeError traceback, a missing key a KeyError one (after loading)."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "weights.json").write_text(weights)
    proc = vlmtui("eval", str(run), "--data", str(tmp_path))
    refused(proc, f"{run / 'weights.json'}: {message}")


@pytest.mark.ssh
def test_launch_sends_only_the_recipe_files_that_load(
    standin_train, ssh_host, paths, capsys: pytest.CaptureFixture[str]
) -> None:
    """A broken file in the recipes folder is skipped here with a warning, but `launch` to an
    SSH host read every file to copy it: a non-UTF-8 one was a UnicodeDecodeError traceback
    (and a copied broken file would be refused there, named with --recipes). Through the
    CLI's main() in this process, so the stand-in trainer (no GPU here) is used."""
    from vlmtui.cli import main
    from vlmtui.core.recipes.catalog import user_recipe_dir

    user_recipe_dir().mkdir(parents=True)
    (user_recipe_dir() / "a-broken.toml").write_bytes(BAD_UTF8)
    good = '[recipe.my-r1]\nextends = "r1-llm-only"\nlearning_rate = 1e-4\n'
    (user_recipe_dir() / "b-mine.toml").write_text(good)
    standin_train("ok", steps=1, step_s=0.0)
    model, data = paths
    code = main(["launch", "--recipe", "my-r1", "--model", model, "--data", data, "--host",
                 ssh_host.name, "--gpu", "cpu", "--json"])  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "Traceback" not in err and "a-broken.toml: not a text file" in err
    import json

    run_dir = Path(json.loads(out)["run_dir"])
    assert [p.name for p in (run_dir / "recipes").iterdir()] == ["00-b-mine.toml"]
    assert (run_dir / "recipes" / "00-b-mine.toml").read_text() == good


# ----------------------------------------------------------------------- counts too large

HUGE = "99999999999999999999"


@pytest.mark.parametrize("command", ["launch", "train"])
def test_max_steps_past_the_count_limit(
    qwen2_vl_dir: Path, shapes_data_dir: Path, tmp_path: Path, command: str
) -> None:
    """launch stored it in SQLite: an OverflowError traceback; train started a run that
    could never end."""
    where = ["--gpu", "cpu"] if command == "launch" else ["--output", str(tmp_path / "out")]
    proc = vlmtui(
        command, "--recipe", "r2-vision-only", "--model", str(qwen2_vl_dir), "--data",
        str(shapes_data_dir), "--max-steps", HUGE, *where,
    )  # fmt: skip
    refused(proc, f"--max-steps: must be at most 2147483647, got {HUGE}")
    assert vlmtui("runs", "--json").stdout.strip() == "[]"
    assert not (tmp_path / "out").exists()


def test_resume_max_steps_zero_is_refused_not_ignored(tmp_path: Path) -> None:
    """`--max-steps 0` with --resume fell back to the run's own steps (0 read as not given)."""
    import time

    from vlmtui.core.fleet.registry import Registry, RunRecord

    row = RunRecord(
        id="r-stopped", recipe="r2-vision-only", host="local", gpus="cpu",
        run_dir=str(tmp_path), created=time.time(), state="stopped", max_steps=5, model="/m",
        data="/d",
    )  # fmt: skip
    Registry().add(row)
    (tmp_path / "status.json").write_text('{"state": "stopped", "run_id": "r-stopped"}')
    refused(vlmtui("launch", "--resume", "r-stopped", "--max-steps", "0"),
            "--max-steps: must be at least 1, got 0")  # fmt: skip


def test_hf_cache_ref_that_is_not_text_falls_back_to_the_snapshot(
    qwen2_vl_dir: Path, tmp_path: Path
) -> None:
    """refs/main with non-UTF-8 bytes was a UnicodeDecodeError traceback in `inspect`; a ref
    is a hint, and the snapshots are still there."""
    import shutil

    repo = tmp_path / "hub" / "models--someone--tiny-vl"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_bytes(b"\xff\xfe")
    snap = repo / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    shutil.copy(qwen2_vl_dir / "config.json", snap / "config.json")
    proc = vlmtui("inspect", "someone/tiny-vl", "--recipe", "r1-llm-only", "--json",
                  env={"HF_HUB_CACHE": str(tmp_path / "hub")})  # fmt: skip
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert '"source": "hf-cache"' in proc.stdout


# ---------------------------------------------------------------------------- inspect

QWEN2_2B = "Qwen/Qwen2-VL-2B-Instruct"


def test_inspect_memory_options_are_refused_before_the_build() -> None:
    """They were checked after the meta build, so bitsandbytes' kernel note came first: two
    lines on stderr, and seconds spent."""
    refused(vlmtui("inspect", QWEN2_2B, "--recipe", "r1-llm-only", "--seq-len", "0"),
            "--seq-len: must be positive, got 0")  # fmt: skip


def test_inspect_guard_refusal_is_one_line(tmp_path: Path) -> None:
    """A refusal found by the build (a LoRA target the family does not know) came after
    bitsandbytes' kernel note, which `inspect` did not quiet like train and eval."""
    recipes = tmp_path / "r.toml"
    recipes.write_text("[recipe.a]\nextends = 'r1-llm-only'\nllm = { mode = 'lora', targets = "
                       "['zz'] }\n")  # fmt: skip
    proc = vlmtui("inspect", QWEN2_2B, "--recipe", "a", "--recipes", str(recipes), "--no-cache")
    refused(proc, "llm LoRA target 'zz' is not known for qwen2-vl (known: q_proj, k_proj, "
            "v_proj, o_proj, gate_proj, up_proj, down_proj)")  # fmt: skip


def test_inspect_cache_folder_that_is_a_file(_isolated_vlmtui_home: Path) -> None:
    """A cache that cannot be written only costs speed: it was a NotADirectoryError traceback
    (unlink(missing_ok=True) of the temporary file raised)."""
    (_isolated_vlmtui_home / "data").mkdir(parents=True)
    (_isolated_vlmtui_home / "data" / "cache").write_text("x")
    proc = vlmtui("inspect", QWEN2_2B, "--recipe", "r2-vision-only", "--json")
    assert (proc.returncode, proc.stderr) == (0, ""), proc.stderr


def test_stage_two_before_stage_one_leaves_no_run_directory(
    qwen2_vl_dir: Path, shapes_data_dir: Path, tmp_path: Path
) -> None:
    """The stage loop refused it after run.json, stage1/ and a failed status.json existed."""
    out = tmp_path / "out"
    proc = vlmtui(
        "train", "--recipe", "r3-two-stage", "--model", str(qwen2_vl_dir), "--data",
        str(shapes_data_dir), "--output", str(out), "--stage", "2",
    )  # fmt: skip
    refused(proc, "--stage 2: stage 1 has not finished")
    assert not out.exists()


@pytest.mark.parametrize("follow", [[], ["--follow"]])
def test_logs_of_a_run_whose_output_log_is_a_directory(tmp_path: Path, follow: list[str]) -> None:
    """An IsADirectoryError traceback; now the work failure it is (exit 1), in one line."""
    import time

    from vlmtui.core.fleet.registry import Registry, RunRecord

    (tmp_path / "output.log").mkdir()
    (tmp_path / "status.json").write_text('{"state": "finished", "run_id": "r-odd"}')
    row = RunRecord(
        id="r-odd", recipe="r2-vision-only", host="local", gpus="cpu", run_dir=str(tmp_path),
        created=time.time(), state="finished",
    )  # fmt: skip
    Registry().add(row)
    proc = vlmtui("logs", "r-odd", *follow)
    assert (proc.returncode, proc.stderr) == (
        1, f"vlmtui: {tmp_path / 'output.log'}: cannot read (Is a directory)\n",
    )  # fmt: skip


def test_model_whose_config_is_a_fifo(shapes_data_dir: Path, tmp_path: Path) -> None:
    """train read config.json without looking: a FIFO there hung it."""
    import os

    model = tmp_path / "model"
    model.mkdir()
    os.mkfifo(model / "config.json")
    proc = vlmtui(
        "train", "--recipe", "r2-vision-only", "--model", str(model), "--data",
        str(shapes_data_dir), "--output", str(tmp_path / "out"),
    )  # fmt: skip
    refused(proc, f"{model}: not a model directory (no readable config.json)")
