"""The grounded-NER suite: does SMNER say where each entity is, and when it is not there?

A generated corpus in which a share of the entities are left out of their image (their type is
then written in the text instead), trained with the grounding head and scored with the metrics
of grounded multimodal NER (GMNER: span, type and box or "not in the image" all right; MNER:
span and type; EEG: span and box), over several training seeds.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from common import mean_std, train_and_test
from synth_suite import config


def run(
    work: Path,
    seeds: list[int],
    epochs: int,
    posts: int,
    base_model: dict[str, Any],
    corpus_seed: int = 0,
    ungroundable: float = 0.3,
) -> dict[str, Any]:
    from smner.synth.corpus import generate_corpus

    corpus = work / "corpus-grounding"
    summary = generate_corpus(corpus, posts=posts, seed=corpus_seed, ungroundable=ungroundable)
    runs = []
    for seed in seeds:
        folder = work / "runs" / f"grounding-{seed}"
        shutil.rmtree(folder, ignore_errors=True)
        cfg = config(corpus, work, {"grounding": True, **base_model}, seed, epochs)
        cfg["data"]["box_dir"] = str(corpus / "boxes")  # the box head learns from the boxes
        result = train_and_test(cfg, folder, str(corpus / "test.txt"), str(corpus / "boxes"))
        result.pop("per_post")
        runs.append(result)
        gmner = (result.get("grounding") or {}).get("gmner", {}).get("f1", 0.0)
        print(f"grounding seed {seed}: F1 {100 * result['f1']:.1f}, GMNER {100 * gmner:.1f}")
        shutil.rmtree(folder, ignore_errors=True)
    return {
        "posts": posts,
        "epochs": epochs,
        "seeds": seeds,
        "corpus_seed": corpus_seed,
        "ungroundable": ungroundable,
        "ungroundable_entities": summary.ungroundable,
        "runs": runs,
    }


def table(results: dict[str, Any]) -> str:
    runs = results["runs"]

    def cell(metric: str, key: str) -> str:
        return mean_std([r["grounding"][metric][key] for r in runs])

    lines = [
        f"{results['posts']} posts (corpus seed {results['corpus_seed']}, "
        f"`--ungroundable {results['ungroundable']}`: {results['ungroundable_entities']} "
        f"entities left out of their image), {results['epochs']} epochs, "
        f"{len(results['seeds'])} training seeds, mean ± std (%), test split. "
        'A box is right at IoU > 0.5 with the entity\'s box; "not in the image" is right only '
        "for an entity without one.",
        "",
        "| metric | precision | recall | F1 |",
        "|---|---|---|---|",
    ]
    for metric, name in (("gmner", "GMNER (span, type, region)"), ("mner", "MNER (span, type)"),
                         ("eeg", "EEG (span, region)")):  # fmt: skip
        lines.append(
            f"| {name} | {cell(metric, 'precision')} | {cell(metric, 'recall')} | "
            f"{cell(metric, 'f1')} |"
        )
    pointing = [(r.get("alignment") or {}).get("pointing", {}).get("value") for r in runs]
    if all(p is not None for p in pointing):
        lines += [
            "",
            f"Pointing accuracy of the attention on the same posts: {mean_std(pointing)}.",
        ]
    return "\n".join(lines)
