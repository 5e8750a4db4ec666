"""The generated-corpus suite: SMNER, its ablations, and robustness to mismatched images."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from common import mean_std, train_and_test

VARIANTS: dict[str, dict[str, Any]] = {
    "SMNER": {},
    "text-only": {"use_image": False},
    "without IB": {"use_ib": False},
    "without cross-attention": {"use_cross_attention": False},
}


def config(corpus: Path, work: Path, model: dict[str, Any], seed: int, epochs: int) -> dict:
    return {
        "data": {
            "train_file": str(corpus / "train.txt"),
            "dev_file": str(corpus / "valid.txt"),
            "image_dir": str(corpus / "images"),
            "feature_cache_dir": str(work / "feature-cache"),
        },
        "model": model,
        "train": {
            "epochs": epochs,
            "batch_size": 16,
            "patience": 0,
            "seed": seed,
            "progress": False,
        },
    }


def run(
    work: Path, seeds: list[int], epochs: int, posts: int, base_model: dict[str, Any]
) -> dict[str, Any]:
    from smner.synth import generate_corpus

    clean, noisy = work / "corpus-clean", work / "corpus-noise30"
    generate_corpus(clean, posts=posts, seed=0)
    generate_corpus(noisy, posts=posts, seed=0, noise=0.3)
    runs: dict[str, list[dict[str, Any]]] = {}
    plan = [(name, clean, overrides) for name, overrides in VARIANTS.items()]
    plan.append(("SMNER, 30% mismatched images", noisy, {}))
    for name, corpus, overrides in plan:
        for seed in seeds:
            folder = work / "runs" / f"{name.replace(' ', '_').replace(',', '')}-{seed}"
            shutil.rmtree(folder, ignore_errors=True)
            cfg = config(corpus, work, {**base_model, **overrides}, seed, epochs)
            result = train_and_test(cfg, folder, str(corpus / "test.txt"))
            result.pop("per_post")
            runs.setdefault(name, []).append(result)
            print(f"{name} seed {seed}: test F1 {100 * result['f1']:.1f}", flush=True)
    return {"posts": posts, "epochs": epochs, "seeds": seeds, "runs": runs}


def table(results: dict[str, Any]) -> str:
    runs = results["runs"]
    types = sorted({t for rs in runs.values() for r in rs for t in r["per_type_f1"]})
    head = "| model | test F1 | " + " | ".join(types) + " |"
    rows = [head, "|" + "---|" * (len(types) + 2)]
    for name, rs in runs.items():
        per_type = [mean_std([r["per_type_f1"].get(t, 0.0) for r in rs]) for t in types]
        rows.append(
            f"| {name} | {mean_std([r['f1'] for r in rs])} | " + " | ".join(per_type) + " |"
        )
    return "\n".join(rows)
