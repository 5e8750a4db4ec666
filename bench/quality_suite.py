"""The quality suite: SMNER against the BIO baselines on the benchmarks, over several seeds.

Selection is always on data the score is not computed on: Twitter-2015 trains on train, picks
its epoch on valid and is scored on test; Twitter-2017 (whose test split is held out) trains on
90% of train, picks its epoch on the other 10%, and is scored on valid.
"""

from __future__ import annotations

import random
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


def splits(data_root: Path, work: Path) -> dict[str, dict[str, str]]:
    from smner.data.conll import format_conll, read_conll

    t17 = read_conll(data_root / "twitter2017" / "train.txt").examples
    order = list(range(len(t17)))
    random.Random(0).shuffle(order)
    cut = len(order) // 10
    (work / "t17").mkdir(parents=True, exist_ok=True)
    (work / "t17" / "select.txt").write_text(format_conll([t17[i] for i in order[:cut]]))
    (work / "t17" / "train.txt").write_text(format_conll([t17[i] for i in order[cut:]]))
    return {
        "Twitter-2015 (test)": {
            "train": str(data_root / "twitter2015" / "train.txt"),
            "select": str(data_root / "twitter2015" / "valid.txt"),
            "score": str(data_root / "twitter2015" / "test.txt"),
            "images": str(data_root / "images" / "twitter2015"),
        },
        "Twitter-2017 (dev)": {
            "train": str(work / "t17" / "train.txt"),
            "select": str(work / "t17" / "select.txt"),
            "score": str(data_root / "twitter2017" / "valid.txt"),
            "images": str(data_root / "images" / "twitter2017"),
        },
    }


def run(
    work: Path, seeds: list[int], epochs: int, data_root: Path, base_model: dict[str, Any]
) -> dict[str, Any]:
    results: dict[str, Any] = {"seeds": seeds, "epochs": epochs, "datasets": {}}
    for dataset, files in splits(data_root, work).items():
        runs: dict[str, list[dict[str, Any]]] = {}
        for name, overrides in MODELS.items():
            for seed in seeds:
                folder = work / "runs" / f"{dataset[:12].replace(' ', '')}-{name}-{seed}"
                shutil.rmtree(folder, ignore_errors=True)
                config = {
                    "data": {
                        "train_file": files["train"],
                        "dev_file": files["select"],
                        "image_dir": files["images"],
                        "feature_cache_dir": str(work / "feature-cache"),
                    },
                    "model": {**base_model, **overrides},
                    "train": {
                        "epochs": epochs,
                        "batch_size": 16,
                        "patience": 0,
                        "seed": seed,
                        "progress": False,
                    },
                }
                runs.setdefault(name, []).append(train_and_test(config, folder, files["score"]))
                print(
                    f"{dataset} {name} seed {seed}: F1 {100 * runs[name][-1]['f1']:.2f}", flush=True
                )
        baselines = [m for m in MODELS if m != "SMNER"]
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
        lines += [
            f"**{dataset}**, {spread}, {results['epochs']} epochs (F1 %)",
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
