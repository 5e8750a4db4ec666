"""Posts with several images (issue 32, item 1): image slots, their mask, the slot embedding,
the pool the bottleneck sees, and which image each entity is grounded in."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from smner.config.model import ModelConfig
from smner.errors import SmnerError
from smner.model.base import ModelOutput
from smner.model.visual_tokens import FIRST_REGION, attended_image
from smner.processing.batching import ImageInput
from smner.saved.folder import read_config
from tests.tiny import fixture_batch, fixture_images, fixture_posts, solid_image, tiny_model

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "saved-0.1.0"


def _pixels(model, seed: int) -> ImageInput:
    colour = ((seed * 70) % 256, (seed * 130) % 256, (seed * 40 + 90) % 256)
    return ImageInput(pixels=model.image.preprocessing([solid_image(colour)])[0])


def _slotted_batch(model, processor, slots):
    posts = fixture_posts()
    return processor([ex.tokens for ex, _ in posts], None, slots)


def _region_slices(attention: torch.Tensor, cells: int, slot: int) -> torch.Tensor:
    start = FIRST_REGION + slot * cells
    return attention[..., start : start + cells]


def test_new_models_take_four_images_and_old_configs_load_as_one() -> None:
    assert ModelConfig(labels=["PER"]).max_images == 4
    assert ModelConfig(labels=["PER"]).image_slot_scale == 1.0
    for kind in ("smner", "smner-grounding", "smner-text-only"):
        config, _ = read_config(FIXTURE / kind)
        assert config.max_images == 1, kind


def test_a_one_image_model_has_no_slot_embedding(encoders) -> None:
    one, _ = tiny_model(encoders, max_images=1)
    four, _ = tiny_model(encoders, max_images=4)
    extra = set(four.state_dict()) - set(one.state_dict())
    assert extra == {"image_slots.weight"}
    assert set(one.state_dict()) <= set(four.state_dict())


def test_one_image_posts_predict_as_on_a_one_image_model(encoders) -> None:
    """Weights drawn as a one-image model's; the first image's keys get no slot tag, so a
    many-image model is the one-image model on one-image posts whatever its tags have learned,
    whether the batch has one slot or three."""
    one, processor = tiny_model(encoders, max_images=1)
    three, _ = tiny_model(encoders, max_images=3)
    assert three.image_slots.weight[1:].std() > 0.5  # the later images' tags start at scale
    with torch.no_grad():
        three.image_slots.weight.normal_(std=2.0)  # as if trained
    for name, value in one.state_dict().items():
        assert torch.equal(value, three.state_dict()[name]), name
    one.eval(), three.eval()
    batch = fixture_batch(one, processor, labels=False)
    with torch.no_grad():
        expected = one(batch)
        assert torch.equal(three(batch).logits, expected.logits)
        assert torch.equal(three(batch).attention, expected.attention)
        # the same posts, each image as a list of one, then padded to three slots
        images = fixture_images(one)
        as_lists = processor(
            [ex.tokens for ex, _ in fixture_posts()],
            None,
            [[im] if im is not None else None for im in images],
        )
        assert as_lists.image_mask is None
        assert torch.equal(one(as_lists).logits, expected.logits)
        padded = processor(
            [ex.tokens for ex, _ in fixture_posts()],
            None,
            [[im, None, None] if im is not None else [None, None, None] for im in images],
        )
        assert padded.image_mask is not None and padded.image_mask.shape == (4, 3)
        got = three(padded)
    torch.testing.assert_close(got.logits, expected.logits, rtol=1e-5, atol=1e-5)
    cells = expected.attention.size(-1) - FIRST_REGION
    torch.testing.assert_close(
        got.attention[..., : FIRST_REGION + cells], expected.attention, rtol=1e-5, atol=1e-6
    )
    expected_posts = [[(i.entity, i.score, i.image_index) for i in p] for p in one.predict(batch)]
    got_posts = [[(i.entity, i.score, i.image_index) for i in p] for p in three.predict(batch)]
    assert got_posts == expected_posts


def test_absent_slots_are_never_attended_and_their_content_changes_nothing(encoders) -> None:
    model, processor = tiny_model(encoders, max_images=3)
    model.eval()
    slots = [
        [_pixels(model, 1), None, _pixels(model, 2)],
        [None, _pixels(model, 3)],
        None,
        [_pixels(model, 4)],
    ]
    batch = _slotted_batch(model, processor, slots)
    assert batch.image_mask.tolist() == [
        [True, False, True],
        [False, True, False],
        [False, False, False],
        [True, False, False],
    ]
    assert batch.has_image.tolist() == [True, True, False, True]
    with torch.no_grad():
        output = model(batch)
    cells = output.grid[0] * output.grid[1]
    assert output.attention.size(-1) == FIRST_REGION + 3 * cells
    for b, row in enumerate(batch.image_mask.tolist()):
        for slot, present in enumerate(row):
            mass = _region_slices(output.attention[b], cells, slot)
            if present:
                assert float(mass.sum()) > 0
            else:
                assert torch.count_nonzero(mass) == 0, (b, slot)
    # garbage (even NaN) in the absent slots changes nothing
    noisy = _slotted_batch(model, processor, slots)
    absent = ~noisy.image_mask
    noisy.pixel_values[absent] = float("nan")
    with torch.no_grad():
        again = model(noisy)
    assert torch.equal(again.logits, output.logits)
    assert torch.equal(again.attention, output.attention)
    # a post's images in other slots: its own words attend elsewhere, no other post changes
    entities = model.predict(batch)
    for b, post in enumerate(entities):
        for item in post:
            if batch.has_image[b]:
                assert batch.image_mask[b, item.image_index]
                assert item.attention.shape == output.grid
            else:
                assert item.image_index is None and item.attention is None


def test_features_given_per_slot_are_masked_like_pixels(encoders) -> None:
    model, processor = tiny_model(encoders, max_images=2)
    model.eval()
    with torch.no_grad():
        features = model.image(torch.stack([_pixels(model, 5).pixels, _pixels(model, 6).pixels]))
    one = ImageInput(pooled=features.pooled[0], regions=features.regions[0])
    two = ImageInput(pooled=features.pooled[1], regions=features.regions[1])
    batch = _slotted_batch(model, processor, [[one, two], [None, two], None, [one]])
    assert batch.image_regions.shape[:2] == (4, 2)
    with torch.no_grad():
        output = model(batch)
        batch.image_regions[1, 0] = float("nan")
        batch.image_pooled[3, 1] = 1e6
        again = model(batch)
    assert torch.equal(again.logits, output.logits)


def test_the_bottleneck_sees_a_masked_pool_over_the_images(encoders) -> None:
    from smner.model.smner import masked_pool

    pooled = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]], [[5.0, 5.0], [0, 0], [0, 0]]])
    slots = torch.tensor([[True, True, False], [False, False, False]])
    assert masked_pool(pooled, slots).tolist() == [[2.0, 3.0], [0.0, 0.0]]
    single = torch.tensor([[[7.0, 8.0]]])
    assert torch.equal(masked_pool(single, torch.tensor([[True]])), single[:, 0])


def test_the_image_index_is_the_image_with_the_most_attention(encoders) -> None:
    model, processor = tiny_model(encoders, max_images=3)
    model.eval()
    slots = [[_pixels(model, 1), _pixels(model, 2), _pixels(model, 3)]] * 2 + [None] * 2
    batch = _slotted_batch(model, processor, slots)
    batch.image_mask[1, 1] = False  # post 1's second image is missing
    batch.pixel_values[1, 1] = 0
    with torch.no_grad():
        output = model(batch)
    cells = output.grid[0] * output.grid[1]
    attention = torch.zeros_like(output.attention)
    attention[..., _GLOBAL_TOKEN] = 0.1
    # post 0: every span looks at one cell of image 2 (index 1) and a little at image 3
    attention[0, :, FIRST_REGION + cells + 4] = 0.6
    attention[0, :, FIRST_REGION + 2 * cells] = 0.3
    # post 1: most of the mass sits on cells of the (absent) image 2: never chosen
    attention[1, :, FIRST_REGION] = 0.2
    assert attended_image(attention, batch.image_mask)[0].unique().tolist() == [1]
    assert attended_image(attention, batch.image_mask)[1].unique().tolist() == [0]
    forced = ModelOutput(logits=output.logits, attention=attention, grid=output.grid)
    logits = torch.full_like(output.logits, -10.0)
    logits[..., 1] = 10.0  # every span an entity: decoding keeps the best non-overlapping ones
    forced.logits = logits
    posts = model.decode(batch, forced)
    assert posts[0] and posts[1]
    for item in posts[0]:
        assert item.image_index == 1
        assert item.attention.shape == output.grid
        assert item.attention.reshape(-1)[4] == pytest.approx(0.6)
        assert item.attention.sum() == pytest.approx(0.6)
    for item in posts[1]:
        assert item.image_index == 0


_GLOBAL_TOKEN = FIRST_REGION - 1


def test_weak_localisation_and_grounding_train_on_several_images(encoders) -> None:
    from tests.tiny import train_steps

    model, processor = tiny_model(
        encoders, max_images=3, region_types=1.0, region_attention=1.0, grounding=True
    )
    posts = fixture_posts()
    slots = [[_pixels(model, 1), None, _pixels(model, 2)], [_pixels(model, 3)], None, None]
    batch = processor([ex.tokens for ex, _ in posts], [ex.entities for ex, _ in posts], slots)
    output = model(batch, labels=model.labels_of(batch))
    assert torch.isfinite(output.loss)
    assert set(output.losses) >= {"region_types", "region_attention"}
    assert output.grounding is not None
    assert output.grounding.box.shape[:2] == output.logits.shape[:2]
    output.loss.backward()
    tags = model.image_slots.weight.grad
    assert tags is not None and float(tags[2].abs().sum()) > 0  # the third image's tag learns
    model.zero_grad()
    train_steps(model, batch, 2, 1e-3)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_too_many_images_and_one_image_models_refuse(encoders) -> None:
    model, processor = tiny_model(encoders, max_images=2)
    slots = [[_pixels(model, i) for i in range(3)], None, None, None]
    batch = _slotted_batch(model, processor, slots)
    with pytest.raises(SmnerError, match="at most 2"):
        model(batch)
    tagger, tagger_processor = tiny_model(encoders, type="bio-tagger")
    two = _slotted_batch(tagger, tagger_processor, [[_pixels(tagger, 1)] * 2, None, None, None])
    with pytest.raises(SmnerError, match="one image per post"):
        tagger(two)


# --- increment 2: posts, prepare, the loop, postprocess ------------------------------------


def _eager_predictor(encoders, **overrides):
    """An untrained tiny predictor that calls every span an entity of the first type (so that
    there are entities to look at)."""
    from smner.predict.predictor import Predictor

    model, processor = tiny_model(encoders, **overrides)
    with torch.no_grad():
        model.classifier[-1].bias[1] = 50.0
    return Predictor(model, processor)


def test_a_post_takes_image_or_images_not_both(tmp_path: Path) -> None:
    from smner.data.posts import InvalidPost, PostInput, as_post, read_jsonl
    from smner.errors import DataFormatError

    with pytest.raises(InvalidPost, match="not both"):
        PostInput(text="a", image="x.jpg", images=["y.jpg"])
    with pytest.raises(InvalidPost, match="not both"):
        as_post({"text": "a", "image": "x.jpg", "images": ["y.jpg"]})
    post = as_post({"text": "a", "images": ["x.jpg", "y.jpg"]})
    assert post.image_list() == ["x.jpg", "y.jpg"] and post.image is None
    assert post.record()["images"] == ["x.jpg", "y.jpg"]
    lines = tmp_path / "posts.jsonl"
    lines.write_text(
        '{"text": "a", "images": ["x.jpg", "sub/y.jpg"]}\n'
        '{"text": "b", "image": "x.jpg", "images": ["y.jpg"]}\n'
    )
    reader = read_jsonl(lines)
    _, first = next(reader)
    assert first.images == [tmp_path / "x.jpg", tmp_path / "sub/y.jpg"]
    assert first.record()["images"] == ["x.jpg", "sub/y.jpg"]  # as written
    with pytest.raises(DataFormatError, match=r"posts.jsonl:2.*not both"):
        next(reader)
    lines.write_text('{"text": "a", "images": "x.jpg"}\n')
    with pytest.raises(DataFormatError, match=r"posts.jsonl:1.*list of paths"):
        list(read_jsonl(lines))


def test_each_image_gets_its_status_and_one_image_posts_keep_their_record(
    encoders, post_images: Path, tmp_path: Path
) -> None:
    predictor = _eager_predictor(encoders, max_images=3)
    text = "George visited Paris today"
    paths = [post_images / "0.jpg", tmp_path / "gone.jpg", post_images / "3.jpg"]
    several = predictor.predict(text, images=paths)
    assert several.image_statuses == ["ok", "missing", "ok"]
    assert several.image_status == "ok"
    record = several.to_dict()
    assert record["image_statuses"] == ["ok", "missing", "ok"]
    assert several.entities
    for mention in several.entities:
        assert mention.image_index in (0, 2)  # never the missing image
        assert record["entities"][0]["image_index"] in (0, 2)
    one = predictor.predict(text, image=post_images / "0.jpg")
    assert one.image_statuses is None
    record = one.to_dict(explain=True)
    assert "image_statuses" not in record
    assert all("image_index" not in m for m in record["entities"])
    # the same image as a list of one: the same entities, scores and attention
    listed = predictor.predict(text, images=[post_images / "0.jpg"])
    assert listed.image_statuses == ["ok"]
    assert [(m.text, m.type, m.score, m.attention) for m in listed.entities] == [
        (m.text, m.type, m.score, m.attention) for m in one.entities
    ]
    assert {m.image_index for m in listed.entities} == {0}
    none = predictor.predict(text, images=[tmp_path / "gone.jpg"])
    assert none.image_statuses == ["missing"] and none.image_status == "missing"
    assert all(m.image_index is None and m.attention is None for m in none.entities)
    empty = predictor.predict(text, images=[])
    assert empty.image_statuses == [] and empty.image_status == "no image"


def test_more_images_than_the_model_takes_is_an_error(encoders, post_images: Path) -> None:
    predictor = _eager_predictor(encoders, max_images=2)
    with pytest.raises(SmnerError, match="3 images; this model takes at most 2"):
        predictor.predict("George visited Paris", images=[post_images / "0.jpg"] * 3)
    results = list(
        predictor.predict_stream(
            [{"text": "a b", "images": [str(post_images / "0.jpg")] * 3}, "George"],
            errors="record",
        )
    )
    assert "at most 2" in results[0].error
    assert results[1].image_status == "no image"


def test_every_picture_of_a_batch_goes_through_the_encoder_in_one_call(
    encoders, post_images: Path
) -> None:
    predictor = _eager_predictor(encoders, max_images=3)
    encoder = predictor.model.image_encoder
    encoder.output_grid()  # measured once, by a probe through the encoder
    calls: list[int] = []
    original = encoder.forward

    def counting(pixels):
        calls.append(int(pixels.size(0)))
        return original(pixels)

    encoder.forward = counting
    try:
        posts = [
            {"text": "George visited Paris", "images": [str(post_images / "0.jpg")] * 3},
            {"text": "New York", "image": str(post_images / "1.jpg")},
            {"text": "Apple store", "images": [str(post_images / "3.jpg")]},
            "no image here",
        ]
        found = predictor.predict_many(posts)
    finally:
        del encoder.forward
    assert calls == [5]
    assert [p.image_statuses for p in found] == [["ok"] * 3, None, ["ok"], None]


# --- increment 3: the command line, JSONL and Parquet records ------------------------------


@pytest.fixture(scope="module")
def eager_model_dir(encoders, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved tiny model of three image slots that calls every span an entity."""
    predictor = _eager_predictor(encoders, max_images=3)
    folder = tmp_path_factory.mktemp("eager") / "model"
    predictor.model.save_pretrained(folder, processor=predictor.processor)
    return folder


