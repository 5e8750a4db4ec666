"""Ray Data: ``predict_dataset`` and ``smner predict --engine ray`` on a local 2-CPU Ray give
the predictions of one process."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'smner[ray]'")
pytest.importorskip("ray.data", reason="Ray Data is an optional extra: pip install 'smner[ray]'")

from smner.cli import main  # noqa: E402
from smner.integrations.ray import predict_dataset  # noqa: E402
from smner.predict.predictor import Predictor  # noqa: E402
from tests.tiny import solid_image  # noqa: E402

pytestmark = [
    pytest.mark.integration,  # a local Ray cluster
    # Ray Data's own context warns about its deprecated settings when it is first read.
    pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.*"),
]

WORDS = ["George", "visited", "Paris", "today", "with", "New", "York", "and", "Apple"]


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        object_store_memory=100 * 2**20,
        logging_level="warning",
        log_to_driver=False,
    )
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield
    ray.shutdown()


def records(image: Path) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i in range(18):
        record: dict[str, Any] = {"id": f"p{i}", "text": " ".join(WORDS[: 1 + (i * 4) % 9])}
        record["image"] = image.name if i % 3 == 0 else None
        out.append(record)
    out[5]["text"] = ""  # a post the model cannot take
    return out


def test_predict_dataset_adds_what_one_process_predicts(
    local_ray: None, tiny_model_dir: Path, post_images: Path
) -> None:
    folder = post_images
    posts = records(folder / "3.jpg")  # blue
    found = predict_dataset(
        ray.data.from_items(posts), tiny_model_dir, batch_size=4, concurrency=2, image_root=folder
    )
    rows = {row["id"]: row for row in found.take_all()}
    assert sorted(rows) == sorted(r["id"] for r in posts)
    predictor = Predictor.from_pretrained(tiny_model_dir)
    for post in posts:
        row = rows[post["id"]]
        assert row["text"] == post["text"] and row["image"] == post["image"]
        if post["text"] == "":
            assert row["entities"] is None and row["image_status"] is None
            assert row["error"] == (
                "record 'p5': the post has no tokens; expected non-empty text or tokens"
            )
            continue
        image = str(folder / post["image"]) if post["image"] else None
        alone = predictor.predict(post["text"], image=image).to_dict()
        assert row["error"] is None
        assert row["tokens"] == alone["tokens"]
        assert row["image_status"] == alone["image_status"]
        assert [(e["text"], e["type"], e["start"], e["end"]) for e in row["entities"]] == [
            (e["text"], e["type"], e["start"], e["end"]) for e in alone["entities"]
        ]
        for mine, theirs in zip(row["entities"], alone["entities"], strict=True):
            assert mine["score"] == pytest.approx(theirs["score"], abs=1e-5)


def test_engine_ray_writes_the_local_output(
    local_ray: None,
    tiny_model_dir: Path,
    post_images: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    import shutil

    shutil.copy(post_images / "3.jpg", tmp_path / "blue.jpg")
    posts = [{k: v for k, v in r.items() if v is not None} for r in records(tmp_path / "x.jpg")]
    for post in posts:
        if "image" in post:
            post["image"] = "blue.jpg"
    source = tmp_path / "posts.jsonl"
    source.write_text("".join(json.dumps(p) + "\n" for p in posts), encoding="utf-8")
    argv = ["predict", "--model", str(tiny_model_dir), "--batch-size", "4", "--input", str(source)]
    assert main([*argv, "--output", str(tmp_path / "local.jsonl")]) == 0
    assert main([*argv, "--output", str(tmp_path / "ray.jsonl"), "--engine", "ray"]) == 0
    local = [json.loads(x) for x in (tmp_path / "local.jsonl").read_text().splitlines()]
    remote = [json.loads(x) for x in (tmp_path / "ray.jsonl").read_text().splitlines()]
    assert [r["id"] for r in remote] == [r["id"] for r in local]  # input order
    for mine, theirs in zip(remote, local, strict=True):
        assert mine.keys() == theirs.keys()
        assert mine.get("tokens") == theirs.get("tokens")
        assert [e["type"] for e in mine.get("entities", [])] == [
            e["type"] for e in theirs.get("entities", [])
        ]

    folder = tmp_path / "parts"
    folder.mkdir()
    pq.write_table(pa.Table.from_pylist(posts[:9]), folder / "a.parquet")
    pq.write_table(pa.Table.from_pylist(posts[9:]), folder / "b.parquet")
    out = tmp_path / "ray.parquet"
    argv = ["predict", "--model", str(tiny_model_dir), "--input", str(folder), "--engine", "ray"]
    assert main([*argv, "--output", str(out), "--workers", "2"]) == 1  # no CPU left to read
    assert "the local Ray has 2 CPUs, and each worker takes one" in capsys.readouterr().err
    assert main([*argv, "--output", str(out)]) == 0
    rows = pq.read_table(out).to_pylist()
    assert sorted(r["id"] for r in rows) == sorted(p["id"] for p in posts)
    assert {r["id"]: r["tokens"] for r in rows} == {r["id"]: r.get("tokens") for r in local}


def test_a_grounding_model_adds_boxes_with_their_arrow_type(tmp_path: Path) -> None:
    """The batch function alone (no Ray): box and box_score are struct fields of entities."""
    pa = pytest.importorskip("pyarrow")
    from smner.encoders.text import load_tokenizer
    from smner.integrations.ray import PredictBatch
    from smner.model import build_model
    from tests.tiny import make_image_encoder, make_text_encoder, tiny_config

    text, image = make_text_encoder(tmp_path / "t"), make_image_encoder(tmp_path / "i")
    build_model(tiny_config(text, image, grounding=True)).save_pretrained(
        tmp_path / "m", tokenizer=load_tokenizer(text)
    )
    solid_image((200, 40, 40)).save(tmp_path / "red.jpg")
    batch = pa.Table.from_pylist(
        [{"id": "a", "text": "George visited Paris", "image": "red.jpg"}, {"id": "b", "text": ""}]
    )
    table = PredictBatch(str(tmp_path / "m"), image_root=str(tmp_path))(batch)
    fields = {f.name for f in table.schema.field("entities").type.value_type}
    assert {"box", "box_score"} <= fields
    first, second = table.to_pylist()
    alone = Predictor.from_pretrained(tmp_path / "m").predict(
        "George visited Paris", image=tmp_path / "red.jpg"
    )
    assert [e["box"] for e in first["entities"]] == [m.box for m in alone.entities]
    assert second["entities"] is None and "no tokens" in second["error"]
