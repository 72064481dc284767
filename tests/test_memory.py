"""The memory estimate: storage formulas, the per-part sums, and the fits verdict."""

from __future__ import annotations

import math

import pytest

from vlmtui.core.inspection.memory import (
    GIB,
    MemoryAssumptions,
    ModelDims,
    ParamInfo,
    activation_bytes,
    estimate_memory,
    int8_bytes,
    nf4_bytes,
    weight_bytes,
)
from vlmtui.core.recipes.recipe import BUILTIN_RECIPES

DIMS = ModelDims(
    hidden=64,
    layers=2,
    intermediate=128,
    kv_dim=32,
    vocab=1000,
    vision_width=32,
    vision_layers=2,
    vision_intermediate=128,
    vision_gated_mlp=False,
    patch_size=14,
    merge_size=2,
)


def test_nf4_storage_formula() -> None:
    n = 4096 * 4096
    # packed 4-bit + one uint8 absmax per 64 + one fp32 per 256 absmax blocks
    assert nf4_bytes(n) == n // 2 + n // 64 + 4 * (n // 64 // 256)
    assert nf4_bytes(n) / n == pytest.approx(0.5 + 1 / 64 + 4 / 16384)
    assert nf4_bytes(n, double_quant=False) == n // 2 + 4 * (n // 64)
    assert nf4_bytes(65) == 33 + 2 + 4  # ceilings
    assert int8_bytes(100 * 10, rows=100) == 1000 + 400


def test_weight_bytes_by_kind() -> None:
    params = [
        ParamInfo("a", 1000, "bfloat16", trainable=False),
        ParamInfo("b", 1000, "float32", trainable=False),
        ParamInfo("q", 4096, "float32", trainable=False, quant="4bit", rows=64),
        ParamInfo("l", 100, "float32", trainable=True, lora=True),
    ]
    by_kind, lora = weight_bytes(params)
    assert by_kind == {"bfloat16": 2000, "float32": 4000, "nf4": nf4_bytes(4096)}
    assert lora == 400


def test_estimate_sums_and_verdict() -> None:
    params = [
        ParamInfo("w", 10_000, "bfloat16", trainable=True),
        ParamInfo("f", 5_000, "bfloat16", trainable=False),
    ]
    a = MemoryAssumptions(batch_size=2, seq_len=100, image_size=28, gpu_mem_gib=2)
    m = estimate_memory(params, DIMS, a, vision_on_backward=False, vision_trains=False)
    assert m.weights == 30_000 and m.gradients == 20_000 and m.optimizer_states == 40_000
    assert m.optimizer_step_temp == 0  # fused AdamW
    tokens = 200
    layer = (6 * 64 + 2 * 32 + 4 * 128) * 2
    assert m.activations_detail == {
        "llm": tokens * (2 * layer + 2 * 64 * 2),
        "loss": tokens * 1000 * 2 + tokens * 64 * (2 + 4),  # fused LM head: one tile
        "lora": 0,
        "vision": 0,
        "dequant": 0,  # nothing quantized
    }
    allocated = 30_000 + 20_000 + 40_000 + m.activations
    assert m.allocated == allocated
    assert m.overhead_detail == {
        "cuda_context": GIB // 2,
        "workspaces": GIB // 4,
        "ddp_buckets": 0,
        "nccl": 0,
        "fragmentation": int(0.08 * allocated),
    }
    assert m.total == allocated + m.overhead
    assert m.fits is True and m.verdict().startswith("fits in 2 GiB per GPU")
    small = estimate_memory(
        params,
        DIMS,
        MemoryAssumptions(gpu_mem_gib=0.5),
        vision_on_backward=False,
        vision_trains=False,
    )
    assert small.fits is False and "does NOT fit in 0.5 GiB" in small.verdict()
    assert (
        estimate_memory(
            params, DIMS, MemoryAssumptions(), vision_on_backward=False, vision_trains=False
        ).fits
        is None
    )


