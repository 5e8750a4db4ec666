"""Where each entity is in its image: Pascal VOC XML boxes, one file per image.

The layout of grounded-NER data (Twitter-GMNER) and of ``smner synth``'s ``boxes/`` folder:
``<image id>.xml`` holds ``<object>`` elements whose ``<name>`` is the entity's text and whose
``<bndbox>`` gives ``xmin, ymin, xmax, ymax`` in pixels of the upright image. An entity may have
several boxes; one with none is not in the image. XML is parsed with ``defusedxml``: no entity
expansion, no external entities, no DTD fetching.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from defusedxml import ElementTree as SafeElementTree
from defusedxml.common import DefusedXmlException
from PIL import Image

from smner.data.types import Entity, Example
from smner.errors import DataFormatError

#: (x0, y0, x1, y1) in pixels of the upright image
Box = tuple[float, float, float, float]
#: gold boxes of a post's entities; an entity not in the map has none
EntityBoxes = dict[Entity, list[Box]]

#: XML files larger than this are refused (a box file holds a few objects)
MAX_XML_BYTES = 1 << 20
_SPACES = re.compile(r"\s+")
_EXIF_ORIENTATION = 0x0112


@dataclass(frozen=True)
class ImageBoxes:
    """The objects of one VOC file: boxes by normalised name, and the declared image size."""

    boxes: dict[str, list[Box]]
    size: tuple[int, int] | None


def normalise_name(text: str) -> str:
    """How an object's name is matched to an entity's text: case and spacing do not matter."""
    return _SPACES.sub(" ", text).strip().casefold()


def _number(element: ElementTree.Element, tag: str, path: Path, where: str) -> float:
    child = element.find(tag)
    if child is None or child.text is None:
        raise DataFormatError(path, None, f"{where}: missing <{tag}>")
    try:
        value = float(child.text.strip())
    except ValueError:
        raise DataFormatError(
            path, None, f"{where}: <{tag}> must be a number, got {child.text.strip()!r}"
        ) from None
    if value != value or value in (float("inf"), float("-inf")):
        raise DataFormatError(path, None, f"{where}: <{tag}> must be finite")
    return value


def read_voc(path: str | Path) -> ImageBoxes:
    """Parse one VOC file; refuse anything malformed with the file and the element."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_XML_BYTES:
            raise DataFormatError(path, None, f"larger than {MAX_XML_BYTES} bytes")
        root = SafeElementTree.parse(str(path)).getroot()
    except ElementTree.ParseError as exc:
        line = exc.position[0] if getattr(exc, "position", None) else None
        raise DataFormatError(path, line, f"not well-formed XML ({exc})") from None
    except DefusedXmlException as exc:
        raise DataFormatError(path, None, f"refused unsafe XML ({type(exc).__name__})") from None
    except OSError as exc:
        raise DataFormatError(path, None, f"cannot read ({exc.strerror or exc})") from None
    if root.tag != "annotation":
        raise DataFormatError(path, None, f"expected <annotation>, found <{root.tag}>")
    size = None
    size_element = root.find("size")
    if size_element is not None:
        width = _number(size_element, "width", path, "<size>")
        height = _number(size_element, "height", path, "<size>")
        if width <= 0 or height <= 0:
            raise DataFormatError(path, None, f"<size>: {width} x {height} is not an image size")
        size = (int(width), int(height))
    boxes: dict[str, list[Box]] = {}
    for number, obj in enumerate(root.iter("object"), start=1):
        where = f"<object> {number}"
        name_element = obj.find("name")
        if name_element is None or not (name_element.text or "").strip():
            raise DataFormatError(path, None, f"{where}: missing <name>")
        box_element = obj.find("bndbox")
        if box_element is None:
            raise DataFormatError(path, None, f"{where}: missing <bndbox>")
        x0, y0, x1, y1 = (
            _number(box_element, tag, path, where) for tag in ("xmin", "ymin", "xmax", "ymax")
        )
        if x1 <= x0 or y1 <= y0:
            raise DataFormatError(
                path, None, f"{where}: box ({x0}, {y0}, {x1}, {y1}) has no area (max <= min)"
            )
        if x0 < 0 or y0 < 0 or (size and (x1 > size[0] or y1 > size[1])):
            raise DataFormatError(
                path, None, f"{where}: box ({x0}, {y0}, {x1}, {y1}) lies outside the image"
            )
        boxes.setdefault(normalise_name(name_element.text or ""), []).append((x0, y0, x1, y1))
    return ImageBoxes(boxes, size)


