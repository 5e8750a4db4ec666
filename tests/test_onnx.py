"""``smner export`` and the ONNX Runtime backend: the exported folder predicts what PyTorch
predicts (entities, scores, attention, boxes) through every entry point, loading refuses a
broken folder in one line, and the export writes nothing when its own check fails."""

from __future__ import annotations

import base64
import json
import shutil
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

from smner.cli import main
from smner.data.posts import PostInput
from smner.errors import MissingExtra, SmnerError
from smner.predict.onnx_backend import GRAPH_FILE, MANIFEST_FILE, OnnxModel
from smner.predict.onnx_export import export_onnx
from smner.predict.predictor import Predictor
from tests.tiny import fixture_batch, fixture_posts

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def onnx_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model exported in float32 through the command line."""
    out = tmp_path_factory.mktemp("onnx") / "fp32"
    assert main(["export", "--model", str(tiny_model_dir), "--output", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def int8_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("onnx") / "int8"
    export_onnx(tiny_model_dir, out, quantize="int8")
    return out


@pytest.fixture(scope="module")
def pytorch_predictor(tiny_model_dir: Path) -> Predictor:
    return Predictor.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def onnx_predictor(onnx_dir: Path) -> Predictor:
    return Predictor.from_pretrained(onnx_dir)


def fixture_inputs(images: bool = True) -> list[PostInput]:
    """The four fixture posts (three with a picture when ``images``)."""
    return [
        PostInput(tokens=example.tokens, image=picture if images else None, id=example.post_id)
        for example, picture in fixture_posts()
    ]


def assert_same_predictions(got: list[Any], expected: list[Any], score_tol: float) -> None:
    for g, e in zip(got, expected, strict=True):
        assert g.tokens == e.tokens and g.image_status == e.image_status
        assert [(m.start, m.end, m.type) for m in g.entities] == [
            (m.start, m.end, m.type) for m in e.entities
        ]
        for gm, em in zip(g.entities, e.entities, strict=True):
            assert gm.score == pytest.approx(em.score, abs=score_tol)
            assert (gm.attention is None) == (em.attention is None)
            if em.attention is not None:
                assert torch.tensor(gm.attention).shape == torch.tensor(em.attention).shape
                assert torch.allclose(
                    torch.tensor(gm.attention), torch.tensor(em.attention), atol=score_tol
                )
                assert gm.global_attention == pytest.approx(em.global_attention, abs=score_tol)


# --- the folder --------------------------------------------------------------------------------


def test_the_export_is_the_model_folder_plus_a_checked_graph(
    tiny_model_dir: Path, onnx_dir: Path
) -> None:
    for name in ("config.json", "processor.json", "README.md", "model.safetensors"):
        assert (onnx_dir / name).read_bytes() == (tiny_model_dir / name).read_bytes(), name
    assert (onnx_dir / "tokenizer").is_dir() and (onnx_dir / GRAPH_FILE).is_file()
    manifest = json.loads((onnx_dir / MANIFEST_FILE).read_text())
    assert manifest["backend"] == "onnxruntime" and manifest["quantization"] is None
    assert manifest["model_type"] == "smner" and isinstance(manifest["opset"], int)
    assert manifest["inputs"][:2] == ["input_ids", "attention_mask"]
    assert {"has_image", "image_pooled", "image_regions"} <= set(manifest["inputs"])
    assert manifest["outputs"] == ["logits", "attention"]
    check = manifest["verification"]
    assert check["passed"] and check["entities_equal"] and check["posts_with_image"] > 0
    assert check["posts"] > check["posts_with_image"]  # posts without an image too
    assert check["max_logit_diff"] <= check["tolerance"]
    assert not list(onnx_dir.parent.glob(".fp32.*"))  # no staging folder left behind


def test_onnx_predicts_what_pytorch_predicts_with_and_without_images(
    pytorch_predictor: Predictor, onnx_predictor: Predictor
) -> None:
    assert (pytorch_predictor.backend, onnx_predictor.backend) == ("pytorch", "onnx")
    for images in (True, False):
        posts = fixture_inputs(images)
        expected = pytorch_predictor.predict_many(posts)
        got = onnx_predictor.predict_many(posts)
        assert any(p.entities for p in expected)
        assert_same_predictions(got, expected, TOLERANCE)
    # one post at a time: batches of one, and a batch without any image
    for post in fixture_inputs():
        assert_same_predictions(
            [onnx_predictor.predict(post)], [pytorch_predictor.predict(post)], TOLERANCE
        )


def test_heatmap_attention_is_there_on_the_onnx_backend(
    pytorch_predictor: Predictor, onnx_predictor: Predictor
) -> None:
    grid = onnx_predictor.model.attention_grid
    assert grid is not None and grid == pytorch_predictor.model.attention_grid
    predictions = onnx_predictor.predict_many(fixture_inputs())
    with_image = [p for p in predictions if p.image_status.value == "ok"]
    assert with_image and all(p.entities for p in with_image)
    for prediction in with_image:
        for mention in prediction.entities:
            assert torch.tensor(mention.attention).shape == grid
            assert mention.global_attention is not None
    without = [p for p in predictions if p.image_status.value != "ok"]
    assert all(m.attention is None for p in without for m in p.entities)


def test_int8_quantises_every_linear_layer_of_the_text_encoder(
    int8_dir: Path, pytorch_predictor: Predictor
) -> None:
    import onnx
    from torch import nn

    manifest = json.loads((int8_dir / MANIFEST_FILE).read_text())
    assert manifest["quantization"] == "int8" and manifest["verification"]["passed"]
    check = manifest["int8_verification"]
    assert 0.0 <= check["span_label_agreement"] <= 1.0 and check["max_logit_diff"] >= 0.0
    graph = onnx.load(str(int8_dir / GRAPH_FILE))
    quantised = [n for n in graph.graph.node if n.op_type == "MatMulInteger"]
    # query, key, value, attention output and the feed-forward up- and down-projections of
    # the one layer (the pooler is not in the graph: its output is unused); smner's own layers
    # (span representation, span-to-region block, classifier) stay in float
    layers = [
        name
        for name, module in pytorch_predictor.model.text.named_modules()
        if isinstance(module, nn.Linear) and ".pooler." not in name
    ]
    assert len(layers) == 6 and any(n.endswith("layer.0.output.dense") for n in layers)
    assert len(quantised) == len(layers)
    floats = [n for n in graph.graph.node if n.op_type in ("MatMul", "Gemm")]
    assert any("classifier" in str(n.metadata_props) for n in floats)
    predictor = Predictor.from_pretrained(int8_dir)
    assert predictor.backend == "onnx"
    assert isinstance(predictor.model, OnnxModel) and predictor.model.quantization == "int8"
    posts = fixture_inputs()
    got, expected = predictor.predict_many(posts), pytorch_predictor.predict_many(posts)
    # int8 moves scores a little; on this untrained model the ranking of spans may change, so
    # only what holds for any model is asserted: well-formed predictions and close scores for
    # the entities both find
    for g, e in zip(got, expected, strict=True):
        assert g.tokens == e.tokens and g.image_status == e.image_status
        for m in g.entities:
            assert 0 <= m.start < m.end <= len(g.tokens) and 0.0 < m.score <= 1.0
            assert (m.attention is not None) == (g.image_status.value == "ok")
        same = {(m.start, m.end, m.type): m.score for m in e.entities}
        for m in g.entities:
            if (m.start, m.end, m.type) in same:
                assert m.score == pytest.approx(same[(m.start, m.end, m.type)], abs=0.05)


def test_the_backend_can_be_chosen_and_threads_follow_torch(
    onnx_dir: Path, tiny_model_dir: Path, pytorch_predictor: Predictor
) -> None:
    forced = Predictor.from_pretrained(onnx_dir, backend="pytorch")
    assert forced.backend == "pytorch"
    posts = fixture_inputs()
    assert_same_predictions(forced.predict_many(posts), pytorch_predictor.predict_many(posts), 0)
    with pytest.raises(SmnerError, match="not an ONNX folder"):
        Predictor.from_pretrained(tiny_model_dir, backend="onnx")
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        model = Predictor.from_pretrained(onnx_dir).model
        assert isinstance(model, OnnxModel)
        assert model.session.get_session_options().intra_op_num_threads == 1
    finally:
        torch.set_num_threads(threads)


def test_pytorch_quantization_and_saving_are_refused_on_an_onnx_folder(
    onnx_dir: Path, onnx_predictor: Predictor, tmp_path: Path
) -> None:
    with pytest.raises(SmnerError, match="export with --quantize int8") as caught:
        Predictor.from_pretrained(onnx_dir, quantize="int8")
    assert "\n" not in str(caught.value)
    with pytest.raises(SmnerError, match="not saved from memory"):
        onnx_predictor.save_pretrained(tmp_path / "copy")
    assert not (tmp_path / "copy").exists()


# --- every entry point -----------------------------------------------------------------------


def test_predict_and_evaluate_commands_run_an_exported_folder(
    tiny_model_dir: Path,
    onnx_dir: Path,
    post_images: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    records = [
        {"id": ex.post_id, "tokens": ex.tokens}
        | ({"image": str(post_images / f"{ex.image_id}.jpg")} if picture is not None else {})
        for ex, picture in fixture_posts()
    ]
    source = tmp_path / "posts.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    outputs = {}
    for name, model in (("pytorch", tiny_model_dir), ("onnx", onnx_dir)):
        out = tmp_path / f"{name}.jsonl"
        argv = ["predict", "--model", str(model), "--input", str(source), "--output", str(out)]
        assert main([*argv, "--explain"]) == 0
        outputs[name] = [json.loads(line) for line in out.read_text().splitlines()]
    assert_records_close(outputs["onnx"], outputs["pytorch"])
    assert any(e["attention"] for r in outputs["onnx"] for e in r["entities"])

    data = tmp_path / "gold.txt"
    data.write_text(
        "".join(
            f"IMGID:{ex.image_id}\n"
            + "".join(f"{w}\t{tag}\n" for w, tag in zip(ex.tokens, bio(ex), strict=True))
            + "\n"
            for ex, _ in fixture_posts()
        ),
        encoding="utf-8",
    )
    scores = {}
    for name, model in (("pytorch", tiny_model_dir), ("onnx", onnx_dir)):
        argv = ["evaluate", "--model", str(model), "--data", str(data), "--json"]
        assert main([*argv, "--images", str(post_images)]) == 0
        scores[name] = json.loads(capsys.readouterr().out)
    assert scores["onnx"] == scores["pytorch"]
    with pytest.raises(SystemExit):
        main(["evaluate", "--model", str(onnx_dir), "--data", str(data), "--quantize", "int4"])
    assert main(["evaluate", "--model", str(onnx_dir), "--data", str(data), "--quantize", "int8"])
    assert "export with --quantize int8" in capsys.readouterr().err
    with pytest.raises(SmnerError, match="float32 or int8"):
        export_onnx(tiny_model_dir, tiny_model_dir.parent / "bf16", quantize="bf16")
    assert not (tiny_model_dir.parent / "bf16").exists()


def bio(example: Any) -> list[str]:
    tags = ["O"] * len(example.tokens)
    for e in example.entities:
        tags[e.start] = f"B-{e.type}"
        for i in range(e.start + 1, e.end):
            tags[i] = f"I-{e.type}"
    return tags


def assert_records_close(got: Any, expected: Any) -> None:
    if isinstance(expected, float):
        assert got == pytest.approx(expected, abs=TOLERANCE)
    elif isinstance(expected, dict):
        assert isinstance(got, dict) and got.keys() == expected.keys()
        for key, value in expected.items():
            assert_records_close(got[key], value)
    elif isinstance(expected, list):
        assert isinstance(got, list) and len(got) == len(expected)
        for item, value in zip(got, expected, strict=True):
            assert_records_close(item, value)
    else:
        assert got == expected


def test_the_server_serves_an_exported_folder(
    onnx_predictor: Predictor, pytorch_predictor: Predictor, post_images: Path
) -> None:
    from fastapi.testclient import TestClient

    from smner.serve.app import create_app
    from smner.serve.settings import ServeSettings

    image = base64.b64encode((post_images / "0.jpg").read_bytes()).decode("ascii")
    body = {"text": "George visited Paris today", "image": image}
    records = {}
    for name, predictor in (("onnx", onnx_predictor), ("pytorch", pytorch_predictor)):
        with TestClient(create_app(predictor, ServeSettings())) as client:
            response = client.post("/v1/predict", json=body)
            assert response.status_code == 200, response.text
            records[name] = response.json()
            info = client.get("/v1/model").json()
            assert info["backend"] == name  # what a load bench or a client reads
            assert info["quantization"] is None  # both float32 (int8: the load bench test)
    assert records["onnx"]["entities"]
    assert_records_close(records["onnx"], records["pytorch"])


@pytest.mark.slow  # workers and an export are each tested in make test; together here
@pytest.mark.integration  # starts worker processes
def test_workers_run_an_exported_folder(
    onnx_dir: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    source = tmp_path / "posts.jsonl"
    source.write_text(
        "".join(
            json.dumps({"id": i, "text": "George visited Paris today"}) + "\n" for i in range(9)
        ),
        encoding="utf-8",
    )
    outputs = []
    for model, workers in ((tiny_model_dir, "1"), (onnx_dir, "2")):
        out = tmp_path / f"{workers}.jsonl"
        argv = ["predict", "--model", str(model), "--input", str(source), "--output", str(out)]
        assert main([*argv, "--workers", workers]) == 0
        outputs.append([json.loads(line) for line in out.read_text().splitlines()])
    assert_records_close(outputs[1], outputs[0])


@pytest.mark.slow  # Ray and an export are each tested in make test; together here
@pytest.mark.integration  # a local Ray cluster
@pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.*")
def test_ray_runs_an_exported_folder(onnx_dir: Path, onnx_predictor: Predictor) -> None:
    ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'smner[ray]'")
    pytest.importorskip("ray.data")
    from smner.integrations.ray import predict_dataset

    started = not ray.is_initialized()
    if started:
        ray.init(
            num_cpus=2,
            include_dashboard=False,
            object_store_memory=100 * 2**20,
            logging_level="warning",
            log_to_driver=False,
        )
    try:
        texts = ["George visited Paris today", "loves New York with George", "Apple store"]
        posts = [{"id": str(i), "text": t} for i, t in enumerate(texts)]
        found = predict_dataset(ray.data.from_items(posts), onnx_dir, batch_size=2, concurrency=1)
        rows = {row["id"]: row for row in found.take_all()}
    finally:
        if started:
            ray.shutdown()
    for post in posts:
        alone = onnx_predictor.predict(post["text"]).to_dict()
        assert_records_close(
            [
                {k: e[k] for k in ("text", "type", "start", "end", "score")}
                for e in rows[post["id"]]["entities"]
            ],
            [
                {k: e[k] for k in ("text", "type", "start", "end", "score")}
                for e in alone["entities"]
            ],
        )


# --- refusals --------------------------------------------------------------------------------


def test_a_missing_onnxruntime_names_the_extra(
    onnx_dir: Path,
    tiny_model_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime -> ImportError
    with pytest.raises(MissingExtra) as caught_load:
        Predictor.from_pretrained(onnx_dir)
    for load in (
        lambda: Predictor.from_pretrained(onnx_dir),
        lambda: export_onnx(tiny_model_dir, tmp_path / "out"),
    ):
        with pytest.raises(MissingExtra) as caught:
            load()
        message = str(caught.value)
        assert "needs onnxruntime" in message and "pip install 'smner[onnx]'" in message
        assert "\n" not in message
    assert str(onnx_dir) in str(caught_load.value)
    assert not (tmp_path / "out").exists()
    assert main(["predict", "--model", str(onnx_dir), "--text", "George visited Paris"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("smner: error: ") and "smner[onnx]" in err and "\n" not in err


def _corrupt_graph(folder: Path) -> None:
    graph = folder / GRAPH_FILE
    graph.write_bytes(graph.read_bytes()[: graph.stat().st_size // 2])


def _manifest(folder: Path, **changes: Any) -> None:
    path = folder / MANIFEST_FILE
    manifest = json.loads(path.read_text())
    manifest.update(changes)
    path.write_text(json.dumps(manifest))


BREAKAGES = {
    "graph missing": (lambda f: (f / GRAPH_FILE).unlink(), "model.onnx: missing"),
    "graph truncated": (_corrupt_graph, "does not match the SHA-256 recorded in onnx.json"),
    "manifest not JSON": (
        lambda f: (f / MANIFEST_FILE).write_text("{not json"),
        "onnx.json: not valid JSON",
    ),
    "manifest of another backend": (
        lambda f: _manifest(f, backend="tensorrt"),
        "not an smner ONNX manifest",
    ),
    "manifest from a newer smner": (lambda f: _manifest(f, format_version=99), "upgrade smner"),
    "graph of other weights": (
        lambda f: _manifest(f, weights_sha256="0" * 64),
        "exported from other weights",
    ),
    "graph outside the folder": (lambda f: _manifest(f, graph="../x.onnx"), "a file name inside"),
    "outputs not recorded": (lambda f: _manifest(f, outputs=["logits"]), "export the folder again"),
}


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_a_broken_onnx_folder_is_refused_in_one_line(
    breakage: str, onnx_dir: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "broken"
    shutil.copytree(onnx_dir, folder)
    damage, expected = BREAKAGES[breakage]
    damage(folder)
    with pytest.raises(SmnerError) as caught:
        Predictor.from_pretrained(folder)
    message = str(caught.value)
    assert expected in message and "\n" not in message, message


def test_a_corrupt_graph_loaded_unverified_is_still_refused_in_one_line(
    onnx_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "broken"
    shutil.copytree(onnx_dir, folder)
    (folder / GRAPH_FILE).write_bytes(b"\x08\x07garbage" * 100)
    monkeypatch.setenv("SMNER_SKIP_WEIGHTS_CHECKSUM", "1")
    with pytest.raises(SmnerError) as caught:
        Predictor.from_pretrained(folder)
    message = str(caught.value)
    assert "model.onnx: not a valid ONNX graph" in message and "\n" not in message, message


@pytest.fixture
def cheap_trace(onnx_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The export's tracing replaced by a copy of the already exported graph (of the same
    model), so that a test of what follows it costs no new trace."""
    import smner.predict.onnx_export as onnx_export

    def copy_graph(model: Any, processor: Any, path: Path, opset: Any = None) -> Any:
        shutil.copy(onnx_dir / GRAPH_FILE, path)
        manifest = json.loads((onnx_dir / MANIFEST_FILE).read_text())
        return manifest["traced_inputs"], manifest["outputs"]

    monkeypatch.setattr(onnx_export, "trace_graph", copy_graph)


