"""The one definition of how an image becomes the model's input tensor.

Training, the exported serving signatures and the tests all import these
functions, so there is no second copy of the preprocessing to drift apart
(training/serving skew). Pixel scaling (0-255 to 0-1), or ImageNet's channel
swap and mean for pretrained bases, is *not* here: it is a layer inside the
model, so every caller hands the model RGB 0-255 values.
"""

from __future__ import annotations

import re

import tensorflow as tf

# Defined apart so that reading an export's settings needs no TensorFlow.
from model.preprocess_config import PreprocessConfig


def decode(encoded: tf.Tensor, max_pixels: int | None = None) -> tf.Tensor:
    """Decodes one JPEG/PNG/BMP/GIF to uint8 [height, width, 3].

    Greyscale is replicated to three channels, an alpha channel is dropped and
    palette images are expanded, so every input is RGB.

    With `max_pixels`, an image larger than that fails with InvalidArgument
    naming its size: JPEG and PNG before decoding (from the header the decoder
    itself reads), BMP and GIF after. The server checks headers before a
    request is batched; this is the second line, for what that check missed.
    """
    if max_pixels is not None:
        height, width = _stated_size(encoded)
        with tf.control_dependencies([_within(height, width, max_pixels)]):
            encoded = tf.identity(encoded)
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    if max_pixels is not None:
        shape = tf.shape(image, out_type=tf.int64)
        with tf.control_dependencies([_within(shape[0], shape[1], max_pixels)]):
            image = tf.identity(image)
    image.set_shape([None, None, 3])
    return image


def _stated_size(encoded: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """(height, width) as int64 from a JPEG's frame or a PNG's IHDR; (0, 0) otherwise."""

    def jpeg() -> tf.Tensor:
        return tf.cast(tf.image.extract_jpeg_shape(encoded)[:2], tf.int64)

    def png() -> tf.Tensor:
        raw = tf.cast(tf.io.decode_raw(tf.strings.substr(encoded, 16, 8), tf.uint8), tf.int64)
        big_endian = tf.constant([1 << 24, 1 << 16, 1 << 8, 1], tf.int64)
        width = tf.reduce_sum(raw[:4] * big_endian)
        height = tf.reduce_sum(raw[4:] * big_endian)
        return tf.stack([height, width])

    is_png = tf.logical_and(
        tf.equal(tf.strings.substr(encoded, 0, 8), b"\x89PNG\r\n\x1a\n"),
        tf.strings.length(encoded) >= 24,
    )
    size = tf.case(
        [(tf.io.is_jpeg(encoded), jpeg), (is_png, png)],
        default=lambda: tf.zeros([2], tf.int64),
    )
    return size[0], size[1]


def _within(height: tf.Tensor, width: tf.Tensor, max_pixels: int) -> tf.Operation:
    pixels = height * width
    return tf.debugging.Assert(
        pixels <= max_pixels,
        [
            tf.strings.format(
                "image is {}x{} = {} pixels; the limit is {}",
                (width, height, pixels, tf.constant(max_pixels, tf.int64)),
            )
        ],
    )


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
    return preprocess_image(decode(encoded, config.max_pixels), config)


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


def decode_error_reason(exc: tf.errors.OpError) -> str:
    """TensorFlow's own reason, without the graph's node and function names.

    Messages look like `{{function_node __inference_...}} REASON [[{{node ...}}]]
    [Op:__inference_...]` (over several lines), or `Graph execution error:`,
    the Python trace of the node, then REASON and the same tail.
    """
    text = re.split(r"\s*\[\[|\s*\[Op:", exc.message, maxsplit=1)[0]
    text = text.rsplit("}}", 1)[-1]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    reason = lines[-1] if lines else ""
    asserted = re.fullmatch(r"assertion failed: \[(.*)\]", reason)  # decode()'s size limit
    if asserted:
        reason = asserted.group(1)
    return reason or "corrupt or truncated data"
