"""Finding a model's config without its weights, and building the model on the meta device.

`resolve_model` turns what the user typed into a `ModelRef`, trying in order:

1. a local checkpoint directory with a `config.json`;
2. a model id (`org/name`) in the local Hugging Face cache (the `huggingface_hub` cache
   layout; read offline, nothing is ever downloaded);
3. one of the well-known ids whose config.json ships with vlmtui
   (`src/vlmtui/data/model-configs/`, e.g. `Qwen/Qwen2-VL-72B-Instruct`).

Anything else is `BadInput` naming the shipped ids. A config of a family vlmtui does not
support is `BadInput` too (from `families.family_for_config`).

`build_meta_model` builds the real transformers class from the config on the meta device:
no memory for weights, well under a second even for 72B models. Tied embeddings are tied
again afterwards (`from_config` leaves them untied, which would count them twice).
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from vlmtui.core.errors import BadInput
from vlmtui.core.families import Family, family_for_config

SHIPPED_ORG = "Qwen"


@dataclass(frozen=True)
class ModelRef:
    """A model resolved to its config, ready to be built on the meta device."""

    name: str
    """What the user typed, or the canonical id for a shipped config."""
    source: str
    """`dir` (local checkpoint), `hf-cache` (local Hugging Face cache) or `shipped`."""
    config_path: Path | None
    """The config.json read; None for a shipped config (package data)."""
    config: dict[str, Any] = field(compare=False, hash=False, repr=False)
    """The parsed config.json."""
    family: Family = field(compare=False)
    """The model family the config belongs to."""

    @property
    def checkpoint_dir(self) -> Path | None:
        """Directory holding the checkpoint (weights may be absent); None for shipped configs."""
        return self.config_path.parent if self.config_path is not None else None


def _shipped_dir() -> Any:
    return resources.files("vlmtui") / "data" / "model-configs"


def shipped_model_ids() -> list[str]:
    """The well-known model ids vlmtui ships configs for, sorted."""
    return sorted(
        f"{SHIPPED_ORG}/{p.name.removesuffix('.json')}"
        for p in _shipped_dir().iterdir()
        if p.name.endswith(".json")
    )


def shipped_config(model_id: str) -> dict[str, Any] | None:
    """A shipped config by id (`Qwen/Qwen2-VL-2B-Instruct`, or without the `Qwen/`), or None."""
    name = model_id.removeprefix(f"{SHIPPED_ORG}/")
    if "/" in name or not name:
        return None
    res = _shipped_dir() / f"{name}.json"
    if not res.is_file():
        return None
    return json.loads(res.read_text(encoding="utf-8"))


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache, read from the environment at call time."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "huggingface" / "hub"


def hf_cached_config(model_id: str) -> Path | None:
    """config.json of a model id in the local Hugging Face cache (offline), or None.

    Takes the revision `refs/main` points to; without that ref, the newest snapshot that has
    a config.json.
    """
    parts = model_id.split("/")
    if len(parts) != 2 or not all(parts) or any(p in (".", "..") for p in parts):
        return None
    repo = hf_cache_dir() / f"models--{parts[0]}--{parts[1]}"
    if not repo.is_dir():
        return None
    ref = repo / "refs" / "main"
    try:
        revision = ref.read_text(encoding="utf-8").strip() if ref.is_file() else ""
    except (OSError, UnicodeDecodeError):  # a damaged ref: fall back to the snapshots
        revision = ""
    candidate = repo / "snapshots" / revision / "config.json"
    if revision and candidate.is_file():
        return candidate
    snapshots = repo / "snapshots"
    found = [p / "config.json" for p in snapshots.iterdir()] if snapshots.is_dir() else []
    found = [p for p in found if p.is_file()]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def _read_config(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise BadInput(f"{path}: cannot read ({exc.strerror})") from None
    except ValueError as exc:
        raise BadInput(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise BadInput(f"{path}: expected a JSON object")
    return data


def resolve_model(model: str | os.PathLike[str]) -> ModelRef:
    """A local checkpoint dir, a model id in the local HF cache, or a shipped id. Offline."""
    text = os.fspath(model)
    if not text.strip():  # Path("") is ".", the working directory
        raise BadInput("MODEL is empty: give a checkpoint directory or a model id")
    path = Path(text).expanduser()
    if path.is_dir():
        cfg_path = path / "config.json"
        if not cfg_path.is_file():
            raise BadInput(f"{text}: a directory without config.json is not a model checkpoint")
        config = _read_config(cfg_path)
        return ModelRef(text, "dir", cfg_path, config, family_for_config(config, str(cfg_path)))
    cached = hf_cached_config(text)
    if cached is not None:
        config = _read_config(cached)
        return ModelRef(text, "hf-cache", cached, config, family_for_config(config, str(cached)))
    shipped = shipped_config(text)
    if shipped is not None:
        name = text if "/" in text else f"{SHIPPED_ORG}/{text}"
        return ModelRef(name, "shipped", None, shipped, family_for_config(shipped, name))
    raise BadInput(
        f"{text}: not a model directory, not in the local Hugging Face cache "
        f"({hf_cache_dir()}) and not a shipped config (shipped: {', '.join(shipped_model_ids())})"
    )


def config_object(ref: ModelRef) -> Any:
    """The transformers config object of a resolved model."""
    from transformers import CONFIG_MAPPING

    # A deep copy: transformers fills nested dicts (rope_scaling) in place, and `ref.config`
    # must stay what config.json says (the inspection cache's key hashes it).
    data = copy.deepcopy(ref.config)
    model_type = str(data.get("model_type"))
    try:
        config_cls = CONFIG_MAPPING[model_type]
    except KeyError:
        raise BadInput(
            f"{ref.name}: transformers does not know model_type {model_type!r}"
        ) from None
    return config_cls.from_dict(data)


def skip_init() -> Any:
    """transformers' `no_init_weights` (what from_pretrained uses): weight initialisers become
    no-ops. On the meta device they compute nothing anyway; skipping them saves ~30 %."""
    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # transformers < 5
        try:
            from transformers.modeling_utils import (  # type: ignore[attr-defined,no-redef]
                no_init_weights,
            )
        except ImportError:
            return contextlib.nullcontext()
    return no_init_weights()


def build_meta_model(ref: ModelRef, dtype: Any = None) -> Any:
    """The model's transformers class built from its config on the meta device, ties restored.

    `dtype` (a torch dtype) sets the parameters' dtype; default: the class default.
    """
    import torch
    import transformers

    model_cls = getattr(transformers, ref.family.model_class)
    kwargs = {"dtype": dtype} if dtype is not None else {}
    try:
        config = config_object(ref)
        with skip_init(), torch.device("meta"):
            model = model_cls._from_config(config, **kwargs)
    except Exception as exc:  # only config parsing and module construction run here
        where = ref.config_path or ref.name
        detail = " ".join(str(exc).split())  # one line
        detail = detail if len(detail) <= 300 else detail[:297] + "..."
        raise BadInput(
            f"{where}: cannot build {ref.family.model_class} from this config "
            f"({type(exc).__name__}: {detail})"
        ) from None
    model.tie_weights()
    return model
