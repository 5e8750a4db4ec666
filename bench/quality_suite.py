"""The quality suite: SMNER against the BIO baselines on the benchmarks, over several seeds.

Selection is always on data the score is not computed on: Twitter-2015 trains on train, picks
its epoch on valid and is scored on test; Twitter-2017 (whose test split is held out) trains on
90% of train, picks its epoch on the other 10% (``data.dev_holdout: 0.1``), and is scored on
valid. ``--encoder`` changes the text encoder of every model; its results are kept apart
(``quality-<encoder>.json`` and its own block of docs/BENCHMARKS.md).
"""

from __future__ import annotations

import shutil
import statistics
from pathlib import Path
from typing import Any

from common import mean_std, paired_bootstrap, train_and_test

MODELS: dict[str, dict[str, Any]] = {
    "SMNER": {},
    "BIO-softmax": {"type": "bio-tagger", "tagger_head": "softmax", "use_image": False},
    "BIO-CRF": {"type": "bio-tagger", "tagger_head": "crf", "use_image": False},
}

# the encoder learning rate of every model, per text encoder: the shipped configs' (the usual
# rate for a base-size encoder for MPNet); any other encoder keeps the training default
ENCODER_LR: dict[str, float] = {"minilm": 5e-5, "mpnet": 3e-5}


def splits(data_root: Path) -> dict[str, dict[str, Any]]:
    """Per benchmark: what a run trains on, what it selects its epoch on, what is scored."""
    return {
        "Twitter-2015 (test)": {
            "data": {
                "train_file": str(data_root / "twitter2015" / "train.txt"),
                "dev_file": str(data_root / "twitter2015" / "valid.txt"),
                "image_dir": str(data_root / "images" / "twitter2015"),
            },
            "score": str(data_root / "twitter2015" / "test.txt"),
        },
        "Twitter-2017 (dev)": {
            "data": {
                "train_file": str(data_root / "twitter2017" / "train.txt"),
                "dev_holdout": 0.1,
                "image_dir": str(data_root / "images" / "twitter2017"),
            },
            "score": str(data_root / "twitter2017" / "valid.txt"),
        },
    }


def run_config(
    files: dict[str, Any],
    name: str,
    encoder: str,
    seed: int,
    epochs: int,
    base_model: dict[str, Any],
    work: Path,
) -> dict[str, Any]:
    """The experiment config of one row's run: the same training for every model of a row."""
    return {
        "data": {**files["data"], "feature_cache_dir": str(work / "feature-cache")},
        "model": {"text_encoder": encoder, **base_model, **MODELS[name]},
        "train": {
            "epochs": epochs,
            "batch_size": 16,
            "patience": 0,
            "seed": seed,
            "progress": False,
            **({"encoder_lr": ENCODER_LR[encoder]} if encoder in ENCODER_LR else {}),
            # as the MPNet configs do (1.23x faster there); MiniLM's rows keep the random
            # batches they were measured with
            "group_by_length": encoder != "minilm",
        },
    }


def run(
    work: Path,
    seeds: list[int],
    epochs: int,
    data_root: Path,
    base_model: dict[str, Any],
    encoder: str = "minilm",
    models: list[str] | None = None,
) -> dict[str, Any]:
    chosen = models or list(MODELS)
    unknown = sorted(set(chosen) - set(MODELS))
    if unknown or "SMNER" not in chosen or len(chosen) < 2:
        raise SystemExit(f"--models: SMNER and at least one of {list(MODELS)[1:]}, got {chosen}")
    results: dict[str, Any] = {"seeds": seeds, "epochs": epochs, "encoder": encoder}
    results["datasets"] = {}
    for dataset, files in splits(data_root).items():
        runs: dict[str, list[dict[str, Any]]] = {}
        for name in chosen:
            for seed in seeds:
                tag = f"{dataset[:12].replace(' ', '')}-{name}-{encoder}-{seed}"
                folder = work / "runs" / tag
                shutil.rmtree(folder, ignore_errors=True)
                config = run_config(files, name, encoder, seed, epochs, base_model, work)
                runs.setdefault(name, []).append(train_and_test(config, folder, files["score"]))
                print(
                    f"{dataset} {name} seed {seed}: F1 {100 * runs[name][-1]['f1']:.2f}", flush=True
                )
        baselines = [m for m in chosen if m != "SMNER"]
        best = max(baselines, key=lambda m: statistics.mean(r["f1"] for r in runs[m]))
        p_value = paired_bootstrap(runs["SMNER"][0]["per_post"], runs[best][0]["per_post"])
        for rs in runs.values():
            for r in rs:
                r.pop("per_post")
        results["datasets"][dataset] = {"runs": runs, "best_baseline": best, "bootstrap_p": p_value}
    return results


def table(results: dict[str, Any]) -> str:
    lines = []
    for dataset, d in results["datasets"].items():
        runs = d["runs"]
        types = sorted({t for rs in runs.values() for r in rs for t in r["per_type_f1"]})
        seeds = len(results["seeds"])
        spread = f"{seeds} seeds, mean ± std" if seeds > 1 else "one seed"
        encoder = results.get("encoder", "minilm")
        lines += [
            f"**{dataset}**, {encoder} text encoder, {spread}, {results['epochs']} epochs (F1 %)",
            "",
            "| model | F1 | " + " | ".join(types) + " |",
            "|" + "---|" * (len(types) + 2),
        ]
        for name, rs in runs.items():
            per_type = [mean_std([r["per_type_f1"].get(t, 0.0) for r in rs]) for t in types]
            lines.append(
                f"| {name} | {mean_std([r['f1'] for r in rs])} | " + " | ".join(per_type) + " |"
            )
        lines += [
            "",
            f"Paired bootstrap (1,000 resamples of posts, first seed), SMNER vs "
            f"{d['best_baseline']}: p = {d['bootstrap_p']:.3f}",
            "",
        ]
    return "\n".join(lines)
