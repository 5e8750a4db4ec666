"""VOC XML boxes: read, write, match to entities, and refuse what is malformed or unsafe."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from smner.data.boxes import entity_boxes, format_voc, load_box_dir, read_voc, upright_size
from smner.data.types import Entity, Example
from smner.errors import DataFormatError
from smner.evaluation.pointing import cell_coverage

VOC = """<annotation>
  <filename>42.jpg</filename>
  <size><width>400</width><height>200</height><depth>3</depth></size>
  <object><name>Kevin  Durant</name>
    <bndbox><xmin>10</xmin><ymin>20</ymin><xmax>110</xmax><ymax>180</ymax></bndbox></object>
  <object><name>kevin durant</name>
    <bndbox><xmin>200</xmin><ymin>20</ymin><xmax>260</xmax><ymax>90</ymax></bndbox></object>
  <object><name>Warriors</name>
    <bndbox><xmin>300</xmin><ymin>0</ymin><xmax>400</xmax><ymax>200</ymax></bndbox></object>
</annotation>
"""


def write(tmp_path: Path, text: str, name: str = "42.xml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_reads_boxes_by_name_with_several_per_entity(tmp_path: Path) -> None:
    voc = read_voc(write(tmp_path, VOC))
    assert voc.size == (400, 200)
    assert voc.boxes == {
        "kevin durant": [(10, 20, 110, 180), (200, 20, 260, 90)],
        "warriors": [(300, 0, 400, 200)],
    }
    example = Example(
        tokens=["Kevin", "Durant", "joins", "the", "Warriors", "and", "Paris"],
        image_id="42",
        entities=[Entity(0, 2, "PER"), Entity(4, 5, "ORG"), Entity(6, 7, "LOC")],
    )
    found = entity_boxes(example, voc)
    assert found[Entity(0, 2, "PER")] == [(10, 20, 110, 180), (200, 20, 260, 90)]
    assert Entity(6, 7, "LOC") not in found  # not in the image: ungroundable
    assert load_box_dir(tmp_path, [example]) == {"42": found}


def test_written_files_read_back(tmp_path: Path) -> None:
    text = format_voc("7", (64, 48), [("Arlo Venn", (1, 2, 30, 40)), ("Ines", (0, 0, 64, 48))])
    voc = read_voc(write(tmp_path, text, "7.xml"))
    assert voc.size == (64, 48)
    assert voc.boxes == {"arlo venn": [(1, 2, 30, 40)], "ines": [(0, 0, 64, 48)]}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("<annotation><object>", r"42.xml:1: not well-formed XML"),
        ("<notvoc/>", r"expected <annotation>"),
        (
            "<annotation><object><bndbox><xmin>0</xmin><ymin>0</ymin><xmax>1</xmax><ymax>1</ymax>"
            "</bndbox></object></annotation>",
            r"<object> 1: missing <name>",
        ),
        ("<annotation><object><name>a</name></object></annotation>", r"missing <bndbox>"),
        (
            "<annotation><object><name>a</name><bndbox><xmin>5</xmin><ymin>0</ymin>"
            "<xmax>2</xmax><ymax>4</ymax></bndbox></object></annotation>",
            r"has no area",
        ),
        (
            "<annotation><size><width>10</width><height>10</height></size><object><name>a</name>"
            "<bndbox><xmin>0</xmin><ymin>0</ymin><xmax>11</xmax><ymax>4</ymax></bndbox></object>"
            "</annotation>",
            r"lies outside the image",
        ),
        (
            "<annotation><object><name>a</name><bndbox><xmin>-3</xmin><ymin>0</ymin>"
            "<xmax>2</xmax><ymax>4</ymax></bndbox></object></annotation>",
            r"lies outside the image",
        ),
        (
            "<annotation><object><name>a</name><bndbox><xmin>x</xmin><ymin>0</ymin>"
            "<xmax>2</xmax><ymax>4</ymax></bndbox></object></annotation>",
            r"<xmin> must be a number, got 'x'",
        ),
        (
            "<annotation><size><width>0</width><height>10</height></size></annotation>",
            r"is not an image size",
        ),
    ],
)
def test_malformed_files_are_refused_naming_file_and_element(
    tmp_path: Path, body: str, message: str
) -> None:
    with pytest.raises(DataFormatError, match=message):
        read_voc(write(tmp_path, body))


def test_entity_expansion_and_external_entities_are_refused(tmp_path: Path) -> None:
    laughs = (
        '<?xml version="1.0"?><!DOCTYPE a [<!ENTITY l "lol"><!ENTITY l2 "&l;&l;&l;&l;">]>'
        "<annotation><object><name>&l2;</name></object></annotation>"
    )
    with pytest.raises(DataFormatError, match="refused unsafe XML"):
        read_voc(write(tmp_path, laughs))
    secret = tmp_path / "secret.txt"
    secret.write_text("do not read")
    external = (
        f'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x SYSTEM "file://{secret}">]>'
        "<annotation><object><name>&x;</name></object></annotation>"
    )
    with pytest.raises(DataFormatError, match="refused unsafe XML"):
        read_voc(write(tmp_path, external))


def test_a_missing_box_folder_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match="box folder not found"):
        load_box_dir(tmp_path / "nope", [])


def test_upright_size_follows_exif_rotation(tmp_path: Path) -> None:
    from PIL import Image

    image = Image.new("RGB", (40, 20))
    exif = image.getexif()
    exif[0x0112] = 6  # rotated 90 degrees: shown as 20 x 40
    image.save(tmp_path / "r.jpg", exif=exif)
    image.save(tmp_path / "p.jpg")
    assert upright_size(tmp_path / "r.jpg") == (20, 40)
    assert upright_size(tmp_path / "p.jpg") == (40, 20)
    assert upright_size(tmp_path / "missing.jpg") is None


def test_cell_coverage_is_the_target_attention() -> None:
    crop = (0.0, 0.0, 100.0, 100.0)
    # a box over the left half of a 2 x 2 grid: two cells, half each
    target = cell_coverage([(0, 0, 50, 100)], crop, (2, 2))
    assert target is not None
    np.testing.assert_allclose(target, [0.5, 0.0, 0.5, 0.0])
    # two boxes: the union's coverage, by cell
    target = cell_coverage([(0, 0, 50, 50), (50, 50, 100, 100)], crop, (2, 2))
    np.testing.assert_allclose(target, [0.5, 0.0, 0.0, 0.5])
    # a quarter of one cell covered still points there
    target = cell_coverage([(0, 0, 25, 25)], crop, (2, 2))
    np.testing.assert_allclose(target, [1.0, 0.0, 0.0, 0.0])
    assert cell_coverage([(200, 200, 300, 300)], crop, (2, 2)) is None  # outside the crop


def test_data_stats_counts_groundable_entities(tmp_path: Path, capsys) -> None:
    import json

    from smner.cli import main
    from smner.synth.corpus import generate_corpus

    generate_corpus(tmp_path / "c", posts=40, seed=0, noise=0.25, image_size=64)
    meta = [json.loads(line) for line in (tmp_path / "c" / "meta.jsonl").read_text().splitlines()]
    test = [m for m in meta if m["split"] == "test"]
    expected = sum(len(m["entities"]) for m in test if not m["noisy"])
    argv = ["data", "stats", str(tmp_path / "c" / "test.txt"), "--boxes", str(tmp_path / "c")]
    argv[-1] += "/boxes"
    assert main([*argv, "--json"]) == 0
    boxes = json.loads(capsys.readouterr().out)[0]["boxes"]
    assert boxes["groundable_entities"] == expected
    assert boxes["posts_with_box_file"] == len(test)
    total = sum(len(m["entities"]) for m in test)
    assert boxes["boxes_per_entity"] == {
        k: v for k, v in {"0": total - expected, "1": expected}.items() if v
    }
    assert main(argv) == 0
    assert "groundable entities" in capsys.readouterr().out
