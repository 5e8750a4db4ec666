"""Smoke runs of the benchmark suites with tiny encoders (the real runs are not in CI)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench_model(encoders: tuple[Path, Path]) -> str:
    """The ``--model`` JSON of the bench scripts: the tiny encoders, small layers."""
    text, image = encoders
    return json.dumps(
        {
            "text_encoder": str(text),
            "image_encoder": f"hf:{image}",
            "hidden_size": 32,
            "attention_heads": 2,
        }
    )


def run_bench(script: str, *args: str) -> str:
    """The output of ``bench/SCRIPT ARGS`` run from the repository root; it must succeed."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},  # tiny models: faster on one thread
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def bench(*args: str) -> str:
    return run_bench("run.py", "--no-doc", *args)


def tables(out: str, header: str) -> list[list[list[str]]]:
    """The cells of every Markdown table whose header row starts with ``header``."""
    lines = out.splitlines()
    found = []
    for start in (i for i, line in enumerate(lines) if line.startswith(header)):
        rows = []
        for line in lines[start + 2 :]:  # past the header and its |---| line
            if not line.startswith("|"):
                break
            rows.append([c.strip() for c in line.strip()[1:-1].split("|")])
        assert rows, f"no rows under {header!r}"
        found.append(rows)
    assert found, f"no table {header!r} in:\n{out}"
    return found


def table_rows(out: str, header: str) -> dict[str, list[str]]:
    """The one table under ``header``, by its first cell."""
    (rows,) = tables(out, header)
    return {cells[0]: cells[1:] for cells in rows}


def number(cell: str) -> float:
    """The value of a cell such as ``84.9``, ``84.9 ± 1.2`` or ``12 / 30`` (its first number)."""
    match = re.match(r"^-?\d+(\.\d+)?", cell)
    assert match, f"not a number: {cell!r}"
    return float(match.group())


def percent(cell: str) -> float:
    """A score cell in percent: a mean, with its std when there are seeds, in [0, 100]."""
    assert re.fullmatch(r"\d+\.\d( ± \d+\.\d)?", cell), f"not a percentage: {cell!r}"
    value = number(cell)
    assert 0.0 <= value <= 100.0, cell
    return value


def timing_inputs(tmp_path: Path) -> tuple[Path, Path]:
    """Eight one-line posts and a folder with one photo, for the timing suites."""
    from tests.tiny import solid_image

    data = tmp_path / "posts.txt"
    data.write_text("IMGID:1\nGeorge\tB-PER\nin\tO\nParis\tB-LOC\n\n" * 8, encoding="utf-8")
    images = tmp_path / "images"
    images.mkdir()
    solid_image((10, 200, 30)).save(images / "1.jpg")
    return data, images


@pytest.mark.integration  # a benchmark suite in a subprocess
def test_floor_suite_smoke(bench_model: str, tmp_path: Path) -> None:
    """One process, alternating rounds: the floor is 1.00x by construction, the others are
    timed on the same batches in both orders."""
    data, images = timing_inputs(tmp_path)
    out = bench(
        "--suite", "floor", "--posts", "8", "--repeats", "2", "--data", str(data),
        "--images", str(images), "--model", bench_model,
    )  # fmt: skip
    (rows,) = tables(out, "| batches | subject")
    assert [(r[0], r[1]) for r in rows] == [
        (order, subject)
        for order in ("length order", "file order")
        for subject in ("encoder floor", "SMNER", "SMNER int8")
    ]
    assert all(number(r[2]) > 0 and number(r[3]) > 0 for r in rows)
    assert [float(r[3]) for r in rows if r[1] == "encoder floor"] == [1.0, 1.0]


@pytest.mark.slow  # 20 s; the speed suite itself runs it
@pytest.mark.integration  # the suite trains models
def test_speed_suite_smoke(bench_model: str, tmp_path: Path) -> None:
    data, images = timing_inputs(tmp_path)
    out = bench(
        "--suite",
        "speed",
        "--posts",
        "8",
        "--repeats",
        "1",
        "--data",
        str(data),
        "--images",
        str(images),
        "--model",
        bench_model,
    )
    rows = table_rows(out, "| model | inference")
    assert set(rows) >= {"encoder floor", "SMNER", "SMNER text-only", "BIO-softmax"}
    for subject, (speed, floor_ratio, latency, train, train_ratio, rss) in rows.items():
        p50, p95 = (number(part) for part in latency.split(" / "))
        assert 0 < p50 <= p95, (subject, latency)
        assert all(number(c) > 0 for c in (speed, floor_ratio, train, train_ratio, rss)), subject
    assert float(rows["encoder floor"][1]) == pytest.approx(1.0, abs=0.005)
    ratio = re.search(r"cached image features vs text-only: (\d+\.\d+)x", out)
    assert ratio and float(ratio.group(1)) > 0, out


