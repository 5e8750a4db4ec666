"""Model cards: a freshly trained folder describes itself with the facts of its run only."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from smner.cli import main
from smner.commands.demo_run import DemoSettings, experiment
from smner.data.conll import read_conll
from smner.model import build_model
from smner.model.base import NERModel
from smner.saved.card import FACTS_FILE, regenerate
from tests.pipeline_fixture import write_corpus
from tests.tiny import make_image_encoder, make_text_encoder, tiny_config


def split_card(path: Path) -> tuple[dict[str, Any], str]:
    text = path.read_text(encoding="utf-8")
    assert text.startswith("---\n")
    head, _, body = text[4:].partition("\n---\n")
    return yaml.safe_load(head), body


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny model trained for 3 epochs with a test file and without keeping last/."""
    corpus = write_corpus(tmp_path_factory.mktemp("card"))
    out = corpus["root"] / "run"
    argv = [
        "train",
        "--config",
        str(corpus["config"]),
        "--output",
        str(out),
        "--set",
        "train.epochs=3",
        "--set",
        f"data.test_file={corpus['dev']}",
        "--set",
        "train.keep_last=false",
    ]
    assert main(argv) == 0
    return {**corpus, "run": out}


@pytest.mark.integration  # trains
def test_the_card_states_the_numbers_of_the_run(run: dict[str, Path]) -> None:
    out = run["run"]
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    test = json.loads((out / "test_scores.json").read_text())
    best = max(log, key=lambda r: r["dev_f1"])
    meta, body = split_card(out / "best" / "README.md")
    assert meta["library_name"] == "smner"
    assert {"token-classification", "multimodal-ner"} <= set(meta["tags"])
    assert meta["language"] == ["en"] and meta["license"] == "unknown"
    assert meta["datasets"] == [run["root"].name]
    (index,) = meta["model-index"]
    assert index["name"] == out.name
    by_split = {r["dataset"]["split"]: r for r in index["results"]}
    assert set(by_split) == {"validation", "test"}
    dev_metrics = {m["type"]: m["value"] for m in by_split["validation"]["metrics"]}
    assert dev_metrics == {
        "f1": round(100 * best["dev_f1"], 2),
        "precision": round(100 * best["dev_precision"], 2),
        "recall": round(100 * best["dev_recall"], 2),
    }
    test_metrics = {m["type"]: m["value"] for m in by_split["test"]["metrics"]}
    assert test_metrics["f1"] == round(100 * test["f1"], 2)

    # the body: data counts, images, per-type scores, epochs, time, command, config, limits
    train, dev = read_conll(run["train"]), read_conll(run["dev"])
    train_entities = sum(len(ex.entities) for ex in train)
    assert (
        f"| train | `{run['train']}` | {len(train)} | {sum(len(ex) for ex in train)} | "
        f"{train_entities} (LOC 9, ORG 6, PER 9) | 9 loaded, 3 missing |" in body
    )
    assert f"| dev | `{run['dev']}` | {len(dev)} |" in body
    assert (
        f"| dev | `{run['dev']}` | 4 | 23 | 8 (LOC 3, ORG 2, PER 3) | 3 loaded, 1 missing |" in body
    )
    assert (
        f"| test | `{run['dev']}` | 4 | 23 | 8 (LOC 3, ORG 2, PER 3) | 3 loaded, 1 missing |"
        in body
    )
    for label, scores in test["per_type"].items():
        row = (
            f"| {label} | {100 * scores['precision']:.2f} | {100 * scores['recall']:.2f} | "
            f"{100 * scores['f1']:.2f} | {scores['support']} |"
        )
        assert row in body
    assert f"the best of {len(log)} epochs by dev F1, epoch {best['epoch']}" in body
    for record in log:
        assert f"| {100 * record['dev_f1']:.2f} | {record['seconds']:.1f} |" in body
    seconds = sum(r["seconds"] for r in log)
    assert f"Training time: {seconds:.1f} s over {len(log)} epochs" in body
    assert f"--set train.keep_last=false --output {run['run']}`" in body
    assert "keep_last: false" in body and "image_dir:" in body
    assert "no entity longer than 3 tokens" in body
    assert "3 training posts had no usable image" in body
    # the run folder carries the same card; last/ is gone
    assert (out / "README.md").read_text() == (out / "best" / "README.md").read_text()
    assert not (out / "last").exists()
    facts = json.loads((out / "best" / FACTS_FILE).read_text())
    assert facts["epochs"] == log and facts["test"] == test


