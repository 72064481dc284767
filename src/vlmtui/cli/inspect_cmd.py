"""`vlmtui inspect`: what a recipe trains on a model, from its config alone (no weights).

Served from the inspection cache (`core.inspection.cache`) when the model's config, the
recipe and the library versions match an earlier inspection by any process: then torch is
never imported. Every view, `--diff` and the memory options included, is computed from the
cached entry, so its output is the same as a fresh build's."""

from __future__ import annotations

import argparse
import json
import re
from typing import TYPE_CHECKING, Any

from vlmtui.cli.inspect_diff import run_diff
from vlmtui.cli.inspect_layers import checkpoint_line, layer_kind_table, layer_kind_tag
from vlmtui.cli.inspect_memory import add_memory_args, assumptions_from_args, check_memory_args
from vlmtui.cli.recipes_cmd import add_recipes_file_arg
from vlmtui.core.errors import BadInput
from vlmtui.core.styles import MODE_STYLES

if TYPE_CHECKING:
    from vlmtui.core.recipes.recipe import TrainingRecipe

STATE_STYLE = MODE_STYLES


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "inspect",
        help="show what a recipe trains on a model (built from its config, no weights)",
        description="Build MODEL from its config on the meta device and apply a recipe with "
        "the training code path (freeze policy, LoRA via PEFT, quantization, guard). MODEL is "
        "a checkpoint directory, a model id in the local Hugging Face cache, or a shipped id "
        "such as Qwen/Qwen2-VL-72B-Instruct. Works offline.",
    )
    p.add_argument("model", metavar="MODEL", help="checkpoint dir, cached model id or shipped id")
    p.add_argument("--recipe", help="recipe name (see `vlmtui recipes`)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--tree", action="store_true", help="show the module tree with states")
    p.add_argument(
        "--expand",
        nargs="?",
        const=".*",
        default=None,
        metavar="REGEX",
        help="with --tree/--filter: do not collapse repeated blocks (under modules matching "
        "REGEX; all when no REGEX is given)",
    )
    p.add_argument("--filter", metavar="REGEX", help="show the modules whose path matches REGEX")
    p.add_argument(
        "--diff", nargs=2, metavar=("R1", "R2"), help="modules and areas that differ between R1, R2"
    )
    p.add_argument(
        "--no-cache",
        action="store_true",
        help="rebuild the meta model even when the inspection cache holds this model and "
        "recipe (the fresh result replaces the entry)",
    )
    add_memory_args(p)
    add_recipes_file_arg(p)
    p.set_defaults(func=run)


def _compile(flag: str, pattern: str | None) -> re.Pattern[str] | None:
    from vlmtui.core.inspection.views import compile_filter

    return None if pattern is None else compile_filter(pattern, flag)


def run(args: argparse.Namespace) -> int:
    from vlmtui.core.inspection.cached import CachedInspector
    from vlmtui.core.model.resolve import resolve_model
    from vlmtui.core.recipes.catalog import get_recipe

    filt = _compile("--filter", args.filter)
    expand = _compile("--expand", args.expand)
    check_memory_args(args)
    if args.diff and args.recipe:
        raise BadInput("--diff compares two recipes: give either --recipe or --diff, not both")
    if (args.tree or args.filter) and args.diff:
        raise BadInput("--tree and --filter go with --recipe, not with --diff")
    recipes: list[TrainingRecipe | None]
    with _status(f"reading {args.model} and the recipes…") as status:
        ref = resolve_model(args.model)
        if args.diff:
            recipes = [get_recipe(n, args.recipes) for n in args.diff]
        else:
            recipes = [get_recipe(args.recipe, args.recipes)] if args.recipe else [None]
        names = ", ".join(r.name for r in recipes if r is not None) or "no recipe"

        def building() -> None:
            from vlmtui.core.quiet import quiet_libraries

            # Only on a miss: it imports transformers, which a cache hit never needs. Without
            # it bitsandbytes' kernel note came before a refusal's one line.
            quiet_libraries()
            if status is not None:
                status.update(f"marking {ref.name} for {names} (importing torch, meta build)…")

        insp = CachedInspector(ref, args.recipes, use_cache=not args.no_cache, on_miss=building)
        results = [insp.inspect(r) for r in recipes]
    assumptions = assumptions_from_args(args, recipes[0])
    if args.diff:
        return run_diff(args, insp, results, assumptions)
    result = results[0]
    if args.json:
        data = result.to_dict(assumptions)
        if args.tree:
            data["tree"] = [_tree_of(insp, s, expand).to_dict() for s in _stages(result)]
        if filt is not None:
            data["matches"] = [_matches(insp, s, filt, expand) for s in _stages(result)]
        print(json.dumps(data, indent=1))
        return 0
    _print_human(insp, result, assumptions, filt, expand, tree=args.tree)
    return 0