def test_the_cli_takes_several_images(
    eager_model_dir: Path, post_images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from smner.cli import main

    heat = tmp_path / "heat"
    argv = ["predict", "--model", str(eager_model_dir), "--text", "George visited Paris"]
    images = [str(post_images / "0.jpg"), str(tmp_path / "gone.jpg"), str(post_images / "3.jpg")]
    code = main([*argv, "--heatmaps", str(heat), *[x for i in images for x in ("--image", i)]])
    assert code == 0
    captured = capsys.readouterr()
    record = json.loads(captured.out)
    assert record["image_statuses"] == ["ok", "missing", "ok"]
    assert record["entities"] and all(e["image_index"] in (0, 2) for e in record["entities"])
    assert "1 of 3 images named were not found" in captured.err
    drawn = sorted(p.name for p in heat.iterdir())
    assert drawn and all(name.startswith(("1-image0-", "1-image2-")) for name in drawn)
    # one --image: the record as before
    assert main([*argv, "--image", images[0]]) == 0
    record = json.loads(capsys.readouterr().out)
    assert "image_statuses" not in record
    assert all("image_index" not in e for e in record["entities"])


def test_jsonl_and_parquet_records_take_images(
    eager_model_dir: Path, post_images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json
    import shutil

    import pyarrow as pa
    import pyarrow.parquet as pq

    from smner.cli import main

    shutil.copy(post_images / "0.jpg", tmp_path / "a.jpg")
    shutil.copy(post_images / "3.jpg", tmp_path / "b.jpg")
    rows = [
        {"id": "p1", "text": "George visited Paris", "images": ["a.jpg", "b.jpg"]},
        {"id": "p2", "text": "New York", "image": "a.jpg"},
        {"id": "p3", "text": "Apple store", "images": ["gone.jpg", "b.jpg"]},
    ]
    source = tmp_path / "posts.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    model = str(eager_model_dir)
    assert main(["predict", "--model", model, "--input", str(source)]) == 0
    captured = capsys.readouterr()
    records = [json.loads(line) for line in captured.out.splitlines()]
    assert [r.get("image_statuses") for r in records] == [["ok", "ok"], None, ["missing", "ok"]]
    assert records[0]["images"] == ["a.jpg", "b.jpg"]  # as written
    assert "1 of 5 images named" in captured.err
    table = pa.table(
        {
            "id": ["p1", "p2"],
            "text": ["George visited Paris", "New York"],
            "image": [None, "a.jpg"],
            "images": [["a.jpg", "b.jpg"], None],
        }
    )
    parquet = tmp_path / "posts.parquet"
    pq.write_table(table, parquet)
    assert main(["predict", "--model", model, "--input", str(parquet)]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r.get("image_statuses") for r in records] == [["ok", "ok"], None]
    assert [r["image_status"] for r in records] == ["ok", "ok"]


# --- the MNER-MI reader ---------------------------------------------------------------------


def _mnermi_line(**record) -> str:
    import json

    base = {
        "id": "7",
        "text": ["George", "visited", "Paris"],
        "images": ["0.jpg", "3.jpg"],
        "label": ["B-PER", "O", "B-LOC"],
        "url": "https://example.org/7",
    }
    base.update(record)
    return json.dumps({k: v for k, v in base.items() if v is not ...}) + "\n"


def test_the_mnermi_reader_keeps_labels_and_images(tmp_path: Path) -> None:
    from smner.data.mnermi import read_corpus, read_mnermi
    from smner.data.types import Entity

    path = tmp_path / "train.jsonl"
    path.write_text(
        _mnermi_line()
        + "\n"
        + _mnermi_line(id=8, text=["Apple", "news"], label=["B-MIS", "O"], images=[])
    )
    corpus = read_mnermi(path, {"MIS": "MISC"})
    first, second = corpus.examples
    assert first.post_id == "7" and first.line == 1
    assert first.image_ids == ["0.jpg", "3.jpg"] and first.image_id == "0.jpg"
    assert first.entities == [Entity(0, 1, "PER"), Entity(2, 3, "LOC")]
    assert second.post_id == "8" and second.line == 3 and second.image_id is None
    assert second.tags == ["B-MIS", "O"]  # the file's own labels
    assert second.entities == [Entity(0, 1, "MISC")]  # through data.label_aliases
    assert corpus.labels == ["LOC", "MISC", "PER"]
    assert read_corpus(path).examples[1].entities == [Entity(0, 1, "MIS")]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("not json\n", "not valid JSON"),
        ("[1, 2]\n", "expected an object"),
        (_mnermi_line(text=[]), '"text" must be a non-empty list'),
        (_mnermi_line(label=["B-PER", "O"]), "one BIO tag per token \\(3 tokens, 2 tags\\)"),
        (_mnermi_line(label=["B-PER", "X", "O"]), "invalid tag 'X' at token 1"),
        (_mnermi_line(images="0.jpg"), '"images" must be a list'),
        (_mnermi_line(images=["../secret.jpg"]), "path separator"),
    ],
)
def test_a_bad_mnermi_record_names_its_line(tmp_path: Path, line: str, message: str) -> None:
    from smner.data.mnermi import read_mnermi
    from smner.errors import DataFormatError

    path = tmp_path / "bad.jsonl"
    path.write_text(_mnermi_line() + line)
    with pytest.raises(DataFormatError, match=rf"bad.jsonl:2: .*{message}"):
        read_mnermi(path)


