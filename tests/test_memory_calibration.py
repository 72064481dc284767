"""The memory estimate against five public peak-memory figures (issue 16), within ±15 %.

Each case is a user recipe matching the published run (areas, LoRA rank, quantization,
checkpointing), applied by the training code path to the shipped config, and the published
sequence length and GPU layout. The published runs used other frameworks, so two framework
settings follow them rather than vlmtui: the loss is the model's own (full fp32 logits, where
vlmtui's TRL uses a fused LM head) and AdamW is the foreach implementation (transformers'
default before `adamw_torch_fused`). The text-only cases (Qwen2.5-7B, Qwen2-7B, Qwen-72B) use the
language model of a VL model of the same size and vocabulary; the vision tower's parameters
are left out. Run with `-s` to see the ratio table.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from vlmtui.core.inspection.memory import GIB, MemoryAssumptions, MemoryEstimate

RECIPES = """
[recipe.cal-lora8]
extends = "r1-llm-only"
quantization = "none"
gradient_checkpointing = true
[recipe.cal-lora8.lora]
r = 8
alpha = 16
dropout = 0.05

[recipe.cal-qlora8]
extends = "r1-llm-only"
gradient_checkpointing = true
[recipe.cal-qlora8.lora]
r = 8
alpha = 16
dropout = 0.05

[recipe.cal-qlora8-qkv]
extends = "r1-llm-only"
gradient_checkpointing = true
[recipe.cal-qlora8-qkv.llm]
mode = "lora"
targets = ["q_proj", "k_proj", "v_proj"]
[recipe.cal-qlora8-qkv.lora]
r = 8
alpha = 32
dropout = 0.05

[recipe.cal-full]
gradient_checkpointing = true
llm = "full"
"""


@dataclass(frozen=True)
class Case:
    label: str
    model: str
    recipe: str
    published_gib: float
    seq_len: int
    gpus: int = 1
    strategy: str = "ddp"
    text_only: bool = False
    train_lm_head: bool = False


CASES = [
    Case("Qwen2-VL-7B LoRA r8 LLM, 1024 tok", "Qwen/Qwen2-VL-7B-Instruct", "cal-lora8", 20, 1024),
    Case(
        "Qwen2.5-7B QLoRA NF4 r8, 1024 tok",
        "Qwen/Qwen2.5-VL-7B-Instruct",
        "cal-qlora8",
        10,
        1024,
        text_only=True,
    ),
    # A full fine-tune outside vlmtui trains lm_head as well; a vlmtui recipe never does.
    Case(
        "Qwen2-7B full FT, 128 tok",
        "Qwen/Qwen2-VL-7B-Instruct",
        "cal-full",
        76,
        128,
        text_only=True,
        train_lm_head=True,
    ),
    Case(
        "Qwen2-VL-72B LoRA r8, split 2 GPUs, 448 tok (sum)",
        "Qwen/Qwen2-VL-72B-Instruct",
        "cal-lora8",
        152,
        448,
        gpus=2,
        strategy="split",
    ),
    # ms-swift examples/pytorch/llm/scripts/qwen_72b_chat/qlora/sft.sh: Qwen-72B-Chat, NF4,
    # LoRA r8 on the fused qkv (c_attn), max_length 2048, checkpointing, one A100: "45GB GPU
    # memory". Qwen-72B has Qwen2-VL-72B's vocabulary (152,064, untied) and width, and 69.8B
    # linear weights to its 70.2B; the closest public figure to r1 on 72B. Its remote code
    # takes the loss on bf16 logits, where "full" assumes fp32 ones: an upper end.
    Case(
        "Qwen-72B QLoRA NF4 r8 qkv, 2048 tok",
        "Qwen/Qwen2-VL-72B-Instruct",
        "cal-qlora8-qkv",
        45,
        2048,
        text_only=True,
    ),
]


def estimate(case: Case, recipe_file: Path) -> MemoryEstimate:
    from vlmtui.core.inspection.meta import ModelInspector
    from vlmtui.core.recipes.catalog import get_recipe

    insp = ModelInspector(case.model, [recipe_file])
    (stage,) = insp.inspect(get_recipe(case.recipe, [recipe_file])).stages
    params = stage.params
    if case.text_only:
        params = tuple(p for p in params if not p.name.startswith("model.visual."))
    if case.train_lm_head:
        params = tuple(
            replace(p, trainable=p.trainable or p.name == "lm_head.weight") for p in params
        )
    a = MemoryAssumptions(
        seq_len=case.seq_len,
        gpus=case.gpus,
        strategy=case.strategy,  # type: ignore[arg-type]
        loss="full",
        optimizer="foreach",
    )
    return replace(stage, params=params).memory(insp.dims, a)


@pytest.fixture(scope="module")
def ratios(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[Case, float, float]]:
    path = tmp_path_factory.mktemp("cal") / "cal.toml"
    path.write_text(RECIPES, encoding="utf-8")
    rows = []
    for case in CASES:
        m = estimate(case, path)
        est = m.total_all_gpus / GIB
        rows.append((case, est, est / case.published_gib))
    print("\ncase | published GiB | estimate GiB | ratio")
    for case, est, ratio in rows:
        print(f"{case.label} | {case.published_gib:g} | {est:.1f} | {ratio:.2f}")
    return rows


@pytest.mark.parametrize("index", range(len(CASES)), ids=[c.recipe for c in CASES])
def test_estimate_within_15_percent(ratios: list[tuple[Case, float, float]], index: int) -> None:
    case, est, ratio = ratios[index]
    assert 0.85 <= ratio <= 1.15, f"{case.label}: {est:.1f} GiB vs {case.published_gib} published"
