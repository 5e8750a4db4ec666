"""smner as a spaCy component: the factory found through the entry point, entities on
``doc.ents`` aligned to spaCy's tokens, the extensions, ``nlp.pipe`` in batches, serialisation,
and the message without spaCy."""

from __future__ import annotations

import importlib
import subprocess
import sys
import warnings
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest

spacy = pytest.importorskip("spacy")

from spacy.tokens import Span  # noqa: E402

from smner.data.images import ImageStatus  # noqa: E402
from smner.data.predictions import Mention, PostPrediction  # noqa: E402
from smner.errors import MissingExtra  # noqa: E402
from smner.integrations.spacy import (  # noqa: E402
    SmnerComponent,
    SmnerSpacyWarning,
    doc_post,
    set_annotations,
    set_entities,
)

REPO = Path(__file__).resolve().parents[1]
TEXTS = [
    "George visited Paris today",
    "RT @george : Apple store in New York",
    "loves New York with George",
    "the Paris of Apple is great",
    "Apple",
    "George and George visited New York and Paris with Apple today",
    "New York",
    "Paris is great",
    "RT @george : George loves Apple",
    "the store in Paris",
]


@pytest.fixture
def nlp(tiny_model_dir: Path) -> Any:
    nlp = spacy.blank("en")
    nlp.add_pipe("smner", config={"model": str(tiny_model_dir), "batch_size": 4})
    return nlp


def mention(text: str, part: str, type_: str = "PER", occurrence: int = 0, **kw: Any) -> Mention:
    """A hand-made Mention of the ``occurrence``-th ``part`` of ``text``."""
    start = -1
    for _ in range(occurrence + 1):
        start = text.index(part, start + 1)
    return Mention(part, type_, 0, 1, start, start + len(part), kw.pop("score", 0.9), **kw)


def ents(doc: Any) -> list[tuple[int, int, str, float | None]]:
    return [(e.start_char, e.end_char, e.label_, e._.smner_score) for e in doc.ents]


def close(found: list[Any]) -> list[Any]:
    """``found`` (lists of :func:`ents`) with scores compared to 1e-5: a post padded in a batch
    differs from one predicted alone in float32 rounding."""
    if found and isinstance(found[0], list):
        return [close(item) for item in found]
    return [(*e[:3], pytest.approx(e[3], abs=1e-5)) for e in found]


# --- the factory ------------------------------------------------------------------------------


def test_add_pipe_by_name_goes_through_the_entry_point(tiny_model_dir: Path) -> None:
    """A fresh interpreter finds the factory by its name alone: smner's own import does not
    bring in spaCy, spaCy loads this module from the entry point, and the doc and span
    attributes come with the component, not with the import."""
    (found,) = [ep for ep in entry_points(group="spacy_factories") if ep.name == "smner"]
    assert found.value == "smner.integrations.spacy:make_smner"
    script = (
        "import sys, smner\n"
        "smner.Predictor\n"
        "print('spacy' in sys.modules)\n"
        "import spacy\n"
        "print('smner.integrations.spacy' in sys.modules)\n"
        "nlp = spacy.blank('en')\n"
        "from spacy.tokens import Doc\n"
        "print('smner.integrations.spacy' in sys.modules, Doc.has_extension('images'))\n"
        f"nlp.add_pipe('smner', config={{'model': {str(tiny_model_dir)!r}}})\n"
        "doc = nlp('George visited Paris today')\n"
        "print(nlp.pipe_names, doc._.smner_image_status, len(doc.ents) > 0)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=REPO
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "False",  # import smner: no spaCy
        "False",  # import spacy: not yet smner's component
        "True False",  # a pipeline: spaCy loads every factory, which adds no attribute yet
        "['smner'] no image True",
    ]


def test_the_component_sets_the_predictors_entities_on_spacy_tokens(
    nlp: Any, tiny_predictor: Any
) -> None:
    text = "RT @george : Apple store in New York"
    doc = nlp(text)
    expected = tiny_predictor.predict(text).entities
    assert expected  # the untrained tiny model finds some
    assert ents(doc) == close([(m.char_start, m.char_end, m.type, m.score) for m in expected])
    assert [e.text for e in doc.ents] == [m.text for m in expected]
    assert all(isinstance(e._.smner_score, float) for e in doc.ents)
    assert nlp.get_pipe("smner").labels == tuple(tiny_predictor.processor.config.labels)


