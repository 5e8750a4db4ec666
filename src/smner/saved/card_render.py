"""The text of a model card from a model's config and the facts of its run: YAML front matter
in the Hugging Face Hub's convention and a body that states only what those facts record."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

TAGS = ["token-classification", "multimodal-ner", "named-entity-recognition", "smner"]
DEFAULT_LANGUAGE = "en"
DEFAULT_LICENSE = "unknown"


def card_name(folder: Path) -> str:
    """The model's name: its folder's, or the run folder's for ``best/`` and ``last/model/``
    (and for the staging folder ``last/`` is written in)."""
    path = Path(folder).resolve()
    while path.parent != path and (
        path.name in ("best", "model", "last") or path.name.startswith(".last.")
    ):
        path = path.parent
    return path.name or "smner-model"


def _percent(value: float) -> float:
    return round(100 * float(value), 2)


def _dataset_name(path: str) -> str:
    """The name of the folder holding a data file (e.g. ``twitter2017``)."""
    parent = Path(path).parent.name
    return parent or Path(path).stem


def _front_matter(
    name: str, facts: dict[str, Any] | None, language: str, license_name: str
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "library_name": "smner",
        "pipeline_tag": "token-classification",
        "tags": TAGS,
        "language": [language],
        "license": license_name,
    }
    if not facts or not facts.get("dev"):
        return meta
    data = facts["data"]
    datasets = list(dict.fromkeys(_dataset_name(d["file"]) for d in data.values() if d))
    meta["datasets"] = datasets
    meta["metrics"] = ["precision", "recall", "f1"]
    results = []
    for split, key, label in (("validation", "dev", "dev"), ("test", "test", "test")):
        scores, source = facts.get(key), data.get(key)
        if not scores or not source:
            continue
        dataset = _dataset_name(source["file"])
        results.append(
            {
                "task": {"type": "token-classification", "name": "Multimodal NER"},
                "dataset": {"name": dataset, "type": dataset, "split": split},
                "metrics": [
                    {
                        "type": metric,
                        "value": _percent(scores[metric]),
                        "name": f"{label} {metric} (entity-level micro, %)",
                    }
                    for metric in ("f1", "precision", "recall")
                ],
            }
        )
    meta["model-index"] = [{"name": name, "results": results}]
    return meta


def _scores_table(scores: dict[str, Any]) -> list[str]:
    rows = ["| type | precision | recall | F1 | gold entities |", "|---|---:|---:|---:|---:|"]
    for label, s in sorted(scores.get("per_type", {}).items()):
        rows.append(
            f"| {label} | {_percent(s['precision']):.2f} | {_percent(s['recall']):.2f} | "
            f"{_percent(s['f1']):.2f} | {s['support']} |"
        )
    rows.append(
        f"| **overall** | {_percent(scores['precision']):.2f} | {_percent(scores['recall']):.2f}"
        f" | {_percent(scores['f1']):.2f} | {scores['support']} |"
    )
    return rows


def _images_cell(images: dict[str, Any] | None) -> str:
    if not images:
        return "not used"
    parts = [f"{images.get('ok', 0)} loaded"]
    parts += [f"{v} {k}" for k, v in images.items() if k not in ("ok", "without_id") and v]
    if images.get("without_id"):
        parts.append(f"{images['without_id']} posts without an image id")
    return ", ".join(parts)


def render_card(
    folder: Path,
    model: dict[str, Any],
    facts: dict[str, Any] | None,
    language: str = DEFAULT_LANGUAGE,
    license_name: str = DEFAULT_LICENSE,
    parameters: int | None = None,
    name: str | None = None,
) -> str:
    """The card's text for a model folder (``model``: its config.json's ``model`` section)."""
    name = name or card_name(folder)
    meta = _front_matter(name, facts, language, license_name)
    labels = ", ".join(model.get("labels", [])) or "none"
    kind = (
        "SMNER, span-based multimodal NER (Xu et al., LREC-COLING 2024)"
        if model.get("type") == "smner"
        else f"BIO tagger ({model.get('tagger_head')} head), a sequence-labelling baseline"
    )
    uses_image = bool(model.get("use_image"))
    lines = [
        "---",
        yaml.safe_dump(meta, sort_keys=False, allow_unicode=True).rstrip(),
        "---",
        "",
        f"# {name}",
        "",
        f"An smner model that finds entities of the types "
        f"{labels} in social-media posts (a short text"
        + (" and an optional image)." if uses_image else "; this model does not use images)."),
        "",
        "```python",
        "from smner import Predictor",
        'predictor = Predictor.from_pretrained("path/to/this/folder")  # or "org/name" on the Hub',
        'predictor.predict("Kevin Durant joins the Warriors", image="photo.jpg").entities',
        "```",
        "",
        "## Model",
        "",
        f"- Architecture: {kind}.",
        f"- Entity types: {labels}.",
        f"- Text encoder: `{model.get('text_encoder')}` (trained: "
        f"{'yes' if model.get('train_text_encoder') else 'no'}).",
        "- Image encoder: "
        + (
            f"`{model.get('image_encoder')}` (trained: "
            f"{'yes' if model.get('train_image_encoder') else 'no'})."
            if uses_image
            else "none (text-only)."
        ),
        f"- Switches: use_image={model.get('use_image')}, use_ib={model.get('use_ib')}, "
        f"use_cross_attention={model.get('use_cross_attention')}; "
        f"longest span: {model.get('max_span_width')} tokens.",
        *_alignment_lines(model),
    ]
    if parameters is not None:
        lines.append(f"- Parameters: {parameters:,} (counted in `model.safetensors`).")
    if not facts:
        lines += [
            "",
            "## Training",
            "",
            "This folder holds no record of a training run (no `training.json`): it was written "
            "by `save_pretrained` outside `smner train`, or it is a checkpoint's copy of the "
            "model. No data, scores or training time are stated here.",
        ]
        lines += _limits(model, None)
        return "\n".join(lines) + "\n"

    data = facts.get("data", {})
    images = facts.get("images", {})
    lines += ["", "## Training data", ""]
    lines += [
        "| split | file | posts | tokens | entities | images |",
        "|---|---|---:|---:|---:|---|",
    ]
    for split in ("train", "dev", "test"):
        d = data.get(split)
        if not d:
            continue
        per_type = ", ".join(f"{k} {v}" for k, v in d["entities"].items())
        cell = _images_cell(images.get(split)) if uses_image else "not used"
        if split == "test" and uses_image and split not in images:
            summary = (facts.get("test") or {}).get("image_summary")
            cell = summary.removeprefix("images: ") if summary else "not recorded"
        lines.append(
            f"| {split} | `{d['file']}` | {d['posts']} | {d['tokens']} | "
            f"{d['entities_total']} ({per_type}) | {cell} |"
        )
    config = facts.get("config", {})
    image_dir = config.get("data", {}).get("image_dir")
    if uses_image:
        lines += ["", f"Images were read from `{image_dir}`." if image_dir else ""]
    lines += ["", "## Results", ""]
    dev = facts.get("dev")
    epochs = facts.get("epochs", [])
    best_epoch = facts.get("best_epoch")
    if dev:
        lines += [
            f"Dev (`{data['dev']['file']}`, split validation): the best of "
            f"{facts.get('epochs_run', len(epochs))} epochs by dev F1, epoch {best_epoch}. "
            "Entity-level micro scores, exact boundaries and type, in %:",
            "",
            *_scores_table(dev),
        ]
    test = facts.get("test")
    if test and data.get("test"):
        lines += [
            "",
            f"Test (`{data['test']['file']}`, split test), scored once after training:",
            "",
            *_scores_table(test),
        ]
    else:
        lines += ["", "No test file was set (`data.test_file`): no test score."]
    lines += ["", "## Training run", ""]
    seconds = facts.get("training_seconds")
    if seconds is not None:
        lines.append(
            f"- Training time: {seconds:.1f} s over {facts.get('epochs_run', len(epochs))} "
            "epochs (training and dev scoring, summed from `log.jsonl`)."
        )
    if facts.get("command"):
        lines.append(f"- Command: `{facts['command']}`")
    env = facts.get("environment", {})
    if env:
        lines.append(
            f"- Versions: smner {env.get('smner')}, torch {env.get('torch')}, "
            f"Python {env.get('python')}."
        )
    if epochs:
        lines += ["", "| epoch | dev precision | dev recall | dev F1 | seconds |"]
        lines += ["|---:|---:|---:|---:|---:|"]
        for r in epochs:
            mark = " (best)" if r.get("epoch") == best_epoch else ""
            lines.append(
                f"| {r['epoch']}{mark} | {_percent(r['dev_precision']):.2f} | "
                f"{_percent(r['dev_recall']):.2f} | {_percent(r['dev_f1']):.2f} | "
                f"{r.get('seconds', 0):.1f} |"
            )
    if config:
        lines += [
            "",
            "Configuration (`smner train --config`):",
            "",
            "```yaml",
            yaml.safe_dump(_without_encoder_dumps(config), sort_keys=False).rstrip(),
            "```",
        ]
    lines += _limits(model, facts)
    return "\n".join(lines) + "\n"


def _without_encoder_dumps(config: dict[str, Any]) -> dict[str, Any]:
    """The experiment config without the encoders' architecture dumps (kept in config.json)."""
    model = {
        k: v
        for k, v in config.get("model", {}).items()
        if k not in ("text_encoder_config", "image_encoder_config", "image_preprocessing")
    }
    return {**config, "model": model}


