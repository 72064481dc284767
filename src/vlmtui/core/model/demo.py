"""Tiny random-weight checkpoints of every family and the embedded demo assets.

Why: every test, benchmark and the app's first-run demo needs a model that uses the *real*
transformers architecture classes (so parameter names, LoRA targets, quantization and the
chat/processor path are exactly those of the 2B-72B checkpoints) but loads in milliseconds
and needs no network. `make_demo_model` builds one from scratch: a byte-level BPE tokenizer
trained on an in-code corpus with Qwen's special tokens and chat template, a processor with a
small image resolution (a 112x112 image becomes 16 image tokens), and a seeded random model.

Sizes (see FACTS.md): text hidden 64, 2 layers, 4 heads / 2 KV heads (head_dim 16, so
`mrope_section` [4, 2, 2] sums to head_dim / 2); vision depth 2. Word embeddings are untied in
the Qwen2-VL demo (like Qwen2-VL-7B) and tied in the Qwen2.5-VL demo (like Qwen2.5-VL-3B), so
both lm_head layouts are exercised by the tests. The Qwen3-VL / Qwen3.5 sizes are in
`demo_qwen3.py`; all families share the tokenizer and chat template.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from vlmtui.core.errors import BadInput, WorkFailed
from vlmtui.core.families import QWEN2_5_VL, QWEN2_VL, family_by_name
from vlmtui.core.model import demo_qwen3

SEED = 0

SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

# Qwen2's pre-tokenizer regex (digits are split one by one, as in the real tokenizer).
PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

# Qwen2-VL-Instruct's chat template, verbatim (no `{% generation %}` markers: our own
# collator masks the labels).
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Image resolution: factor = patch_size * merge_size = 28; 112x112 -> 4x4 merged = 16 tokens.
PATCH_SIZE = 14
MERGE_SIZE = 2
TEMPORAL_PATCH_SIZE = 2
MIN_PIXELS = 56 * 56
MAX_PIXELS = 112 * 112

TEXT_CONFIG: dict[str, Any] = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 4096,
    "max_window_layers": 2,
    "rms_norm_eps": 1e-6,
    "rope_parameters": {
        "rope_type": "default",
        "rope_theta": 1000000.0,
        "mrope_section": [4, 2, 2],
    },
}
QWEN2_VL_VISION: dict[str, Any] = {
    "depth": 2,
    "embed_dim": 32,  # encoder width
    "hidden_size": 64,  # merger output = text hidden size
    "mlp_ratio": 2,
    "num_heads": 2,
    "patch_size": PATCH_SIZE,
    "spatial_merge_size": MERGE_SIZE,
    "temporal_patch_size": TEMPORAL_PATCH_SIZE,
}
QWEN2_5_VL_VISION: dict[str, Any] = {
    "depth": 2,
    "hidden_size": 32,  # encoder width
    "intermediate_size": 64,  # gated MLP: gate_proj / up_proj / down_proj
    "out_hidden_size": 64,  # merger output = text hidden size
    "num_heads": 2,
    "patch_size": PATCH_SIZE,
    "spatial_merge_size": MERGE_SIZE,
    "temporal_patch_size": TEMPORAL_PATCH_SIZE,
    # Block 0 uses windowed attention (a 56-pixel window = 2x2 merged tokens), block 1 full
    # attention, so both code paths run on a 112x112 image.
    "window_size": 56,
    "fullatt_block_indexes": [1],
}

DEMO_MODEL_NAME = "model-qwen2-vl"
DEMO_DATA_NAME = "shapes"


def _corpus() -> list[str]:
    """Text the tokenizer is trained on: everything the demo conversations contain."""
    from vlmtui.core.data.chat import GROUNDING_PROMPT

    colours = "red green blue yellow orange purple cyan magenta white black gray brown pink"
    shapes = "square rectangle circle triangle ellipse object objects shape shapes"
    lines = [
        "system\nYou are a helpful assistant.",
        "user\n" + GROUNDING_PROMPT,
        "assistant\n",
        "Picture 1: Video 1: ",
        colours,
        shapes,
        " ".join(f"{c} {s}" for c in colours.split() for s in shapes.split()[:4]),
        '[{"bbox_2d": [12, 34, 56, 78], "label": "red square"}]',
        '```json\n[\n\t{"bbox_2d": [0, 1, 2, 3], "label": "blue circle"}\n]\n```',
        "(12,34),(56,78) (100,200),(300,400) (0,0),(1000,1000)",
        "0 1 2 3 4 5 6 7 8 9 , . : ; ! ? ' \" ( ) [ ] { } - _ + = / \\ * # < > | @ %",
        "The image shows a box with a label. None. No objects. There is one and two and three.",
        "the a an of in on at to is are with and or for this that it",
    ]
    return lines * 4


def build_tokenizer() -> Any:
    """A `Qwen2Tokenizer` with a small BPE vocabulary trained offline (deterministic)."""
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        trainers,
    )
    from transformers.models.qwen2.tokenization_qwen2 import Qwen2Tokenizer

    bpe = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=640,
        min_frequency=2,
        special_tokens=[AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_corpus(), trainer)
    model = json.loads(bpe.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    # Like Qwen2-VL-Instruct: eos is <|im_end|> (the end of a turn), pad is <|endoftext|>.
    tok = Qwen2Tokenizer(
        vocab=model["vocab"],
        merges=merges,  # type: ignore[arg-type]  # pairs, as the tokenizers BPE model gives them
        unk_token=None,  # type: ignore[arg-type]  # byte-level BPE has no unknown token
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=list(SPECIAL_TOKENS[1:]),
    )
    tok.chat_template = CHAT_TEMPLATE
    return tok


def build_processor(
    family: str = QWEN2_VL.name, pixels: tuple[int, int] = (MIN_PIXELS, MAX_PIXELS)
) -> Any:
    """The family's processor: image/video processors resizing into `pixels` (min, max; small
    by default), tokenizer, template."""
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    fam = family_by_name(family)
    tokenizer = build_tokenizer()
    if demo_qwen3.is_qwen3(fam):
        return demo_qwen3.build_processor(tokenizer, CHAT_TEMPLATE)
    # Plain keyword dicts: transformers' processor signatures type each keyword differently.
    sizes: dict[str, Any] = {"min_pixels": pixels[0], "max_pixels": pixels[1]}
    common: dict[str, Any] = {
        "patch_size": PATCH_SIZE,
        "merge_size": MERGE_SIZE,
        "temporal_patch_size": TEMPORAL_PATCH_SIZE,
    }
    image_processor = Qwen2VLImageProcessor(**sizes, **common)
    video_processor = Qwen2VLVideoProcessor(**sizes, **common)
    import transformers

    processor_cls = getattr(
        transformers, "Qwen2_5_VLProcessor" if fam is QWEN2_5_VL else "Qwen2VLProcessor"
    )
    return processor_cls(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=CHAT_TEMPLATE,
    )


def build_config(family: str, tokenizer: Any) -> Any:
    """The model config, with every special-token id taken from `tokenizer`."""
    fam = family_by_name(family)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    vocab_size = -(-len(tokenizer) // 64) * 64  # padded like the real checkpoints
    text = dict(
        TEXT_CONFIG,
        vocab_size=vocab_size,
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
    )
    token_ids = {
        "image_token_id": ids["<|image_pad|>"],
        "video_token_id": ids["<|video_pad|>"],
        "vision_start_token_id": ids["<|vision_start|>"],
        "vision_end_token_id": ids["<|vision_end|>"],
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
        "pad_token_id": ids["<|endoftext|>"],
    }
    if demo_qwen3.is_qwen3(fam):
        text_ids = {
            k: text[k] for k in ("vocab_size", "bos_token_id", "eos_token_id", "pad_token_id")
        }
        return demo_qwen3.build_config(fam, text_ids, token_ids)
    if fam is QWEN2_5_VL:
        from transformers import Qwen2_5_VLConfig

        return Qwen2_5_VLConfig(
            text_config=text,
            vision_config=dict(QWEN2_5_VL_VISION),
            tie_word_embeddings=True,
            **token_ids,
        )
    from transformers import Qwen2VLConfig

    return Qwen2VLConfig(
        text_config=text,
        vision_config=dict(QWEN2_VL_VISION),
        tie_word_embeddings=False,
        **token_ids,
    )


def make_demo_model(out_dir: Path, family: str = QWEN2_VL.name) -> Path:
    """Write a tiny seeded random checkpoint + processor of `family` into `out_dir`.

    Offline and deterministic: the same call always writes the same weights and tokenizer.
    Existing files of the same names in `out_dir` are overwritten.
    """
    import torch

    fam = family_by_name(family)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise BadInput(f"{out_dir}: exists and is not a directory")
    try:  # before the build: a folder that cannot be made is the user's path, not our work
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BadInput(f"{out_dir}: cannot create: {exc}") from None
    processor = build_processor(fam.name)
    config = build_config(fam.name, processor.tokenizer)
    import transformers

    model_cls = getattr(transformers, fam.model_class)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        model = model_cls(config)
    model.generation_config.eos_token_id = [config.eos_token_id, config.bos_token_id]
    model.generation_config.pad_token_id = config.pad_token_id
    model.generation_config.bos_token_id = config.bos_token_id
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(out_dir)
        processor.save_pretrained(out_dir)
    except OSError as exc:
        raise WorkFailed(f"{out_dir}: cannot write the demo model: {exc}") from exc
    return out_dir


def _create_once(final: Path, build: Any) -> Path:
    """Run `build(tmp_dir)` and rename the result to `final`, unless `final` already exists.

    Concurrent callers each build in their own temporary sibling folder; the first rename
    wins, the others discard their copy. A half-written folder is never visible at `final`.
    """
    if final.is_dir():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        build(tmp)
        try:
            os.rename(tmp, final)
        except OSError:
            if not final.is_dir():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def ensure_demo_assets(root: Path) -> tuple[Path, Path]:
    """Create (if missing) the embedded default's tiny Qwen2-VL model and shapes dataset.

    Returns `(model_dir, data_dir)` = `root/model-qwen2-vl`, `root/shapes`. Idempotent and
    safe against concurrent callers (see `_create_once`).
    """
    from vlmtui.core.data.shapes import make_shapes_dataset

    root = Path(root)
    model_dir = _create_once(
        root / DEMO_MODEL_NAME, lambda tmp: make_demo_model(tmp, QWEN2_VL.name)
    )
    data_dir = _create_once(root / DEMO_DATA_NAME, lambda tmp: make_shapes_dataset(tmp))
    return model_dir, data_dir