def _status(text: str) -> Any:
    """A spinner on stderr while the slow part runs, only on a terminal: `inspect` used to
    print nothing for ~13 s."""
    import contextlib
    import sys

    if not sys.stderr.isatty():
        return contextlib.nullcontext()
    # One plain line at once (Rich's import and first refresh cost ~0.1 s more), then the
    # spinner with what is being done.
    sys.stderr.write(f"vlmtui inspect: {text}\n")
    sys.stderr.flush()
    from rich.console import Console

    return Console(stderr=True).status(text)


def _stages(result: Any) -> list[Any]:
    """Stage results, or [None] for the bare model."""
    return list(result.stages) or [None]


def _marked(insp: Any, stage: Any) -> Any:
    from vlmtui.core.inspection.tree import Marking

    return insp.tree().mark(stage.marking if stage else Marking.empty())


def _tree_of(insp: Any, stage: Any, expand: re.Pattern[str] | None) -> Any:
    from vlmtui.core.inspection.views import collapse

    rule = (lambda n: bool(expand.search(n.name))) if expand else None
    return collapse(_marked(insp, stage), rule)


def _matches(
    insp: Any, stage: Any, filt: re.Pattern[str], expand: re.Pattern[str] | None
) -> list[dict[str, Any]]:
    from vlmtui.core.inspection.views import filter_nodes, group_names

    nodes = filter_nodes(_marked(insp, stage), filt)
    items = [
        (
            n.name,
            (n.cls, n.area, n.total_params, n.trainable_params, n.lora_params, n.state, n.quant),
        )
        for n in nodes
    ]
    grouped = [(name, 1, key) for name, key in items] if expand else group_names(items)
    keys = ("class", "area", "params", "trainable", "lora_params", "state", "quant")
    return [
        {"name": name, "count": count, **dict(zip(keys, key, strict=True))}
        for name, count, key in grouped
    ]


# --- human output -----------------------------------------------------------------------


def _n(value: int) -> str:
    return f"{value:,}"


def _pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.2f}%" if whole else "-"


def _print_human(
    insp: Any,
    result: Any,
    assumptions: Any,
    filt: re.Pattern[str] | None,
    expand: re.Pattern[str] | None,
    *,
    tree: bool,
) -> None:
    from rich.console import Console

    from vlmtui.cli.inspect_memory import memory_table
    from vlmtui.core.recipes.notes import lora_by_layer_kind

    console = Console()
    ref = result.model
    where = {"dir": "checkpoint dir", "hf-cache": "HF cache", "shipped": "shipped config"}
    head = f"[bold]{ref.name}[/]  {ref.family.name} · {where[ref.source]}"
    head += f" · recipe [bold]{result.recipe.name}[/]" if result.recipe else " · no recipe"
    console.print(head)
    stages = _stages(result)
    memories = result.memory(assumptions) if result.stages else []
    for i, stage in enumerate(stages):
        if len(stages) > 1:
            console.print(
                f"\n[bold]stage {stage.index}/{len(stages)}: {stage.recipe.name}[/]"
                + (" (starts from stage 1's weights)" if stage.index > 1 else "")
            )
        summary = stage.summary if stage else result.base_summary
        console.print(_area_table(summary, stage, ref.family))
        if summary.tied_head and stage is None:
            console.print(f"lm_head and {summary.tied_head} are one tensor (tied), counted once")
        if result.mtp_params and i == 0:
            console.print(checkpoint_line(result))
        if stage is None:
            console.print("no recipe: nothing trains (give --recipe R to apply one)")
        else:
            console.print(f"guard: [green]{stage.guard}[/]")
            for note in stage.notes:
                console.print(f"  {note}")
            kinds = lora_by_layer_kind(summary.lora_modules, summary.layer_kinds)
            if kinds and (len(set(summary.layer_kinds.values())) > 1 or ref.family.expert_params):
                console.print(layer_kind_table(kinds, summary.layer_kinds))
            if summary.quantized_modules:
                console.print(
                    f"quantized: {len(summary.quantized_modules)} linears "
                    f"{stage.recipe.quantization}, all in the LLM; vision, projector and "
                    "lm_head stay in full precision"
                )
            would_fit = stage.alternatives(result.dims, assumptions)
            console.print(memory_table(memories[i], would_fit))
        if tree:
            console.print(_rich_tree(_tree_of(insp, stage, expand), ref.name))
        if filt is not None:
            console.print(_filter_table(_matches(insp, stage, filt, expand), filt))
    if memories:
        m = memories[0]
        console.print("[dim]memory assumptions: " + "; ".join(m.notes) + "[/]")


