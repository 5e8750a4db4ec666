"""``smner train``: train a model from a YAML config."""

from __future__ import annotations

import argparse
import shlex

from smner.config.experiment import load_experiment


def register(verbs: argparse._SubParsersAction) -> None:
    parser = verbs.add_parser(
        "train",
        help="train a model from a YAML config",
        description="Train a model. The config has sections data (train_file, dev_file, "
        "image_dir, label_aliases), model (text_encoder, image_encoder, use_image, use_ib, "
        "use_cross_attention, sizes) and train (epochs, batch_size, learning rates, seed, "
        "device). After each epoch the dev scores are appended to DIR/log.jsonl; the best "
        "model by dev F1 goes to DIR/best/, the full training state to DIR/last/ (removed at the "
        "end with train.keep_last=false). DIR and DIR/best get a model card, README.md.",
        epilog="example: smner train --config configs/twitter2017.yaml --output runs/t17 "
        "--set train.epochs=3",
    )
    parser.add_argument("--config", metavar="FILE.yaml", help="experiment config (YAML)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one config value, e.g. train.epochs=3 or model.use_image=false "
        "(repeatable; values are parsed as YAML)",
    )
    parser.add_argument("--output", required=True, metavar="DIR", help="run folder")
    parser.add_argument(
        "--resume", action="store_true", help="continue a stopped run from DIR/last/"
    )
    parser.set_defaults(handler=run)


def command_line(args: argparse.Namespace) -> str:
    """The command as typed (rebuilt from its options), for the model card."""
    words = ["smner", "train"]
    if args.config:
        words += ["--config", args.config]
    for override in args.overrides:
        words += ["--set", override]
    words += ["--output", args.output]
    if args.resume:
        words.append("--resume")
    return shlex.join(words)


def run(args: argparse.Namespace) -> int:
    from smner.training.trainer import Trainer

    config = load_experiment(args.config, args.overrides)
    trainer = Trainer(config, args.output, resume=args.resume)
    trainer.command = command_line(args)
    result = trainer.fit()
    print(
        f"best dev F1 {100 * result.best_f1:.2f} at epoch {result.best_epoch}; "
        f"model saved in {result.output_dir / 'best'}"
    )
    return 0
