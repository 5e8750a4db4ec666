"""Scale of ``smner predict``: posts/s and peak memory on files of N generated posts.

    python bench/scale.py --model runs/t17/best --posts 10000,100000 --workers 1,2 \
        --engines local,ray
    python bench/run.py --suite scale --posts 100000   # 10k and 100k, an untrained model

For each size it writes N generated posts (JSONL, text; ``--images DIR`` gives every third
post one of that folder's photos), then runs ``smner predict --input posts.jsonl --output
out.jsonl`` in a fresh process for each engine and number of workers. It reports the wall
time, posts/s over the whole command, the start-up time (the same command on one post) and
posts/s without it, and the peak resident memory of the command's whole process tree
(workers and Ray's processes included), sampled from /proc. Streaming holds memory flat as
the input grows: the 100k row should show the 10k row's peak.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

NAMES = ["George", "Kevin Durant", "Paris", "New York", "Apple", "the Warriors", "Mary"]
VERBS = ["visited", "loves", "joins", "met", "left", "is at", "tweets about"]
TAILS = ["today", "again", "with friends", "#travel", "after the game", "", "lol"]


def write_posts(path: Path, count: int, images: list[Path], seed: int = 0) -> None:
    """``count`` tweet-like posts of 2 to 40 words, the same for the same seed."""
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as handle:
        for i in range(count):
            words = [rng.choice(NAMES), rng.choice(VERBS), rng.choice(NAMES), rng.choice(TAILS)]
            words += rng.choice(TAILS).split() * rng.randrange(0, 9)
            record: dict[str, Any] = {"id": str(i), "text": " ".join(w for w in words if w)}
            if images and i % 3 == 0:
                record["image"] = str(images[i % len(images)])
            handle.write(json.dumps(record) + "\n")


def tree_rss_bytes(root: int) -> int:
    """Resident memory of ``root`` and every process below it, from /proc (0 if gone)."""
    total, todo, seen = 0, [root], set()
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
                    break
            for task in Path(f"/proc/{pid}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, ValueError):
            continue
    return total


def timed_run(command: list[str], interval: float = 0.05) -> dict[str, float]:
    """Wall seconds and peak tree RSS (MiB) of a command; its failure stops the benchmark."""
    started = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, tree_rss_bytes(proc.pid))
        time.sleep(interval)
    seconds = time.perf_counter() - started
    stderr = proc.stderr.read().decode("utf-8", "replace") if proc.stderr else ""
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): {' '.join(command)}\n{stderr[-3000:]}")
    return {"seconds": seconds, "peak_rss_mib": peak / 2**20}


def predict_command(
    model: str, source: Path, output: Path, engine: str, workers: int, batch_size: int
) -> list[str]:
    return [
        sys.executable,
        "-m",
        "smner",
        "predict",
        "--model",
        model,
        "--input",
        str(source),
        "--output",
        str(output),
        "--engine",
        engine,
        "--workers",
        str(workers),
        "--batch-size",
        str(batch_size),
    ]


def run(
    model: str,
    work: Path,
    sizes: list[int],
    workers: list[int],
    engines: list[str],
    image_dir: str | None = None,
    batch_size: int = 32,
    ray_workers: int = 1,
) -> dict[str, Any]:
    """Every (size, engine, workers) once; Ray with ``ray_workers`` actors only."""
    images = sorted(Path(image_dir).rglob("*.jpg")) if image_dir else []
    work.mkdir(parents=True, exist_ok=True)
    one = work / "one.jsonl"
    write_posts(one, 1, images)
    startup: dict[tuple[str, int], float] = {}
    rows = []
    for size in sizes:
        source = work / f"posts-{size}.jsonl"
        write_posts(source, size, images)
        for engine in engines:
            for count in workers if engine == "local" else [ray_workers]:
                key = (engine, count)
                if key not in startup:
                    out = work / f"one-{engine}-{count}.jsonl"
                    command = predict_command(model, one, out, engine, count, batch_size)
                    startup[key] = timed_run(command)["seconds"]
                out = work / f"out-{size}-{engine}-{count}.jsonl"
                measured = timed_run(predict_command(model, source, out, engine, count, batch_size))
                with open(out, "rb") as handle:
                    written = sum(1 for _ in handle)
                assert written == size, f"{out}: {written} records for {size} posts"
                steady = measured["seconds"] - startup[key]
                rows.append(
                    {
                        "posts": size,
                        "engine": engine,
                        "workers": count,
                        "seconds": round(measured["seconds"], 2),
                        "posts_per_s": round(size / measured["seconds"], 1),
                        "startup_s": round(startup[key], 2),
                        "steady_posts_per_s": round(size / steady, 1) if steady > 0 else None,
                        "peak_rss_mib": round(measured["peak_rss_mib"], 1),
                    }
                )
                out.unlink()
        source.unlink()
    return {
        "rows": rows,
        "batch_size": batch_size,
        "images": len(images),
        "threads": os.environ.get("OMP_NUM_THREADS", "all"),
    }


def table(results: dict[str, Any]) -> str:
    lines = [
        "| posts | engine | workers | wall s | posts/s | start-up s | posts/s after start-up "
        "| peak RSS MiB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results["rows"]:
        steady = r["steady_posts_per_s"]
        lines.append(
            f"| {r['posts']} | {r['engine']} | {r['workers']} | {r['seconds']:.1f} | "
            f"{r['posts_per_s']:.1f} | {r['startup_s']:.1f} | "
            f"{'-' if steady is None else f'{steady:.1f}'} | {r['peak_rss_mib']:.0f} |"
        )
    lines.append(
        f"\nBatch {results['batch_size']}; {results['images']} photos cycled through every "
        "third post; peak RSS is the whole process tree (workers, Ray's processes)."
    )
    return "\n".join(lines)


def build_untrained_model(folder: Path, overrides: dict[str, Any]) -> str:
    """A saved model with the default encoders (or ``overrides``): speed does not depend on
    training, and no training run is needed to measure it."""
    from smner.config.check import from_dict
    from smner.config.model import ModelConfig
    from smner.encoders.text import load_tokenizer, resolve_text_encoder
    from smner.model import build_model

    config = from_dict(ModelConfig, {"labels": ["LOC", "MISC", "ORG", "PER"], **overrides}, "model")
    tokenizer = load_tokenizer(resolve_text_encoder(config.text_encoder))
    build_model(config).save_pretrained(folder, tokenizer=tokenizer)
    return str(folder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a saved model folder")
    parser.add_argument("--posts", default="10000,100000", help="comma-separated sizes")
    parser.add_argument("--workers", default="1,2", help="comma-separated --workers values")
    parser.add_argument("--engines", default="local,ray", help="local, ray or both")
    parser.add_argument("--ray-workers", type=int, default=1, help="Ray actors")
    parser.add_argument("--images", help="a folder of photos for every third post")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--work", help="working folder (default: a temporary one)")
    args = parser.parse_args()
    results = run(
        args.model,
        Path(args.work or tempfile.mkdtemp(prefix="smner-scale-")),
        [int(n) for n in args.posts.split(",")],
        [int(n) for n in args.workers.split(",")],
        args.engines.split(","),
        args.images,
        args.batch_size,
        args.ray_workers,
    )
    print(json.dumps(results))
    print(table(results))


if __name__ == "__main__":
    main()
