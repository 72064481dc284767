"""Evaluate a run (or a base model) on held-out images.

`evaluate_records` generates greedily in batches (left padding) with the same user turn the
training conversations have, parses each answer with `boxparse` and scores it with
`metrics`. `run_eval` wraps that for `vlmtui eval`: it loads the weights, writes `eval.json`
(and `eval_predictions.jsonl`, every generated text with its parsed boxes) into the output
directory. Comparing finished runs is `compare`.

Qwen2.5-VL answers are in pixels of the resized image; the resized size is taken from
`chat.resized_size` with the run's own processor, the same call training used to write the
targets, so evaluation inverts exactly the mapping training applied.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlmtui.core.errors import BadInput
from vlmtui.core.eval.boxparse import ParseResult, parse_boxes
from vlmtui.core.eval.metrics import detection_metrics, parse_summary
from vlmtui.core.eval.pictures import DEFAULT_PICTURES
from vlmtui.core.families import Family
from vlmtui.core.rundir import (
    EVAL_IMAGES,
    EVAL_JSON,
    EVAL_PREDICTIONS,
    RUN_JSON,
    WEIGHTS_JSON,
    read_json,
    write_json_atomic,
)

EVAL_VERSION = 1
DEFAULT_MAX_NEW_TOKENS = 512
MAX_FAILURES_LISTED = 50
STOP_STRINGS = ("<|im_end|>", "<|endoftext|>")


def resolve_run(run: str | Path) -> Path:
    """A run's directory on this machine, from a path or a run id (or unique id prefix)."""
    if not str(run).strip():  # Path("") is ".", which would take the working directory
        raise BadInput("RUN is empty: give a run id or a run directory")
    path = Path(run).expanduser()
    if path.is_dir():
        return path
    if isinstance(run, Path) or "/" in str(run) or str(run).startswith("."):
        raise BadInput(f"{run}: no such run directory")
    from vlmtui.core.fleet.registry import Registry

    record = Registry().get(str(run))  # BadInput when unknown or ambiguous
    run_dir = Path(record.run_dir)
    if not run_dir.is_dir():
        raise BadInput(
            f"run {record.id}: its directory {run_dir} is not on this machine "
            f"(host {record.host}); evaluate it there or copy it here"
        )
    return run_dir


# ---------------------------------------------------------------------- generation


@dataclass(frozen=True)
class Generated:
    """One image's generated answer and what parsing it gave."""

    text: str
    parse: ParseResult
    resized: tuple[int, int]
    """(width, height) the processor resized the image to."""
    finished: bool
    """False when generation hit max_new_tokens before an end token (truncated answer)."""


def load_base(model_path: Path) -> tuple[Any, Any, Family]:
    """An un-fine-tuned checkpoint for the baseline row, in the dtype runs are evaluated in."""
    import torch
    import transformers

    from vlmtui.core.model.loading import detect_device, family_of_checkpoint, load_processor

    family = family_of_checkpoint(model_path)
    device = detect_device()
    dtype = torch.bfloat16 if device.is_cuda else torch.float32
    model_cls = getattr(transformers, family.model_class)
    model = model_cls.from_pretrained(str(model_path), dtype=dtype, device_map=device.torch_device)
    model.eval()
    return model, load_processor(model_path), family


def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
    ids = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = ids if isinstance(ids, (list, tuple)) else [ids]
    out = {int(i) for i in ids if i is not None}
    if tokenizer.eos_token_id is not None:
        out.add(int(tokenizer.eos_token_id))
    return out


def _clean(text: str, tokenizer: Any) -> str:
    """Decoded answer up to its first end token (special box tokens are kept)."""
    stops = [s for s in (*STOP_STRINGS, tokenizer.eos_token, tokenizer.pad_token) if s]
    cut = min((i for i in (text.find(s) for s in stops) if i != -1), default=len(text))
    return text[:cut].strip()


