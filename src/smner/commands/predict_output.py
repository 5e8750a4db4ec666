"""What ``smner predict`` prints besides its records: table and CoNLL renderings, the warning
lines about images, and the heatmap files."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from smner.data.images import ImageStatus
from smner.data.posts import PostInput
from smner.data.predictions import FailedPost

if TYPE_CHECKING:
    from smner.data.predictions import PostPrediction


def named_image(post: PostInput) -> str | None:
    """The image path as the input wrote it (None for no image, or bytes)."""
    if not isinstance(post.image, str | Path):
        return None
    return str(post.image)


class ImageReport:
    """Counts of the images named in the input that were not found or not usable, and the
    first of each, gathered window by window and told in one warning line each."""

    def __init__(self, source: str | None) -> None:
        self.source = source
        self.named = 0
        self.missing: list[Path] = []  # the first one only
        self.missing_count = 0
        self.unusable: list[tuple[Path, str]] = []  # the first one only
        self.unusable_count = 0

    def add(self, posts: Sequence[Any], predictions: Sequence[Any]) -> None:
        for post, prediction in zip(posts, predictions, strict=True):
            if isinstance(prediction, FailedPost) or not isinstance(post, PostInput):
                continue
            images = post.image_list()
            if images is not None and prediction.image_statuses is not None:
                # a post of several images: each named image counts on its own
                for image, status in zip(images, prediction.image_statuses, strict=True):
                    if isinstance(image, str | Path):
                        self._count(Path(str(image)), status)
                continue
            if named_image(post) is None:
                continue
            self._count(Path(str(post.image)), prediction.image_status)

    def _count(self, path: Path, status: ImageStatus) -> None:
        self.named += 1
        if status == ImageStatus.MISSING:
            self.missing_count += 1
            self.missing = self.missing or [path]
        elif status not in (ImageStatus.OK, ImageStatus.IGNORED):
            self.unusable_count += 1
            self.unusable = self.unusable or [(path, status)]

    def warn(self) -> None:
        if not self.named:
            return
        source = self.source
        stdin = source == "-"
        where = " in standard input" if stdin else (f" in {source}" if source else "")
        rule = ""
        if stdin:
            rule = f"; relative image paths are read from the working folder, {Path.cwd()}"
        elif source:
            from smner.data.records import format_of

            kind = "Parquet" if format_of(source) == "parquet" else "JSONL"
            folder = Path(source).parent.resolve()
            rule = f"; relative image paths are read from the {kind} file's folder, {folder}"
        if self.missing_count:
            print(
                f"smner: warning: {self.missing_count} of {self.named} images named{where} "
                f"were not found (first: {self.missing[0]}){rule}; those posts were "
                "predicted without an image",
                file=sys.stderr,
            )
        if self.unusable_count:
            path, status = self.unusable[0]
            print(
                f"smner: warning: {self.unusable_count} of {self.named} images named{where} "
                f"could not be used (first: {path}, {status}); those posts were predicted "
                "without an image",
                file=sys.stderr,
            )


def warn_about_images(
    posts: Sequence[PostInput], predictions: Sequence[PostPrediction], source: str | None
) -> None:
    """One warning line for images named in the input that were not found (and one for those
    found but not usable), with the count and the first path."""
    report = ImageReport(source)
    report.add(posts, predictions)
    report.warn()


def format_conll_predictions(predictions: Sequence[PostPrediction]) -> str:
    """Token<TAB>BIO tag lines, a blank line between posts, in input order."""
    from smner.data.spans import entities_to_bio
    from smner.data.types import Entity

    blocks = []
    for prediction in predictions:
        spans = [Entity(m.start, m.end, m.type) for m in prediction.entities]
        tags = entities_to_bio(spans, len(prediction.tokens))
        blocks.append(
            "".join(f"{t}\t{tag}\n" for t, tag in zip(prediction.tokens, tags, strict=True))
        )
    return "\n".join(blocks) + "\n" if blocks else ""


def format_table(predictions: Sequence[PostPrediction]) -> str:
    """One row per entity (a dash row for a post without any), columns aligned."""
    header = ("post", "entity", "type", "tokens", "score", "image")
    rows = []
    for n, prediction in enumerate(predictions, start=1):
        post_id = str(prediction.id if prediction.id is not None else n)
        if not prediction.entities:
            rows.append((post_id, "-", "-", "-", "-", prediction.image_status))
        for m in prediction.entities:
            span = f"{m.start}-{m.end}"
            rows.append((post_id, m.text, m.type, span, f"{m.score:.2f}", prediction.image_status))
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]
    return "\n".join(lines) + "\n"


def draw_post_heatmaps(
    folder: Path, post: PostInput, prediction: PostPrediction, predictor: Any
) -> None:
    """The post's heatmaps, or one line saying why none was drawn."""
    post_id = str(post.id)
    reason = None
    if not prediction.entities:
        reason = "no entities found"
    elif prediction.image_status == ImageStatus.NO_IMAGE:
        reason = "the post has no image"
    elif prediction.image_status == ImageStatus.IGNORED:
        reason = "the model is text-only"
    elif prediction.image_status != ImageStatus.OK:
        named = post.image if post.images is None else ", ".join(map(str, post.images))
        reason = f"its image was not used ({prediction.image_status}: {named})"
    elif post.images is not None:
        _several_heatmaps(folder, post_id, post, prediction, predictor)
        return
    elif not isinstance(post.image, str | Path):
        reason = "its image was not given as a file"
    elif all(m.attention is None for m in prediction.entities):
        reason = "the model has no cross-attention over image regions"
    if reason is not None:
        print(f"heatmap: post {post_id}: nothing drawn, {reason}", file=sys.stderr)
        return
    save_heatmaps(folder, post_id, post.image, prediction, predictor)


def _several_heatmaps(
    folder: Path, post_id: str, post: PostInput, prediction: PostPrediction, predictor: Any
) -> None:
    """A post of several images: each image's entities over that image, named
    ``<post>-image<k>``."""
    assert post.images is not None
    for index, image in enumerate(post.images):
        own = [m for m in prediction.entities if m.image_index == index]
        if not own:
            continue
        if not isinstance(image, str | Path):
            print(
                f"heatmap: post {post_id}, image {index}: nothing drawn, "
                "its image was not given as a file",
                file=sys.stderr,
            )
            continue
        save_heatmaps(
            folder, f"{post_id}-image{index}", image, replace(prediction, entities=own), predictor
        )


def save_heatmaps(
    folder: Path, post_id: str, image_path: Any, prediction: Any, predictor: Any
) -> None:
    """One PNG per entity: its attention over the part of the image the model saw."""
    from smner.data.images import load_image_file
    from smner.predict.heatmaps import save_entity_heatmaps

    # The same reader as the model's (EXIF rotation, size limits), so the grid lines up.
    picture, _status = load_image_file(Path(image_path), predictor.limits)
    if picture is None:
        return
    preprocessing = predictor.processor.image
    drawn = save_entity_heatmaps(folder, post_id, picture, prediction.entities, preprocessing)
    for path in drawn.values():
        print(f"heatmap: {path}", file=sys.stderr)