def test_a_trained_pipeline_config_with_other_components(tiny_model_dir: Path) -> None:
    """smner after other components (here a sentencizer); its config is what was given."""
    nlp = spacy.blank("en")
    nlp.add_pipe("sentencizer")
    nlp.add_pipe("smner", config={"model": str(tiny_model_dir), "alignment_mode": "contract"})
    assert nlp.pipe_names == ["sentencizer", "smner"]
    assert nlp.config["components"]["smner"]["model"] == str(tiny_model_dir)
    doc = nlp("George visited Paris today. Apple store in New York.")
    assert len(list(doc.sents)) == 2 and doc.ents
    with pytest.raises(ValueError, match="alignment_mode"):
        nlp.add_pipe("smner", name="other", config={"model": "x", "alignment_mode": "fuzzy"})


# --- alignment (hand-made mentions: what the model predicts does not matter here) -----------


def test_character_offsets_become_token_spans() -> None:
    nlp = spacy.blank("en")
    text = "RT @george_w: loving #Paris today!! L.A. rocks"
    doc = nlp.make_doc(text)
    placed = set_entities(
        doc,
        [
            mention(text, "Paris", "LOC", score=0.5),  # spaCy splits '#' 'Paris': exact
            mention(text, "@george_w", "PER"),  # one token in both
            mention(text, "L.A", "LOC"),  # ends inside spaCy's 'L.A.': expanded
        ],
    )
    assert [(e.text, e.label_, e.start_char, e.end_char) for e in doc.ents] == [
        ("@george_w", "PER", 3, 12),
        ("Paris", "LOC", 22, 27),
        ("L.A.", "LOC", 36, 40),
    ]
    assert [s.text for s in placed] == ["@george_w", "Paris", "L.A."]
    assert doc.ents[1]._.smner_score == 0.5


def test_an_entity_that_does_not_align_warns_and_is_skipped() -> None:
    nlp = spacy.blank("en")
    text = "RT @george_w: loving #Paris today!! L.A. rocks"
    doc = nlp.make_doc(text)
    good = mention(text, "Paris", "LOC")
    inside = mention(text, "L.A", "LOC")  # no whole token inside it
    wrong_text = Mention("Rome", "LOC", 0, 1, 22, 27, 0.9)  # offsets of another text
    beyond = Mention("x", "LOC", 0, 1, 500, 501, 0.9)
    with pytest.warns(SmnerSpacyWarning, match="left out of doc.ents") as caught:
        placed = set_entities(doc, [good, inside, wrong_text, beyond], alignment_mode="contract")
    messages = [str(w.message) for w in caught]
    assert len(messages) == 3
    assert "'Rome'" in messages[0] and "do not hold its text" in messages[0]
    assert "'L.A'" in messages[1] and "does not align to the doc's tokens" in messages[1]
    assert "'x'" in messages[2] and "do not hold its text" in messages[2]
    assert [s.text for s in placed] == ["Paris"]
    assert [e.text for e in doc.ents] == ["Paris"]
    # strict: an end inside a token is never moved
    doc = nlp.make_doc(text)
    with pytest.warns(SmnerSpacyWarning, match="does not align"):
        assert set_entities(doc, [inside], alignment_mode="strict") == []
    with pytest.raises(ValueError, match="alignment_mode"):
        set_entities(doc, [], alignment_mode="fuzzy")


def test_two_entities_in_one_spacy_token_keep_the_first() -> None:
    """The tweet tokenizer splits 'L.A.' into four words, spaCy keeps it whole: the untrained
    tiny model calls 'L.A' one entity and '.' another, which expand to the same token."""
    nlp = spacy.blank("en")
    text = "in L.A. now"
    doc = nlp.make_doc(text)
    with pytest.warns(
        SmnerSpacyWarning, match=r"'\.'.*left out.*shares spaCy tokens with 'L\.A\.'"
    ):
        placed = set_entities(
            doc, [mention(text, "L.A", "LOC"), mention(text, ".", "ORG", occurrence=1)]
        )
    assert [(e.text, e.label_) for e in doc.ents] == [("L.A.", "LOC")]
    assert len(placed) == 1