def test_evaluate_reads_mnermi_files(tiny_model_dir: Path, post_images: Path, tmp_path: Path):
    from smner.evaluation.evaluate import evaluate_saved_model

    path = tmp_path / "test.jsonl"
    path.write_text(_mnermi_line() + _mnermi_line(id="9", images=["1.jpg"]))
    result = evaluate_saved_model(tiny_model_dir, path, post_images)
    assert len(result.corpus) == 2 and len(result.predictions) == 2
    assert [ex.image_ids for ex in result.corpus] == [["0.jpg", "3.jpg"], ["1.jpg"]]
    assert result.image_summary == "images: 3 loaded"  # every image of each post


def test_training_reads_mnermi_files(tmp_path: Path) -> None:
    from smner.config.experiment import DataConfig, ExperimentConfig
    from smner.training.data import read_training_data

    train, dev = tmp_path / "train.jsonl", tmp_path / "dev.jsonl"
    train.write_text(_mnermi_line() + _mnermi_line(id="8", label=["B-MIS", "O", "O"]))
    dev.write_text(_mnermi_line(id="9"))
    config = ExperimentConfig(
        data=DataConfig(train_file=str(train), dev_file=str(dev), label_aliases={"MIS": "MISC"})
    )
    examples, held = read_training_data(config)
    assert [e.post_id for e in examples] == ["7", "8"] and held[0].post_id == "9"
    assert examples[1].entities[0].type == "MISC"


