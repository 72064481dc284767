"""`vlmtui inspect`'s memory flags: --gpus/--strategy, what would fit, and --diff's setup part."""

from __future__ import annotations

import json

import pytest

from vlmtui.cli import main


@pytest.fixture(autouse=True)
def _wide_terminal(monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # Rich wraps table cells to the terminal width


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    rc = main(["inspect", *args])
    out, err = capsys.readouterr()
    return rc, out, err


def test_fsdp_json_per_gpu(capsys) -> None:
    args = ("Qwen/Qwen2-VL-2B-Instruct", "--recipe", "r4-joint", "--json", "--gpus", "2")
    _, out, _ = run_cli(capsys, *args)
    (ddp,) = json.loads(out)["memory"]
    _, out, _ = run_cli(capsys, *args, "--strategy", "fsdp")
    (fsdp,) = json.loads(out)["memory"]
    assert (ddp["strategy"], fsdp["strategy"], fsdp["gpus"]) == ("ddp", "fsdp", 2)
    assert fsdp["gathered"] > 0 == ddp["gathered"]
    assert fsdp["weights"] < ddp["weights"] and fsdp["total"] < ddp["total"]
    assert fsdp["total_all_gpus"] == 2 * fsdp["total"]
    parts = ("weights", "lora_weights", "gradients", "optimizer_states", "activations")
    assert all(k in fsdp for k in (*parts, "optimizer_step_temp", "overhead_detail"))
    assert {c["name"] for c in fsdp["assumptions"]["constants"]} >= {"cuda_context"}


@pytest.mark.parametrize(("flag", "value"), [("--gpus", "0"), ("--seq-len", "-1")])
def test_bad_memory_flag_one_line(capsys, flag: str, value: str) -> None:
    rc, out, err = run_cli(
        capsys, "Qwen/Qwen2-VL-2B-Instruct", "--recipe", "r1-llm-only", flag, value
    )
    assert rc == 2 and out == "" and err.count("\n") == 1 and flag in err


def test_72b_r1_names_what_would_fit(capsys) -> None:
    rc, out, _ = run_cli(
        capsys, "Qwen/Qwen2-VL-72B-Instruct", "--recipe", "r1-llm-only", "--gpu-mem", "44"
    )
    assert rc == 0 and "does NOT fit in 44 GiB per GPU" in out
    assert "would fit: with --strategy fsdp over 2 GPUs ≈" in out
    _, out, _ = run_cli(
        capsys, "Qwen/Qwen2-VL-72B-Instruct", "--recipe", "r1-llm-only", "--gpu-mem", "44", "--json"
    )
    (mem,) = json.loads(out)["memory"]
    assert mem["fits"] is False and mem["would_fit"][0].startswith("with --strategy fsdp over 2")


def test_diff_has_quantization_dtype_and_memory(capsys) -> None:
    rc, out, _ = run_cli(
        capsys, "Qwen/Qwen2-VL-2B-Instruct", "--diff", "r1-llm-only", "r4-joint", "--json"
    )
    setup = json.loads(out)["setup"]
    r1, r4 = setup["r1-llm-only"], setup["r4-joint"]
    assert (r1["quantization"], r4["quantization"]) == ("4bit", "none")
    assert r1["compute_dtype"] == r4["compute_dtype"] == "auto"
    assert "nf4" in r1["weights_by_dtype"] and "nf4" not in r4["weights_by_dtype"]
    assert setup["memory_difference"] == r4["memory_total"] - r1["memory_total"] > 0
    rc, out, _ = run_cli(capsys, "Qwen/Qwen2-VL-2B-Instruct", "--diff", "r1-llm-only", "r4-joint")
    assert rc == 0 and "quantization *" in out and "memory total" in out
