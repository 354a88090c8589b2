"""The network's shapes are the ones the source text states."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from model.architecture import PRESETS, VGGConfig, build_vgg, feature_map_layers, preset

SMALL = VGGConfig(
    blocks=(1, 2),
    base_filters=4,
    dense_units=(8,),
    input_size=(16, 12),
    num_classes=5,
    batch_norm=False,
    dropout=0.0,
)


def test_same_convolution_keeps_height_and_width_and_pooling_halves_them() -> None:
    model = build_vgg(SMALL)
    assert model.get_layer("block1_conv1").output.shape[1:3] == (16, 12)
    assert model.get_layer("block1_pool").output.shape[1:3] == (8, 6)
    assert model.get_layer("block2_conv2").output.shape[1:3] == (8, 6)
    assert model.get_layer("block2_pool").output.shape[1:3] == (4, 3)


def test_filters_double_after_each_pooling_and_each_filter_spans_the_input_depth() -> None:
    model = build_vgg(SMALL)
    depth = 3
    for name, filters in (("block1_conv1", 4), ("block2_conv1", 8), ("block2_conv2", 8)):
        layer = model.get_layer(name)
        # F filters of 3x3xD weights plus one bias each; F maps out.
        assert layer.count_params() == filters * (3 * 3 * depth + 1)
        assert layer.kernel.shape == (3, 3, depth, filters)
        assert layer.output.shape[-1] == filters
        depth = filters


def test_output_is_a_probability_distribution() -> None:
    model = build_vgg(SMALL)
    pixels = np.random.default_rng(0).uniform(0, 255, (4, 16, 12, 3)).astype("float32")
    probabilities = np.asarray(model(pixels))
    assert probabilities.shape == (4, 5)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    assert (probabilities >= 0).all()


def test_feature_maps_are_the_relu_outputs() -> None:
    model = build_vgg(SMALL)
    assert feature_map_layers(model) == [
        "block1_conv1_relu",
        "block2_conv1_relu",
        "block2_conv2_relu",
    ]


def test_classic_presets_have_their_published_convolution_counts() -> None:
    assert sum(PRESETS["vgg11"].blocks) == 8
    assert sum(PRESETS["vgg16"].blocks) == 13
    assert PRESETS["vgg16"].dense_units == (4096, 4096)
    assert PRESETS["vgg16"].input_size == (224, 224)


def test_width_multiplier_and_batch_norm_options() -> None:
    config = preset("vgg-mini", width=0.5, batch_norm=True, num_classes=3)
    model = build_vgg(config)
    assert model.get_layer("block1_conv1").filters == PRESETS["vgg-mini"].base_filters // 2
    assert isinstance(model.get_layer("block1_conv1_bn"), keras.layers.BatchNormalization)
    assert model.output_shape == (None, 3)


def test_input_size_must_survive_the_poolings() -> None:
    with pytest.raises(ValueError, match="divisible by 8"):
        build_vgg(preset("vgg-mini", input_size=(20, 20)))


def test_unknown_preset_names_the_choices() -> None:
    with pytest.raises(ValueError, match="vgg-mini"):
        preset("resnet")
