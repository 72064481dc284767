"""AssistantOnlyCollator: batch TRL VLM rows and train only on the assistant's answer.

Why our own: TRL's `SFTTrainer` refuses `assistant_only_loss` for vision-language models
(FACTS.md), and training on the system prompt, the grounding prompt and hundreds of image
placeholder tokens wastes the loss on text the model is given, not text it must produce.

Labels equal `input_ids` on the assistant answer tokens and the `<|im_end|>` that closes the
turn (so the model learns to stop), and are -100 everywhere else: padding, the system and user
turns, image/video placeholder tokens, and the `<|im_start|>assistant\\n` header. Assistant
spans are found by token ids, so left and right padding both work.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from vlmtui.core.errors import BadInput
from vlmtui.core.families import Family

IGNORE_INDEX = -100


def _find(seq: Sequence[int], pattern: Sequence[int], start: int) -> int:
    """Index of the first occurrence of `pattern` in `seq` at or after `start`, or -1."""
    n, m = len(seq), len(pattern)
    first = pattern[0]
    for i in range(start, n - m + 1):
        if seq[i] == first and list(seq[i : i + m]) == list(pattern):
            return i
    return -1


def assistant_mask(ids: Sequence[int], header: Sequence[int], end_id: int) -> list[bool]:
    """True on tokens that carry loss: after each `header` up to and including `end_id`.

    An assistant turn with no `end_id` (truncated) is trained to the end of the sequence.
    """
    mask = [False] * len(ids)
    pos = 0
    while True:
        start = _find(ids, header, pos)
        if start < 0:
            return mask
        body = start + len(header)
        end = body
        while end < len(ids) and ids[end] != end_id:
            end += 1
        stop = min(end + 1, len(ids))  # include <|im_end|>
        for i in range(body, stop):
            mask[i] = True
        pos = stop


class AssistantOnlyCollator:
    """SFTTrainer `data_collator` for rows `{"images": [path or PIL.Image], "messages": [...]}`.

    Returns the processor's tensors (`input_ids`, `attention_mask`, `pixel_values`,
    `image_grid_thw`, and `mm_token_type_ids` which Qwen's M-RoPE needs) plus `labels`.
    """

    def __init__(self, processor: Any, family: Family | None = None) -> None:
        self.processor = processor
        self.family = family
        tok = processor.tokenizer
        self.header_ids: list[int] = tok.encode("<|im_start|>assistant\n", add_special_tokens=False)
        self.end_id: int = tok.convert_tokens_to_ids("<|im_end|>")
        unk = getattr(tok, "unk_token_id", None)
        if self.end_id is None or self.end_id == unk or not self.header_ids:
            raise BadInput(
                "the tokenizer has no <|im_start|>/<|im_end|> tokens (not a Qwen chat model)"
            )
        never = {"<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>"}
        self.never_ids = {
            i for i in (tok.convert_tokens_to_ids(t) for t in never) if i is not None and i != unk
        }
        if tok.pad_token_id is not None:
            self.never_ids.add(tok.pad_token_id)

    def _images(self, row: dict[str, Any]) -> list[Any]:
        from vlmtui.core.data.images import open_image

        images = row.get("images")
        if images is None and row.get("image") is not None:
            images = [row["image"]]
        return [
            open_image(img, row.get("source") or "")
            if isinstance(img, str)
            else img.convert("RGB")
            if getattr(img, "mode", "RGB") != "RGB"
            else img
            for img in images or []
        ]

    def __call__(self, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
        import torch

        texts = [
            self.processor.apply_chat_template(row["messages"], tokenize=False) for row in rows
        ]
        images = [self._images(row) for row in rows]
        kwargs: dict[str, Any] = {"text": texts, "padding": True, "return_tensors": "pt"}
        if any(images):
            kwargs["images"] = [imgs for imgs in images if imgs]
        batch = self.processor(**kwargs)
        input_ids = batch["input_ids"]
        keep = torch.tensor(
            [assistant_mask(ids, self.header_ids, self.end_id) for ids in input_ids.tolist()],
            dtype=torch.bool,
        ).reshape(input_ids.shape)
        keep &= ~torch.isin(input_ids, torch.tensor(sorted(self.never_ids), dtype=input_ids.dtype))
        if batch.get("attention_mask") is not None:
            keep &= batch["attention_mask"].bool()
        labels = torch.where(keep, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
        batch["labels"] = labels
        return dict(batch)