def test_evaluation_gives_a_many_image_model_every_image(
    eager_model_dir: Path, post_images: Path, tmp_path: Path
) -> None:
    from smner.evaluation.evaluate import evaluate_saved_model

    path = tmp_path / "test.jsonl"
    path.write_text(
        _mnermi_line(images=["0.jpg", "gone.jpg", "3.jpg", "1.jpg"])  # one past max_images
        + _mnermi_line(id="9", images=["1.jpg"])
        + _mnermi_line(id="10", images=[])
    )
    result = evaluate_saved_model(eager_model_dir, path, post_images)
    assert "missing" in result.image_summary
    first, second, third = result.predictions
    assert first and {p.image_index for p in first} <= {0, 2}  # never the missing image
    assert {p.image_index for p in second} == {0}
    assert all(p.image_index is None for p in third)


def test_a_one_image_model_sees_only_the_first_image(encoders, post_images: Path) -> None:
    from smner.data.images import ImageStore
    from smner.data.types import Example
    from smner.predict.image_input import ImageProvider

    examples = [
        Example(["a"], image_id="0.jpg", image_ids=["0.jpg", "3.jpg"]),
        Example(["b"], image_id="1.jpg"),
        Example(["c"]),
    ]
    one, processor = tiny_model(encoders, max_images=1)
    given = ImageProvider(one, processor, examples, ImageStore(post_images))([0, 1, 2])
    assert isinstance(given[0], ImageInput) and isinstance(given[1], ImageInput)
    assert given[2] is None
    two, processor = tiny_model(encoders, max_images=2, train_image_encoder=True)
    given = ImageProvider(two, processor, examples, ImageStore(post_images))([0, 1, 2])
    assert isinstance(given[0], list) and len(given[0]) == 2
    assert all(slot.pixels is not None for slot in given[0])
    assert isinstance(given[1], ImageInput) and given[2] is None
    batch = processor([ex.tokens for ex in examples], None, given)
    assert batch.image_mask.tolist() == [[True, True], [True, False], [False, False]]


