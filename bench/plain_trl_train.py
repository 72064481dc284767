"""Baseline for bench/train_overhead.py: QLoRA with a plain TRL SFTTrainer script, no vlmtui.

The same tiny model, data, collator and LoRA targets as `vlmtui train --recipe r1-llm-only`,
written the way a user would without vlmtui, with the same settings as the recipe
(non-reentrant gradient checkpointing as r1 sets it; fp32 adapters; no bf16 autocast on CPU:
TRL turns it on by default, vlmtui follows the device). Prints one JSON line of per-step wall times.
Usage: python bench/plain_trl_train.py MODEL_DIR DATA_DIR OUT_DIR STEPS
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch
from peft import LoraConfig, prepare_model_for_kbit_training
from transformers import (
    AutoProcessor,
    BitsAndBytesConfig,
    Qwen2VLForConditionalGeneration,
    TrainerCallback,
)
from trl import SFTConfig, SFTTrainer

from vlmtui.core.data.chat import to_trl_dataset
from vlmtui.core.data.datasets import load_split
from vlmtui.core.families import QWEN2_VL
from vlmtui.core.training.collate import AssistantOnlyCollator


class StepTimes(TrainerCallback):
    def __init__(self) -> None:
        self.times: list[float] = []

    def on_step_end(self, args, state, control, **kw):
        self.times.append(time.time())


def main() -> None:
    model_dir, data_dir, out_dir, steps = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    bnb = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.float32,
        llm_int8_skip_modules=["model.visual", "lm_head"],
    )
    model = Qwen2VLForConditionalGeneration.from_pretrained(
        model_dir, quantization_config=bnb, dtype=torch.float32, device_map={"": "cpu"}
    )
    checkpointing = {"use_reentrant": False}
    model = prepare_model_for_kbit_training(
        model, use_gradient_checkpointing=True, gradient_checkpointing_kwargs=checkpointing
    )
    processor = AutoProcessor.from_pretrained(model_dir)
    rows = to_trl_dataset(load_split(Path(data_dir), "train"), QWEN2_VL, processor)
    lora = LoraConfig(
        r=16,
        lora_alpha=32,
        lora_dropout=0.05,
        target_modules=r"model\.language_model\.layers\.\d+\.(?:mlp\.down_proj|mlp\.gate_proj|"
        r"mlp\.up_proj|self_attn\.k_proj|self_attn\.o_proj|self_attn\.q_proj|self_attn\.v_proj)",
        task_type="CAUSAL_LM",
    )
    config = SFTConfig(
        output_dir=out_dir,
        max_steps=steps,
        per_device_train_batch_size=1,
        learning_rate=2e-4,
        logging_steps=1,
        save_strategy="no",
        max_length=None,
        remove_unused_columns=False,
        dataset_kwargs={"skip_prepare_dataset": True},
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
        gradient_checkpointing=True,
        gradient_checkpointing_kwargs=checkpointing,
        bf16=False,
    )
    timer = StepTimes()
    trainer = SFTTrainer(
        model=model,
        args=config,
        train_dataset=rows,
        processing_class=processor,
        data_collator=AssistantOnlyCollator(processor, QWEN2_VL),
        peft_config=lora,
        callbacks=[timer],
    )
    # TRL casts a quantized model's adapters to bf16; vlmtui keeps them fp32, and so does this
    # baseline, so both sides do the same arithmetic (bf16 matmuls are slower on most CPUs).
    for param in trainer.model.parameters():
        if param.requires_grad:
            param.data = param.data.float()
    trainer.train()
    print(json.dumps({"step_times": timer.times}))


if __name__ == "__main__":
    main()