def _limits(model: dict[str, Any], facts: dict[str, Any] | None) -> list[str]:
    width = model.get("max_span_width")
    lines = [
        "",
        "## Known limits",
        "",
        f"- It finds only the types {', '.join(model.get('labels', [])) or 'none'}, and no "
        f"entity longer than {width} tokens (longer gold entities count as misses).",
        "- Entities do not overlap: of two overlapping spans the more probable is kept.",
    ]
    if facts:
        data = facts.get("data", {})
        train = data.get("train")
        if train:
            lines.append(
                f"- It knows only posts like those of its training file `{train['file']}` "
                f"({train['posts']} posts); on other kinds of text its scores are unknown."
            )
            if train.get("longer_than_max_width"):
                lines.append(
                    f"- {train['longer_than_max_width']} training entities are longer than "
                    f"{width} tokens; the model cannot produce such entities."
                )
        lines.append(
            "- The dev scores come from the file that chose the best epoch, so they are "
            "optimistic; a test score, where given, was measured once."
        )
        train_images = facts.get("images", {}).get("train")
        if model.get("use_image") and train_images:
            missing = sum(
                v for k, v in train_images.items() if k not in ("ok", "without_id") and v
            ) + int(train_images.get("without_id", 0))
            if missing:
                lines.append(
                    f"- {missing} training posts had no usable image and were learned from "
                    "their text alone (a learned no-image token stands in)."
                )
    if model.get("use_image"):
        lines.append(
            "- Without an image, or with an unrelated one, it relies on the text; the "
            "attention heatmaps show where it looked, not why."
        )
    return lines