def generate_answers(
    model: Any,
    processor: Any,
    family: Family,
    records: Sequence[Any],
    *,
    batch_size: int = 4,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    on_batch: Callable[[int], None] | None = None,
) -> list[Generated]:
    """Greedy answers for `records` (data.DetectionRecord), batched with left padding."""
    import torch
    from PIL import Image

    from vlmtui.core.data.chat import build_conversation, resized_size

    tokenizer = processor.tokenizer
    old_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    pad_id = tokenizer.pad_token_id
    eos = _eos_ids(model, tokenizer)
    out: list[Generated] = []
    try:
        for start in range(0, len(records), batch_size):
            batch = records[start : start + batch_size]
            sizes = [resized_size(r.width, r.height, processor) for r in batch]
            texts, images = [], []
            for rec, size in zip(batch, sizes, strict=True):
                user_turn = build_conversation(rec, family, size)[:1]
                texts.append(
                    processor.apply_chat_template(
                        user_turn, tokenize=False, add_generation_prompt=True
                    )
                )
                with Image.open(rec.image_path) as img:
                    images.append(img.convert("RGB"))
            inputs = processor(text=texts, images=images, padding=True, return_tensors="pt")
            inputs = inputs.to(model.device)
            with torch.inference_mode():
                ids = model.generate(
                    **inputs,
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    pad_token_id=pad_id,
                )
            new = ids[:, inputs["input_ids"].shape[1] :].tolist()
            decoded = tokenizer.batch_decode(new, skip_special_tokens=False)
            for rec, size, toks, raw in zip(batch, sizes, new, decoded, strict=True):
                text = _clean(raw, tokenizer)
                parse = parse_boxes(text, family.box_format, rec.width, rec.height, *size)
                out.append(Generated(text, parse, size, any(t in eos for t in toks)))
            if on_batch is not None:
                on_batch(len(batch))
    finally:
        tokenizer.padding_side = old_side
    return out


# ---------------------------------------------------------------------- scoring


def score(records: Sequence[Any], answers: Sequence[Generated]) -> dict[str, Any]:
    """metrics / per_label / counts / parse_failures of answers against records' gold boxes."""
    parses = [a.parse for a in answers]
    m = detection_metrics(
        [r.objects for r in records],
        [p.boxes for p in parses],
        [(r.width, r.height) for r in records],
    )
    parsing = parse_summary(parses)
    per_label = m.to_dict()["per_label"]
    failures = [
        {
            "image": str(rec.image_path),
            "unparseable": a.parse.unparseable,
            "reasons": list(a.parse.reasons),
            "text": a.text[:300],
        }
        for rec, a in zip(records, answers, strict=True)
        if a.parse.unparseable or a.parse.invalid
    ]
    return {
        "metrics": {
            "map": m.map,
            "map50": m.map50,
            "recall": m.recall,
            "mean_iou": m.mean_iou,
            "precision50": m.precision50,
            "recall50": m.recall50,
            "parse_failure_rate": parsing["parse_failure_rate"],
        },
        "per_label": per_label,
        "counts": {
            "images": m.n_images,
            "gold_boxes": m.n_gold,
            "pred_boxes": m.n_pred,
            "matched": m.matched,
            "unknown_label_preds": m.unknown_label_preds,
            "truncated_outputs": sum(not a.finished for a in answers),
            **{k: v for k, v in parsing.items() if k not in ("images", "parse_failure_rate")},
        },
        "parse_failures": failures[:MAX_FAILURES_LISTED],
    }


# ---------------------------------------------------------------------- eval command


@dataclass(frozen=True)
class EvalRequest:
    data: Path
    output: Path
    """Where eval.json goes (the run directory for a run)."""
    run_dir: Path | None = None
    base_model: Path | None = None
    split: str = "val"
    limit: int | None = None
    batch_size: int = 4
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    save_images: Path | None = None
    """Draw every image into this folder (eval.json's `pictures` then lists these)."""
    pictures: int = DEFAULT_PICTURES
    """Without `save_images`: draw the first N images into `output/eval_images` (the app
    shows them in its runs pane); 0 draws none."""


def _run_identity(req: EvalRequest) -> dict[str, Any]:
    if req.run_dir is None:
        return {
            "model": str(req.base_model),
            "recipe": "base",
            "run_dir": None,
            "base": True,
            "weights": None,
        }
    info = read_json(req.run_dir / RUN_JSON) or {}
    weights = read_json(req.run_dir / WEIGHTS_JSON) or {}
    return {
        "model": info.get("model") or weights.get("base_model"),
        "recipe": info.get("recipe") or weights.get("recipe"),
        "run_dir": str(req.run_dir.resolve()),
        "base": False,
        "weights": weights.get("kind"),
    }


