import numpy as np
import pytest

pytestmark = pytest.mark.train

model_module = pytest.importorskip("training.model", reason="needs the train extra")
build_model = model_module.build_model


@pytest.mark.parametrize(
    ("arch", "shape"),
    [
        ("mini_xception", (64, 64, 3)),
        ("mini_xception", (64, 64, 1)),
        ("plain_cnn", (48, 48, 3)),
        ("mobilenet_v2", (96, 96, 3)),
    ],
)
def test_builders_return_an_uncompiled_two_class_softmax(arch, shape):
    model = build_model(arch, shape)
    assert model.input_shape == (None, *shape)
    assert model.output_shape == (None, 2)
    assert not model.compiled
    probs = model(np.random.default_rng(0).random((3, *shape), dtype=np.float32)).numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


def test_mini_xception_has_the_papers_size_and_a_class_map_head():
    model = build_model("mini_xception", (64, 64, 1))
    assert 50_000 <= model.count_params() <= 65_000  # the paper's 7-class net has ~60k
    assert model_module.has_class_maps(model)
    assert model.get_layer("class_maps").output.shape[1:] == (4, 4, 2)
    assert not model_module.has_class_maps(build_model("mobilenet_v2", (96, 96, 3)))


@pytest.mark.parametrize(("arch", "shape"), [("mini_xception", (64, 64, 2)), ("mobilenet_v2", (16, 16, 3))])
def test_bad_input_shapes_are_refused_eagerly(arch, shape):
    with pytest.raises(ValueError):
        build_model(arch, shape)


def test_unknown_architecture_is_refused():
    with pytest.raises(ValueError, match="unknown architecture"):
        build_model("resnet", (64, 64, 3))


def test_mobilenet_weights_file_must_exist(tmp_path):
    with pytest.raises(FileNotFoundError):
        model_module.build_mobilenet_v2(weights=tmp_path / "missing.h5")


def test_width_scales_mini_xception_filters():
    narrow = build_model("mini_xception", (64, 64, 3))
    wide = build_model("mini_xception", (64, 64, 3), width=2.0)
    assert wide.get_layer("block4_sep2").filters == 2 * narrow.get_layer("block4_sep2").filters == 256
    assert 3 * narrow.count_params() < wide.count_params() < 5 * narrow.count_params()
    with pytest.raises(ValueError, match="mini_xception only"):
        build_model("plain_cnn", (64, 64, 3), width=2.0)