@pytest.mark.integration
def test_smner_train_learns_from_an_mnermi_file(tmp_path: Path) -> None:
    """smner train on MNER-MI JSONL (several images a post, one missing, MIS mapped to MISC),
    with the box-free localisation losses on; the model saved takes that many images."""
    import json

    import yaml

    from smner.cli import main
    from smner.data.spans import entities_to_bio
    from smner.predict.predictor import Predictor
    from tests.pipeline_fixture import write_corpus

    corpus = write_corpus(tmp_path)
    lines = []
    for example, picture in fixture_posts():
        images = [f"{example.image_id}.jpg", "3.jpg"] if picture is not None else ["gone.jpg"]
        tags = entities_to_bio(example.entities, len(example.tokens))
        tags = [t.replace("ORG", "MIS") for t in tags]  # the file's own type name
        record = {"id": example.post_id, "text": example.tokens, "images": images, "label": tags}
        lines.append(json.dumps(record) + "\n")
    (tmp_path / "train.jsonl").write_text("".join(lines * 3))
    (tmp_path / "dev.jsonl").write_text("".join(lines))
    config = yaml.safe_load(corpus["config"].read_text())
    config["data"].update(
        train_file=str(tmp_path / "train.jsonl"),
        dev_file=str(tmp_path / "dev.jsonl"),
        label_aliases={"MIS": "ORG"},
    )
    config["model"].update(max_images=2, region_types=1.0, region_attention=1.0)
    config["train"]["epochs"] = 2
    corpus["config"].write_text(yaml.safe_dump(config))
    run = tmp_path / "run"
    assert main(["train", "--config", str(corpus["config"]), "--output", str(run)]) == 0
    predictor = Predictor.from_pretrained(run / "best")
    assert predictor.model.config.max_images == 2
    assert sorted(predictor.model.config.labels) == ["LOC", "ORG", "PER"]
    found = predictor.predict(
        "George visited Paris", images=[corpus["images"] / "0.jpg", corpus["images"] / "3.jpg"]
    )
    assert found.image_statuses == ["ok", "ok"]
    assert all(m.image_index in (0, 1) for m in found.entities)


