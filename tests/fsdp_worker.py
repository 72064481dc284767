"""One rank of a two-process FSDP training run, for tests/test_fsdp.py (run under torchrun).

Runs the real `run_training` (every stage, the run directory, the gathered saves) with
`strategy="fsdp"`, and spies on two of its steps without changing them: after
`prepare_stage` rank 0 keeps a copy of every parameter (the other ranks may hold meta
tensors: rank-0 loading), and before `save_stage` the trained (sharded) parameters are
gathered and compared with that copy. Rank 0 writes what it saw per stage to
`fsdp_report.json` in the run directory; each rank writes `meta_rankN.json`, how many
parameters it held on the meta device after each stage's loading.

usage: python -m torch.distributed.run --standalone --nproc_per_node 2 fsdp_worker.py \
    RECIPE MODEL DATA OUTPUT STEPS
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import torch
from torch.distributed.tensor import DTensor

from vlmtui.core.recipes.catalog import get_recipe
from vlmtui.core.training import train

reports: list[dict[str, Any]] = []
meta_after_load: list[int] = []
"""Per stage, how many parameters this rank held on the meta device after loading."""
snapshots: dict[int, tuple[dict[str, torch.Tensor], set[str]]] = {}


def full(param: Any) -> torch.Tensor:
    """The whole tensor of a (possibly sharded) parameter; a collective for DTensors."""
    data = param.full_tensor() if isinstance(param, DTensor) else param
    return data.detach().cpu().clone()


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bit-identical: 4-bit weights packed into float storage hold NaN patterns, and NaN
    never equals itself, so bytes are compared, not values."""
    flat = [t.contiguous().reshape(-1).view(torch.uint8) for t in (a, b)]
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(*flat)


def spy_prepare(*args: Any, **kwargs: Any) -> Any:
    prepared = real_prepare(*args, **kwargs)
    params = list(prepared.model.named_parameters())
    meta_after_load.append(sum(p.is_meta for _, p in params))
    quantized = {n for n, p in params if type(p).__name__ == "Params4bit"}
    # Under rank-0 loading only rank 0 has the weights (the others build on the meta device).
    kept = {n: full(p) for n, p in params} if train.is_main_process() else {}
    snapshots[id(prepared)] = (kept, quantized)
    return prepared


def spy_save(prepared: Any, stage_dir: Path, recipe: Any) -> Any:
    before, quantized = snapshots.pop(id(prepared))
    params = list(prepared.model.named_parameters())
    trainable = {n for n, p in params if p.requires_grad}
    after = {n: full(p) for n, p in params}
    if not train.is_main_process():
        return real_save(prepared, stage_dir, recipe)
    moved = {n for n in after if not same_bits(before[n], after[n])}
    reports.append(
        {
            "stage_dir": str(stage_dir),
            "params": len(params),
            "sharded": sum(isinstance(p, DTensor) for _, p in params),
            "quantized": len(quantized),
            "quantized_sharded": sum(isinstance(p, DTensor) for n, p in params if n in quantized),
            "trainable": len(trainable),
            "frozen_changed": sorted(moved - trainable),
            "trainable_unchanged": sorted(trainable - moved),
        }
    )
    return real_save(prepared, stage_dir, recipe)


real_prepare, real_save = train.prepare_stage, train.save_stage
train.prepare_stage, train.save_stage = spy_prepare, spy_save


def main() -> int:
    recipe_name, model, data, output, steps = sys.argv[1:6]
    request = train.TrainRequest(
        recipe=get_recipe(recipe_name),
        model=Path(model),
        data=Path(data),
        output=Path(output),
        max_steps=int(steps),
        strategy="fsdp",
    )
    code = train.run_training(request)
    rank = os.environ["RANK"]
    (Path(output) / f"meta_rank{rank}.json").write_text(json.dumps(meta_after_load))
    if train.is_main_process():
        (Path(output) / "fsdp_report.json").write_text(json.dumps(reports, indent=1))
    return code


if __name__ == "__main__":
    sys.exit(main())
