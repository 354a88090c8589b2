"""What defines a VGG-style network, and the named presets (no Keras here).

Kept apart from `model.architecture` (which builds the network with Keras) so
that the training command's options can list the presets, and `--help` can
answer, without importing TensorFlow.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


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
