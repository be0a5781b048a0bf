import cv2
import numpy as np

from service.classifier import GenderClassifier
from service.config import BUNDLED_MODEL
from service.detector import create_detector
from service.images import DecodedImage
from service.pipeline import Pipeline, PredictOptions


def test_large_images_are_detected_on_a_smaller_copy_and_boxes_mapped_back(astronaut):
    big = cv2.resize(astronaut, (2048, 2048), interpolation=cv2.INTER_CUBIC)
    classifier = GenderClassifier(BUNDLED_MODEL)
    full = Pipeline(create_detector("ssd"), classifier, detect_max_side=4096, max_pixels=10**8)
    bounded = Pipeline(create_detector("ssd"), classifier, detect_max_side=512, max_pixels=10**8)
    (reference,) = full.predict(DecodedImage(big, "JPEG"), PredictOptions()).faces
    (mapped,) = bounded.predict(DecodedImage(big, "JPEG"), PredictOptions()).faces
    # 4x the astronaut portrait: her face is near x 716, y 232, about 372 x 476 pixels.
    for got, want in zip(vars(mapped.box).values(), vars(reference.box).values(), strict=True):
        assert abs(got - want) <= 16
    assert 600 <= mapped.box.x <= 800 and mapped.box.x + mapped.box.width <= 2048
    np.testing.assert_allclose(mapped.probabilities["female"], reference.probabilities["female"], atol=0.05)
