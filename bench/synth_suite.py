"""The generated-corpus suite: each alignment module where it should matter, learned box-free.

A grid of {full SMNER, without IB, without cross-attention, text-only} x {clean corpus,
realistic corpus}, over several seeds. Every image model learns where entities are from their
types alone, with the box-free recipe ``configs/synth-boxfree.yaml`` ships (:data:`BOX_FREE`,
read from that file: weak localisation losses, entity competition, evidence heatmaps); the
corpus's boxes only score the attention.
Overall F1 hides where a module helps, so the test posts are cut into slices read from
``meta.jsonl``: posts whose words tell the type but whose image is not their own (the
bottleneck should keep the wrong picture out), words and own image, posts whose only type cue
is the image, and posts with two entities (whose cues sit in different
parts of the image, which the cross-attention must tell apart). Full SMNER is compared with
each ablation by a paired bootstrap on the same test posts (pooled over seeds), overall and on
the slice where the bottleneck is meant to help.

Each finished run is kept as ``WORK/runs/<corpus>-<model>-<seed>.json`` and reused by a later
run of the same config on the same corpus, so the grid (about 45 min a training seed on 2
cores) can be run a seed at a time. The runs behind docs/BENCHMARKS.md's grid are kept in
``bench/results/synth-runs/``; to add a seed to them::

    mkdir -p /tmp/grid/runs && cp bench/results/synth-runs/*.json /tmp/grid/runs/
    python bench/run.py --suite synth --posts 1000 --epochs 16 --seeds 0,1,2 --work /tmp/grid
"""

from __future__ import annotations

import json
import shutil
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from common import mean_std, paired_bootstrap, train_and_test

#: Epochs, batch and learning rates of ``configs/synth-boxfree.yaml``, which localises well.
EPOCHS = 16
BATCH_SIZE = 16
ENCODER_LR = 5e-5
HEAD_LR = 1e-3

#: The shipped box-free recipe, whose model settings the image models with cross-attention take.
SHIPPED_RECIPE = Path(__file__).resolve().parents[1] / "configs" / "synth-boxfree.yaml"
#: Settings of that file's model section that are not the recipe (the suite names the model).
_NOT_RECIPE = frozenset({"type", "text_encoder", "image_encoder"})


def shipped_box_free(path: Path = SHIPPED_RECIPE) -> dict[str, Any]:
    """The weak localisation losses, competition and heatmaps of the shipped box-free config,
    so that the grid measures what ships (a change there makes the suite train those rows
    again, since a kept run's key holds its config)."""
    import yaml

    model = yaml.safe_load(path.read_text(encoding="utf-8"))["model"]
    return {key: value for key, value in model.items() if key not in _NOT_RECIPE}


BOX_FREE = shipped_box_free()
NO_REGION_LOSSES = {"region_types": 0.0, "region_attention": 0.0, "entity_competition": 0.0}

VARIANTS: dict[str, dict[str, Any]] = {
    "SMNER": dict(BOX_FREE),
    "without IB": {"use_ib": False, **BOX_FREE},
    "without cross-attention": {"use_cross_attention": False, **NO_REGION_LOSSES},
    "text-only": {"use_image": False, **NO_REGION_LOSSES},
}
#: Corpus names; "realistic" is ``generate_corpus(..., **REALISTIC)`` (``smner synth
#: --realistic``), where text and image each tell part of the story.
CORPORA: tuple[str, ...] = ("clean", "realistic")

CUED_MISMATCHED = "cued + mismatched"
CUED_CLEAN = "cued + clean"
UNCUED = "uncued"
TWO_ENTITY = "two-entity"
#: The slices of the test posts, and what each one isolates.
SLICES: dict[str, str] = {
    CUED_MISMATCHED: "the words tell the type, the image is another post's or unrelated",
    CUED_CLEAN: "the words tell the type, the image is the post's own",
    UNCUED: "only the image tells the type",
    TWO_ENTITY: "two gold entities",
}
#: The slice where the bottleneck is supposed to help: the bootstrap is run on it too.
IB_SLICE = CUED_MISMATCHED
_NOT_OWN = frozenset({"mismatched", "unrelated"})