def _area_table(summary: Any, stage: Any, family: Any) -> Any:
    from rich.table import Table

    from vlmtui.core.families import AREAS

    lora_by_area: dict[str, int] = {}
    for name in summary.lora_modules:
        area = family.area_of(name)
        lora_by_area[area] = lora_by_area.get(area, 0) + 1
    table = Table()
    for col, just in (
        ("area", "left"),
        ("mode", "left"),
        ("params", "right"),
        ("trainable", "right"),
        ("%", "right"),
        ("LoRA modules", "right"),
    ):
        table.add_column(col, justify=just)  # type: ignore[arg-type]
    for area in AREAS:
        c = summary.areas[area]
        mode = ""
        if stage is not None:
            mode = stage.recipe.area(area).mode if area in ("vision", "projector", "llm") else ""
        if area == "lm_head" and summary.tied_head:  # one tensor, counted in the llm row
            mode = "tied"
        style = STATE_STYLE.get(mode, "")
        table.add_row(
            area,
            f"[{style}]{mode}[/]" if style else mode,
            _n(c.params),
            _n(c.trainable),
            _pct(c.trainable, c.params),
            str(lora_by_area.get(area, 0)),
        )
    table.add_row(
        "[bold]total[/]",
        "",
        _n(summary.total_params),
        _n(summary.trainable_params),
        _pct(summary.trainable_params, summary.total_params),
        str(len(summary.lora_modules)),
    )
    return table


def _node_text(node: Any, label: str) -> str:
    style = STATE_STYLE[node.state]
    quant = f" [magenta]{node.quant}[/]" if node.quant else ""
    tied = f" tied ({_n(node.shared_params)} shared)" if node.shared_params else ""
    each = " each" if node.repeat > 1 else ""
    counts = f"{_n(node.total_params)} params{each}"
    if node.trainable_params:
        counts += f", {_n(node.trainable_params)} trainable"
    return f"[{style}]{node.state:<6}[/] [bold]{label}[/] [dim]{node.cls}[/]{quant} {counts}{tied}"


def _rich_tree(root: Any, title: str) -> Any:
    from rich.tree import Tree

    def shown(node: Any) -> bool:
        return bool(node.total_params or node.shared_params or node.lora_params)

    def add(parent: Any, node: Any, prefix: str = "") -> None:
        kids = [c for c in node.children if shown(c)]
        # A container whose children collapsed into one run reads `blocks.0–31 ×32`.
        if len(kids) == 1 and kids[0].repeat > 1 and len(node.children) == 1:
            add(parent, kids[0], prefix=f"{prefix}{node.short}.")
            return
        branch = parent.add(_node_text(node, prefix + node.label) + layer_kind_tag(node))
        for c in kids:
            add(branch, c)

    top = Tree(_node_text(root, title))
    for c in root.children:
        if shown(c):
            add(top, c)
    return top


def _filter_table(rows: list[dict[str, Any]], filt: re.Pattern[str]) -> Any:
    from rich.console import Console

    from vlmtui.cli.tables import fit_paths, ident_column, number_column, plain_table

    title = f"modules matching {filt.pattern!r}: {sum(r['count'] for r in rows)}"
    table = plain_table(title)
    classes = [r["class"] + (f" {r['quant']}" if r["quant"] else "") for r in rows]
    params = [_n(r["params"]) for r in rows]
    trainable = [_n(r["trainable"]) for r in rows]
    states = [r["state"] for r in rows]
    full = [r["name"] + (f" ×{r['count']}" if r["count"] > 1 else "") for r in rows]
    others = [
        ["class", *classes],
        ["state", *states],
        ["params", *params],
        ["trainable", *trainable],
    ]
    paths = fit_paths(full, others, Console().width)
    ident_column(table, "path", paths)
    ident_column(table, "class", classes)
    ident_column(table, "state", states)
    number_column(table, "params")
    number_column(table, "trainable")
    for r, path, cls, p, t in zip(rows, paths, classes, params, trainable, strict=True):
        style = STATE_STYLE[r["state"]]
        table.add_row(path, cls, f"[{style}]{r['state']}[/]", p, t)
    return table
