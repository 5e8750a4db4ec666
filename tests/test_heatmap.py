from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from smner.encoders.preprocessing import ImagePreprocessing
from smner.predict.heatmaps import render_heatmap


def test_hot_cell_is_drawn_where_the_model_looked() -> None:
    image = Image.new("RGB", (400, 200), (0, 0, 255))
    attention = np.zeros((7, 7))
    attention[0, 6] = 1.0  # top-right cell of what the model saw
    box = ImagePreprocessing().crop_box(*image.size)
    # the model sees a centred square of 200 * 224/256 = 175 px
    assert box == (112.5, 12.5, 287.5, 187.5)
    out = np.asarray(render_heatmap(image, attention.tolist(), box)).astype(int)
    assert out[25, 275, 0] > 120  # red over the hot cell (at most 0.55 x 255)
    assert out[180, 120, 0] < 40  # bottom-left of the crop stays blue
    assert out[100, 50, 2] < 255 * 0.5  # outside the crop: dimmed
    whole = np.asarray(render_heatmap(image, attention.tolist())).astype(int)
    assert whole[10, 390, 0] > 120  # without a box the grid spans the whole image


def test_heatmaps_of_a_rotated_photo_follow_its_exif_orientation(tmp_path: Path) -> None:
    """Phones store a portrait photo as landscape pixels plus an EXIF rotation; the model reads
    it upright, so the heatmap must be drawn over the upright picture too."""
    from types import SimpleNamespace

    from smner.commands.predict_output import save_heatmaps
    from smner.data.images import DEFAULT_LIMITS
    from smner.data.predictions import Mention

    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    Image.new("RGB", (80, 40), (0, 0, 255)).save(tmp_path / "photo.jpg", exif=exif)
    mention = Mention("George", "PER", 0, 1, 0, 6, 0.9, attention=np.eye(7).tolist())
    predictor = SimpleNamespace(
        limits=DEFAULT_LIMITS,
        processor=SimpleNamespace(image=ImagePreprocessing()),
    )
    save_heatmaps(
        tmp_path / "heat",
        "post/1",
        tmp_path / "photo.jpg",
        SimpleNamespace(entities=[mention]),
        predictor,
    )
    (drawn,) = (tmp_path / "heat").iterdir()
    assert drawn.name == "post_1-0-PER-George.png"
    assert Image.open(drawn).size == (40, 80)


def test_a_grounding_box_is_outlined_where_it_is() -> None:
    from smner.predict.heatmaps import BOX_COLOUR

    image = Image.new("RGB", (400, 200), (0, 0, 0))
    attention = np.zeros((7, 7))
    out = np.asarray(
        render_heatmap(image, attention.tolist(), (0, 0, 400, 200), entity_box=(100, 50, 300, 150))
    ).astype(int)
    for y, x in ((50, 200), (149, 200), (100, 100), (100, 299)):  # the four edges
        assert tuple(out[y, x]) == BOX_COLOUR, (y, x)
    assert tuple(out[100, 200]) == (0, 0, 0)  # inside stays as it was
    assert tuple(out[20, 20]) == (0, 0, 0)  # and so does outside