@pytest.mark.parametrize("overwrite", [True, False])
def test_entities_already_on_the_doc(overwrite: bool) -> None:
    nlp = spacy.blank("en")
    text = "George Washington visited New York City today with Apple"
    doc = nlp.make_doc(text)
    doc.ents = [
        Span(doc, 0, 2, "PERSON"),  # George Washington: smner finds 'George' alone
        Span(doc, 3, 6, "GPE"),  # New York City: no smner entity there
    ]
    mentions = [mention(text, "George", "PER"), mention(text, "Apple", "ORG")]
    set_entities(doc, mentions, overwrite_ents=overwrite)
    found = [(e.text, e.label_, e._.smner_score) for e in doc.ents]
    if overwrite:  # smner's win where they overlap; the others stay
        assert found == [
            ("George", "PER", 0.9),
            ("New York City", "GPE", None),
            ("Apple", "ORG", 0.9),
        ]
    else:  # the existing ones win; smner's fill the rest
        assert found == [
            ("George Washington", "PERSON", None),
            ("New York City", "GPE", None),
            ("Apple", "ORG", 0.9),
        ]


# --- the extensions ---------------------------------------------------------------------------


def test_extensions_of_a_prediction() -> None:
    nlp = spacy.blank("en")
    text = "George visited Paris today"
    doc = nlp.make_doc(text)
    prediction = PostPrediction(
        tokens=text.split(),
        entities=[
            mention(text, "George", "PER", score=0.75, box=[1.0, 2.0, 30.5, 40.0], box_score=0.8),
            mention(text, "Paris", "LOC", score=0.5, box=None, box_score=0.1),
        ],
        image_status=ImageStatus.OK,
    )
    set_annotations(doc, prediction)
    assert doc._.smner_image_status == "ok"
    george, paris = doc.ents
    assert (george._.smner_score, george._.image_box, george._.image_index) == (
        0.75,
        [1.0, 2.0, 30.5, 40.0],
        0,
    )
    assert (paris._.smner_score, paris._.image_box, paris._.image_index) == (0.5, None, None)


def test_image_status_with_and_without_an_image(nlp: Any, post_images: Path) -> None:
    without = nlp("George visited Paris today")
    assert without._.smner_image_status == "no image"
    assert without.ents and all(e._.image_box is None for e in without.ents)  # no grounding
    assert all(e._.image_index is None for e in without.ents)

    doc = nlp.make_doc("George visited Paris today")
    doc._.images = [post_images / "0.jpg"]
    assert nlp(doc)._.smner_image_status == "ok"
    assert all(e._.image_box is None for e in doc.ents)  # the tiny model does not ground

    doc = nlp.make_doc("George visited Paris today")
    doc._.images = str(post_images / "nowhere.jpg")  # one image alone is a list of one
    assert nlp(doc)._.smner_image_status == "missing"


