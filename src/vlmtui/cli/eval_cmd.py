"""`vlmtui eval` (score a run or a base model on held-out images) and `vlmtui compare`."""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vlmtui.core.errors import BadInput
from vlmtui.core.eval.pictures import DEFAULT_PICTURES
from vlmtui.core.rundir import EVAL_IMAGES

if TYPE_CHECKING:
    from vlmtui.core.eval.evaluate import EvalRequest


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="score a run's detections on held-out images (writes eval.json)",
        description="Generate on held-out images with a run's weights (or, with --base, an "
        "un-fine-tuned checkpoint), parse the boxes and write mAP / recall / IoU to eval.json.",
    )
    p.add_argument("run", nargs="?", metavar="RUN", help="run id or run directory")
    p.add_argument("--base", type=Path, metavar="MODEL", help="evaluate this base checkpoint")
    p.add_argument("--data", required=True, type=Path, help="dataset dir, JSONL or COCO JSON")
    p.add_argument("--split", default="val", help="dataset split (default: val)")
    p.add_argument("--limit", type=int, default=None, help="evaluate the first N images")
    p.add_argument("--batch-size", type=int, default=4, help="images per generate call")
    p.add_argument("--max-new-tokens", type=int, default=None, help="answer length cap")
    p.add_argument(
        "--output", type=Path, default=None, help="where eval.json goes (default: the run dir)"
    )
    p.add_argument(
        "--save-images", type=Path, metavar="DIR", help="draw gold/predicted boxes of every image"
    )
    p.add_argument(
        "--pictures", type=int, default=DEFAULT_PICTURES, metavar="N",
        help=f"without --save-images: draw the first N images into RUN/{EVAL_IMAGES} for the "
        f"app's runs pane (default {DEFAULT_PICTURES}; 0: none)",
    )  # fmt: skip
    p.add_argument("--gpu", default=None, help="GPU index, or 'cpu'")
    p.add_argument("--json", action="store_true", help="print eval.json")
    p.set_defaults(func=run_eval_cmd)

    c = sub.add_parser("compare", help="one table row per run: recipe, loss, mAP, recall, IoU")
    c.add_argument("runs", nargs="+", metavar="RUN", help="run ids or run directories")
    c.add_argument("--json", action="store_true", help="print JSON")
    c.add_argument(
        "--save-images", type=Path, metavar="DIR",
        help="the same image from every run side by side (needs each run's eval)",
    )  # fmt: skip
    c.set_defaults(func=run_compare_cmd)


def _fmt(value: Any, spec: str = ".3f", none: str = "—") -> str:
    return none if value is None else format(value, spec)


def _eval_request(args: argparse.Namespace) -> EvalRequest:
    """The request the arguments describe, refused early (before any model loads); picks the GPU."""
    from vlmtui.cli.train_cmd import select_gpu
    from vlmtui.core.eval.evaluate import DEFAULT_MAX_NEW_TOKENS, EvalRequest, resolve_run

    if (args.run is None) == (args.base is None):
        raise BadInput("eval: give either RUN or --base MODEL (not both)")
    run_dir = resolve_run(args.run) if args.run is not None else None
    if args.base is not None and args.output is None:
        raise BadInput("eval --base: --output DIR is required (where eval.json goes)")
    if not args.data.exists():
        raise BadInput(f"--data: {args.data} does not exist")
    output = args.output or run_dir
    assert output is not None  # RUN or --output, checked above
    select_gpu(args.gpu)
    return EvalRequest(
        data=args.data,
        output=output,
        run_dir=run_dir,
        base_model=args.base,
        split=args.split,
        limit=args.limit,
        batch_size=args.batch_size,
        max_new_tokens=(
            DEFAULT_MAX_NEW_TOKENS if args.max_new_tokens is None else args.max_new_tokens
        ),
        save_images=args.save_images,
        pictures=args.pictures,
    )


