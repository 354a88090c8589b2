"""The one definition of how an image becomes the model's input tensor.

Training, the exported serving signatures and the tests all import these
functions, so there is no second copy of the preprocessing to drift apart
(training/serving skew). Pixel scaling (0-255 to 0-1), or ImageNet's channel
swap and mean for pretrained bases, is *not* here: it is a layer inside the
model, so every caller hands the model RGB 0-255 values.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

import tensorflow as tf


@dataclass(frozen=True)
class PreprocessConfig:
    """How encoded bytes or raw pixels become model input.

    Stored as JSON in every exported version's assets, so a client (or a
    person) can read it without TensorFlow. `channel_order` and `input_range`
    describe what clients send (always RGB 0-255); the `model_*` fields and
    `mean` describe what the model's own first layers do with it.
    """

    height: int
    width: int
    resize_method: str = "bilinear"
    channel_order: str = "RGB"
    input_range: tuple[float, float] = (0.0, 255.0)
    # The model's first layer maps input_range to this range.
    model_range: tuple[float, float] = (0.0, 1.0)
    # ... then reorders the channels to this order (still RGB for models trained
    # from scratch; "BGR" for ImageNet weights, see model.transfer) ...
    model_channel_order: str = "RGB"
    # ... and subtracts this per-channel mean, in model_channel_order. Exports
    # made before these two fields existed read as RGB and no mean.
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreprocessConfig:
        fields = {f.name for f in dataclasses.fields(cls)}
        # JSON has lists where the dataclass has tuples.
        values: dict[str, Any] = {
            k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in fields
        }
        return cls(**values)


def decode(encoded: tf.Tensor) -> tf.Tensor:
    """Decodes one JPEG/PNG/BMP/GIF to uint8 [height, width, 3].

    Greyscale is replicated to three channels, an alpha channel is dropped and
    palette images are expanded, so every input is RGB.
    """
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


def resize(images: tf.Tensor, config: PreprocessConfig) -> tf.Tensor:
    """Resizes uint8 [..., h, w, 3] to float32 [..., height, width, 3] in 0-255.

    An image already at the target size passes through unchanged, so arrays
    made at model size (synthetic data, CIFAR-10) are not resampled.
    """
    images = tf.convert_to_tensor(images)
    shape = tf.shape(images)
    same = tf.logical_and(tf.equal(shape[-3], config.height), tf.equal(shape[-2], config.width))
    as_float = tf.cast(images, tf.float32)
    return tf.cond(
        same,
        lambda: as_float,
        lambda: tf.image.resize(
            as_float, (config.height, config.width), method=config.resize_method
        ),
    )


def preprocess_image(image: tf.Tensor, config: PreprocessConfig) -> tf.Tensor:
    """One uint8 RGB image [h, w, 3] to float32 [height, width, 3]."""
    resized = resize(image, config)
    resized.set_shape([config.height, config.width, 3])
    return resized


def preprocess_encoded(encoded: tf.Tensor, config: PreprocessConfig) -> tf.Tensor:
    """One encoded image (scalar tf.string) to float32 [height, width, 3]."""
    return preprocess_image(decode(encoded), config)


def preprocess_encoded_batch(encoded: tf.Tensor, config: PreprocessConfig) -> tf.Tensor:
    """A batch of encoded images (tf.string [n]) to float32 [n, height, width, 3].

    Images may differ in size, so each is decoded and resized on its own;
    map_fn runs them in parallel inside the graph, outside the Python GIL.
    """
    return tf.map_fn(
        lambda one: preprocess_encoded(one, config),
        encoded,
        fn_output_signature=tf.TensorSpec([config.height, config.width, 3], tf.float32),
        parallel_iterations=16,
    )


def to_rgb(pixels: tf.Tensor) -> tf.Tensor:
    """uint8 [..., h, w, c] with c in {1, 3, 4} to [..., h, w, 3].

    The same rule decode() applies to encoded files: greyscale is replicated
    and alpha is dropped (not composited).
    """
    channels = tf.shape(pixels)[-1]
    return tf.case(
        [
            (tf.equal(channels, 1), lambda: tf.repeat(pixels, 3, axis=-1)),
            (tf.equal(channels, 4), lambda: pixels[..., :3]),
        ],
        default=lambda: pixels,
    )


def preprocess_pixels(pixels: tf.Tensor, config: PreprocessConfig) -> tf.Tensor:
    """uint8 [n, h, w, c] (one size per batch, c in {1, 3, 4}) to float32 [n, height, width, 3]."""
    rgb = to_rgb(pixels)
    rgb.set_shape([None, None, None, 3])
    images = resize(rgb, config)
    images.set_shape([None, config.height, config.width, 3])
    return images
