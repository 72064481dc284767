"""`vlmtui demo model|data`: tiny offline model checkpoints and synthetic shapes datasets.

Why: a user can try every command (inspect, train, evaluate) within seconds on a laptop with
no network and no GPU, and tests use exactly the same assets.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from vlmtui.core.families import FAMILIES, QWEN2_VL


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="write a tiny demo model or a synthetic dataset")
    demo_sub = p.add_subparsers(dest="demo_command", metavar="WHAT", required=True)

    m = demo_sub.add_parser("model", help="tiny random-weight checkpoint + processor, offline")
    m.add_argument("dir", type=Path, metavar="DIR", help="output folder")
    m.add_argument(
        "--family",
        choices=sorted(FAMILIES),
        default=QWEN2_VL.name,
        help="architecture (default: %(default)s)",
    )
    m.set_defaults(func=run_model)

    d = demo_sub.add_parser("data", help="synthetic coloured-shapes detection dataset")
    d.add_argument("dir", type=Path, metavar="DIR", help="output folder")
    d.add_argument("--n", type=int, default=64, help="number of images (default: %(default)s)")
    d.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    d.set_defaults(func=run_data)


def run_model(args: argparse.Namespace) -> int:
    from vlmtui.core.model.demo import make_demo_model
    from vlmtui.core.quiet import quiet_libraries

    quiet_libraries()

    out = make_demo_model(args.dir, args.family)
    print(f"wrote a tiny {args.family} model to {out}")
    return 0


def run_data(args: argparse.Namespace) -> int:
    from vlmtui.core.data.shapes import make_shapes_dataset

    out = make_shapes_dataset(args.dir, n=args.n, seed=args.seed)
    print(f"wrote {args.n} images with train.jsonl and val.jsonl to {out}")
    return 0
