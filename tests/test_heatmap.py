from __future__ import annotations

import numpy as np
from PIL import Image

from smner.encoders.image import ImagePreprocessing
from smner.heatmap import render_heatmap


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