def test_vision_and_lora_and_checkpointing_terms() -> None:
    a = MemoryAssumptions(batch_size=1, seq_len=10, image_size=28, lora_dropout=0.1)
    patches = 4
    acts = activation_bytes(
        DIMS, a, vision_on_backward=True, vision_trains=True, lora_inputs_per_layer=100
    )
    assert acts["lora"] == 10 * 2 * 100 * (2 + 1)
    block = (8 * 32 + 2 * 128) * 2
    assert acts["vision"] == patches * 2 * block + patches * 4 * 32 * 2
    merger_only = activation_bytes(
        DIMS, a, vision_on_backward=True, vision_trains=False, lora_inputs_per_layer=0
    )
    assert merger_only["vision"] == patches * 4 * 32 * 2
    gc = activation_bytes(
        DIMS,
        MemoryAssumptions(seq_len=1000, gradient_checkpointing=True),
        vision_on_backward=False,
        vision_trains=False,
        lora_inputs_per_layer=0,
    )
    full = activation_bytes(
        DIMS,
        MemoryAssumptions(seq_len=1000),
        vision_on_backward=False,
        vision_trains=False,
        lora_inputs_per_layer=0,
    )
    assert gc["llm"] < full["llm"] and gc["loss"] == full["loss"]
    assert gc["llm"] == 1000 * ((2 + 2) * 64 * 2 + (6 * 64 + 2 * 32 + 4 * 128) * 2)
    gc_lora = activation_bytes(
        DIMS,
        MemoryAssumptions(seq_len=1000, gradient_checkpointing=True),
        vision_on_backward=False,
        vision_trains=False,
        lora_inputs_per_layer=100,
    )
    assert gc_lora["lora"] == 1000 * 100 * 2  # one layer's adapters, no dropout mask


@pytest.fixture(scope="module")
def q2():
    from vlmtui.core.inspection.meta import ModelInspector

    return ModelInspector("Qwen/Qwen2-VL-2B-Instruct")


def test_r2_bf16_full_training_bytes(q2) -> None:
    result = q2.inspect(BUILTIN_RECIPES["r2-vision-only"])
    (m,) = result.memory(MemoryAssumptions(gpu_mem_gib=80))
    total = 2_208_985_600
    trainable = result.stages[0].summary.trainable_params
    assert m.weights_by_dtype == {"bfloat16": 2 * total}
    assert m.gradients == 2 * trainable and m.optimizer_states == 4 * trainable
    assert m.lora_weights == 0 and m.activations_detail["vision"] > 0
    assert m.fits is True


def test_r1_qlora_bytes_as_training_sees_them(q2) -> None:
    """4-bit LLM linears at NF4 size; everything else stays bf16 (no fp32 upcast);
    LoRA adapters fp32 with fp32 gradients and AdamW states."""
    result = q2.inspect(BUILTIN_RECIPES["r1-llm-only"])
    stage = result.stages[0]
    (m,) = result.memory(MemoryAssumptions())
    quant = [p for p in stage.params if p.quant]
    assert len(quant) == 28 * 7 and all(p.quant == "4bit" and p.double_quant for p in quant)
    assert m.weights_by_dtype["nf4"] == sum(nf4_bytes(p.numel) for p in quant)
    plain = sum(p.numel for p in stage.params if not p.quant and not p.lora)
    assert m.weights_by_dtype == {"nf4": m.weights_by_dtype["nf4"], "bfloat16": 2 * plain}
    lora = stage.summary.trainable_params
    assert m.lora_weights == 4 * lora == m.gradients and m.optimizer_states == 8 * lora
    assert m.activations_detail["vision"] == 0  # nothing below the LLM trains
    assert m.activations_detail["lora"] > 0
    # 4-bit storage of the quantized weights: about 0.516 bytes each
    n4 = sum(p.numel for p in quant)
    assert math.isclose(m.weights_by_dtype["nf4"] / n4, 0.5159, rel_tol=1e-3)


def test_dims_from_both_families(q2) -> None:
    from vlmtui.core.inspection.meta import ModelInspector

    d2 = q2.dims
    assert (d2.hidden, d2.layers, d2.intermediate, d2.kv_dim, d2.vocab) == (
        1536,
        28,
        8960,
        256,
        151936,
    )
    assert (d2.vision_width, d2.vision_intermediate, d2.vision_gated_mlp) == (1280, 5120, False)
    d25 = ModelInspector("Qwen/Qwen2.5-VL-3B-Instruct").dims
    assert (d25.vision_width, d25.vision_intermediate, d25.vision_gated_mlp) == (1280, 3420, True)
    assert (d25.hidden, d25.layers) == (2048, 36)


def test_full_logits_loss_and_foreach_temporaries() -> None:
    """The model's own loss keeps 12 bytes per token and vocabulary entry at its backward peak;
    foreach AdamW allocates one more state copy during the step, which replaces activations
    (freed by then) in the peak when it is larger."""
    params = [ParamInfo("w", 10**9, "bfloat16", trainable=True)]
    a = MemoryAssumptions(seq_len=100, loss="full", optimizer="foreach")
    m = estimate_memory(params, DIMS, a, vision_on_backward=False, vision_trains=False)
    assert m.activations_detail["loss"] == 100 * 1000 * 12
    assert m.optimizer_step_temp == 2 * 10**9 > m.activations
    assert m.allocated == 2 * 10**9 * (1 + 1 + 2 + 1)


