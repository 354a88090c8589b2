"""Transfer learning: an ImageNet-trained VGG16/VGG19 base under a new classification head.

    python -m model.train --preset vgg16 --weights imagenet --data folder --data-dir photos/
    python -m model.train --preset vgg16 --weights vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5

Training runs in two phases: the base is frozen while the new head learns
(`--head-epochs`), then the top of the base is unfrozen and fine-tuned with a
much lower learning rate (`--fine-tune-epochs`, `--fine-tune-from`,
`--fine-tune-learning-rate`). Fine-tuning a randomly initialised head would
push large, noisy gradients into the pretrained filters and wreck them; a
trained head first keeps them.

The ImageNet weights expect "caffe" preprocessing (BGR channel order, the
ImageNet mean subtracted, no scaling). It is a layer inside the model, so
clients keep sending RGB 0-255 like for every other model here, and it is
recorded in assets/preprocessing.json.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import keras
from keras import layers, ops

from model.architecture import PRESETS
from model.cli import TrainOptions
from model.fitting import Phase
from model.plan import WARMUP_SHARE, Plan
from model.preprocessing import PreprocessConfig

# The ImageNet training set's mean pixel, in BGR order (keras.applications' "caffe" mode).
IMAGENET_MEAN_BGR = (103.939, 116.779, 123.68)
# Width of the head's hidden layer.
HEAD_UNITS = 256

_BASES: dict[str, Callable[..., keras.Model]] = {
    "vgg16": keras.applications.VGG16,
    "vgg19": keras.applications.VGG19,
}
# What keras.applications downloads for include_top=False (URL, md5), so the
# file can be fetched (and cached) on its own and a failure named clearly.
_NOTOP = "https://storage.googleapis.com/tensorflow/keras-applications/{0}/{0}_weights_tf_dim_ordering_tf_kernels_notop.h5"
_NOTOP_MD5 = {
    "vgg16": "6d6bbae143d832006294945121d1f1fc",
    "vgg19": "253f8cb515780f3b799900260a226db6",
}


class TransferError(Exception):
    """The pretrained base cannot be built: weights missing, unreadable or mismatched."""


@keras.saving.register_keras_serializable(package="vggserve")
class ImageNetPreprocess(layers.Layer):
    """Caffe-style ImageNet preprocessing: RGB to BGR, then the ImageNet mean subtracted.

    The same arithmetic as `keras.applications.vgg16.preprocess_input`, as a
    layer so that it is part of the exported graph and of model.keras.

    Args:
        mean: per-channel mean in BGR order, subtracted after the channel swap.

    Input shape:
        float32 `(batch, height, width, 3)`, RGB in 0-255.

    Output shape:
        float32 `(batch, height, width, 3)`, BGR, mean-centred (about -124 to 152).
    """

    def __init__(self, mean: tuple[float, float, float] = IMAGENET_MEAN_BGR, **kwargs: Any):
        super().__init__(**kwargs)
        self.mean = tuple(float(m) for m in mean)

    def call(self, inputs: Any) -> Any:
        bgr = ops.flip(inputs, axis=-1)
        return bgr - ops.convert_to_tensor(self.mean, dtype=bgr.dtype)

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "mean": list(self.mean)}


def preprocess_config(height: int, width: int) -> PreprocessConfig:
    """The preprocessing settings of a transfer model, as stored in preprocessing.json.

    Clients still send RGB 0-255 (`channel_order`, `input_range`); the model's
    first layer swaps to BGR and subtracts `mean`, without scaling (`model_range`).
    """
    return PreprocessConfig(
        height=height,
        width=width,
        model_range=(0.0, 255.0),
        model_channel_order="BGR",
        mean=IMAGENET_MEAN_BGR,
    )


def keras_cache_dir() -> Path:
    """Where Keras caches downloaded weights: $KERAS_HOME/models, else ~/.keras/models."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(home) / "models"


def resolve_weights(base: str, weights: str) -> Path:
    """The local weights file for `weights` ("imagenet" or a path), downloading if need be.

    Raises:
        TransferError: the download failed (no network) or the path does not exist.
    """
    if weights != "imagenet":
        path = Path(weights).expanduser()
        if not path.is_file():
            raise TransferError(f"--weights {weights}: no such file")
        return path
    url = _NOTOP.format(base)
    cache = keras_cache_dir()
    try:
        # Read KERAS_HOME now, not at Keras's import, so the cache can be pointed elsewhere.
        fetched = keras.utils.get_file(
            fname=url.rsplit("/", 1)[-1],
            origin=url,
            cache_dir=str(cache.parent),
            cache_subdir=cache.name,
            file_hash=_NOTOP_MD5[base],
        )
    except Exception as exc:  # Keras wraps every network failure in a bare Exception.
        # ... raised while handling the URLError, whose reason says what went wrong.
        reason = getattr(exc.__context__, "reason", None) or exc
        raise TransferError(
            f"could not download the ImageNet weights for {base} from {url} "
            f"({_one_line(reason)}); on a machine without internet use --weights PATH with a "
            f"copy of {url.rsplit('/', 1)[-1]} (Keras caches it in {cache}, set by KERAS_HOME)"
        ) from exc
    return Path(fetched)


def _one_line(exc: object) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 160 else text[:157] + "..."