def _alignment_lines(model: dict[str, Any]) -> list[str]:
    """How an SMNER model's two alignment modules are set up, in words (nothing for the
    other types and the ablations without an image)."""
    if model.get("type") != "smner" or not model.get("use_image"):
        return []
    lines = []
    if model.get("use_ib"):
        gated = model.get("ib_gate")
        lines.append(
            "- Information bottleneck: "
            + (
                "gated (`model.ib_gate`): the text-image agreement in the bottleneck's space "
                "decides how much of the picture each post keeps."
                if gated
                else "as the paper specifies it (no gate)."
            )
        )
    if model.get("use_cross_attention"):
        learned = "from the entity loss"
        if model.get("region_types"):
            learned = "from entity types alone (`region_types`, `region_attention`"
            share = model.get("localisation_text_gradient", 1.0)
            if share < 1:
                learned += f", {share:g} of whose gradient reaches the text side"
            pooling = model.get("region_evidence_pooling", 1)
            sharpness = model.get("region_evidence_sharpness", 1.0)
            if model.get("region_attention_target") == "imitate":
                learned += "; the attention imitates the classifier's map"
            if pooling > 1 or sharpness != 1:
                learned += (
                    f"; rewarded on the middle of the evidence: {pooling} x {pooling} "
                    f"neighbourhoods, power {sharpness:g}"
                )
            learned += ")"
        competition = model.get("entity_competition") or 0
        lines.append(
            f"- Span-to-region attention: learned {learned}"
            + (
                f"; a post's entities compete for the picture (temperature {competition})."
                if competition
                else "."
            )
        )
    if model.get("heatmaps") == "evidence":
        power = model.get("heatmap_attention_power", 0.1)
        lines.append(
            "- Heatmaps: each entity's attention (to the power "
            f"{power:g}) times the region classifier's evidence for its type, averaged over "
            "3 x 3 neighbourhoods (`model.heatmaps: evidence`): the attention picks the cue, "
            "the evidence puts the peak on it."
        )
    if model.get("image_dropout"):
        lines.append(
            f"- Image dropout: {model['image_dropout']} of the training posts read without "
            "their picture each step."
        )
    return lines
