"""Train -> evaluate -> predict end to end on a small corpus with tiny encoders."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import smner
import smner.model.base as model_base
from smner.cli import main
from smner.commands.score import score_files
from smner.config.experiment import load_experiment
from smner.errors import DataFormatError, SmnerError
from smner.model.base import NERModel
from smner.training.run_folder import write_state_checksum
from tests.pipeline_fixture import write_corpus

pytestmark = pytest.mark.integration  # every test trains or reads the session's trained model


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_corpus(tmp_path_factory.mktemp("corpus"))


#: the tiny model trains faster on one thread than on two that hand work to each other
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}


def smner_cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "smner.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=ONE_THREAD,
    )


def test_train_writes_log_best_and_last(trained_run: dict[str, Path]) -> None:
    trained = trained_run["run"]
    records = [json.loads(line) for line in (trained / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == list(range(1, 9))
    assert {"dev_precision", "dev_recall", "dev_f1"} <= set(records[0])
    assert max(r["dev_f1"] for r in records) == 1.0
    assert (trained / "last" / "trainer_state.pt").is_file()
    model = NERModel.from_pretrained(trained / "best")
    assert model.config.labels == ["LOC", "ORG", "PER"]


def test_evaluate_matches_score_on_its_predictions(
    trained_run: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    corpus = trained_run
    predictions = tmp_path / "pred.txt"
    argv = [
        "evaluate",
        "--model",
        str(trained_run["model"]),
        "--data",
        str(corpus["dev"]),
        "--images",
        str(corpus["images"]),
        "--json",
        "--predictions",
        str(predictions),
    ]
    assert main(argv) == 0
    captured = capsys.readouterr()
    reported = json.loads(captured.out)
    assert "images: 3 loaded, 1 missing" in captured.err
    assert reported == score_files(str(corpus["dev"]), str(predictions)).to_dict()
    assert reported["f1"] == 1.0
    # --errors reads the same predictions as 'smner score --errors' on the written file.
    assert main([*argv, "--errors"]) == 0
    errors = json.loads(capsys.readouterr().out)["errors"]
    score = ["score", "--gold", str(corpus["dev"]), "--pred", str(predictions)]
    assert main([*score, "--errors", "--json"]) == 0
    assert errors == json.loads(capsys.readouterr().out)["errors"]
    assert errors["missed"] == 0 and sum(errors["false_positives"].values()) == 0


def test_evaluate_with_an_alias_writes_the_file_own_labels(
    trained_run: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    corpus = trained_run
    gold = tmp_path / "dev-gpe.txt"
    gold.write_text(corpus["dev"].read_text().replace("-LOC", "-GPE"), encoding="utf-8")
    predictions = tmp_path / "pred-gpe.txt"
    argv = ["evaluate", "--model", str(trained_run["model"]), "--data", str(gold)]
    argv += ["--images", str(corpus["images"]), "--json", "--predictions", str(predictions)]
    assert main([*argv, "--label-alias", "GPE=LOC"]) == 0
    reported = json.loads(capsys.readouterr().out)
    assert reported["f1"] == 1.0
    assert predictions.read_text() == gold.read_text()
    assert score_files(str(gold), str(predictions), {"GPE": "LOC"}).to_dict() == reported


def test_predict_text_and_jsonl_with_explanations(
    trained_run: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = trained_run["images"] / "0.jpg"
    argv = [
        "predict",
        "--model",
        str(trained_run["model"]),
        "--text",
        "George visited Paris today",
        "--image",
        str(image),
        "--explain",
    ]
    assert main(argv) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["image_status"] == "ok"
    assert [(e["text"], e["type"]) for e in record["entities"]] == [
        ("George", "PER"),
        ("Paris", "LOC"),
    ]
    paris = record["entities"][1]
    assert (paris["start"], paris["end"], paris["char_start"], paris["char_end"]) == (2, 3, 15, 20)
    assert len(paris["attention"]) == 7 and len(paris["attention"][0]) == 7

    shutil.copytree(trained_run["images"], tmp_path / "images")  # "images/3.jpg" below
    source = tmp_path / "posts.jsonl"
    source.write_text(
        json.dumps({"id": "x/1", "text": "loves New York with George", "image": "images/3.jpg"})
        + "\n"
        + json.dumps({"tokens": ["the", "Paris", "of", "Apple"]})
        + "\n",
        encoding="utf-8",
    )
    out, heatmaps = tmp_path / "out.jsonl", tmp_path / "heat"
    argv = [
        "predict",
        "--model",
        str(trained_run["model"]),
        "--input",
        str(source),
        "--output",
        str(out),
        "--heatmaps",
        str(heatmaps),
    ]
    assert main(argv) == 0
    first, second = [json.loads(line) for line in out.read_text().splitlines()]
    assert first["id"] == "x/1" and "attention" not in first["entities"][0]
    assert second["image_status"] == "no image" and second["id"] == "2"
    pngs = sorted(p.name for p in heatmaps.iterdir())
    assert len(pngs) == len(first["entities"]) and all(n.startswith("x_1-") for n in pngs)


def test_predict_rejects_bad_jsonl_with_file_and_line(
    trained_model_dir: Path, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"txt": 1}\n', encoding="utf-8")
    proc = smner_cli("predict", "--model", str(trained_model_dir), "--input", str(bad), "--strict")
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith(f"smner: error: {bad}:2: expected")


@pytest.mark.parametrize(
    ("lines", "line", "expected"),
    [
        (['{"text": "ok"}', '{"text": ""}'], 2, "the post has no tokens"),
        (['{"text": " "}'], 1, "the post has no tokens"),
        (['{"tokens": []}'], 1, "the post has no tokens"),
        (
            ['{"text": "ok"}', "", json.dumps({"text": "w " * 201})],
            3,
            "the post has 201 tokens; expected at most 200",
        ),
        (['{"tokens": ["a", " "]}'], 1, '"tokens" must be a list of non-blank strings'),
        (['{"tokens": ["a", 1]}'], 1, '"tokens" must be a list of non-blank strings'),
        (['{"text": "ok", "tokens": 5}'], 1, '"tokens" must be a list of non-blank strings'),
    ],
)
def test_predict_refuses_posts_the_model_cannot_take_before_writing(
    trained_model_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    lines: list[str],
    line: int,
    expected: str,
) -> None:
    source, out = tmp_path / "posts.jsonl", tmp_path / "out.jsonl"
    source.write_text("".join(f"{text}\n" for text in lines), encoding="utf-8")
    argv = ["predict", "--model", str(trained_model_dir), "--input", str(source)]
    assert main([*argv, "--output", str(out), "--strict"]) == 1
    assert capsys.readouterr().err.startswith(f"smner: error: {source}:{line}: {expected}")
    assert not out.exists() and not out.with_name("out.jsonl.partial").exists()
    # Without --strict every record is written, the bad one with its error.
    assert main([*argv, "--output", str(out)]) == 0
    records = [json.loads(r) for r in out.read_text(encoding="utf-8").splitlines()]
    assert len(records) == sum(1 for text in lines if text.strip())
    (bad,) = [r for r in records if "error" in r]
    assert bad["error"].startswith(f"{source}:{line}: {expected}")


def test_python_api(trained_run: dict[str, Path]) -> None:
    predictor = smner.Predictor.from_pretrained(trained_run["model"])
    result = predictor.predict("George visited Paris today", image=trained_run["images"] / "0.jpg")
    assert [(m.text, m.type) for m in result.entities] == [("George", "PER"), ("Paris", "LOC")]
    many = predictor.predict_many(
        [
            smner.predict.predictor.PostInput(tokens=["loves", "New", "York"]),
            smner.predict.predictor.PostInput(
                text="George visited Paris today", image=b"not an image"
            ),
        ]
    )
    assert many[0].image_status == "no image" and many[1].image_status == "unreadable"


def test_predict_many_batches_by_length_and_keeps_order(
    trained_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    predictor = smner.Predictor.from_pretrained(trained_model_dir)
    texts = [
        "George visited Paris today with friends from far away again",
        "Paris",
        "George and Mary visited Paris and Rome and Berlin last summer",
        "George",
    ]
    solo = [predictor.predict(t) for t in texts]
    batched: list[list[int]] = []
    original = predictor._predict_batch

    def spy(
        posts: list[smner.predict.predictor.PostInput],
    ) -> list[smner.predict.predictor.PostPrediction]:
        batched.append([len(p.text or "") for p in posts])
        return original(posts)

    monkeypatch.setattr(predictor, "_predict_batch", spy)
    many = predictor.predict_many(
        [smner.predict.predictor.PostInput(text=t) for t in texts], batch_size=2
    )
    assert [r.tokens for r in many] == [r.tokens for r in solo]
    assert [[(m.text, m.type) for m in r.entities] for r in many] == [
        [(m.text, m.type) for m in r.entities] for r in solo
    ]
    assert batched == [[5, 6], [59, 61]]


def test_train_from_python_with_a_dict(corpus: dict[str, Path], tmp_path: Path) -> None:
    config = load_experiment(str(corpus["config"]), ["train.epochs=1", "model.use_image=false"])
    result = smner.train(
        {"data": vars(config.data), "model": vars(config.model), "train": vars(config.train)},
        tmp_path / "py",
    )
    assert result.epochs_run == 1 and (tmp_path / "py" / "best" / "config.json").is_file()


def test_entity_types_outside_model_labels_are_refused_with_file_and_line(
    corpus: dict[str, Path], tmp_path: Path
) -> None:
    def refusal(overrides: list[str]) -> str:
        config = load_experiment(str(corpus["config"]), ["train.epochs=1", *overrides])
        with pytest.raises(DataFormatError) as info:
            smner.train(config, tmp_path / "run")
        assert not (tmp_path / "run" / "config.json").exists()
        return str(info.value)

    assert refusal(["model.labels=[ORG,PER]"]).startswith(
        f"{corpus['train']}:4: entity type 'LOC' is not in model.labels ['ORG', 'PER']"
    )
    aliased = refusal(["model.labels=[LOC,ORG,PER]", "data.label_aliases={PER: PERSON}"])
    assert aliased.startswith(
        f"{corpus['train']}:2: entity type 'PER' (read as 'PERSON' through data.label_aliases)"
    )
    dev = tmp_path / "dev.txt"
    dev.write_text(corpus["dev"].read_text().replace("B-ORG", "B-GPE", 1), encoding="utf-8")
    in_dev = refusal(["model.labels=[LOC,ORG,PER]", f"data.dev_file={dev}"])
    assert in_dev.startswith(f"{dev}:11: entity type 'GPE' is not in model.labels")


def test_test_file_is_scored_once_with_the_best_model(
    corpus: dict[str, Path], tmp_path: Path
) -> None:
    from smner.evaluation.evaluate import evaluate_saved_model

    config = load_experiment(str(corpus["config"]), ["train.epochs=2", "model.use_image=false"])
    sections = {"data": vars(config.data), "model": vars(config.model), "train": vars(config.train)}
    missing = {**sections, "data": {**sections["data"], "test_file": str(tmp_path / "nope.txt")}}
    with pytest.raises(SmnerError, match=r"data\.test_file: .*nope\.txt does not exist"):
        smner.train(missing, tmp_path / "missing")
    assert not (tmp_path / "missing" / "log.jsonl").exists()  # refused before training

    broken = tmp_path / "broken.txt"
    broken.write_text("IMGID:1\nGeorge\tB-PERSON-X Y\n")
    with pytest.raises(DataFormatError, match=r"broken\.txt:2"):
        smner.train({**sections, "data": {**sections["data"], "test_file": str(broken)}}, tmp_path)
    assert not (tmp_path / "log.jsonl").exists()  # checked before training, too

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "test_scores.json").write_text('{"f1": 0.99}')  # an earlier run's
    smner.train(sections, tmp_path / "run")
    assert not (tmp_path / "run" / "test_scores.json").exists()

    sections["data"] = {**sections["data"], "test_file": str(corpus["dev"])}
    result = smner.train(sections, tmp_path / "run")
    saved = json.loads((tmp_path / "run" / "test_scores.json").read_text())
    expected = evaluate_saved_model(tmp_path / "run" / "best", corpus["dev"]).scores
    assert result.test_scores == expected
    assert saved["test_file"] == str(corpus["dev"]) and saved["f1"] == expected.f1


def test_config_errors_are_one_line(corpus: dict[str, Path], tmp_path: Path) -> None:
    proc = smner_cli(
        "train",
        "--config",
        str(corpus["config"]),
        "--output",
        str(tmp_path),
        "--set",
        "train.epochz=3",
    )
    assert proc.returncode == 1
    assert (
        proc.stderr.strip().splitlines()[-1]
        == "smner: error: --set train.epochz=3: train.epochz: unknown key; "
        "did you mean train.epochs?"
    )


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def test_kill_9_then_resume_matches_an_uninterrupted_run(
    corpus: dict[str, Path], tmp_path: Path
) -> None:
    common = ["--config", str(corpus["config"]), "--set", "train.checkpoint_every=1"]
    reference = tmp_path / "reference"
    assert smner_cli("train", *common, "--output", str(reference)).returncode == 0

    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "smner.cli", "train", *common, "--output", str(killed)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=ONE_THREAD,
    )
    deadline = time.monotonic() + 120
    log = killed / "log.jsonl"
    while time.monotonic() < deadline and proc.poll() is None:
        if log.is_file() and len(log.read_text().splitlines()) >= 3:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "training ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert len(log.read_text().splitlines()) < 8

    resumed = smner_cli("train", *common, "--output", str(killed), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from" in resumed.stderr

    def records(run: Path) -> list[dict]:
        return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]

    ref_log, res_log = records(reference), records(killed)
    assert [r["epoch"] for r in res_log] == list(range(1, 9))
    for a, b in zip(ref_log, res_log, strict=True):
        assert a["dev_f1"] == pytest.approx(b["dev_f1"], abs=1e-9)
    ref_weights = _weights(reference / "last" / "model")
    res_weights = _weights(killed / "last" / "model")
    for name, tensor in ref_weights.items():
        assert torch.allclose(tensor, res_weights[name], atol=1e-5), name


def test_resume_refuses_other_batches_but_allows_more_epochs(
    corpus: dict[str, Path], tmp_path: Path
) -> None:
    run = tmp_path / "run"
    config = load_experiment(str(corpus["config"]), ["train.epochs=1"])
    smner.train(config, run)
    log = (run / "log.jsonl").read_text()
    last = run / "last"
    for override, message in [
        (
            "train.batch_size=4",
            f"resume: train.batch_size is 4 but the checkpoint in {last} used 2",
        ),
        ("train.seed=8", "resume: train.seed is 8 but"),
        ("train.accumulate=2", "resume: train.accumulate is 2 but"),
        ("train.group_by_length=true", "resume: train.group_by_length is True but"),
    ]:
        changed = load_experiment(str(corpus["config"]), ["train.epochs=2", override])
        with pytest.raises(SmnerError) as info:
            smner.train(changed, run, resume=True)
        assert str(info.value).startswith(message)
    state = torch.load(last / "trainer_state.pt", weights_only=False)

    def save_state(value: dict) -> None:
        torch.save(value, last / "trainer_state.pt")
        write_state_checksum(last)

    save_state({**state, "world_size": 2})
    more = load_experiment(str(corpus["config"]), ["train.epochs=2"])
    with pytest.raises(SmnerError, match=r"resume: the world size is 1 but .* used 2"):
        smner.train(more, run, resume=True)
    save_state({**state, "train_posts": 99})
    with pytest.raises(SmnerError, match=r"number of training posts is \d+ but .* used 99"):
        smner.train(more, run, resume=True)
    assert (run / "log.jsonl").read_text() == log  # a refused resume changes nothing
    save_state(state)
    result = smner.train(more, run, resume=True)
    assert result.epochs_run == 2
    assert [json.loads(line)["epoch"] for line in (run / "log.jsonl").open()] == [1, 2]


def test_a_crash_while_saving_leaves_the_previous_checkpoint(
    trained_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = NERModel.from_pretrained(trained_model_dir)
    target = tmp_path / "best"
    model.save_pretrained(target)
    before = _weights(target)

    def crash(module: torch.nn.Module, path: str, metadata: dict | None = None) -> None:
        Path(path).write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(model_base, "save_model", crash)
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    with pytest.raises(OSError, match="disk full"):
        model.save_pretrained(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best"]  # no staging left behind
    after = _weights(target)
    assert all(torch.equal(before[k], after[k]) for k in before)
    NERModel.from_pretrained(target)
