"""The generated-corpus suite: each alignment module where it should matter.

A grid of {full SMNER, without IB, without cross-attention, text-only} x {clean images, 30%
mismatched images}, over several seeds, with the alignment scores of the attention (pointing
accuracy, attention mass in the entity's box), posts fully right by number of entities, and a
paired bootstrap of full SMNER against each ablation on the same test posts (pooled over seeds).
The paper's claims it tests: the bottleneck helps under visual noise; the cross-attention helps
on posts with two entities, whose cues sit in different halves of the image.
"""

from __future__ import annotations

import shutil
import statistics
from pathlib import Path
from typing import Any

from common import mean_std, paired_bootstrap, train_and_test

VARIANTS: dict[str, dict[str, Any]] = {
    "SMNER": {},
    "without IB": {"use_ib": False},
    "without cross-attention": {"use_cross_attention": False},
    "text-only": {"use_image": False},
}
CONDITIONS: dict[str, float] = {"clean images": 0.0, "30% mismatched images": 0.3}


def config(corpus: Path, work: Path, model: dict[str, Any], seed: int, epochs: int) -> dict:
    return {
        "data": {
            "train_file": str(corpus / "train.txt"),
            "dev_file": str(corpus / "valid.txt"),
            "image_dir": str(corpus / "images"),
            "feature_cache_dir": str(work / "feature-cache"),
            "box_dir": str(corpus / "boxes"),
        },
        "model": model,
        "train": {
            "epochs": epochs,
            "batch_size": 16,
            "head_lr": 1e-3,
            "encoder_lr": 5e-5,
            "patience": 0,
            "seed": seed,
            "progress": False,
            "keep_last": False,
        },
    }


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text)


def run(
    work: Path,
    seeds: list[int],
    epochs: int,
    posts: int,
    base_model: dict[str, Any],
    corpus_seed: int = 0,
) -> dict[str, Any]:
    from smner.synth.corpus import generate_corpus

    results: dict[str, Any] = {
        "posts": posts,
        "epochs": epochs,
        "seeds": seeds,
        "corpus_seed": corpus_seed,
        "conditions": {},
    }
    for condition, noise in CONDITIONS.items():
        corpus = work / f"corpus-{_slug(condition)}"
        generate_corpus(corpus, posts=posts, seed=corpus_seed, noise=noise)
        runs: dict[str, list[dict[str, Any]]] = {}
        for name, overrides in VARIANTS.items():
            for seed in seeds:
                folder = work / "runs" / f"{_slug(condition)}-{_slug(name)}-{seed}"
                shutil.rmtree(folder, ignore_errors=True)
                cfg = config(corpus, work, {**base_model, **overrides}, seed, epochs)
                result = train_and_test(
                    cfg, folder, str(corpus / "test.txt"), str(corpus / "meta.jsonl")
                )
                runs.setdefault(name, []).append(result)
                print(f"{condition} / {name} seed {seed}: F1 {100 * result['f1']:.1f}", flush=True)
                shutil.rmtree(folder, ignore_errors=True)
        pooled = {name: [p for r in rs for p in r.pop("per_post")] for name, rs in runs.items()}
        bootstrap = {
            name: paired_bootstrap(pooled["SMNER"], pooled[name])
            for name in runs
            if name != "SMNER"
        }
        results["conditions"][condition] = {"runs": runs, "bootstrap_p": bootstrap}
    return results


def _mean(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.mean(present) if present else None


def _cell(values: list[float | None]) -> str:
    """``mean ± std`` in percent of the values measured ("-" where none was)."""
    present = [v for v in values if v is not None]
    return mean_std(present) if present else "-"


def _pointing(run: dict[str, Any], entities: str | None) -> float | None:
    alignment = run.get("alignment") or {}
    if entities is None:
        return (alignment.get("pointing") or {}).get("value")
    return (alignment.get("pointing_by_entities", {}).get(entities) or {}).get("value")


def _right(run: dict[str, Any], entities: str) -> float | None:
    alignment = run.get("alignment") or {}
    return (alignment.get("posts_right", {}).get(entities) or {}).get("value")


def table(results: dict[str, Any]) -> str:
    if "conditions" not in results:  # results written before the suite became a grid
        return "(re-run the suite: these results predate the grid)"
    seeds = len(results["seeds"])
    lines = [
        f"{results['posts']} posts (corpus seed {results.get('corpus_seed', 0)}), "
        f"{results['epochs']} epochs, {seeds} training seeds, mean ± std (%). "
        "p: paired bootstrap of SMNER against the row (posts of every seed pooled; small "
        "p = SMNER better). Pointing: most attended cell inside the entity's box (correct "
        "entities); mass: attention inside the box / the box's share of the image.",
        "",
        "| images | model | test F1 | p | 1-entity posts right | 2-entity posts right "
        "| pointing (1 / 2 entities) | mass in box / uniform |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for condition, block in results["conditions"].items():
        for name, runs in block["runs"].items():
            p = block["bootstrap_p"].get(name)
            mass = _mean([(r.get("alignment") or {}).get("mass_in_box") for r in runs])
            uniform = _mean([(r.get("alignment") or {}).get("uniform_mass") for r in runs])
            pointing = (
                f"{_cell([_pointing(r, '1') for r in runs])} / "
                f"{_cell([_pointing(r, '2') for r in runs])}"
            )
            if all(_pointing(r, None) is None for r in runs):
                pointing = "-"
            lines.append(
                f"| {condition} | {name} | {_cell([r['f1'] for r in runs])} | "
                f"{'' if p is None else f'{p:.3f}'} | {_cell([_right(r, '1') for r in runs])} | "
                f"{_cell([_right(r, '2') for r in runs])} | {pointing} | "
                + (f"{mass:.2f} / {uniform:.2f}" if mass is not None else "-")
                + " |"
            )
    return "\n".join(lines)
