"""VGG-style networks, built as the project's source text describes them.

Stacks of 3x3 convolutions with stride 1 and zero ("same") padding keep the
height and width; ReLU turns each convolution into feature maps; 2x2 max
pooling with stride 2 is the only down-sampling; the number of filters doubles
after each pooling; then flatten, fully connected layers with dropout, and a
softmax over the classes.
"""

from __future__ import annotations

import keras
from keras import layers

# Re-exported: callers keep configuring and building networks from this one module.
from model.vgg_config import PRESETS as PRESETS
from model.vgg_config import VGGConfig as VGGConfig
from model.vgg_config import preset as preset


def build_vgg(
    config: VGGConfig, name: str = "vgg", synchronized_batch_norm: bool = False
) -> keras.Model:
    """Builds an uncompiled VGG-style classifier.

    Args:
        config: the network's shape (see `VGGConfig`).
        name: the Keras model name.
        synchronized_batch_norm: batch statistics over the global batch of every
            replica (multi-worker training), so that every replica's moving
            statistics, like its weights, stay identical. Inference is unchanged.

    Input shape:
        float32 `(batch, height, width, 3)` with pixel values in 0-255.

    Output shape:
        float32 `(batch, num_classes)`: softmax probabilities (each row sums to 1).
    """
    height, width = config.input_size
    downsample = 2 ** len(config.blocks)
    if height % downsample or width % downsample:
        raise ValueError(
            f"input size {height}x{width} must be divisible by {downsample} "
            f"({len(config.blocks)} poolings of 2x2)"
        )
    inputs = keras.Input(shape=(height, width, 3), name="pixels")
    # Scaling lives in the model so every caller (training, serving, clients
    # with raw pixels) hands it plain 0-255 values.
    x = layers.Rescaling(1.0 / 255.0, name="scale")(inputs)
    for block, convs in enumerate(config.blocks, start=1):
        filters = config.filters(block - 1)
        for conv in range(1, convs + 1):
            prefix = f"block{block}_conv{conv}"
            # Bias is redundant when batch norm follows (its beta does the job).
            x = layers.Conv2D(
                filters, 3, strides=1, padding="same", use_bias=not config.batch_norm, name=prefix
            )(x)
            if config.batch_norm:
                x = layers.BatchNormalization(
                    momentum=config.batch_norm_momentum,
                    synchronized=synchronized_batch_norm,
                    name=f"{prefix}_bn",
                )(x)
            # The ReLU output is the feature map (what the visualiser draws).
            x = layers.ReLU(name=f"{prefix}_relu")(x)
        x = layers.MaxPooling2D(pool_size=2, strides=2, name=f"block{block}_pool")(x)
    x = layers.Flatten(name="flatten")(x)
    for index, units in enumerate(config.dense(), start=1):
        x = layers.Dense(units, activation="relu", name=f"fc{index}")(x)
        if config.dropout > 0:
            x = layers.Dropout(config.dropout, name=f"fc{index}_dropout")(x)
    outputs = layers.Dense(config.num_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name=name)


def feature_map_layers(model: keras.Model) -> list[str]:
    """Names of the layers whose outputs are feature maps (each conv's ReLU)."""
    return [layer.name for layer in model.layers if layer.name.endswith("_relu")]