def image_kind(record: Mapping[str, Any]) -> str:
    """Where the post's image comes from: ``own``, ``mismatched`` or ``unrelated``.

    Corpora written without the knobs have no ``image`` key; their ``noisy`` flag (older files,
    and default corpora) marks a mismatched image, and anything else is the post's own.
    """
    kind = record.get("image")
    if kind is not None:
        return str(kind)
    return "mismatched" if record.get("noisy") else "own"


def text_cued(record: Mapping[str, Any]) -> bool:
    """Whether the post's words tell an entity's type. ``text_cue`` is a flag per entity (a
    plain bool is accepted too); a corpus without the knob has none, and no post is cued."""
    cue = record.get("text_cue")
    if isinstance(cue, list):
        return any(bool(c) for c in cue)
    return bool(cue)


def post_slices(record: Mapping[str, Any]) -> tuple[str, ...]:
    """The slices a post belongs to: one of the three cue/image slices, and two-entity."""
    cued = text_cued(record)
    if not cued:
        slices = [UNCUED]
    elif image_kind(record) in _NOT_OWN:
        slices = [CUED_MISMATCHED]
    else:
        slices = [CUED_CLEAN]
    if len(record.get("entities") or ()) == 2:
        slices.append(TWO_ENTITY)
    return tuple(slices)


def read_meta(path: Path) -> dict[str, dict[str, Any]]:
    """``meta.jsonl``'s records by image id (a post of several images: its first)."""
    records: dict[str, dict[str, Any]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            record = json.loads(line)
            records[str(record["image_id"])] = record
    return records


def assign_slices(
    image_ids: Sequence[str | None],
    meta: Mapping[str, Mapping[str, Any]],
    gold_counts: Sequence[int] | None = None,
) -> list[tuple[str, ...]]:
    """The slices of each test post, matched to ``meta`` by image id.

    With ``gold_counts`` (each post's number of gold entities, as scored), a post whose record
    names another number of entities is an error: the records would be some other posts'.
    """
    slices = []
    for index, image_id in enumerate(image_ids):
        record = meta.get(str(image_id)) if image_id is not None else None
        if record is None:
            raise ValueError(f"test post {index} (image {image_id!r}) has no meta.jsonl record")
        if gold_counts is not None and gold_counts[index] != len(record.get("entities") or ()):
            raise ValueError(
                f"test post {index} (image {image_id!r}) has {gold_counts[index]} gold entities, "
                f"its meta.jsonl record {len(record.get('entities') or ())}"
            )
        slices.append(post_slices(record))
    return slices


def micro_f1(counts: Sequence[Sequence[int]]) -> float | None:
    """Entity micro F1 of per-post ``[correct, predicted, gold]`` counts (None: nothing to
    score, no post or no entity predicted or gold)."""
    correct = sum(c[0] for c in counts)
    total = sum(c[1] + c[2] for c in counts)
    return 2 * correct / total if total else None


def in_slice(
    per_post: Sequence[Sequence[int]], slices: Sequence[Sequence[str]], name: str
) -> list[list[int]]:
    """The per-post counts of the posts in slice ``name``, in order."""
    return [list(c) for c, s in zip(per_post, slices, strict=True) if name in s]


def slice_f1(
    per_post: Sequence[Sequence[int]], slices: Sequence[Sequence[str]]
) -> dict[str, float | None]:
    """Micro F1 over each slice's posts."""
    return {name: micro_f1(in_slice(per_post, slices, name)) for name in SLICES}


def config(corpus: Path, work: Path, model: dict[str, Any], seed: int, epochs: int) -> dict:
    """A box-free training run: no ``box_dir``, so the attention learns from types alone."""
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
            "batch_size": BATCH_SIZE,
            "head_lr": HEAD_LR,
            "encoder_lr": ENCODER_LR,
            "patience": 0,
            "seed": seed,
            "progress": False,
            "keep_last": False,
        },
    }


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text)


def _test_image_ids(test_file: Path) -> list[str | None]:
    """The image ids of the test posts, read as the evaluation reads them (same order)."""
    from smner.data.mnermi import read_corpus

    return [example.image_id for example in read_corpus(test_file).examples]


def _run_record(folder: Path) -> Path:
    return folder.with_name(folder.name + ".json")


#: What stands for the work folder in a kept run's key, so that kept runs copied into another
#: work folder (another machine, a later session) are still found.
WORK = "$WORK"