def test_a_model_learns_which_image_holds_the_cue(encoders) -> None:
    """Types alone (the box-free localisation losses), two images a post, one gray and one
    whose colour goes with the type: each entity is grounded in the coloured image, whichever
    slot it is in."""
    from smner.data.types import Entity
    from tests.tiny import train_steps

    model, processor = tiny_model(encoders, max_images=2, region_types=1.0, region_attention=1.0)

    def features(rgb: tuple[int, int, int]) -> ImageInput:
        with torch.no_grad():
            found = model.image(model.image.preprocessing([solid_image(rgb)]))
        return ImageInput(pooled=found.pooled[0], regions=found.regions[0])

    gray, red, blue = features((128, 128, 128)), features((220, 30, 30)), features((30, 30, 220))
    tokens = [["George", "visited", "Paris"], ["Paris", "loves", "George"]] * 2
    entities = [
        [Entity(0, 1, "PER"), Entity(2, 3, "LOC")],
        [Entity(0, 1, "LOC"), Entity(2, 3, "PER")],
    ]
    slots = [[gray, red], [gray, blue], [blue, gray], [red, gray]]
    batch = processor(tokens, entities * 2, slots)
    train_steps(model, batch, 80, 3e-3)
    found = model.predict(batch)
    assert [[p.image_index for p in post] for post in found] == [[1, 1], [1, 1], [0, 0], [0, 0]]
    assert all(float(p.attention.sum()) > 0.9 for post in found for p in post)