def run_eval(
    req: EvalRequest,
    on_start: Callable[[int], None] | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Load, generate, score, write eval.json (+ predictions) into req.output; returns it."""
    from vlmtui.core.data.datasets import load_split

    _check_request(req)
    t0 = time.monotonic()
    records = load_split(req.data, req.split)
    if req.limit is not None:
        records = records[: req.limit]
    identity = _run_identity(req)
    model, processor, family = _load_model(req)
    t_loaded = time.monotonic()
    if on_start is not None:
        on_start(len(records))
    answers = generate_answers(
        model,
        processor,
        family,
        records,
        batch_size=req.batch_size,
        max_new_tokens=req.max_new_tokens,
        on_batch=on_batch,
    )
    t_generated = time.monotonic()
    result = score(records, answers)
    t_scored = time.monotonic()
    gen_s = t_generated - t_loaded
    report = {
        "version": EVAL_VERSION,
        **identity,
        "family": family.name,
        "data": str(req.data),
        "split": req.split,
        "limit": req.limit,
        "batch_size": req.batch_size,
        "max_new_tokens": req.max_new_tokens,
        "device": str(getattr(model, "device", "")),
        "n_images": len(records),
        **result,
        "timing": {
            "load_s": round(t_loaded - t0, 3),
            "generate_s": round(gen_s, 3),
            "metrics_s": round(t_scored - t_generated, 3),
            "total_s": round(t_scored - t0, 3),
            "images_per_s": round(len(records) / gen_s, 3) if gen_s > 0 else None,
        },
        "created": time.time(),
    }
    _write_outputs(req, report, records, answers)
    return report


def _check_request(req: EvalRequest) -> None:
    if req.batch_size < 1:
        raise BadInput(f"--batch-size: must be at least 1, got {req.batch_size}")
    if req.limit is not None and req.limit < 1:
        raise BadInput(f"--limit: must be at least 1, got {req.limit}")
    if req.max_new_tokens < 1:
        raise BadInput(f"--max-new-tokens: must be at least 1, got {req.max_new_tokens}")
    if req.pictures < 0:
        raise BadInput(f"--pictures: must be 0 or more, got {req.pictures}")
    from vlmtui.core.paths import check_folder

    # Found when writing, after every image was generated, these lost the whole generation.
    check_folder("--output", req.output)
    if req.save_images is not None:
        check_folder("--save-images", req.save_images)
    if req.run_dir is not None:
        from vlmtui.core.model.loading import weights_record

        weights_record(req.run_dir)
    if req.base_model is not None:
        from vlmtui.core.model.loading import check_checkpoint

        check_checkpoint(Path(req.base_model))


def _load_model(req: EvalRequest) -> tuple[Any, Any, Family]:
    """(model, processor, family): the run's trained weights, else the base model."""
    if req.run_dir is not None:
        from vlmtui.core.model.loading import load_for_inference

        return load_for_inference(req.run_dir)
    return load_base(Path(req.base_model))  # type: ignore[arg-type]


def _write_outputs(
    req: EvalRequest,
    report: dict[str, Any],
    records: Sequence[Any],
    answers: Sequence[Generated],
) -> None:
    """The drawn images, eval.json (listing them) and one predictions line per image."""
    req.output.mkdir(parents=True, exist_ok=True)
    pictures = _draw_pictures(req, records, answers)
    if pictures is not None:
        report["pictures"] = pictures
    write_json_atomic(req.output / EVAL_JSON, report)
    with open(req.output / EVAL_PREDICTIONS, "w", encoding="utf-8") as fh:
        for rec, a in zip(records, answers, strict=True):
            row = {"image": str(rec.image_path), "text": a.text, "finished": a.finished}
            fh.write(json.dumps({**row, **a.parse.to_dict()}) + "\n")


def _draw_pictures(
    req: EvalRequest, records: Sequence[Any], answers: Sequence[Generated]
) -> dict[str, Any] | None:
    from vlmtui.core.eval.pictures import save_eval_pictures

    if req.save_images is not None:
        where = str(req.save_images.resolve())
        return save_eval_pictures(records, answers, req.save_images, where, None)
    if req.pictures < 1:
        return None
    out = req.output / EVAL_IMAGES
    return save_eval_pictures(records, answers, out, EVAL_IMAGES, req.pictures, clear=True)