def run_eval_cmd(args: argparse.Namespace) -> int:
    from vlmtui.core.eval.evaluate import run_eval

    req = _eval_request(args)
    from vlmtui.core.quiet import quiet_libraries

    quiet_libraries()
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    err = Console(stderr=True)
    progress = Progress(
        TextColumn("generating"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err,
    )
    task: list[Any] = []

    def on_start(total: int) -> None:
        # Started only once the model is loaded, so an early refusal prints one clean line.
        progress.start()
        task.append(progress.add_task("generate", total=total))

    def on_batch(n: int) -> None:
        progress.advance(task[0], n)

    try:
        report = run_eval(req, on_start=on_start, on_batch=on_batch)
    except BadInput:
        raise
    except Exception:
        traceback.print_exc()
        return 1
    finally:
        if task:
            progress.stop()
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    _print_report(report, req.output)
    return 0


def _print_report(report: dict[str, Any], output: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    m, c = report["metrics"], report["counts"]
    con = Console()
    title = f"{report['recipe']} on {report['n_images']} {report['split']} images"
    table = Table(title=title)
    for col in ("mAP", "mAP50", "recall", "mean IoU", "P@.5", "R@.5", "parse fail"):
        table.add_column(col, justify="right")
    table.add_row(
        _fmt(m["map"]),
        _fmt(m["map50"]),
        _fmt(m["recall"]),
        _fmt(m["mean_iou"]),
        _fmt(m["precision50"]),
        _fmt(m["recall50"]),
        _fmt(m["parse_failure_rate"], ".1%"),
    )
    con.print(table)
    if report["per_label"]:
        labels = Table(title="per label")
        for col in ("label", "AP", "AP50", "recall", "mean IoU", "gold", "pred", "matched"):
            labels.add_column(col, justify="left" if col == "label" else "right")
        for name, lm in report["per_label"].items():
            labels.add_row(
                name,
                _fmt(lm["ap"]),
                _fmt(lm["ap50"]),
                _fmt(lm["recall"]),
                _fmt(lm["mean_iou"]),
                str(lm["n_gold"]),
                str(lm["n_pred"]),
                str(lm["matched"]),
            )
        con.print(labels)
    con.print(
        f"boxes: {c['gold_boxes']} gold, {c['pred_boxes']} predicted, {c['matched']} matched; "
        f"{c['unparseable_images']} unparseable answers, {c['invalid_boxes']} invalid and "
        f"{c['duplicate_boxes']} repeated boxes, {c.get('not_a_box', 0)} objects not a box, "
        f"{c['truncated_outputs']} truncated answers"
    )
    for line in _parse_detail_lines(c):
        con.print(line, markup=False)
    con.print(f"wrote {output / 'eval.json'}")


def _parse_detail_lines(counts: dict[str, Any]) -> list[str]:
    """Invalid boxes by reason and answers per lenient reading, the nonzero ones."""
    lines = []
    reasons = counts.get("invalid_by_reason") or {}
    if reasons:
        lines.append("invalid boxes: " + ", ".join(f"{n} {r}" for r, n in reasons.items()))
    forms = {f: n for f, n in (counts.get("answer_forms") or {}).items() if n}
    if forms:
        lines.append(
            "answers read leniently: "
            + ", ".join(f"{n} {f.replace('_', ' ')}" for f, n in forms.items())
        )
    return lines


def _count(n: int | None) -> str:
    if n is None:
        return "—"
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


def _duration(s: float | None) -> str:
    if s is None:
        return "—"
    if s < 60:
        return f"{s:.1f}s"
    if s < 3600:
        return f"{int(s // 60)}m{int(s % 60):02d}s"
    return f"{int(s // 3600)}h{int(s % 3600 // 60):02d}m"


def run_compare_cmd(args: argparse.Namespace) -> int:
    from vlmtui.core.eval.compare import compare_rows

    rows = compare_rows(args.runs)
    if args.save_images is not None:
        _save_comparison(rows, args.save_images)
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    from rich.console import Console

    from vlmtui.cli.tables import ident_column, number_column, plain_table

    console = Console()
    names = [
        Path(r["run_dir"]).name if Path(r["run"]).expanduser().is_dir() else r["run"] for r in rows
    ]
    recipes = [r["recipe"] or "—" for r in rows]
    cells = [
        [
            _count(r["trainable_params"]),
            _duration(r["train_time_s"]),
            _fmt(r["final_loss"], ".4g"),
            _fmt(r["map"]),
            _fmt(r["map50"]),
            _fmt(r["recall"]),
            _fmt(r["mean_iou"]),
            _fmt(r["parse_failure_rate"], ".0%"),
        ]
        for r in rows
    ]
    numbers = ("params", "time", "loss", "mAP", "mAP50", "recall", "IoU", "fail")
    widths = [max([len(h), *(len(c[i]) for c in cells)]) for i, h in enumerate(numbers)]
    ids = max(len(x) for x in [*names, *recipes, "recipe"])
    # Run and recipe side by side when they fit; else stacked in one column, never cut.
    stacked = 2 * ids + sum(widths) + len(numbers) + 1 > console.width
    table = plain_table("Runs compared")
    if stacked:
        ident_column(table, "run / recipe", [*names, *recipes])
    else:
        ident_column(table, "run", names)
        ident_column(table, "recipe", recipes)
    for col in numbers:
        number_column(table, col)
    for name, recipe, row in zip(names, recipes, cells, strict=True):
        head = [f"{name}\n{recipe}"] if stacked else [name, recipe]
        table.add_row(*head, *row)
    console.print(table)
    console.print(
        "params: trainable parameters; time: training time; loss: last logged loss; "
        "mAP: COCO mAP@[.5:.95]; recall: AR@100; IoU: mean IoU of matched boxes; "
        "fail: answers that could not be parsed",
        style="dim",
    )
    return 0


def _save_comparison(rows: list[dict[str, Any]], out_dir: Path) -> None:
    """One picture per evaluated image with a panel per run; gold from the first run's data."""
    from vlmtui.core.data.datasets import load_split
    from vlmtui.core.eval.pictures import Box, save_comparison
    from vlmtui.core.rundir import EVAL_JSON, read_json

    first = read_json(Path(rows[0]["run_dir"]) / EVAL_JSON) or {}
    gold: dict[str, list[Box]] = {}
    if first.get("data"):
        for rec in load_split(Path(first["data"]), first.get("split") or "val"):
            gold[str(rec.image_path)] = [
                Box(o.label, (o.bbox[0], o.bbox[1], o.bbox[2], o.bbox[3])) for o in rec.objects
            ]
    runs = [(Path(r["run_dir"]).name, Path(r["run_dir"])) for r in rows]
    paths = save_comparison(runs, gold, out_dir)
    print(f"wrote {len(paths)} side-by-side images to {out_dir}", file=sys.stderr)