def test_an_exported_many_image_model_takes_one_image_a_post(
    eager_model_dir: Path, post_images: Path, tmp_path: Path
) -> None:
    """The ONNX graph of a model of several image slots is traced with one image a post: it
    predicts one-image posts as PyTorch does, and refuses a post of several in one line."""
    pytest.importorskip("onnxruntime")
    from smner.predict.onnx_export import export_onnx
    from smner.predict.predictor import Predictor

    export_onnx(eager_model_dir, tmp_path / "onnx")
    onnx = Predictor.from_pretrained(tmp_path / "onnx")
    assert onnx.backend == "onnx"
    torch_side = Predictor.from_pretrained(eager_model_dir)
    image = post_images / "0.jpg"
    got = onnx.predict("George visited Paris", image=image)
    expected = torch_side.predict("George visited Paris", image=image)
    assert [(m.text, m.type) for m in got.entities] == [(m.text, m.type) for m in expected.entities]
    with pytest.raises(SmnerError, match="ONNX backend takes one image a post"):
        onnx.predict("George visited Paris", images=[image, image])


def test_the_conll_format_names_several_images_on_the_imgid_line(tmp_path: Path) -> None:
    from smner.data.conll import format_conll, parse_conll
    from smner.data.mnermi import read_corpus
    from smner.errors import DataFormatError

    text = "IMGID:1 7.jpg 9\nGeorge\tB-PER\nvisited\tO\n\nIMGID:2\nParis\tB-LOC\n"
    corpus = parse_conll(text, "data.txt")
    several, one = corpus.examples
    assert several.image_ids == ["1", "7.jpg", "9"] and several.image_id == "1"
    assert several.post_id == "1"
    assert one.image_ids is None and one.image_id == "2"
    assert format_conll(corpus.examples, final_blank_line=False) == text  # round-trips
    with pytest.raises(DataFormatError, match=r"data.txt:1: .*path separator"):
        parse_conll("IMGID:1 ../2\nGeorge\tB-PER\n", "data.txt")
    path = tmp_path / "train.txt"
    path.write_text(text)
    assert read_corpus(path).examples[0].image_ids == ["1", "7.jpg", "9"]