@pytest.mark.usefixtures("cheap_trace")
def test_the_export_writes_nothing_when_its_check_fails(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    export_onnx(tiny_model_dir, out)  # the stand-in trace passes the check as it is
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    run = OnnxModel.forward

    def off_by_a_little(self: OnnxModel, batch: Any, labels: Any = None) -> Any:
        output = run(self, batch, labels)
        output.logits = output.logits.clone()
        output.logits[0, 0, 0] += 0.01  # ten times the tolerance, on one span of one post
        return output

    monkeypatch.setattr(OnnxModel, "forward", off_by_a_little)
    with pytest.raises(SmnerError) as caught:
        export_onnx(tiny_model_dir, out)
    message = str(caught.value)
    assert "does not match PyTorch" in message and "logits differ by 0.01" in message
    assert f"nothing was written to {out}" in message and "\n" not in message
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    fresh = tmp_path / "fresh"
    with pytest.raises(SmnerError):
        export_onnx(tiny_model_dir, fresh)
    assert not fresh.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging folder left


@pytest.mark.usefixtures("cheap_trace")
def test_the_export_refuses_a_mismatch_in_decoded_entities(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    decode = OnnxModel.decode

    def one_less(self: OnnxModel, batch: Any, output: Any) -> Any:
        posts = decode(self, batch, output)
        return [post[1:] for post in posts]

    monkeypatch.setattr(OnnxModel, "decode", one_less)
    with pytest.raises(SmnerError, match="the decoded entities differ"):
        export_onnx(tiny_model_dir, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_what_the_export_refuses(tiny_model_dir: Path, encoders: Any, tmp_path: Path) -> None:
    from tests.tiny import tiny_model

    tagger, processor = tiny_model(encoders, type="bio-tagger", use_image=False)
    tagger.save_pretrained(tmp_path / "tagger", processor=processor)
    cases = {
        "a 'bio-tagger' model; smner export writes ONNX graphs of smner models only": (
            tmp_path / "tagger",
            tmp_path / "out",
        ),
        "is the --model folder": (tiny_model_dir, tiny_model_dir),
        "holds the --model folder": (tiny_model_dir, tiny_model_dir.parent),
        "neither empty nor a model folder": (tiny_model_dir, tmp_path),
        "not a saved smner model": (tmp_path / "nothing", tmp_path / "out"),
    }
    for expected, (source, target) in cases.items():
        with pytest.raises(SmnerError) as caught:
            export_onnx(source, target)
        assert expected in str(caught.value) and "\n" not in str(caught.value)
    assert not (tmp_path / "out").exists()


def test_export_help_names_the_extra(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["export", "--help"])
    out = capsys.readouterr().out
    assert "--quantize {int8}" in out and "smner[onnx]" in out and "--tolerance" in out


@pytest.fixture(scope="module")
def grounding_dirs(
    encoders: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Path, Path]]:
    from tests.tiny import tiny_model

    root = tmp_path_factory.mktemp("grounding")
    model, processor = tiny_model(encoders, grounding=True, grounding_threshold=0.0)
    model.save_pretrained(root / "model", processor=processor)
    export_onnx(root / "model", root / "onnx")
    yield root / "model", root / "onnx"


def test_a_grounding_model_gives_the_same_boxes_on_onnx(
    grounding_dirs: tuple[Path, Path],
) -> None:
    source, exported = grounding_dirs
    manifest = json.loads((exported / MANIFEST_FILE).read_text())
    assert manifest["outputs"] == ["logits", "attention", "in_image_logit", "box"]
    pytorch, onnx = Predictor.from_pretrained(source), Predictor.from_pretrained(exported)
    assert onnx.model.grounds
    posts = fixture_inputs()
    got, expected = onnx.predict_many(posts), pytorch.predict_many(posts)
    assert_same_predictions(got, expected, TOLERANCE)
    boxes = 0
    for g, e in zip(got, expected, strict=True):
        for gm, em in zip(g.entities, e.entities, strict=True):
            assert gm.box_score == pytest.approx(em.box_score, abs=TOLERANCE)
            assert (gm.box is None) == (em.box is None)
            if em.box is not None:
                boxes += 1
                assert gm.box == pytest.approx(em.box, abs=0.11)  # rounded to 0.1 px
    assert boxes


def test_entity_competition_runs_after_the_graph_as_in_pytorch(
    encoders: Any, tmp_path: Path
) -> None:
    """The competitive pass (a decode between two passes) runs in PyTorch after the graph, on
    the span vectors and visual tokens the graph hands out: the exported folder keeps the
    setting and predicts what PyTorch predicts with it, not what it predicts without."""
    from tests.tiny import tiny_model

    model, processor = tiny_model(encoders, entity_competition=1.0, ib_gate=True)
    with torch.no_grad():  # every span an entity: each post with a picture has a contest
        model.classifier[-1].bias[1] += 5.0
    model.save_pretrained(tmp_path / "model", processor=processor)
    out = tmp_path / "onnx"
    assert main(["export", "--model", str(tmp_path / "model"), "--output", str(out)]) == 0
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    assert manifest["outputs"] == [
        "logits",
        "attention",
        "span_vectors",
        "visual_tokens",
        "ignore",
        "gate",
    ]
    assert manifest["format_version"] == 2 and "left_out" not in manifest
    assert json.loads((out / "config.json").read_text())["model"]["entity_competition"] == 1.0
    pytorch, onnx = Predictor.from_pretrained(tmp_path / "model"), Predictor.from_pretrained(out)
    batch = fixture_batch(pytorch.model, pytorch.processor, labels=False)
    with torch.no_grad():
        competed, found = pytorch.model(batch), onnx.model(batch)
        pytorch.model.config = replace(pytorch.model.config, entity_competition=0.0)
        ordinary = pytorch.model(batch)
    inside = batch.span_mask
    # the pass changes these posts' logits, and the ONNX backend changes them the same way
    assert float((competed.logits - ordinary.logits)[inside].abs().max()) > 1e-3
    torch.testing.assert_close(found.logits[inside], competed.logits[inside], atol=1e-4, rtol=0)
    torch.testing.assert_close(
        found.attention[inside], competed.attention[inside], atol=1e-4, rtol=0
    )


@pytest.mark.parametrize("competition", [0.0, 1.0])
def test_evidence_heatmaps_are_the_same_on_onnx(
    encoders: Any, tmp_path: Path, competition: float
) -> None:
    """Evidence heatmaps (model.heatmaps) weigh the attention by the region classifier's map:
    inside the graph without a competitive pass, after the pass (in PyTorch) with one. Either
    way the exported folder gives the heatmaps PyTorch gives, which are not the attention."""
    from tests.tiny import tiny_model

    settings = {"region_types": 1.0, "entity_competition": competition, "heatmaps": "evidence"}
    model, processor = tiny_model(encoders, **settings)
    with torch.no_grad():
        model.classifier[-1].bias[1] += 5.0
    model.save_pretrained(tmp_path / "model", processor=processor)
    out = tmp_path / "onnx"
    assert main(["export", "--model", str(tmp_path / "model"), "--output", str(out)]) == 0
    pytorch, onnx = Predictor.from_pretrained(tmp_path / "model"), Predictor.from_pretrained(out)
    batch = fixture_batch(pytorch.model, pytorch.processor, labels=False)
    with torch.no_grad():
        weighted, found = pytorch.model(batch), onnx.model(batch)
        pytorch.model.config = replace(pytorch.model.config, heatmaps="attention")
        plain = pytorch.model(batch)
    shown = batch.span_mask & batch.has_image[:, None]
    assert float((weighted.attention - plain.attention)[shown].abs().max()) > 1e-3
    torch.testing.assert_close(found.attention[shown], weighted.attention[shown], atol=1e-4, rtol=0)


def test_an_exported_folder_that_lacks_the_competition_outputs_is_refused(
    encoders: Any, tmp_path: Path
) -> None:
    """A graph without the competitive pass's inputs, under a config that runs the pass: the
    folder's files do not belong together."""
    from tests.tiny import tiny_model

    model, processor = tiny_model(encoders)
    model.save_pretrained(tmp_path / "model", processor=processor)
    out = tmp_path / "onnx"
    export_onnx(tmp_path / "model", out)
    config = json.loads((out / "config.json").read_text())
    config["model"]["entity_competition"] = 1.0
    (out / "config.json").write_text(json.dumps(config))
    with pytest.raises(SmnerError, match="export the folder again"):
        OnnxModel.from_pretrained(out, verify_weights=False)


@pytest.mark.slow  # 14 s; the serving benchmark itself runs it
@pytest.mark.integration  # starts two servers in turn
def test_the_load_bench_serves_pytorch_and_the_export_side_by_side(
    int8_dir: Path, tiny_model_dir: Path
) -> None:
    """``bench/load.py --model A --model B``: each folder served in turn, each row named by its
    folder and backend, and the requests/s of the second set against the first's."""
    import subprocess

    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run(
        [
            sys.executable, str(root / "bench" / "load.py"),
            "--model", str(tiny_model_dir), "--model", str(int8_dir),
            "--clients", "4", "--seconds", "1", "--warmup", "1",
        ],
        capture_output=True, text=True, timeout=600, check=False, cwd=root,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads(proc.stdout[: proc.stdout.index("\n}\n") + 2])
    first, second = record["models"]
    assert (first["backend"], second["backend"]) == ("pytorch", "onnx int8")
    for model in (first, second):
        assert [p["clients"] for p in model["phases"]] == [1, 4]
        assert all(p["requests"] > 0 and p["errors"] == 0 for p in model["phases"])
    rows = [line for line in proc.stdout.splitlines() if line.startswith(f"| {int8_dir} |")]
    assert len(rows) == 2
    assert f"{int8_dir} against {tiny_model_dir} at 4 clients:" in proc.stdout