@pytest.mark.integration  # the suite trains models
def test_synth_suite_smoke(bench_model: str, tmp_path: Path) -> None:
    """The grid at its smallest: every model on both corpora, with the F1 of each slice of the
    test posts. The clean corpus has no text cues, so its cued slices are empty and every post
    is uncued."""
    out = bench(
        "--suite",
        "synth",
        "--posts",
        "24",
        "--epochs",
        "1",
        "--model",
        bench_model,
        "--work",
        str(tmp_path),
    )
    (rows,) = tables(out, "| corpus | model |")
    header = next(line for line in out.splitlines() if line.startswith("| corpus | model |"))
    columns = [c.strip() for c in header.strip()[1:-1].split("|")]
    assert columns == [
        "corpus",
        "model",
        "test F1",
        "p",
        "cued + mismatched",
        "p (cued + mismatched)",
        "cued + clean",
        "uncued",
        "two-entity",
        "pointing (1 / 2 entities)",
        "mass in box / uniform",
    ]
    models = ["SMNER", "without IB", "without cross-attention", "text-only"]
    assert [(r[0], r[1]) for r in rows] == [
        (corpus, model) for corpus in ("clean", "realistic") for model in models
    ]
    for row in rows:
        cell = dict(zip(columns, row, strict=True))
        percent(cell["test F1"])
        for p in (cell["p"], cell["p (cued + mismatched)"]):
            if cell["model"] == "SMNER":
                assert p == "", row
            else:
                assert p == "-" or 0.0 <= float(p) <= 1.0, row
        for name in ("cued + mismatched", "cued + clean", "uncued", "two-entity"):
            assert cell[name] == "-" or percent(cell[name]) >= 0, row
        if cell["corpus"] == "clean":
            assert cell["cued + mismatched"] == cell["cued + clean"] == "-", row
            assert cell["p (cued + mismatched)"] in ("", "-"), row
            percent(cell["uncued"])
        if cell["model"] in ("without cross-attention", "text-only"):
            assert cell["pointing (1 / 2 entities)"] == "-", row
    assert "Test posts per slice" in out
    assert re.search(r"Training time of the grid: \d+ min in all", out)

    # run again on the same work folder: every run is read back, none trained again
    again = bench(
        "--suite", "synth", "--posts", "24", "--epochs", "1", "--model", bench_model,
        "--work", str(tmp_path),
    )  # fmt: skip
    assert again.count("measured before, reused") == 8, again
    assert tables(again, "| corpus | model |") == [rows]


@pytest.mark.integration  # the suite trains models
def test_grounding_suite_smoke(bench_model: str, tmp_path: Path) -> None:
    """The suite trains a grounding model and its table reports the three grounding scores
    with numbers (a run that produced no grounding scores would fail to build the table)."""
    out = bench(
        "--suite",
        "grounding",
        "--posts",
        "40",
        "--epochs",
        "1",
        "--ungroundable",
        "0.5",
        "--model",
        bench_model,
        "--work",
        str(tmp_path),
    )
    rows = table_rows(out, "| metric |")
    assert set(rows) == {"GMNER (span, type, region)", "MNER (span, type)", "EEG (span, region)"}
    for name, cells in rows.items():
        assert len(cells) == 3, name
        for cell in cells:
            percent(cell)
    assert "entities left out of their image" in out


def test_paired_bootstrap() -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    from common import paired_bootstrap

    perfect = [[1, 1, 1]] * 50
    useless = [[0, 1, 1]] * 50
    assert paired_bootstrap(perfect, useless) == 0.0
    assert paired_bootstrap(useless, perfect) == 1.0
    mixed = [[1, 1, 1]] * 25 + [[0, 1, 1]] * 25
    assert 0.0 <= paired_bootstrap(mixed, mixed) == 1.0  # ties count as "not better"


