"""``smner card``: regenerate the model card (README.md) of a run or model folder."""

from __future__ import annotations

import argparse


def register(verbs: argparse._SubParsersAction) -> None:
    parser = verbs.add_parser(
        "card",
        help="regenerate the model card (README.md) of a model folder",
        description="Write README.md, a model card with Hugging Face Hub front matter "
        "(library_name, tags, language, license, datasets, metrics, model-index), from the "
        "folder's own files only: config.json, model.safetensors and training.json, and for a "
        "run folder of 'smner train' also log.jsonl and test_scores.json. For a run folder, "
        "DIR/README.md and DIR/best/README.md are both written.",
        epilog="example: smner card runs/t17 --language en --license apache-2.0",
    )
    parser.add_argument("directory", metavar="DIR", help="run folder or saved model folder")
    parser.add_argument(
        "--language", help="language code for the metadata (default: as before, else en)"
    )
    parser.add_argument(
        "--license",
        dest="license_name",
        help="license id for the metadata, e.g. apache-2.0 (default: as before, else unknown)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from smner.saved.card import regenerate

    for path in regenerate(args.directory, args.language, args.license_name):
        print(f"wrote {path}")
    return 0