def test_data_stats_and_score_read_mnermi_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from smner.cli import main

    gold = tmp_path / "gold.jsonl"
    gold.write_text(_mnermi_line() + _mnermi_line(id="8", label=["B-MIS", "O", "O"]))
    assert main(["data", "stats", str(gold), "--json", "--label-alias", "MIS=MISC"]) == 0
    stats = json.loads(capsys.readouterr().out)[0]
    assert stats["posts"] == 2 and stats["posts_with_image_id"] == 2
    pred = tmp_path / "pred.txt"
    pred.write_text(
        "IMGID:0.jpg 3.jpg\nGeorge\tB-PER\nvisited\tO\nParis\tO\n\n"
        "IMGID:0.jpg\nGeorge\tB-MIS\nvisited\tO\nParis\tO\n"
    )
    assert main(["score", "--gold", str(gold), "--pred", str(pred), "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert (scores["precision"], scores["recall"], scores["support"]) == (1.0, 2 / 3, 3)
    assert set(scores["per_type"]) == {"LOC", "MIS", "PER"}


def _oracle(examples, boxes, store, preprocessing, grid, wrong_image: bool):
    """Each gold entity predicted with its attention peaked on its box, in its own image (or,
    with ``wrong_image``, said to be in the next one)."""
    import numpy as np

    from smner.evaluation.pointing import cell_box
    from smner.model.base import PredictedEntity

    predictions = []
    for example in examples:
        post = []
        for index, image_id in enumerate(example.image_ids or []):
            for entity, own in boxes.get(image_id, {}).items():
                picture, _ = store.load(image_id, count=False)
                crop = preprocessing.crop_box(*picture.size)
                x0, y0, x1, y1 = own[0]
                cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
                attention = np.full(grid, 0.01)
                for row in range(grid[0]):
                    for col in range(grid[1]):
                        a, b, c, d = cell_box(row, col, grid, crop)
                        if a <= cx < c and b <= cy < d:
                            attention[row, col] = 1.0
                item = PredictedEntity(entity, 0.9, attention=attention, global_attention=0.0)
                item.image_index = (index + 1) % len(example.image_ids) if wrong_image else index
                post.append(item)
        predictions.append(post)
    return predictions


def test_a_generated_corpus_of_three_images_a_post_scores_which_image(tmp_path: Path) -> None:
    from smner.data.conll import read_conll
    from smner.data.images import ImageStore
    from smner.encoders.preprocessing import ImagePreprocessing
    from smner.evaluation.pointing import load_entity_boxes, score_alignment
    from smner.synth.corpus import generate_corpus

    generate_corpus(tmp_path, posts=40, seed=4, image_size=96, images_per_post=3)
    examples = read_conll(tmp_path / "train.txt").examples
    assert all(len(ex.image_ids) == 3 for ex in examples)
    store, preprocessing = ImageStore(tmp_path / "images"), ImagePreprocessing(size=96, resize=96)
    for source in (tmp_path / "meta.jsonl", tmp_path / "boxes"):
        boxes = load_entity_boxes(source, examples)
        located = sum(len(boxes.get(i, {})) for ex in examples for i in ex.image_ids)
        assert located == sum(len(ex.entities) for ex in examples) > 10
        right = _oracle(examples, boxes, store, preprocessing, (6, 6), wrong_image=False)
        scores = score_alignment(examples, right, boxes, store, preprocessing)
        assert scores.image_chosen["value"] == 1.0 and scores.pointing["value"] == 1.0
        assert scores.image_chosen["total"] == located
        assert scores.uniform_mass < scores.mass_in_box
        wrong = _oracle(examples, boxes, store, preprocessing, (6, 6), wrong_image=True)
        scores = score_alignment(examples, wrong, boxes, store, preprocessing)
        assert scores.image_chosen["value"] == 0.0 and scores.pointing["value"] == 0.0
