"""Benchmark entry point: ``python bench/run.py --suite SUITE`` (floor, grounding, onnx, quality,
scale, speed, synth).

Results go to ``bench/results/<suite>.json`` and the tables of ``docs/BENCHMARKS.md`` are
regenerated from every results file, with machine, date, commit and the exact command.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import floor_suite
import grounding_suite
import onnx_suite
import quality_suite
import scale
import speed_suite
import synth_suite
from common import RESULTS, ROOT, commit, save

DOC = ROOT / "docs" / "BENCHMARKS.md"
TABLES = {
    "floor": floor_suite.table,
    "grounding": grounding_suite.table,
    "onnx": onnx_suite.table,
    "quality": quality_suite.table,
    "scale": scale.table,
    "speed": speed_suite.table,
    "synth": synth_suite.table,
}


def results_name(suite: str, encoder: str) -> str:
    """The results file and document block of a run: one per text encoder for quality."""
    return suite if suite != "quality" or encoder == "minilm" else f"{suite}-{encoder}"


def render(name: str) -> str:
    payload = json.loads((RESULTS / f"{name}.json").read_text())
    suite = name.split("-")[0]
    m = payload["machine"]
    return (
        f"Measured {payload['date']} at commit `{payload['commit']}` on {m['cpu']} "
        f"({m['cores']} cores, {m['torch_threads']} torch threads), Python {m['python']}, "
        f"torch {m['torch']}."
        + (
            f" Wall time {payload['wall_seconds'] // 60} min {payload['wall_seconds'] % 60} s."
            if "wall_seconds" in payload
            else ""
        )
        + f"\n\nReproduce: `{payload['command']}`\n\n"
        + TABLES[suite](payload["results"])
    )


def update_doc() -> None:
    """Replace each suite's block between its markers in docs/BENCHMARKS.md."""
    text = DOC.read_text(encoding="utf-8")
    for path in sorted(RESULTS.glob("*.json")):
        name = path.stem
        start, end = f"<!-- suite:{name} -->", f"<!-- /suite:{name} -->"
        if name.split("-")[0] not in TABLES or start not in text:
            continue
        before, rest = text.split(start, 1)
        _, after = rest.split(end, 1)
        text = f"{before}{start}\n{render(name)}\n{end}{after}"
    DOC.write_text(text, encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", choices=sorted(TABLES), required=True)
    parser.add_argument(
        "--data", default="../shared/data/twitter2017/valid.txt", help="posts for the speed suite"
    )
    parser.add_argument(
        "--images",
        default="../shared/data/images",
        help="real photos whose features the speed suite cycles through",
    )
    parser.add_argument(
        "--data-root",
        default="../shared/data",
        help="quality, onnx: folder holding twitter2015/, twitter2017/ and images/",
    )
    parser.add_argument(
        "--posts",
        type=int,
        default=1000,
        help="synth: corpus size; speed, floor, onnx: how many posts to time; scale: the larger "
        "file (the smaller holds a tenth)",
    )
    parser.add_argument("--seeds", default="0", help="comma-separated training seeds")
    parser.add_argument(
        "--corpus-seed", type=int, default=0, help="synth: seed of the generated corpus"
    )
    parser.add_argument(
        "--ungroundable",
        type=float,
        default=0.3,
        help="grounding: share of the corpus's entities left out of their image",
    )
    parser.add_argument(
        "--encoder",
        default="minilm",
        help="quality: text encoder of every model (minilm, mpnet or a Hugging Face folder); "
        "results other than minilm's go to quality-<encoder>.json",
    )
    parser.add_argument(
        "--models",
        help="quality: comma-separated models to train (default: SMNER,BIO-softmax,BIO-CRF)",
    )
    parser.add_argument(
        "--epochs",
        type=int,
        help="training epochs (default: 16 for the synth suite, which learns localisation "
        "from entity types alone, 6 for the others)",
    )
    parser.add_argument(
        "--smner-model",
        metavar="DIR",
        help="onnx: a trained SMNER folder to compare (default: train one on Twitter-2017 "
        "train, as the quality suite does, for --epochs)",
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", default="{}", help="JSON of model overrides (smoke tests)")
    parser.add_argument("--work", help="working folder (default: a temporary one)")
    parser.add_argument("--no-doc", action="store_true", help="do not update BENCHMARKS.md")
    args = parser.parse_args()
    overrides = json.loads(args.model)
    work = Path(args.work or tempfile.mkdtemp(prefix="smner-bench-"))
    seeds = [int(s) for s in args.seeds.split(",")]
    started, measured_at = time.perf_counter(), commit()
    if args.suite == "speed":
        results = speed_suite.run(args.data, args.images, args.posts, args.repeats, overrides)
    elif args.suite == "floor":
        results = floor_suite.run(args.data, args.images, args.posts, args.repeats, overrides)
    elif args.suite == "onnx":
        data_root = Path(args.data_root)
        results = onnx_suite.run(
            args.data,
            data_root,
            data_root / "images" / "twitter2017",
            args.posts,
            args.repeats,
            args.epochs or 6,
            overrides,
            work,
            smner_model=args.smner_model,
        )
    elif args.suite == "scale":
        model = scale.build_untrained_model(work / "model", overrides)
        sizes = [max(1, args.posts // 10), args.posts]
        results = scale.run(model, work / "scale", sizes, [1, 2], ["local", "ray"], args.images)
    elif args.suite == "quality":
        results = quality_suite.run(
            work,
            seeds,
            args.epochs or 6,
            Path(args.data_root),
            overrides,
            encoder=args.encoder,
            models=args.models.split(",") if args.models else None,
        )
    elif args.suite == "grounding":
        results = grounding_suite.run(
            work,
            seeds,
            args.epochs or 6,
            args.posts,
            overrides,
            corpus_seed=args.corpus_seed,
            ungroundable=args.ungroundable,
        )
    else:
        results = synth_suite.run(
            work, seeds, args.epochs or 16, args.posts, overrides, corpus_seed=args.corpus_seed
        )
    command = "python bench/run.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    if not args.no_doc:
        name = results_name(args.suite, args.encoder)
        save(name, results, command, time.perf_counter() - started, measured_at)
        update_doc()
    print(TABLES[args.suite](results))


if __name__ == "__main__":
    main()