def run_key(cfg: dict[str, Any], work: Path, corpus: dict[str, Any]) -> dict[str, Any]:
    """What a kept run must match to be reused: its training config (the work folder's path
    replaced by ``$WORK``) and the generated corpus it was trained on (posts, seed, knobs)."""
    portable = json.loads(json.dumps(cfg).replace(json.dumps(str(work))[1:-1], WORK))
    return {"config": portable, "corpus": json.loads(json.dumps(corpus))}


def finished_run(folder: Path, key: dict[str, Any]) -> dict[str, Any] | None:
    """The result of a run finished earlier under exactly this key, if one was kept.

    Each run of the grid is kept beside its folder as it ends (``runs/<corpus>-<model>-<seed>
    .json``), so a grid that is stopped, or run seed by seed (``--seeds 0`` then ``--seeds
    0,1,2``, in the same ``--work`` or one the kept runs were copied into), trains only what it
    has not measured yet; another config, epoch count or corpus trains again.
    """
    record = _run_record(folder)
    if not record.is_file():
        return None
    try:
        kept = json.loads(record.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    if not isinstance(kept, dict) or kept.get("key") != key:
        return None
    return kept.get("result")


def keep_run(folder: Path, key: dict[str, Any], result: dict[str, Any]) -> None:
    from smner.fileio import atomic_write_text

    record = _run_record(folder)
    record.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(record, json.dumps({"key": key, "result": result}))


def run(
    work: Path,
    seeds: list[int],
    epochs: int = EPOCHS,
    posts: int = 1000,
    base_model: dict[str, Any] | None = None,
    corpus_seed: int = 0,
) -> dict[str, Any]:
    from smner.synth.corpus import generate_corpus
    from smner.synth.knobs import REALISTIC

    knobs: dict[str, dict[str, Any]] = {"clean": {}, "realistic": dict(REALISTIC)}
    results: dict[str, Any] = {
        "posts": posts,
        "epochs": epochs,
        "seeds": seeds,
        "corpus_seed": corpus_seed,
        "slices": dict(SLICES),
        "corpora": {},
    }
    for name in CORPORA:
        corpus = work / f"corpus-{name}"
        generate_corpus(corpus, posts=posts, seed=corpus_seed, **knobs[name])
        test_file, meta_file = corpus / "test.txt", corpus / "meta.jsonl"
        meta = read_meta(meta_file)
        image_ids = _test_image_ids(test_file)
        slices: list[tuple[str, ...]] | None = None
        runs: dict[str, list[dict[str, Any]]] = {}
        pooled: dict[str, list[list[int]]] = {}
        pooled_ib: dict[str, list[list[int]]] = {}
        for model, overrides in VARIANTS.items():
            for seed in seeds:
                folder = work / "runs" / f"{name}-{_slug(model)}-{seed}"
                cfg = config(corpus, work, {**(base_model or {}), **overrides}, seed, epochs)
                key = run_key(cfg, work, {"posts": posts, "seed": corpus_seed, **knobs[name]})
                result = finished_run(folder, key)
                if result is None:
                    shutil.rmtree(folder, ignore_errors=True)
                    # meta.jsonl only scores the attention (pointing, mass in box)
                    result = train_and_test(cfg, folder, str(test_file), str(meta_file))
                    shutil.rmtree(folder, ignore_errors=True)
                    keep_run(folder, key, result)
                else:
                    print(f"{name} / {model} seed {seed}: measured before, reused", flush=True)
                per_post = result.pop("per_post")
                if slices is None:
                    slices = assign_slices(image_ids, meta, [c[2] for c in per_post])
                result["slice_f1"] = slice_f1(per_post, slices)
                pooled.setdefault(model, []).extend(per_post)
                pooled_ib.setdefault(model, []).extend(in_slice(per_post, slices, IB_SLICE))
                runs.setdefault(model, []).append(result)
                parts = ", ".join(
                    f"{s} {'-' if f is None else f'{100 * f:.1f}'}"
                    for s, f in result["slice_f1"].items()
                )
                print(
                    f"{name} / {model} seed {seed}: F1 {100 * result['f1']:.1f} ({parts})",
                    flush=True,
                )
        assert slices is not None
        bootstrap = {
            model: {
                "overall": paired_bootstrap(pooled["SMNER"], pooled[model]),
                IB_SLICE: (
                    paired_bootstrap(pooled_ib["SMNER"], pooled_ib[model])
                    if pooled_ib[model]
                    else None
                ),
            }
            for model in runs
            if model != "SMNER"
        }
        results["corpora"][name] = {
            "knobs": knobs[name],
            "slice_posts": {s: sum(s in p for p in slices) for s in SLICES},
            "test_posts": len(slices),
            "runs": runs,
            "bootstrap_p": bootstrap,
        }
    return results


def _mean(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.mean(present) if present else None


def _cell(values: list[float | None]) -> str:
    """``mean ± std`` in percent of the values measured ("-" where none was)."""
    present = [v for v in values if v is not None]
    return mean_std(present) if present else "-"


def _p(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _pointing(run: dict[str, Any], entities: str | None) -> float | None:
    alignment = run.get("alignment") or {}
    if entities is None:
        return (alignment.get("pointing") or {}).get("value")
    return (alignment.get("pointing_by_entities", {}).get(entities) or {}).get("value")


def table(results: dict[str, Any]) -> str:
    if "corpora" not in results:  # results written before the slice grid
        return "(re-run the suite: these results predate the slice grid)"
    seeds = len(results["seeds"])
    names = list(results["slices"])
    sizes = "; ".join(
        f"{corpus} {' / '.join(str(block['slice_posts'].get(s, 0)) for s in names)} "
        f"of {block['test_posts']}"
        for corpus, block in results["corpora"].items()
    )
    train_minutes = (
        sum(
            r.get("train_seconds") or 0.0
            for block in results["corpora"].values()
            for runs in block["runs"].values()
            for r in runs
        )
        / 60
    )
    lines = [
        f"{results['posts']} posts a corpus (corpus seed {results.get('corpus_seed', 0)}), "
        f"{results['epochs']} epochs, {seeds} training seeds, mean ± std (%); every model "
        "learns from entity types alone (no boxes), the boxes only score the attention. "
        "Test posts are sliced by meta.jsonl: *cued + mismatched*, the words tell the type but "
        "the image is another post's or unrelated (where the bottleneck should help); *cued + "
        "clean*, words and the post's own image; *uncued*, only the image tells the type; "
        '*two-entity*, two gold entities. F1 of a slice: micro F1 over its posts ("-": no '
        f"post). Test posts per slice ({' / '.join(names)}): {sizes}. "
        "p: paired bootstrap of SMNER against the row, overall and on cued + mismatched (posts "
        "of every seed pooled; small p = SMNER better). Pointing: most attended cell inside "
        "the entity's box (correct entities); mass: attention inside the box / the box's share "
        f"of the image. Training time of the grid: {train_minutes:.0f} min in all.",
        "",
        "| corpus | model | test F1 | p | "
        + " | ".join(f"{s}" + (f" | p ({s})" if s == IB_SLICE else "") for s in names)
        + " | pointing (1 / 2 entities) | mass in box / uniform |",
        "|---|---|---|---|" + "---|" * (len(names) + 1) + "---|---|",
    ]
    for corpus, block in results["corpora"].items():
        for name, runs in block["runs"].items():
            p = block["bootstrap_p"].get(name) or {}
            cells = []
            for s in names:
                cells.append(_cell([r["slice_f1"].get(s) for r in runs]))
                if s == IB_SLICE:
                    cells.append("" if name == "SMNER" else _p(p.get(s)))
            pointing, mass = _alignment_cells(runs)
            lines.append(
                f"| {corpus} | {name} | {_cell([r['f1'] for r in runs])} | "
                f"{'' if name == 'SMNER' else _p(p.get('overall'))} | "
                + " | ".join(cells)
                + f" | {pointing} | {mass} |"
            )
    return "\n".join(lines)


def _alignment_cells(runs: list[dict[str, Any]]) -> tuple[str, str]:
    """The pointing (1 / 2 entities) and "mass in box / uniform" cells of a row's runs."""
    mass = _mean([(r.get("alignment") or {}).get("mass_in_box") for r in runs])
    uniform = _mean([(r.get("alignment") or {}).get("uniform_mass") for r in runs])
    pointing = (
        f"{_cell([_pointing(r, '1') for r in runs])} / {_cell([_pointing(r, '2') for r in runs])}"
    )
    if all(_pointing(r, None) is None for r in runs):
        pointing = "-"
    return pointing, f"{mass:.2f} / {uniform:.2f}" if mass is not None else "-"
