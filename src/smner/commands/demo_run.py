"""The built-in demo: a generated multimodal corpus, SMNER against its text-only ablation.

Every step is an ordinary smner step (generate, train, evaluate, predict, draw heatmaps), so
the demo doubles as an end-to-end check of the whole system on a laptop with no downloads.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from smner.config.check import from_dict
from smner.config.experiment import ExperimentConfig
from smner.data.conll import read_conll
from smner.data.images import ImageStore
from smner.data.posts import PostInput
from smner.evaluation.metrics import Scores
from smner.evaluation.pointing import format_alignment
from smner.predict.heatmaps import save_entity_heatmaps
from smner.predict.predictor import Predictor
from smner.synth.corpus import generate_corpus

if TYPE_CHECKING:
    from smner.evaluation.evaluate import Evaluation


@dataclass
class DemoSettings:
    output: Path
    posts: int = 1000
    seed: int = 0
    noise: float = 0.0
    #: SMNER's epochs: learning where each entity is from its type alone takes more than
    #: learning it from boxes (docs/BENCHMARKS.md, "Localisation from entity types alone")
    epochs: int = 16
    #: the text-only ablation's epochs (None: ``min(epochs, 6)``; it plateaus by then)
    text_only_epochs: int | None = None
    #: extra ``model`` keys for both runs (e.g. tiny encoders in tests)
    model: dict[str, Any] = field(default_factory=dict)
    #: extra ``train`` keys for both runs
    train: dict[str, Any] = field(default_factory=dict)
    image_size: int = 224


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


#: SMNER's box-free localisation (configs/synth-boxfree.yaml): the weak losses (the attention
#: imitating the classifier's averaged map), a post's entities competing for the picture, and
#: heatmaps weighted by the classifier's evidence
BOX_FREE = {
    "region_types": 1.0,
    "region_attention": 2.0,
    "entity_competition": 1.0,
    "region_evidence_pooling": 3,
    "region_evidence_sharpness": 4.0,
    "region_attention_target": "imitate",
    "heatmaps": "evidence",
}


def epochs_of(settings: DemoSettings, use_image: bool) -> int:
    if use_image:
        return settings.epochs
    return settings.text_only_epochs or min(settings.epochs, 6)


def experiment(settings: DemoSettings, corpus: Path, use_image: bool) -> ExperimentConfig:
    """The demo's run of SMNER (``use_image``) or of its text-only ablation. Boxes are not
    given: SMNER learns where each entity is from the entity types alone, and the corpus's
    boxes only score where it looks."""
    return from_dict(
        ExperimentConfig,
        {
            "data": {
                "train_file": str(corpus / "train.txt"),
                "dev_file": str(corpus / "valid.txt"),
                "image_dir": str(corpus / "images"),
                "feature_cache_dir": str(settings.output / "feature-cache"),
            },
            "model": {"use_image": use_image, **(BOX_FREE if use_image else {}), **settings.model},
            "train": {
                "epochs": epochs_of(settings, use_image),
                "batch_size": 16,
                "head_lr": 1e-3,
                "encoder_lr": 5e-5,
                "patience": 0,
                "seed": settings.seed,
                "keep_last": False,  # the demo is not extended; last/ would hold ~0.5 GB
                **settings.train,
            },
        },
    )


def evaluate(model_dir: Path, data: Path, images: Path) -> Evaluation:
    from smner.evaluation.evaluate import evaluate_saved_model

    return evaluate_saved_model(model_dir, data, images)


def comparison_table(results: dict[str, Scores]) -> str:
    """Precision/recall/F1 per model, overall and per type, side by side (percentages)."""
    names = list(results)
    types = sorted({t for s in results.values() for t in s.per_type})
    head = f"{'':<10}" + "".join(f"{name:>27}" for name in names)
    sub = f"{'':<10}" + "".join(f"{'P':>9}{'R':>9}{'F1':>9}" for _ in names)
    rows = [head, sub]
    for label in [*types, "overall"]:
        cells = []
        for name in names:
            s = results[name]
            cell = s if label == "overall" else s.per_type.get(label)
            p, r, f = (cell.precision, cell.recall, cell.f1) if cell else (0.0, 0.0, 0.0)
            cells.append(f"{100 * p:>9.1f}{100 * r:>9.1f}{100 * f:>9.1f}")
        rows.append(f"{label:<10}" + "".join(cells))
    return "\n".join(rows)


def run_demo(settings: DemoSettings) -> dict[str, Scores]:
    from smner.training.trainer import Trainer

    out = settings.output
    corpus = out / "corpus"
    say(f"[1/5] generating {settings.posts} posts with images in {corpus}")
    generate_corpus(
        corpus,
        posts=settings.posts,
        seed=settings.seed,
        noise=settings.noise,
        image_size=settings.image_size,
        progress=True,
    )
    runs = {"SMNER": (out / "smner", True), "text-only": (out / "text-only", False)}
    for step, (name, (folder, use_image)) in enumerate(runs.items(), start=2):
        epochs = epochs_of(settings, use_image)
        say(f"[{step}/5] training {name} for {epochs} epochs -> {folder}")
        Trainer(experiment(settings, corpus, use_image), folder).fit()
    say("[4/5] evaluating both on the test split")
    evaluations = {
        name: evaluate(folder / "best", corpus / "test.txt", corpus / "images")
        for name, (folder, _) in runs.items()
    }
    results = {name: evaluation.scores for name, evaluation in evaluations.items()}
    print("\nTest split of the generated corpus (entity-level, %):")
    print(comparison_table(results))
    gap = 100 * (results["SMNER"].f1 - results["text-only"].f1)
    print(f"\nSMNER - text-only: {gap:+.1f} F1 points. Model saved in {out / 'smner' / 'best'}")
    print(
        "\nWhere SMNER looks (its span-to-region attention against the box of each entity's "
        "cue, from corpus/meta.jsonl):"
    )
    print(format_alignment(evaluations["SMNER"].alignment(corpus / "meta.jsonl")))
    say("[5/5] predicting two example posts, with attention heatmaps")
    show_examples(out / "smner" / "best", corpus, out / "heatmaps")
    return results


def show_examples(model_dir: Path, corpus: Path, heatmaps: Path) -> None:
    """Predict the first test post with one entity and the first with two; print and draw
    them (each entity's heatmap, its attention over the part of the image the model saw)."""
    test = read_conll(corpus / "test.txt").examples
    firsts = (next((ex for ex in test if len(ex.entities) == n), None) for n in (1, 2))
    examples = [ex for ex in firsts if ex is not None]
    predictor = Predictor.from_pretrained(model_dir)
    heatmaps.mkdir(parents=True, exist_ok=True)
    store = ImageStore(corpus / "images")
    for example in examples:
        path = store.path_for(example.image_id)
        result = predictor.predict_many([PostInput(tokens=example.tokens, image=path)])[0]
        print(f"\npost {example.image_id}: {' '.join(example.tokens)}")
        gold = ", ".join(
            f"{' '.join(example.tokens[e.start : e.end])} [{e.type}]" for e in example.entities
        )
        print(f"  gold:      {gold}")
        picture = store.load(example.image_id, count=False)[0] if path is not None else None
        drawn = {}
        if picture is not None and predictor.model.config.use_image:
            preprocessing = predictor.processor.image
            drawn = save_entity_heatmaps(
                heatmaps, example.image_id, picture, result.entities, preprocessing
            )
        for n, mention in enumerate(result.entities):
            line = f"  predicted: {mention.text} [{mention.type}] score {mention.score:.2f}"
            if n in drawn:
                line += f"  heatmap: {drawn[n]}"
            print(line)
        attended = [m for m in result.entities if m.attention]
        if len(attended) >= 2:
            grid = attended[0].attention or []
            peaks = [peak_cell(m.attention or []) for m in attended]
            where = "; ".join(
                f"{m.text} at row {r + 1}, column {c + 1}"
                for m, (r, c) in zip(attended, peaks, strict=True)
            )
            apart = "different places" if len(set(peaks)) == len(peaks) else "the same place"
            print(
                f"  attention peaks ({len(grid)} x {len(grid[0])} grid, learned without "
                f"boxes): {where} ({apart})"
            )


def peak_cell(attention: list[list[float]]) -> tuple[int, int]:
    """The (row, column) of a heatmap's largest weight."""
    best = max(
        ((value, r, c) for r, row in enumerate(attention) for c, value in enumerate(row)),
        key=lambda item: item[0],
    )
    return best[1], best[2]
