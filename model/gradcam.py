"""Class activation maps: which pixels drove a prediction, TensorFlow ops only.

The method is LayerCAM (Jiang et al. 2021), a Grad-CAM variant: each
activation of the last convolution is weighted by the positive part of the
class score's gradient at that same position, the weighted maps are summed
over the filters and scaled to [0, 1]. Grad-CAM (Selvaraju et al. 2017)
weights each whole map by its gradient averaged over the frame instead, which
spreads a filter's weight over places where it did not help the class. On the
synthetic set, LayerCAM found the shape more often than Grad-CAM both over all
images and where the shape misses the centre of the frame (docs/benchmarks.md,
"Explanations"; `python -m model.faithfulness`). The names `gradcam` (module,
signature) stay: they are the export's contract.

The score is the log of the class's probability: the softmax is fused into the
model's last layer, so the logit is not at hand, and the log's gradient
(dp / p) does not shrink with p as the probability's own gradient would.

Everything below is graph code, so `model.export` can put it in the SavedModel
as the `gradcam` signature: the server calls it like any other signature, and
the heatmap and overlay PNGs are made inside the graph, not in server Python.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from model import layout
from model.architecture import feature_map_layers
from model.preprocessing import PreprocessConfig, decode, preprocess_encoded_batch

# How much of the colour map covers the image in an overlay.
OVERLAY_ALPHA = 0.45
# zlib level 1: a third of the default level's time (1.3 vs 4.1 ms for a
# 128x128 overlay here) for files within 1% of its size.
PNG_COMPRESSION = 1
# Keeps log() finite for a class the model rules out entirely.
_EPSILON = 1e-12


def explain_model(model: keras.Model) -> keras.Model:
    """`model` with two outputs: the last convolution's ReLU maps and the probabilities.

    Works for the VGG models of `model.architecture` (the last `*_relu` layer)
    and for transfer models whose pretrained base is a nested Keras model
    (`model.transfer`: the base's last Conv2D, which has its ReLU fused in).

    Input shape:
        float32 `(batch, height, width, 3)`, 0-255, as `model` takes.

    Output shape:
        `[(batch, h, w, filters), (batch, num_classes)]`.
    """
    names = feature_map_layers(model)
    if names:
        return keras.Model(model.inputs, [model.get_layer(names[-1]).output, model.output])
    # A nested base: rebuild the chain of top-level layers, calling the base as
    # a two-output model (its inner tensors are not reachable from outside it).
    x = model.inputs[0]
    maps = None
    for layer in model.layers[1:]:
        if isinstance(layer, keras.Model):
            convs = [inner for inner in layer.layers if isinstance(inner, keras.layers.Conv2D)]
            if not convs:
                raise ValueError(f"{layer.name} has no convolution to explain")
            split = keras.Model(layer.inputs, [convs[-1].output, layer.output])
            maps, x = split(x)
        else:
            x = layer(x)
    if maps is None:
        raise ValueError(f"{model.name} has no feature maps to explain (no *_relu layer or base)")
    return keras.Model(model.inputs, [maps, x])


def gradcam(
    explainer: keras.Model, batch: tf.Tensor, class_index: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Class activation maps (LayerCAM, see the module's text) of a preprocessed batch.

    Args:
        explainer: from `explain_model`.
        batch: float32 `(n, height, width, 3)`, 0-255.
        class_index: int32 `(n,)`; -1 explains the most probable class.

    Returns:
        heatmaps float32 `(n, height, width)` in [0, 1] (all zero when no
        region raises the score), the probabilities `(n, num_classes)` and
        the classes explained, int32 `(n,)`.
    """
    with tf.GradientTape() as tape:
        maps, probabilities = explainer(batch, training=False)
        chosen = tf.where(
            class_index < 0, tf.argmax(probabilities, axis=-1, output_type=tf.int32), class_index
        )
        num_classes = tf.shape(probabilities)[-1]
        in_range = tf.debugging.Assert(
            tf.reduce_all(chosen < num_classes),
            ["class_index must be below the number of classes", num_classes],
        )
        with tf.control_dependencies([in_range]):
            picked = tf.gather(probabilities, chosen, axis=1, batch_dims=1)
        score = tf.math.log(picked + _EPSILON)
    grads = tape.gradient(score, maps)  # each image's score depends on its maps only
    # Positive gradients times non-negative (ReLU) maps: the map is >= 0 as it is.
    cam = tf.reduce_sum(tf.nn.relu(grads) * maps, axis=-1)
    peak = tf.reduce_max(cam, axis=[1, 2], keepdims=True)
    cam = tf.math.divide_no_nan(cam, peak)
    size = tf.shape(batch)[1:3]
    heat = tf.image.resize(cam[..., None], size, method="bilinear")[..., 0]
    return tf.clip_by_value(heat, 0.0, 1.0), probabilities, chosen


def colourise(heat: tf.Tensor) -> tf.Tensor:
    """float [..., h, w] in [0, 1] to float RGB [..., h, w, 3] in [0, 1]: a jet-like map
    (blue cold, red hot), three clipped ramps instead of a lookup table."""
    four = 4.0 * heat[..., None]
    centres = tf.constant([3.0, 2.0, 1.0])  # red, green, blue
    return tf.clip_by_value(1.5 - tf.abs(four - centres), 0.0, 1.0)


def overlay_size(height: tf.Tensor, width: tf.Tensor, max_side: int | None) -> tf.Tensor:
    """int32 [2]: (height, width) of the overlay of an image of that size.

    At most `max_side` on the longest side, aspect kept (the short side
    rounded half up, at least 1); an image within it keeps its size, and so
    does every image when `max_side` is None. The same integer arithmetic as
    `PreprocessConfig.overlay_size`, which the server uses to size the answer
    before any work.
    """
    height, width = tf.cast(height, tf.int64), tf.cast(width, tf.int64)
    if max_side is None:
        return tf.cast(tf.stack([height, width]), tf.int32)
    side = tf.constant(max_side, tf.int64)
    long, short = tf.maximum(height, width), tf.minimum(height, width)
    scaled = tf.maximum(tf.constant(1, tf.int64), (short * side + long // 2) // long)
    bounded = tf.where(height >= width, tf.stack([side, scaled]), tf.stack([scaled, side]))
    return tf.cast(tf.where(long <= side, tf.stack([height, width]), bounded), tf.int32)


def overlay_png(
    encoded: tf.Tensor, heat: tf.Tensor, max_pixels: int | None, max_side: int | None = None
) -> tf.Tensor:
    """PNG bytes of `heat` [h, w] blended over the decoded image.

    The image is decoded with `model.preprocessing.decode` (the serving path's
    decoder, same RGB rule and pixel limit), then scaled down to at most
    `max_side` on its longest side (`overlay_size`; None: its own size). It is
    scaled while still uint8, before the float blend: the blend holds several
    float copies of the picture (12 bytes a pixel each), which at a 36-megapixel
    image's own size came to gigabytes per call, and so did its PNG.
    """
    image = decode(encoded, max_pixels)
    own = tf.shape(image)[:2]
    size = overlay_size(own[0], own[1], max_side)
    # "area" averages every source pixel under a target one: no aliasing when
    # shrinking a detailed photo (bilinear would sample 4 of them).
    picture = tf.cond(
        tf.reduce_all(tf.equal(size, own)),
        lambda: tf.cast(image, tf.float32),
        lambda: tf.image.resize(image, size, method="area"),
    )
    resized = tf.image.resize(heat[..., None], size, method="bilinear")[..., 0]
    blended = (1.0 - OVERLAY_ALPHA) * picture + OVERLAY_ALPHA * 255.0 * colourise(resized)
    pixels = tf.cast(tf.clip_by_value(tf.round(blended), 0.0, 255.0), tf.uint8)
    return tf.io.encode_png(pixels, compression=PNG_COMPRESSION)


def heatmap_png(heat: tf.Tensor) -> tf.Tensor:
    """PNG bytes of one heatmap [h, w] in [0, 1], greyscale (white = hottest)."""
    grey = tf.cast(tf.round(heat * 255.0), tf.uint8)[..., None]
    return tf.io.encode_png(grey, compression=PNG_COMPRESSION)


def endpoint(model: keras.Model, preprocess: PreprocessConfig) -> tf.types.experimental.Function:
    """The `gradcam` signature's function.

    Inputs: `images` tf.string [n] (encoded, as `serving_default` takes) and
    `class_index` int32 [n] (-1: the predicted class). Outputs: `heatmap`
    float32 [n, height, width] and `heatmap_png` tf.string [n], both at the
    model's input size, `overlay_png` tf.string [n] (RGB, at most
    `preprocess.overlay_max_side` on its longest side), `class_index` int32
    [n] (the class explained) and `probabilities` (those of `serving_default`).
    """
    explainer = explain_model(model)

    @tf.function(
        input_signature=[
            tf.TensorSpec([None], tf.string, name=layout.IMAGES_INPUT),
            tf.TensorSpec([None], tf.int32, name=layout.CLASS_INDEX_INPUT),
        ]
    )
    def explain(images: tf.Tensor, class_index: tf.Tensor) -> dict[str, tf.Tensor]:
        batch = preprocess_encoded_batch(images, preprocess)
        heat, probabilities, chosen = gradcam(explainer, batch, class_index)
        overlays = tf.map_fn(
            lambda pair: overlay_png(
                pair[0], pair[1], preprocess.max_pixels, preprocess.overlay_max_side
            ),
            (images, heat),
            fn_output_signature=tf.TensorSpec([], tf.string),
            parallel_iterations=16,
        )
        pngs = tf.map_fn(heatmap_png, heat, fn_output_signature=tf.TensorSpec([], tf.string))
        return {
            "heatmap": heat,
            "heatmap_png": pngs,
            "overlay_png": overlays,
            "class_index": chosen,
            "probabilities": probabilities,
        }

    return explain
