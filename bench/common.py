"""Shared pieces of the benchmark suites: run metadata, training runs, result files."""

from __future__ import annotations

import json
import platform
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


def machine() -> dict[str, Any]:
    import os

    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


def _git(root: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=root, capture_output=True, text=True, check=True
    ).stdout.strip()


def commit(root: Path = ROOT) -> str:
    """The checkout's short commit, with ``+changes`` when tracked files differ from it, so
    that a result measured on an uncommitted tree does not claim a commit it did not run."""
    try:
        head = _git(root, "rev-parse", "--short", "HEAD")
        changed = _git(root, "status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{head}+changes" if changed else head


def save(
    suite: str,
    results: dict[str, Any],
    command: str,
    wall_seconds: float,
    measured_at: str | None = None,
) -> Path:
    """Write a suite's results; ``measured_at`` is the commit the run started from (the code
    that was measured: commits made while a long run goes on are not in it)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {
        "suite": suite,
        "date": time.strftime("%Y-%m-%d"),
        "commit": measured_at or commit(),
        "machine": machine(),
        "command": command,
        "wall_seconds": round(wall_seconds),
        "results": results,
    }
    path = RESULTS / f"{suite}.json"
    path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return path


def mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{100 * values[0]:.1f}"
    return f"{100 * statistics.mean(values):.1f} ± {100 * statistics.stdev(values):.1f}"


def paired_bootstrap(a: list[list[int]], b: list[list[int]], samples: int = 1000) -> float:
    """P-value that model ``a``'s F1 is not above ``b``'s, resampling posts with replacement.

    ``a`` and ``b`` hold per-post ``[correct, predicted, gold]`` counts of the same posts.
    """
    import random

    rng = random.Random(0)
    n = len(a)

    def f1(counts: list[list[int]], picks: list[int]) -> float:
        correct = sum(counts[i][0] for i in picks)
        predicted = sum(counts[i][1] for i in picks)
        gold = sum(counts[i][2] for i in picks)
        return 2 * correct / (predicted + gold) if predicted + gold else 0.0

    worse = 0
    for _ in range(samples):
        picks = [rng.randrange(n) for _ in range(n)]
        worse += f1(a, picks) <= f1(b, picks)
    return worse / samples


def train_and_test(
    config: dict[str, Any], output: Path, test_file: str, boxes: str | None = None
) -> dict[str, Any]:
    """Train a config in-process, score its best model on ``test_file``; keep per-post counts.

    With ``boxes`` (a generated corpus's ``meta.jsonl`` or ``boxes/`` folder), the alignment
    scores of the model's attention are added (see ``smner.evaluation.pointing``), and for a model
    with a
    grounding head its GMNER, MNER and EEG scores (see ``smner.evaluation.grounding``).
    """
    from smner.config.check import from_dict
    from smner.config.experiment import ExperimentConfig
    from smner.evaluation.evaluate import evaluate_saved_model
    from smner.training.trainer import Trainer

    started = time.perf_counter()
    result = Trainer(from_dict(ExperimentConfig, config), output).fit()
    seconds = time.perf_counter() - started
    data = config["data"]
    evaluation = evaluate_saved_model(
        output / "best",
        test_file,
        data.get("image_dir"),
        data.get("label_aliases"),
        feature_cache_dir=data.get("feature_cache_dir"),
    )
    scores = evaluation.scores
    per_post = [
        [
            len({e for e in ex.entities} & {p.entity for p in post}),
            len({p.entity for p in post}),
            len(set(ex.entities)),
        ]
        for ex, post in zip(evaluation.corpus.examples, evaluation.predictions, strict=True)
    ]
    alignment = evaluation.alignment(boxes).to_dict() if boxes else None
    grounding = evaluation.grounding(boxes).to_dict() if boxes and evaluation.grounds else None
    return {
        "alignment": alignment,
        "grounding": grounding,
        "f1": scores.f1,
        "precision": scores.precision,
        "recall": scores.recall,
        "per_type_f1": {k: v.f1 for k, v in scores.per_type.items()},
        "best_dev_f1": result.best_f1,
        "best_epoch": result.best_epoch,
        "train_seconds": round(seconds, 1),
        "per_post": per_post,
    }
