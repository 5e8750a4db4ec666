from __future__ import annotations

import json
from pathlib import Path

import pytest

from smner.commands.demo_run import DemoSettings, comparison_table, run_demo
from tests.tiny import make_image_encoder, make_text_encoder


@pytest.mark.integration  # trains two models
def test_demo_runs_end_to_end_with_tiny_encoders(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = make_text_encoder(tmp_path / "text")
    image = make_image_encoder(tmp_path / "image")
    settings = DemoSettings(
        output=tmp_path / "demo",
        posts=40,
        epochs=1,
        image_size=64,
        model={
            "text_encoder": str(text),
            "image_encoder": f"hf:{image}",
            "hidden_size": 32,
            "attention_heads": 2,
        },
        train={"progress": False},
    )
    results = run_demo(settings)
    assert set(results) == {"SMNER", "text-only"}
    out = capsys.readouterr().out
    assert "SMNER - text-only:" in out and "overall" in out
    assert out.count("  gold:") == 2
    for folder in ("smner", "text-only"):
        assert (tmp_path / "demo" / folder / "best" / "model.safetensors").is_file()
    heatmaps = list((tmp_path / "demo" / "heatmaps").glob("*.png"))
    assert len(heatmaps) == out.count("heatmap:")
    assert "posts fully right: " in out

    # The same alignment scores from the command line, as JSON beside P/R/F1.
    from smner.cli import main
    from smner.data.conll import read_conll

    corpus = tmp_path / "demo" / "corpus"
    argv = ["evaluate", "--model", str(tmp_path / "demo" / "smner" / "best")]
    argv += ["--data", str(corpus / "test.txt"), "--images", str(corpus / "images")]
    assert main([*argv, "--boxes", str(corpus / "meta.jsonl"), "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    test = read_conll(corpus / "test.txt").examples
    posts_right = payload["alignment"]["posts_right"]
    for count in {len(ex.entities) for ex in test}:
        total = sum(len(ex.entities) == count for ex in test)
        assert posts_right[str(count)]["total"] == total
    assert payload["alignment"]["pointing"]["total"] <= payload["support"]
    # the VOC files in boxes/ say the same as meta.jsonl
    assert main([*argv, "--boxes", str(corpus / "boxes"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["alignment"] == payload["alignment"]


def test_comparison_table_lines_up_models_and_types() -> None:
    from smner.evaluation.metrics import Scores, TypeScores

    a = Scores(0.5, 0.5, 0.5, 2, 2, {"PER": TypeScores(0.5, 0.5, 0.5, 2)})
    b = Scores(1.0, 1.0, 1.0, 2, 2, {"PER": TypeScores(1.0, 1.0, 1.0, 2)})
    table = comparison_table({"SMNER": b, "text-only": a}).splitlines()
    assert "SMNER" in table[0] and "text-only" in table[0]
    assert table[2].split() == ["PER", "100.0", "100.0", "100.0", "50.0", "50.0", "50.0"]
    assert table[3].startswith("overall")


def test_shipped_synth_config_trains_as_the_demo_does(tmp_path: Path) -> None:
    """configs/synth.yaml is the demo's recipe, for users who train on the corpus themselves."""
    from smner.commands.demo_run import experiment
    from smner.config.experiment import load_experiment

    root = Path(__file__).resolve().parents[1]
    shipped = load_experiment(str(root / "configs" / "synth-boxfree.yaml"))
    demo = experiment(DemoSettings(output=tmp_path), Path("synth"), use_image=True)
    assert shipped.train == demo.train
    assert shipped.model == demo.model
    assert shipped.data.box_dir is None and demo.data.box_dir is None  # learned from types alone
    for key in ("train_file", "dev_file", "image_dir"):
        assert getattr(shipped.data, key) == getattr(demo.data, key)


def test_the_peak_of_a_heatmap_is_its_largest_weight() -> None:
    from smner.commands.demo_run import peak_cell

    assert peak_cell([[0.1, 0.2, 0.0], [0.0, 0.05, 0.65]]) == (1, 2)
    assert peak_cell([[0.7, 0.3]]) == (0, 0)
