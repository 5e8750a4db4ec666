"""The generated stand-in for the Twitter benchmarks has the quirks of the real files, and smner
reads them as it reads the real ones: I- starts, OTHER and MISC, files with and without a final
blank line, PNG data under a .jpg name, truncated and missing images."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from smner.cli import main
from smner.data.conll import read_conll
from smner.data.images import ImageStore
from tests.benchmark_fixture import SPLITS, Benchmark


def test_the_generated_files_have_the_layout_and_quirks_of_the_real_ones(
    generated_benchmark: Benchmark,
) -> None:
    facts = generated_benchmark.facts
    assert facts is not None and set(facts) == set(SPLITS)
    assert [
        p.relative_to(generated_benchmark.root).as_posix() for p in generated_benchmark.files()
    ] == sorted(SPLITS)
    for split, fact in facts.items():
        path = generated_benchmark.root / split
        text = path.read_text(encoding="utf-8")
        blocks = text.rstrip("\n").split("\n\n")
        assert len(blocks) == fact.posts == SPLITS[split]
        assert all(block.startswith("IMGID:") for block in blocks)
        tags = {line.split("\t")[1] for block in blocks for line in block.split("\n")[1:]}
        corpus = read_conll(path)
        if split.startswith("twitter2015"):
            assert "B-OTHER" in tags and not any(t.endswith("MISC") for t in tags)
            assert not text.endswith("\n\n") and corpus.final_blank_line is False
            assert fact.i_starts > 0
        else:
            assert "B-MISC" in tags and not any(t.endswith("OTHER") for t in tags)
            assert text.endswith("\n\n") and corpus.final_blank_line is True
            assert fact.i_starts == 0
        assert [ex.image_id for ex in corpus] == fact.image_ids
        assert fact.images["ok"] and fact.images["missing"] and fact.images["truncated"]
        assert 1 < fact.longest <= 6
    images = generated_benchmark.root / "images" / "twitter2015"
    for name, mode in (("113.jpg", "RGBA"), ("33.jpg", "RGB")):
        with Image.open(images / name) as raw:
            assert (raw.format, raw.mode) == ("PNG", mode)


@pytest.mark.parametrize("split", sorted(SPLITS))
def test_each_post_s_image_is_found_decoded_or_reported(
    generated_benchmark: Benchmark, split: str
) -> None:
    fact = generated_benchmark.facts[split]  # type: ignore[index]
    store = ImageStore(generated_benchmark.root / "images" / split.split("/")[0])
    statuses = [
        str(store.load(ex.image_id)[1]) for ex in read_conll(generated_benchmark.root / split)
    ]
    assert {s: statuses.count(s) for s in set(statuses)} == {
        k: v for k, v in fact.images.items() if v
    }
    summary = store.summary()
    assert f"{fact.images['ok']} loaded" in summary
    assert f"{fact.images['missing']} missing" in summary
    assert f"{fact.images['truncated']} truncated" in summary


@pytest.mark.parametrize("split", ["twitter2015/test.txt", "twitter2017/valid.txt"])
def test_evaluate_scores_a_benchmark_file_with_its_images(
    generated_benchmark: Benchmark,
    tiny_model_dir: Path,
    split: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Entities that begin with I- are gold entities (as seqeval counts them); OTHER and MISC,
    types the model does not know, are scored as missed; bad images are counted, not fatal."""
    fact = generated_benchmark.facts[split]  # type: ignore[index]
    images = generated_benchmark.root / "images" / split.split("/")[0]
    argv = [
        "evaluate",
        "--model",
        str(tiny_model_dir),
        "--data",
        str(generated_benchmark.root / split),
    ]
    assert main([*argv, "--images", str(images), "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["support"] == fact.entities
    images_line = next(line for line in captured.err.splitlines() if line.startswith("images:"))
    loaded, missing, truncated = (fact.images[k] for k in ("ok", "missing", "truncated"))
    assert images_line == f"images: {loaded} loaded, {missing} missing, {truncated} truncated"
