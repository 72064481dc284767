"""AssistantOnlyCollator: exact label masks for both families, both padding sides."""

from __future__ import annotations

import math

import pytest

from vlmtui.core.data.chat import to_trl_dataset
from vlmtui.core.data.datasets import DetectionObject, DetectionRecord, load_split
from vlmtui.core.families import FAMILIES
from vlmtui.core.training.collate import IGNORE_INDEX, AssistantOnlyCollator, assistant_mask


def _two_records(shapes_data_dir):
    """Two records whose answers differ in length (1 object vs 3 objects)."""
    base = load_split(shapes_data_dir, "train")[0]
    one = DetectionRecord(base.image_path, base.width, base.height, base.objects[:1])
    three = DetectionRecord(
        base.image_path,
        base.width,
        base.height,
        (
            DetectionObject("red square", (1, 2, 30, 40)),
            DetectionObject("blue circle", (50, 50, 90, 100)),
            DetectionObject("green triangle", (0, 0, 112, 112)),
        ),
    )
    return [one, three]


@pytest.mark.parametrize("padding_side", ["right", "left"])
@pytest.mark.parametrize("family", ["qwen2-vl", "qwen2.5-vl"])  # qwen3: box format pending
def test_labels_are_exactly_the_answer_and_im_end(
    family, padding_side, demo_model_dirs, shapes_data_dir
):
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(demo_model_dirs[family])
    tok = processor.tokenizer
    tok.padding_side = padding_side
    fam = FAMILIES[family]
    rows = list(to_trl_dataset(_two_records(shapes_data_dir), fam, processor))
    collator = AssistantOnlyCollator(processor, fam)
    batch = collator(rows)
    assert {"input_ids", "attention_mask", "pixel_values", "image_grid_thw", "labels"} <= set(batch)
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    image_pad = tok.convert_tokens_to_ids("<|image_pad|>")
    lengths = []
    width = batch["input_ids"].shape[1]
    for r, row in enumerate(rows):
        # Independent expectation: the row alone, unpadded, ends with answer + <|im_end|> + "\n".
        alone = collator([row])["input_ids"][0].tolist()
        answer = row["messages"][1]["content"][0]["text"]
        trained = [*tok.encode(answer, add_special_tokens=False), im_end]
        tail = tok.encode("\n", add_special_tokens=False)
        assert alone[-len(trained) - len(tail) :] == trained + tail
        header = tok.encode("<|im_start|>assistant\n", add_special_tokens=False)
        assert alone[-len(trained) - len(tail) - len(header) : -len(trained) - len(tail)] == header
        expected = [IGNORE_INDEX] * (len(alone) - len(trained) - len(tail))
        expected += trained + [IGNORE_INDEX] * len(tail)
        pad = width - len(alone)
        lengths.append(len(alone))
        if padding_side == "right":
            want_ids = alone + [tok.pad_token_id] * pad
            want_labels = expected + [IGNORE_INDEX] * pad
            want_mask = [1] * len(alone) + [0] * pad
        else:
            want_ids = [tok.pad_token_id] * pad + alone
            want_labels = [IGNORE_INDEX] * pad + expected
            want_mask = [0] * pad + [1] * len(alone)
        assert batch["input_ids"][r].tolist() == want_ids
        assert batch["attention_mask"][r].tolist() == want_mask
        assert batch["labels"][r].tolist() == want_labels
        labels = batch["labels"][r]
        ids = batch["input_ids"][r]
        assert (ids == image_pad).sum() == 16  # the image is really there ...
        assert (labels[ids == image_pad] == IGNORE_INDEX).all()  # ... and never trained
        assert (labels[batch["attention_mask"][r] == 0] == IGNORE_INDEX).all()
    assert lengths[0] < lengths[1]  # really padded
    assert batch["image_grid_thw"].tolist() == [[1, 8, 8], [1, 8, 8]]
    assert batch["pixel_values"].shape[0] == 2 * 64


def test_every_assistant_turn_is_trained_and_truncated_turn_runs_to_the_end():
    header, end = [1, 7, 8], 2
    ids = [0, 1, 5, 9, 2, 3, 1, 7, 8, 4, 4, 2, 3, 1, 7, 8, 6, 2, 3, 1, 7, 8, 5]
    got = assistant_mask(ids, header, end)
    want = [i in (9, 10, 11, 16, 17, 22) for i in range(len(ids))]
    assert got == want
    assert assistant_mask([0, 0, 0], header, end) == [False] * 3


def test_collator_trains_with_sft_trainer(qwen2_vl_dir, shapes_data_dir, tmp_path):
    """The collator is accepted by TRL's SFTTrainer and gives a finite loss (2 steps, CPU)."""
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from trl import SFTConfig, SFTTrainer

    processor = AutoProcessor.from_pretrained(qwen2_vl_dir)
    model = AutoModelForImageTextToText.from_pretrained(qwen2_vl_dir)
    fam = FAMILIES["qwen2-vl"]
    ds = to_trl_dataset(load_split(shapes_data_dir, "train")[:4], fam, processor)
    args = SFTConfig(
        output_dir=str(tmp_path / "out"),
        max_steps=2,
        per_device_train_batch_size=2,
        learning_rate=1e-3,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        max_length=None,
        remove_unused_columns=False,
        dataloader_num_workers=0,
    )
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=ds,
        processing_class=processor,
        data_collator=AssistantOnlyCollator(processor, fam),
    )
    result = trainer.train()
    assert math.isfinite(result.training_loss)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses)