@pytest.mark.integration  # trains
def test_smner_card_regenerates_the_same_card_and_keeps_chosen_metadata(
    run: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    out = run["run"]
    before = (out / "best" / "README.md").read_text()
    (out / "best" / "README.md").unlink()
    (out / "README.md").unlink()
    assert main(["card", str(out)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"wrote {out / 'best' / 'README.md'}",
        f"wrote {out / 'README.md'}",
    ]
    assert (out / "best" / "README.md").read_text() == before
    assert main(["card", str(out / "best"), "--license", "apache-2.0", "--language", "de"]) == 0
    assert main(["card", str(out / "best")]) == 0  # chosen values stay
    meta, _ = split_card(out / "best" / "README.md")
    assert (meta["license"], meta["language"]) == ("apache-2.0", ["de"])
    assert main(["card", str(out / "best" / "tokenizer")]) == 1
    assert "neither a run folder" in capsys.readouterr().err


def test_a_folder_saved_outside_training_states_no_run(tmp_path: Path) -> None:
    text, image = make_text_encoder(tmp_path / "t"), make_image_encoder(tmp_path / "i")
    model = build_model(tiny_config(text, image))
    model.save_pretrained(tmp_path / "plain")
    meta, body = split_card(tmp_path / "plain" / "README.md")
    assert meta["library_name"] == "smner" and "model-index" not in meta
    assert "holds no record of a training run" in body
    params = sum(p.numel() for p in model.state_dict().values())
    assert f"Parameters: {params:,}" in body
    assert not (tmp_path / "plain" / FACTS_FILE).exists()
    assert regenerate(tmp_path / "plain") == [tmp_path / "plain" / "README.md"]
    NERModel.from_pretrained(tmp_path / "plain")  # a card does not disturb loading


def test_checkpoints_get_a_card_and_the_demo_does_not_keep_last(
    trained_run: dict[str, Path],
) -> None:
    assert (trained_run["run"] / "README.md").is_file()
    meta, _ = split_card(trained_run["run"] / "last" / "model" / "README.md")
    assert meta["library_name"] == "smner" and "model-index" not in meta
    settings = DemoSettings(output=Path("demo-output"))
    assert experiment(settings, Path("corpus"), True).train.keep_last is False


def test_the_card_says_how_the_alignment_modules_are_set_up(tmp_path: Path) -> None:
    from smner.saved.card_render import render_card

    base = {"type": "smner", "labels": ["PER"], "use_image": True, "use_cross_attention": True}
    gated = render_card(
        tmp_path,
        {**base, "use_ib": True, "ib_gate": True, "region_types": 1.0, "entity_competition": 1.0},
        None,
    )
    assert "Information bottleneck: gated (`model.ib_gate`)" in gated
    assert "from entity types alone" in gated and "compete for the picture" in gated
    paper = render_card(tmp_path, {**base, "use_ib": True}, None)
    assert "as the paper specifies it" in paper and "compete" not in paper
    assert "reaches the text side" not in gated
    shielded = render_card(
        tmp_path, {**base, "region_types": 1.0, "localisation_text_gradient": 0.0}, None
    )
    assert "0 of whose gradient reaches the text side" in shielded
    assert "middle of the evidence" not in shielded
    focused = render_card(
        tmp_path,
        {**base, "region_types": 1.0, "region_evidence_pooling": 3, "region_evidence_sharpness": 4},
        None,
    )
    assert "middle of the evidence: 3 x 3 neighbourhoods, power 4" in focused
    assert "Heatmaps:" not in focused
    weighted = render_card(tmp_path, {**base, "region_types": 1.0, "heatmaps": "evidence"}, None)
    assert "Heatmaps: each entity's attention (to the power 0.1) times the region" in weighted
    text_only = render_card(tmp_path, {**base, "use_image": False}, None)
    assert "bottleneck" not in text_only.lower()
