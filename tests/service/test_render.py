"""/annotate's drawing: every face's label lies whole inside the image, wherever the face is."""

import numpy as np
import pytest

from service.pipeline import FacePrediction
from service.preprocess import Box
from service.render import draw_faces


def text_pixels(box: Box) -> int:
    """How many white (label text) pixels the face's label leaves on a black 400x300 image."""
    face = FacePrediction(box=box, detection_score=0.99, probabilities={"female": 0.93, "male": 0.07}, label="female")
    drawn = draw_faces(np.zeros((300, 400, 3), np.uint8), [face])
    return int((drawn == 255).all(axis=2).sum())


@pytest.mark.parametrize(
    "box",
    [
        Box(355, 120, 40, 50),  # at the right edge: the label would run out of the image
        Box(0, 0, 40, 299),  # the image's full height: no room above or below the box
        Box(355, 0, 40, 299),  # both
        Box(0, 250, 40, 49),  # at the bottom with room above: the usual place
    ],
    ids=["right edge", "full height", "right edge and full height", "bottom"],
)
def test_a_label_near_the_edge_is_drawn_whole(box):
    whole = text_pixels(Box(150, 120, 40, 50))
    assert whole > 50
    assert text_pixels(box) == whole
