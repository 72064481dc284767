"""Shared fixtures: tiny demo models of both families, a shapes dataset, an isolated home.

The model and data fixtures are session-scoped (built once, a fraction of a second each after
torch is imported) and must be treated as read-only: copy them before modifying anything.
"""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _isolated_vlmtui_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch) -> Path:
    """Point VLMTUI_HOME at a fresh temp dir so no test touches the user's real config."""
    home = tmp_path_factory.mktemp("vlmtui-home")
    monkeypatch.setenv("VLMTUI_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def _demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("demo-assets")


@pytest.fixture(scope="session")
def qwen2_vl_dir(_demo_root: Path) -> Path:
    """A tiny random Qwen2-VL checkpoint + processor (untied lm_head)."""
    from vlmtui.core.model.demo import make_demo_model

    return make_demo_model(_demo_root / "qwen2-vl", "qwen2-vl")


@pytest.fixture(scope="session")
def qwen25_vl_dir(_demo_root: Path) -> Path:
    """A tiny random Qwen2.5-VL checkpoint + processor (tied lm_head, gated vision MLP)."""
    from vlmtui.core.model.demo import make_demo_model

    return make_demo_model(_demo_root / "qwen2.5-vl", "qwen2.5-vl")


@pytest.fixture(scope="session")
def demo_model_dirs(qwen2_vl_dir: Path, qwen25_vl_dir: Path) -> dict[str, Path]:
    """Family name (`qwen2-vl`, `qwen2.5-vl`) -> tiny checkpoint dir."""
    return {"qwen2-vl": qwen2_vl_dir, "qwen2.5-vl": qwen25_vl_dir}


@pytest.fixture(scope="session")
def qwen3_demo_dirs(_demo_root: Path) -> dict[str, Path]:
    """Family name (`qwen3-vl`, `qwen3-vl-moe`, `qwen3.5`, `qwen3.5-moe`) -> tiny checkpoint."""
    from vlmtui.core.model.demo import make_demo_model

    names = ("qwen3-vl", "qwen3-vl-moe", "qwen3.5", "qwen3.5-moe")
    return {n: make_demo_model(_demo_root / n, n) for n in names}


@pytest.fixture(scope="session")
def shapes_data_dir(_demo_root: Path) -> Path:
    """A 16-image synthetic shapes dataset (112x112) with train.jsonl (13) and val.jsonl (3)."""
    from vlmtui.core.data.shapes import make_shapes_dataset

    return make_shapes_dataset(_demo_root / "shapes", n=16, seed=0)


# Host, GPU and launch fixtures (loopback sshd, stand-in nvidia-smi, stand-in trainer).
pytest_plugins = ["conftest_ssh", "conftest_slurm"]
