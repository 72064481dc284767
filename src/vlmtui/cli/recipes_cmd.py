"""`vlmtui recipes`: list built-in and user recipes."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from vlmtui.core.recipes.catalog import all_recipes
from vlmtui.core.recipes.recipe import recipe_summary


def add_recipes_file_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--recipes",
        type=Path,
        action="append",
        default=[],
        metavar="FILE",
        help="extra TOML recipe file (repeatable)",
    )


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("recipes", help="list built-in and user recipes")
    p.add_argument("--json", action="store_true", help="print JSON")
    add_recipes_file_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    recipes = all_recipes(args.recipes)
    rows = [recipe_summary(r, recipes) for r in recipes.values()]
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    from rich.console import Console

    from vlmtui.cli.tables import ident_column, plain_table, text_column

    table = plain_table("Recipes")
    ident_column(table, "name", [row["name"] for row in rows])
    for col in ("vision", "projector", "llm"):
        ident_column(table, col, [row[col] for row in rows])
    ident_column(table, "quant", [row["quantization"] for row in rows])
    ident_column(table, "lr", [f"{row['learning_rate']:g}" for row in rows])
    text_column(table, "description")
    for row in rows:
        table.add_row(
            row["name"],
            row["vision"],
            row["projector"],
            row["llm"],
            row["quantization"],
            f"{row['learning_rate']:g}",
            row["description"],
        )
    Console().print(table)
    return 0
