"""Known library noise is dropped from train/eval/demo output; real warnings stay. The
warnings are raised as the libraries raise them (module names as their files give them)."""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

from vlmtui.cli.train_cmd import next_step
from vlmtui.core.quiet import quiet_libraries


def _warn(category: type[Warning], module: str) -> None:
    warnings.warn_explicit("x is deprecated", category, f"{module}.py", 1, module=module)


def test_future_warnings_from_libraries_go_other_warnings_stay() -> None:
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        quiet_libraries()
        _warn(FutureWarning, "transformers.modeling_utils")
        _warn(FutureWarning, "trl.trainer.sft_trainer")
        _warn(UserWarning, "transformers.modeling_utils")
        _warn(FutureWarning, "mypackage.thing")
    assert [(w.category, w.filename) for w in seen] == [
        (UserWarning, "transformers.modeling_utils.py"),
        (FutureWarning, "mypackage.thing.py"),
    ]


def test_the_optional_kernel_message_goes_other_log_lines_stay(caplog) -> None:
    quiet_libraries()
    log = logging.getLogger("bitsandbytes.backends.cpu.ops")
    with caplog.at_level(logging.WARNING):
        log.warning("Failed to load CPU gemm_4bit_forward from kernels-community: %s.", "x")
        log.warning("CUDA setup failed")
    assert [r.getMessage() for r in caplog.records] == ["CUDA setup failed"]


def test_train_ends_with_where_and_what_next(tmp_path: Path) -> None:
    run = tmp_path / "my run"
    run.mkdir()
    adapter = run / "adapter"
    (run / "weights.json").write_text(json.dumps({"kind": "adapter", "path": str(adapter)}))
    line = next_step(run, Path("data dir"))
    assert line == f"adapter saved to {adapter}; next: vlmtui eval '{run}' --data 'data dir'"