def test_quality_results_of_another_encoder_are_kept_apart() -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    from run import results_name

    assert results_name("quality", "minilm") == "quality"
    assert results_name("quality", "mpnet") == "quality-mpnet"
    assert results_name("speed", "mpnet") == "speed"  # only quality trains a text encoder


@pytest.mark.integration  # the suite trains models
def test_quality_suite_smoke(bench_model: str, tmp_path: Path) -> None:
    import shutil

    from tests.pipeline_fixture import write_corpus

    corpus = write_corpus(tmp_path / "corpus", copies=5)
    root = tmp_path / "data"
    for name, files in {
        "twitter2015": ("train", "valid", "test"),
        "twitter2017": ("train", "valid"),
    }.items():
        (root / name).mkdir(parents=True)
        for split in files:
            source = corpus["train"] if split == "train" else corpus["dev"]
            shutil.copy(source, root / name / f"{split}.txt")
        shutil.copytree(corpus["images"], root / "images" / name)
    out = bench(
        "--suite",
        "quality",
        "--epochs",
        "1",
        "--data-root",
        str(root),
        "--model",
        bench_model,
        "--models",
        "SMNER,BIO-CRF",
        "--work",
        str(tmp_path / "work"),
    )
    for text in ("Twitter-2015 (test)", "Twitter-2017 (dev)", "| BIO-CRF |", "Paired bootstrap"):
        assert text in out
    assert "| BIO-softmax |" not in out  # --models trains only the models it names
    datasets = tables(out, "| model | F1 |")
    assert len(datasets) == 2
    for rows in datasets:
        assert {"SMNER", "BIO-CRF"} <= {cells[0] for cells in rows}
        for _model, *cells in rows:  # overall F1, then per type
            for cell in cells:
                percent(cell)
    p_values = re.findall(r"SMNER vs .*: p = (\d+\.\d+)", out)
    assert len(p_values) == 2 and all(0.0 <= float(p) <= 1.0 for p in p_values), out


@pytest.mark.slow
def test_load_with_clients_posting_a_39_megapixel_png(tiny_model_dir: Path, tmp_path: Path) -> None:
    """The memory target of ``bench/load.py --bad-clients``: 8 of 32 clients post a 154 kB
    RGBA PNG of 39.7 MP; peak RSS stays within 2 GB of the idle server, no answer is wrong,
    the valid clients keep half their throughput, and RSS falls back within a minute."""
    from PIL import Image

    model = tiny_model_dir
    Image.new("RGBA", (7000, 5670), (10, 120, 200, 128)).save(tmp_path / "bomb.png")
    Image.new("RGB", (640, 480), (200, 30, 30)).save(tmp_path / "ok.jpg")
    out = run_bench(
        "load.py",
        "--model", str(model),
        "--clients", "32",
        "--bad-clients", "8",
        "--bad-image", str(tmp_path / "bomb.png"),
        "--image", str(tmp_path / "ok.jpg"),
        "--seconds", "15",
    )  # fmt: skip
    record = json.loads(out)
    assert record["peak_over_idle_mib"] <= 2048
    assert record["mixed"]["wrong_answers"] == 0 and record["mixed"]["errors"] == 0
    assert record["valid_throughput_kept"] >= 0.5
    assert record["settle"]["within_20pct_after_s"] is not None


@pytest.mark.slow  # 10 s; the scale suite itself runs it
@pytest.mark.integration  # a benchmark suite in a subprocess
def test_scale_suite_smoke(tiny_model_dir: Path, tmp_path: Path) -> None:
    model = tiny_model_dir
    options = ["--posts", "100", "--workers", "1", "--engines", "local", "--work", str(tmp_path)]
    out = run_bench("scale.py", "--model", str(model), *options)
    record = json.loads(out.splitlines()[0])
    (row,) = record["rows"]
    assert row["posts"] == 100 and row["engine"] == "local" and row["workers"] == 1
    assert row["peak_rss_mib"] > 0 and row["posts_per_s"] > 0
    assert "| 100 | local | 1 |" in out


