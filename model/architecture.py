"""VGG-style networks, built as the project's source text describes them.

Stacks of 3x3 convolutions with stride 1 and zero ("same") padding keep the
height and width; ReLU turns each convolution into feature maps; 2x2 max
pooling with stride 2 is the only down-sampling; the number of filters doubles
after each pooling; then flatten, fully connected layers with dropout, and a
softmax over the classes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import keras
from keras import layers


@dataclass(frozen=True)
class VGGConfig:
    """Everything that defines a VGG-style network.

    Attributes:
        blocks: convolutions per block; a 2x2 max pooling follows each block.
        base_filters: filters of the first block; each later block doubles
            them (capped at `max_filters`).
        dense_units: widths of the fully connected layers before the softmax.
        input_size: (height, width) of the RGB input.
        num_classes: size of the softmax.
        width: multiplier on every filter count and dense width.
        batch_norm: batch normalisation between each convolution and its ReLU.
        batch_norm_momentum: how much of its moving statistics batch
            normalisation keeps at each step (the training plan sets it from
            the number of steps an epoch).
        dropout: dropout rate after each fully connected layer.
    """

    blocks: tuple[int, ...]
    base_filters: int
    dense_units: tuple[int, ...]
    input_size: tuple[int, int]
    num_classes: int = 10
    max_filters: int = 512
    width: float = 1.0
    batch_norm: bool = False
    batch_norm_momentum: float = 0.99
    dropout: float = 0.5

    def filters(self, block: int) -> int:
        """Filters of block `block` (0-based), width multiplier applied."""
        raw = min(self.base_filters * 2**block, self.max_filters)
        return max(1, round(raw * self.width))

    def dense(self) -> tuple[int, ...]:
        return tuple(max(1, round(units * self.width)) for units in self.dense_units)


PRESETS: dict[str, VGGConfig] = {
    # Sized for CPUs: trains to >95% on the synthetic set in minutes on 2 cores.
    "vgg-mini": VGGConfig(
        blocks=(2, 2, 2),
        base_filters=16,
        dense_units=(128,),
        input_size=(32, 32),
        max_filters=128,
        batch_norm=True,
        dropout=0.3,
    ),
    # The classic configurations "A" (VGG11), "D" (VGG16) and "E" (VGG19), Simonyan &
    # Zisserman 2014. With --weights, vgg16 and vgg19 are keras.applications' pretrained
    # bases under a new head instead (model.transfer).
    "vgg11": VGGConfig(
        blocks=(1, 1, 2, 2, 2),
        base_filters=64,
        dense_units=(4096, 4096),
        input_size=(224, 224),
    ),
    "vgg16": VGGConfig(
        blocks=(2, 2, 3, 3, 3),
        base_filters=64,
        dense_units=(4096, 4096),
        input_size=(224, 224),
    ),
    "vgg19": VGGConfig(
        blocks=(2, 2, 4, 4, 4),
        base_filters=64,
        dense_units=(4096, 4096),
        input_size=(224, 224),
    ),
}


def preset(name: str, **overrides: object) -> VGGConfig:
    """A preset by name, with any field overridden (None values are ignored)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    changes = {k: v for k, v in overrides.items() if v is not None}
    return replace(PRESETS[name], **changes)  # type: ignore[arg-type]


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
