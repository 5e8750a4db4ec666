"""``smner demo``: the whole system on a generated corpus, with no downloads."""

from __future__ import annotations

import argparse
from pathlib import Path

from smner.commands import positive_int


def register(verbs: argparse._SubParsersAction) -> None:
    parser = verbs.add_parser(
        "demo",
        help="train and compare SMNER and its text-only ablation on a generated corpus",
        description="Generate a multimodal corpus in which only the image tells an entity's "
        "type, train SMNER and its text-only ablation with the offline encoders, compare them "
        "on the test split, save the model, and predict two posts with attention heatmaps. "
        "Everything goes under --output.",
    )
    parser.add_argument("--output", default="demo-output", metavar="DIR")
    parser.add_argument("--posts", type=positive_int, default=1000, help="posts to generate")
    parser.add_argument(
        "--epochs",
        type=positive_int,
        default=16,
        help="SMNER's training epochs (default: %(default)s; the text-only ablation trains "
        "min(epochs, 6))",
    )
    parser.add_argument("--noise", type=float, default=0.0, help="share of mismatched images")
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from smner.commands.demo_run import DemoSettings, run_demo

    run_demo(
        DemoSettings(
            output=Path(args.output),
            posts=args.posts,
            seed=args.seed,
            noise=args.noise,
            epochs=args.epochs,
        )
    )
    return 0