def strategy_estimate(strategy: str, gpus: int):
    params = [
        ParamInfo("model.language_model.embed_tokens.weight", 1000, "bfloat16", trainable=False),
        *(
            ParamInfo(f"model.language_model.layers.{i}.mlp.up_proj.weight", 4096, "bfloat16", True)
            for i in range(4)
        ),
        ParamInfo("model.language_model.layers.0.q.weight", 4096, "float32", False, quant="4bit"),
    ]
    a = MemoryAssumptions(seq_len=10, strategy=strategy, gpus=gpus)
    return estimate_memory(params, DIMS, a, vision_on_backward=False, vision_trains=False)


def test_fsdp_divides_states_and_adds_the_gathered_working_set() -> None:
    ddp, fsdp = strategy_estimate("ddp", 4), strategy_estimate("fsdp", 4)
    assert fsdp.gradients == ddp.gradients // 4 and fsdp.optimizer_states == 2 * fsdp.gradients
    packed, stats = 2048, nf4_bytes(4096) - 2048
    assert fsdp.weights_by_dtype == {"bfloat16": (2000 + 4 * 8192) // 4, "nf4": packed // 4 + stats}
    # root (embeddings) + two of the biggest block (layer 0: bf16 + nf4) + one block's grads
    assert fsdp.gathered == 2000 + 2 * (8192 + nf4_bytes(4096)) + 8192
    assert fsdp.activations == ddp.activations
    assert ddp.overhead_detail["ddp_buckets"] == ddp.gradients and ddp.overhead_detail["nccl"]
    assert fsdp.overhead_detail["ddp_buckets"] == 0 and fsdp.overhead_detail["nccl"]
    one = strategy_estimate("ddp", 1)
    assert one.overhead_detail["ddp_buckets"] == one.overhead_detail["nccl"] == 0


def test_split_holds_one_copy_in_sum() -> None:
    one, split = strategy_estimate("ddp", 1), strategy_estimate("split", 2)
    assert split.weights == -(-one.weights_by_dtype["bfloat16"] // 2) + -(
        -one.weights_by_dtype["nf4"] // 2
    )
    # the dequantized copy of the largest 4-bit weight (4096 at bf16) is whole on each GPU
    assert split.activations_detail["dequant"] == one.activations_detail["dequant"] == 4096 * 2
    assert split.activations - 8192 <= (one.activations - 8192) // 2 + 4
    assert split.overhead_detail["nccl"] == 0 and split.total_all_gpus == 2 * split.total


def test_constants_listed_with_sources() -> None:
    params = [ParamInfo("w", 10, "bfloat16", trainable=True)]
    m = estimate_memory(
        params, DIMS, MemoryAssumptions(), vision_on_backward=False, vision_trains=False
    )
    constants = m.to_dict()["assumptions"]["constants"]
    names = {c["name"] for c in constants}
    assert {"cuda_context", "fragmentation", "adamw_foreach_temporaries"} <= names
    assert all(c["source"] and c["value"] > 0 for c in constants)


@pytest.fixture(scope="module")
def q72():
    from vlmtui.core.inspection.meta import ModelInspector

    return ModelInspector("Qwen/Qwen2-VL-72B-Instruct")


def test_72b_verdicts_per_strategy(q72) -> None:
    """Issue 12's targets: r2 over 8 GPUs and r4 over 4 fit 80 GiB with fsdp, not with ddp;
    r1 names what would fit; fp32 is under 1 % of r1's weights."""
    for recipe, gpus in (("r2-vision-only", 8), ("r4-joint", 4)):
        result = q72.inspect(BUILTIN_RECIPES[recipe])
        for strategy, fits in (("fsdp", True), ("ddp", False)):
            (m,) = result.memory(MemoryAssumptions(gpu_mem_gib=80, gpus=gpus, strategy=strategy))
            assert m.fits is fits, (recipe, strategy, m.total / GIB)
    r1 = q72.inspect(BUILTIN_RECIPES["r1-llm-only"])
    (m,) = r1.memory(MemoryAssumptions())
    assert m.weights_by_dtype.get("float32", 0) < 0.01 * m.weights
    a = MemoryAssumptions(gpu_mem_gib=40)
    would = r1.stages[0].alternatives(q72.dims, a)
    assert would and would[0].startswith("with --strategy fsdp over 2 GPUs ≈ ")
