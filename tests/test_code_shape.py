"""Modules stay small and functions short, unless a reason is written beside them.

A function over 60 lines needs a comment `# long: <why>` on its `def` line or the line
above; no module may pass 400 lines.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "vlmtui"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def _modules() -> list[Path]:
    return sorted(SRC.rglob("*.py"))


def test_no_module_over_400_lines() -> None:
    long = {
        str(p.relative_to(SRC)): n
        for p in _modules()
        if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert not long, long


def test_no_function_over_60_lines_without_a_reason() -> None:
    offenders = []
    for path in _modules():
        lines = path.read_text().splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            assert node.end_lineno is not None
            length = node.end_lineno - node.lineno + 1
            near = " ".join(lines[max(0, node.lineno - 2) : node.lineno])
            if length > MAX_FUNCTION_LINES and "# long:" not in near:
                offenders.append(f"{path.relative_to(SRC)}:{node.lineno} {node.name} ({length})")
    assert not offenders, offenders