def test_quality_rows_of_mpnet_train_as_the_mpnet_configs_do(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    from quality_suite import run_config, splits

    files = splits(tmp_path)["Twitter-2015 (test)"]
    shipped = yaml.safe_load((ROOT / "configs" / "twitter2015-mpnet.yaml").read_text())["train"]
    for name in ("SMNER", "BIO-CRF"):  # every model of a row trains the same way
        train = run_config(files, name, "mpnet", 0, 2, {}, tmp_path)["train"]
        assert train["encoder_lr"] == shipped["encoder_lr"]
        assert train["group_by_length"] is shipped["group_by_length"] is True
    minilm = run_config(files, "SMNER", "minilm", 0, 2, {}, tmp_path)
    shipped_minilm = yaml.safe_load((ROOT / "configs" / "twitter2015.yaml").read_text())["train"]
    assert minilm["train"]["encoder_lr"] == shipped_minilm["encoder_lr"]
    assert minilm["train"]["group_by_length"] is False
    bio = run_config(files, "BIO-CRF", "mpnet", 0, 2, {}, tmp_path)["model"]
    assert bio["text_encoder"] == "mpnet" and bio["type"] == "bio-tagger"


@pytest.mark.slow  # 45 s: the suite trains SMNER and a token classifier (`pytest -m slow`)
@pytest.mark.integration
def test_onnx_suite_smoke(bench_model: str, tmp_path: Path) -> None:
    """One run on the same posts: the floor, SMNER on PyTorch and its two exports, the
    transformers pipeline (trained here), spaCy when it is installed; F1 and posts/s each."""
    import shutil

    from tests.pipeline_fixture import write_corpus

    corpus = write_corpus(tmp_path / "corpus", copies=5)
    root = tmp_path / "data"
    (root / "twitter2017").mkdir(parents=True)
    shutil.copy(corpus["train"], root / "twitter2017" / "train.txt")
    shutil.copytree(corpus["images"], root / "images" / "twitter2017")
    out = bench(
        "--suite", "onnx", "--epochs", "1", "--repeats", "1", "--data", str(corpus["dev"]),
        "--data-root", str(root), "--model", bench_model, "--work", str(tmp_path / "work"),
    )  # fmt: skip
    rows = table_rows(out, "| system | F1 | posts/s |")
    assert list(rows) == [
        "encoder floor",
        "SMNER PyTorch float32",
        "SMNER PyTorch float32, span pruning",
        "SMNER PyTorch bfloat16",
        "SMNER PyTorch bfloat16, span pruning",
        "SMNER ONNX float32",
        "SMNER ONNX float32, span pruning",
        "SMNER ONNX int8",
        "SMNER ONNX int8, span pruning",
        "transformers pipeline",
        "spaCy en_core_web_sm",
    ]
    assert rows["encoder floor"][0] == "–" and float(rows["encoder floor"][2]) == 1.0
    for name in list(rows)[1:10]:
        score, speed, ratio = rows[name]
        percent(score)
        assert number(speed) > 0 and number(ratio) > 0, name
    # the float32 export predicts what PyTorch predicts
    assert rows["SMNER ONNX float32"][0] == rows["SMNER PyTorch float32"][0]
    pruned = rows["SMNER PyTorch float32, span pruning"][0]
    assert rows["SMNER ONNX float32, span pruning"][0] == pruned
    spacy = rows["spaCy en_core_web_sm"]
    assert "pip install 'smner[bench]'" in spacy[2] or number(spacy[1]) > 0
    assert "SMNER ONNX int8: " in out and "x the floor (goal >= 2.5x)" in out
    assert (tmp_path / "work" / "onnx-int8" / "onnx.json").is_file()
    pruned_config = json.loads((tmp_path / "work" / "onnx-int8-pruned" / "config.json").read_text())
    assert pruned_config["model"]["span_pruning"] == 16


def test_onnx_suite_maps_spacy_types_and_pipeline_offsets() -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    from types import SimpleNamespace

    from onnx_suite import char_spans_to_tokens, spacy_entities

    ents = [
        SimpleNamespace(start=0, end=1, label_="PERSON"),
        SimpleNamespace(start=2, end=4, label_="GPE"),
        SimpleNamespace(start=4, end=5, label_="NORP"),
        SimpleNamespace(start=5, end=6, label_="WORK_OF_ART"),
        SimpleNamespace(start=6, end=7, label_="DATE"),  # dropped
    ]
    assert spacy_entities(ents) == {
        (0, 1, "PER"),
        (2, 4, "LOC"),
        (4, 5, "ORG"),
        (5, 6, "MISC"),
    }
    tokens = ["RT", "@george", ":", "New", "York", "rocks"]
    groups = [  # characters of "RT @george : New York rocks"
        {"entity_group": "PER", "start": 4, "end": 10},  # "george", inside "@george"
        {"entity_group": "LOC", "start": 13, "end": 21},  # "New York"
    ]
    assert char_spans_to_tokens(tokens, groups) == {(1, 2, "PER"), (3, 5, "LOC")}


def test_the_several_images_page_picks_a_post_of_two_entities_in_two_images(
    tmp_path: Path,
) -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    from several_images_page import pick_post
    from smner.synth.corpus import generate_corpus

    generate_corpus(tmp_path / "k3", posts=60, seed=2, image_size=64, images_per_post=3)
    record = pick_post(tmp_path / "k3")
    assert record["split"] == "test" and len(record["entities"]) == 2
    shown = {c["image_index"] for c in record["cues"] if c.get("entity") is not None}
    assert len(shown) == 2
    generate_corpus(tmp_path / "k1", posts=20, seed=2, image_size=64)
    with pytest.raises(SystemExit, match="no test post with two entities in two images"):
        pick_post(tmp_path / "k1")


def test_a_synth_run_is_reused_only_under_the_same_config(tmp_path: Path) -> None:
    """A kept run is read back for its own config and corpus, from any work folder it was
    copied into; another config, another corpus, or a broken record trains again
    (``finished_run`` answers None)."""
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import synth_suite
    finally:
        sys.path.remove(str(ROOT / "bench"))
    work = tmp_path / "work"
    config = {
        "data": {"train_file": str(work / "corpus-clean" / "train.txt")},
        "train": {"seed": 0, "epochs": 2},
    }
    corpus = {"posts": 1000, "seed": 0}
    key = synth_suite.run_key(config, work, corpus)
    assert key["config"]["data"]["train_file"] == "$WORK/corpus-clean/train.txt"
    folder = work / "runs" / "clean-SMNER-0"
    assert synth_suite.finished_run(folder, key) is None
    synth_suite.keep_run(folder, key, {"f1": 0.5, "per_post": [[1, 1, 2]]})
    expected = {"f1": 0.5, "per_post": [[1, 1, 2]]}
    assert synth_suite.finished_run(folder, key) == expected

    moved = tmp_path / "elsewhere"
    (moved / "runs").mkdir(parents=True)
    (moved / "runs" / "clean-SMNER-0.json").write_bytes(
        (work / "runs" / "clean-SMNER-0.json").read_bytes()
    )
    moved_config = {**config, "data": {"train_file": str(moved / "corpus-clean" / "train.txt")}}
    moved_key = synth_suite.run_key(moved_config, moved, corpus)
    assert synth_suite.finished_run(moved / "runs" / "clean-SMNER-0", moved_key) == expected

    other_seed = {**config, "train": {"seed": 1, "epochs": 2}}
    assert synth_suite.finished_run(folder, synth_suite.run_key(other_seed, work, corpus)) is None
    other_corpus = {"posts": 1000, "seed": 3}
    assert synth_suite.finished_run(folder, synth_suite.run_key(config, work, other_corpus)) is None
    (work / "runs" / "clean-SMNER-0.json").write_text("{not json", encoding="utf-8")
    assert synth_suite.finished_run(folder, key) is None


def test_results_name_the_commit_and_say_when_the_tree_had_changes(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        from common import commit
    finally:
        sys.path.remove(str(ROOT / "bench"))

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
            cwd=tmp_path, capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip

    git("init", "-q")
    (tmp_path / "a.txt").write_text("one\n")
    git("add", "a.txt")
    git("commit", "-qm", "one")
    head = git("rev-parse", "--short", "HEAD")
    (tmp_path / "untracked.txt").write_text("not part of the measured code\n")
    assert commit(tmp_path) == head
    (tmp_path / "a.txt").write_text("two\n")
    assert commit(tmp_path) == f"{head}+changes"
    assert commit(tmp_path / "missing") == "unknown"
