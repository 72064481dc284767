"""`vlmtui inspect --diff R1 R2`: rendering the comparison core decides.

`core.inspection.compare.RecipeDiff` says what differs; this module only prints it (the JSON
object as is, or Rich tables), so `inspect_cmd.py` stays about the single-recipe views.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from vlmtui.core.styles import MODE_STYLES as STATE_STYLE


def _n(value: int) -> str:
    return f"{value:,}"


def run_diff(args: argparse.Namespace, insp: Any, results: list[Any], assumptions: Any) -> int:
    """Print the comparison of two inspected recipes (JSON with --json)."""
    from vlmtui.core.inspection.compare import compare_recipes

    diff = compare_recipes(insp.tree(), results[0], results[1], assumptions)
    if args.json:
        print(json.dumps(diff.to_json(), indent=1))
        return 0
    _print_diff(diff)
    return 0


def _print_diff(diff: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    from vlmtui.cli.inspect_memory import setup_table

    names = list(diff.names)
    console = Console()
    console.print(f"[bold]{diff.model}[/]  {diff.family} · {names[0]} vs {names[1]}")
    t = Table(title="areas")
    for col in ("area", names[0], names[1]):
        t.add_column(col)
    for area, (x, y) in diff.areas.items():
        mark = "" if x == y else " [yellow]*[/]"
        t.add_row(
            area + mark,
            f"{x['mode']} ({_n(x['trainable'])} trainable)",
            f"{y['mode']} ({_n(y['trainable'])} trainable)",
        )
    console.print(t)
    console.print(setup_table(diff.setup, names))
    if not diff.changes:
        console.print("no module differs in trainable state")
        return
    console.print(_changes_table(list(diff.changes), names, console.width))


def _changes_table(changes: list[Any], names: list[str], width: int) -> Any:
    from vlmtui.cli.tables import fit_paths, ident_column, plain_table

    t = plain_table(f"modules whose state differs: {sum(c.count for c in changes)}")
    full = [c.name + (f" ×{c.count}" if c.count > 1 else "") for c in changes]
    each = [f"{_n(c.trainable_before)} → {_n(c.trainable_after)}" for c in changes]
    columns = {
        "class": [c.cls for c in changes],
        names[0]: [c.before for c in changes],
        names[1]: [c.after for c in changes],
        "trainable each": each,
    }
    paths = fit_paths(full, [[k, *v] for k, v in columns.items()], width)
    ident_column(t, "module", paths)
    for header, cells in columns.items():
        ident_column(t, header, cells)
    for c, path, trained in zip(changes, paths, each, strict=True):
        t.add_row(
            path,
            c.cls,
            f"[{STATE_STYLE[c.before]}]{c.before}[/]",
            f"[{STATE_STYLE[c.after]}]{c.after}[/]",
            trained,
        )
    return t