def test_several_images_up_to_the_models_and_a_warning_past_them(
    nlp: Any, post_images: Path
) -> None:
    docs = []
    for first in ("0.jpg", "nowhere.jpg"):
        doc = nlp.make_doc("George visited Paris today")
        doc._.images = [post_images / first, post_images / "1.jpg"]
        docs.append(doc)
    assert doc_post(docs[0]).image == post_images / "0.jpg"  # one image by default
    assert doc_post(docs[0], 4).images == [post_images / "0.jpg", post_images / "1.jpg"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", SmnerSpacyWarning)
        done = list(nlp.pipe(docs))  # the tiny model takes 4 images a post
    assert [d._.smner_image_status for d in done] == ["ok", "ok"]  # one of them is used
    assert all(e._.image_index in (0, 1) for d in done for e in d.ents if e._.image_box)
    many = [nlp.make_doc("George visited Paris today") for _ in range(2)]
    for doc in many:
        doc._.images = [post_images / "0.jpg"] * 5
    with pytest.warns(SmnerSpacyWarning, match="5 images.*takes 4.*first 4 are used") as caught:
        done = list(nlp.pipe(many))
    assert len(caught) == 1
    assert done[0]._.smner_image_status == "ok"


def test_a_bad_image_value_is_a_type_error(nlp: Any) -> None:
    doc = nlp.make_doc("George visited Paris today")
    doc._.images = [42]
    with pytest.raises(TypeError, match=r"doc\._\.images must be"):
        nlp(doc)


def test_a_doc_the_model_cannot_take_warns_and_keeps_its_entities(nlp: Any) -> None:
    long = nlp.make_doc(" ".join(["Paris"] * 300))  # more tokens than the model takes
    long.ents = [Span(long, 0, 1, "GPE")]
    empty = nlp.make_doc("   ")
    with pytest.warns(SmnerSpacyWarning, match="could not predict a doc.*300 tokens"):
        done = list(nlp.pipe([long, empty, nlp.make_doc("George visited Paris")]))
    assert [(e.text, e.label_) for e in done[0].ents] == [("Paris", "GPE")]
    assert done[0]._.smner_image_status is None and done[1]._.smner_image_status is None
    assert done[2]._.smner_image_status == "no image" and done[2].ents


# --- nlp.pipe ---------------------------------------------------------------------------------


def test_pipe_predicts_in_batches_and_equals_one_by_one(nlp: Any, monkeypatch: Any) -> None:
    component = nlp.get_pipe("smner")
    assert isinstance(component, SmnerComponent) and component.batch_size == 4
    predictor = component.predictor
    sizes: list[int] = []
    real = predictor._predict_batch

    def spy(posts: list[Any]) -> Any:
        sizes.append(len(posts))
        return real(posts)

    monkeypatch.setattr(predictor, "_predict_batch", spy)
    alone = [ents(nlp(text)) for text in TEXTS]
    assert sizes == [1] * len(TEXTS)

    sizes.clear()
    together = [ents(doc) for doc in nlp.pipe(TEXTS)]
    assert sizes == [4, 4, 2]  # the component's batch_size
    assert together == close(alone)

    sizes.clear()
    assert [ents(doc) for doc in nlp.pipe(TEXTS, batch_size=3)] == close(alone)
    assert sizes == [3, 3, 3, 1]  # spaCy's batches are read whole, then cut by the component's


def test_pipe_as_tuples_keeps_contexts(nlp: Any, post_images: Path) -> None:
    docs = []
    for i, text in enumerate(TEXTS[:3]):
        doc = nlp.make_doc(text)
        doc._.images = [post_images / f"{i}.jpg"] if i != 2 else None
        docs.append((doc, {"id": i}))
    done = list(nlp.pipe(docs, as_tuples=True))
    assert [context["id"] for _, context in done] == [0, 1, 2]
    assert [doc._.smner_image_status for doc, _ in done] == ["ok", "ok", "no image"]


# --- serialisation ----------------------------------------------------------------------------


def test_to_disk_keeps_the_model_path_as_given(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: Any
) -> None:
    monkeypatch.chdir(tiny_model_dir.parent)
    nlp = spacy.blank("en")
    nlp.add_pipe("smner", config={"model": tiny_model_dir.name, "batch_size": 8})
    before = ents(nlp("George visited Paris today"))
    nlp.to_disk(tmp_path / "pipeline")
    assert f'model = "{tiny_model_dir.name}"' in (tmp_path / "pipeline" / "config.cfg").read_text()

    loaded = spacy.load(tmp_path / "pipeline")
    component = loaded.get_pipe("smner")
    assert component.model_name == tiny_model_dir.name  # relative, as given
    assert component.batch_size == 8
    assert ents(loaded("George visited Paris today")) == close(before)

    elsewhere = {"components": {"smner": {"model": str(tiny_model_dir)}}}
    moved = spacy.load(tmp_path / "pipeline", config=elsewhere)  # as the README says
    assert moved.get_pipe("smner").model_name == str(tiny_model_dir)

    again = spacy.blank("en")
    again.add_pipe("smner", config={"model": tiny_model_dir.name})
    again.from_disk(tmp_path / "pipeline")
    assert again.get_pipe("smner").model_name == tiny_model_dir.name


# --- without spaCy ----------------------------------------------------------------------------


def test_without_spacy_the_component_names_the_extra(monkeypatch: Any) -> None:
    monkeypatch.setitem(sys.modules, "spacy", None)  # import spacy -> ImportError
    monkeypatch.delitem(sys.modules, "smner.integrations.spacy")
    with warnings.catch_warnings(), pytest.raises(MissingExtra) as caught:
        importlib.import_module("smner.integrations.spacy")
    assert "pip install 'smner[spacy]'" in str(caught.value)
    assert isinstance(caught.value, ImportError)


def test_nlp_evaluate_scores_the_entities(nlp: Any) -> None:
    from spacy.training import Example

    doc = nlp.make_doc("George visited Paris today")
    gold = Example.from_dict(doc, {"entities": [(0, 6, "PER"), (15, 20, "LOC")]})
    scores = nlp.evaluate([gold])
    # the untrained tiny model: George (PER) right, "visited Paris today" (ORG) wrong
    assert scores["ents_p"] == scores["ents_r"] == pytest.approx(0.5)
    assert scores["ents_per_type"]["PER"]["f"] == pytest.approx(1.0)