def upright_size(path: Path | None) -> tuple[int, int] | None:
    """Width and height of an image as shown (EXIF rotation applied), from its header only;
    None when it cannot be read (such an image is "no image" to the model too)."""
    if path is None:
        return None
    try:
        with Image.open(path) as image:
            width, height = image.size
            orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def format_voc(image_id: str, size: tuple[int, int], objects: Iterable[tuple[str, Box]]) -> str:
    """A VOC annotation for ``(name, box)`` objects (the layout :func:`read_voc` reads)."""
    root = ElementTree.Element("annotation")
    ElementTree.SubElement(root, "filename").text = f"{image_id}.jpg"
    size_element = ElementTree.SubElement(root, "size")
    for tag, value in zip(("width", "height", "depth"), (*size, 3), strict=True):
        ElementTree.SubElement(size_element, tag).text = str(value)
    for name, box in objects:
        obj = ElementTree.SubElement(root, "object")
        ElementTree.SubElement(obj, "name").text = name
        bndbox = ElementTree.SubElement(obj, "bndbox")
        for tag, value in zip(("xmin", "ymin", "xmax", "ymax"), box, strict=True):
            ElementTree.SubElement(bndbox, tag).text = f"{value:g}"
    ElementTree.indent(root)
    return ElementTree.tostring(root, encoding="unicode") + "\n"


def entity_boxes(example: Example, image: ImageBoxes) -> EntityBoxes:
    """Each gold entity's boxes: the objects named by its text."""
    found: EntityBoxes = {}
    for entity in example.entities:
        name = normalise_name(" ".join(example.tokens[entity.start : entity.end]))
        if name in image.boxes:
            found[entity] = list(image.boxes[name])
    return found


def load_box_dir(box_dir: str | Path, examples: Sequence[Example]) -> dict[str, EntityBoxes]:
    """Entity boxes of every post whose image has a box file, by image id (each image of a
    post with several: an entity's boxes are in the file of the image that shows it)."""
    folder = Path(box_dir)
    if not folder.is_dir():
        raise DataFormatError(folder, None, "box folder not found (expected <image id>.xml files)")
    boxes: dict[str, EntityBoxes] = {}
    for example in examples:
        several = example.image_ids if example.image_ids else [example.image_id]
        for image_id in several:
            if image_id is None or image_id in boxes:
                continue
            path = folder / f"{image_id}.xml"
            if path.is_file():
                boxes[image_id] = entity_boxes(example, read_voc(path))
    return boxes


def box_to_pixels(box_in_crop: Sequence[float], crop: Box, size: tuple[int, int]) -> Box:
    """A box given in ``[0, 1]`` coordinates of the crop the model saw, in pixels of the
    image (``size`` = width, height), clipped to the image. Coordinates below 0 or above 1 reach
    past the crop, where the model sees nothing but an object may go on."""
    x0, y0, x1, y1 = crop
    width, height = size
    u0, v0, u1, v1 = box_in_crop
    return (
        min(max(x0 + u0 * (x1 - x0), 0.0), width),
        min(max(y0 + v0 * (y1 - y0), 0.0), height),
        min(max(x0 + u1 * (x1 - x0), 0.0), width),
        min(max(y0 + v1 * (y1 - y0), 0.0), height),
    )


def box_to_crop(box: Box, crop: Box) -> tuple[float, float, float, float]:
    """The inverse of :func:`box_to_pixels`: a pixel box in ``[0, 1]`` crop coordinates (not
    clipped: a box reaching past the crop keeps its true extent)."""
    x0, y0, x1, y1 = crop
    width, height = x1 - x0, y1 - y0
    return ((box[0] - x0) / width, (box[1] - y0) / height, (box[2] - x0) / width,
            (box[3] - y0) / height)  # fmt: skip
