"""Quality and cost of a shipped config: dev/test F1, seconds per epoch, posts/s, peak memory.

    python bench/pipeline.py --config configs/twitter2017.yaml --output runs/t17 \\
        --eval ../shared/data/twitter2017/valid.txt

Trains (unless --skip-train and the run exists), evaluates each --eval file with
`smner evaluate --json`, times prediction throughput in-process (median of --repeats runs),
and prints a JSON record and a Markdown table row.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

SMNER = [sys.executable, "-m", "smner.cli"]


def run(command: list[str]) -> tuple[str, float, int]:
    """Run a command; return stdout, wall seconds, and its peak RSS in MiB."""
    started = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if proc.returncode:
        sys.exit(f"failed: {' '.join(command)}\n{proc.stderr[-2000:]}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024
    return proc.stdout, seconds, peak


def throughput(model_dir: Path, data: str, repeats: int, batch_size: int) -> float:
    from smner.data.conll import read_conll
    from smner.data.posts import PostInput
    from smner.predict.predictor import Predictor

    predictor = Predictor.from_pretrained(model_dir)
    posts = [PostInput(tokens=ex.tokens) for ex in read_conll(data)]
    predictor.predict_many(posts[:batch_size], batch_size)  # warm-up
    rates = []
    for _ in range(repeats):
        started = time.perf_counter()
        predictor.predict_many(posts, batch_size)
        rates.append(len(posts) / (time.perf_counter() - started))
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--eval", action="append", required=True, metavar="FILE")
    parser.add_argument("--images", help="image folder for evaluation")
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()

    output = Path(args.output)
    record: dict[str, object] = {
        "config": args.config,
        "machine": f"{platform.node()} {platform.machine()} {platform.processor() or ''}".strip(),
        "date": time.strftime("%Y-%m-%d"),
    }
    if not (args.skip_train and (output / "best").is_dir()):
        sets = [item for o in args.overrides for item in ("--set", o)]
        _, seconds, peak = run(
            [
                *SMNER,
                "train",
                "--config",
                args.config,
                "--output",
                str(output),
                *sets,
                "--set",
                "train.progress=false",
            ]
        )
        record.update(train_seconds=round(seconds, 1), train_peak_rss_mib=peak)
    log = [json.loads(line) for line in (output / "log.jsonl").read_text().splitlines()]
    record["epochs"] = len(log)
    record["seconds_per_epoch_median"] = statistics.median(r["seconds"] for r in log)
    record["best_dev_f1"] = max(r["dev_f1"] for r in log)
    for data in args.eval:
        command = [*SMNER, "evaluate", "--model", str(output / "best"), "--data", data, "--json"]
        if args.images:
            command += ["--images", args.images]
        stdout, _, peak = run(command)
        scores = json.loads(stdout)
        record[f"eval:{data}"] = {
            "f1": scores["f1"],
            "precision": scores["precision"],
            "recall": scores["recall"],
            "per_type_f1": {k: v["f1"] for k, v in scores["per_type"].items()},
        }
    record["predict_posts_per_s"] = round(
        throughput(output / "best", args.eval[0], args.repeats, args.batch_size), 1
    )
    record["predict_peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