def build_transfer(
    base: str,
    input_size: tuple[int, int],
    num_classes: int,
    weights: Path | None,
    dropout: float = 0.5,
    name: str = "transfer",
) -> keras.Model:
    """A pretrained VGG base without its top, under a new classification head.

    The head is global average pooling, one ReLU dense layer of `HEAD_UNITS`,
    dropout and a softmax. Averaging keeps the head's size independent of the
    input size (512 features at 64x64 as at 224x224) and small: flattening
    VGG16's 7x7x512 maps into the original 4096-wide layers is 100M weights,
    which a few hundred images a class cannot fit without memorising them.

    Args:
        base: "vgg16" or "vgg19".
        input_size: (height, width) of the RGB input; at least 32x32.
        num_classes: size of the softmax.
        weights: a weights file of the base without its top: the Keras 3
            `.weights.h5` of a notop model, or the legacy `.h5` that
            keras.applications downloads. None: randomly initialised.
        dropout: dropout rate before the softmax.
        name: the Keras model name.

    Input shape:
        float32 `(batch, height, width, 3)`, RGB with pixel values in 0-255.

    Output shape:
        float32 `(batch, num_classes)`: softmax probabilities (each row sums to 1).

    Raises:
        TransferError: `weights` does not fit the base.
    """
    if base not in _BASES:
        raise TransferError(f"no pretrained base {base!r}; choose one of {', '.join(_BASES)}")
    height, width = input_size
    try:
        vgg = _BASES[base](include_top=False, weights=None, input_shape=(height, width, 3))
    except ValueError as exc:  # e.g. an input under 32x32
        raise TransferError(f"{base} at {height}x{width}: {_one_line(exc)}") from exc
    try:
        if weights is not None:
            vgg.load_weights(weights)
    except (ValueError, OSError) as exc:
        raise TransferError(
            f"{weights} does not hold {base} weights without the top: {_one_line(exc)}"
        ) from exc
    inputs = keras.Input(shape=(height, width, 3), name="pixels")
    x = ImageNetPreprocess(name="imagenet_preprocess")(inputs)
    x = vgg(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    x = layers.Dense(HEAD_UNITS, activation="relu", name="fc1")(x)
    if dropout > 0:
        x = layers.Dropout(dropout, name="fc1_dropout")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name=name)


def base_of(model: keras.Model) -> keras.Model:
    """The pretrained base inside a model made by `build_transfer`."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            return layer
    raise ValueError(f"{model.name} has no pretrained base")


def check_fine_tune_from(base: str, layer: str) -> None:
    """Raises TransferError unless `layer` is a convolution of `base`."""
    names = [
        f"block{b}_conv{c}"
        for b, convs in enumerate(PRESETS[base].blocks, start=1)
        for c in range(1, convs + 1)
    ]
    if layer not in names:
        raise TransferError(
            f"--fine-tune-from {layer}: not a convolution of {base} ({names[0]} ... {names[-1]})"
        )


def freeze(model: keras.Model, fine_tune_from: str | None) -> str:
    """Freezes the base, or all of it below `fine_tune_from`; returns what trains.

    Recompile the model afterwards: Keras fixes the trainable weights at compile time.
    """
    vgg = base_of(model)
    if fine_tune_from is None:
        vgg.trainable = False
        return f"the head only ({vgg.name} frozen)"
    vgg.trainable = True
    names = [layer.name for layer in vgg.layers]
    start = names.index(fine_tune_from)
    for index, layer in enumerate(vgg.layers):
        layer.trainable = index >= start
    return f"the head and {vgg.name} from {fine_tune_from} on"


def plan_phases(options: TrainOptions, plan: Plan) -> tuple[Plan, list[tuple[Phase, Plan]]]:
    """The run's plan for a transfer model, and each phase with its own plan.

    Batch size, steps an epoch, patience, flips and class weights come from
    the data as for any run and hold in both phases; the epochs and the
    learning rate are the phase's, with the warm-up and cosine decay of
    `model.plan` over each phase's steps.
    """
    phases = [Phase("head", options.head_epochs, options.learning_rate, None)]
    if options.fine_tune_epochs:
        phases.append(
            Phase(
                "fine-tune",
                options.fine_tune_epochs,
                options.fine_tune_learning_rate,
                options.fine_tune_from,
            )
        )
    per_phase = [
        (
            phase,
            replace(
                plan,
                epochs=phase.epochs,
                learning_rate=phase.learning_rate,
                warmup_steps=round(phase.epochs * plan.steps_per_epoch * WARMUP_SHARE),
            ),
        )
        for phase in phases
    ]
    reasons = {
        **plan.reasons,
        "epochs": "--head-epochs + --fine-tune-epochs, at most; early stopping ends each "
        "phase sooner",
        "batch_norm_momentum": f"not used: {options.preset} has no batch normalisation",
        "learning_rate": "--learning-rate for the head, --fine-tune-learning-rate (lower, so "
        "the pretrained filters move little) for fine-tuning; Adam, warm-up and cosine decay "
        "within each phase",
    }
    overall = replace(
        plan,
        epochs=sum(phase.epochs for phase in phases),
        learning_rate=options.learning_rate,
        reasons=reasons,
    )
    return overall, per_phase
