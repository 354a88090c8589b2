"""One loaded model version: the SavedModel's signatures behind a plain call.

`LoadedModel.predict` takes a batch of validated images and returns one
probability vector (or one error) per image. Encoded images go through the
`serving_default` signature in one call (decoded inside the graph, batched);
raw pixels go through `serving_pixels`, one call per image size.

A bad image fails alone. One cut short (its file lacks its end marker,
`EncodedImage.ends_early`) is decoded alone without the model before the
batch runs, and leaves the batch if TensorFlow refuses it: it costs its
batch-mates nothing but that decode. Any other bad image costs them one extra
model call: when the batched call fails, the batch is decoded once more
without the model (the same `model.preprocessing.decode`, in one graph call)
to find which images fail, each of those alone for TensorFlow's reason, and
the model runs once more on the others. Halving the batch instead cost
log2(batch) x 2 model calls per bad image (11 for 32 images).

`LoadedModel.explain` calls the `gradcam` signature the same way (encoded
images only); a version exported before it has `can_explain` False.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf
from PIL import Image

from model import layout
from model.preprocessing import PreprocessConfig, decode, decode_error_reason
from service.core.errors import InvalidImage, ServiceError
from service.core.images import EncodedImage, ImageInput, PixelImage

log = logging.getLogger(__name__)

Outcome = np.ndarray | ServiceError

# Most images per gradcam call. A gradient pass keeps every activation of the
# batch (VGG16 at 224x224 has about 15 million: some 60 MB of float32 an
# image), and Explain gained little from batching here (11 ms for one 128x128
# image, 77 ms for eight, per-image overlays dominating), so its batches stay
# small whatever --max-batch-size allows for Classify.
EXPLAIN_MAX_BATCH = 8


@dataclass(frozen=True)
class ExplainInput:
    """An encoded image and the class to explain (-1: the most probable)."""

    image: EncodedImage
    class_index: int


@dataclass(frozen=True)
class Explanation:
    """The `gradcam` signature's answer for one image (PNGs made in the graph)."""

    probabilities: np.ndarray
    class_index: int
    heatmap_png: bytes
    overlay_png: bytes


class ModelLoadError(Exception):
    """A version folder is not a usable vggserve export; the message says why."""


@dataclass(frozen=True)
class SignatureInfo:
    name: str
    inputs: str  # e.g. "images: string[-1]"

    def __str__(self) -> str:
        return f"{self.name}({self.inputs})"


class LoadedModel:
    """A SavedModel version loaded for serving.

    Attributes:
        name: the model's name (its folder's name).
        version: the integer version.
        labels: one class name per output.
        preprocess: the export's preprocessing settings.
    """

    def __init__(
        self, name: str, version_dir: Path, on_call: Callable[[int], None] | None = None
    ) -> None:
        """`on_call(n)` is told of every model call that serves requests (n images)."""
        self.name = name
        self._on_call = on_call
        try:
            self.version = int(version_dir.name)
            self.labels = layout.read_labels(version_dir)
            self.preprocess: PreprocessConfig = layout.read_preprocessing(version_dir)
            self.preprocessing_json = (version_dir / layout.PREPROCESSING).read_text()
            loaded = tf.saved_model.load(str(version_dir))
            self._encoded = loaded.signatures[layout.SERVING_SIGNATURE]
            self._pixels = loaded.signatures[layout.PIXELS_SIGNATURE]
            # Absent from versions exported before Grad-CAM: they still classify.
            self._gradcam = loaded.signatures.get(layout.GRADCAM_SIGNATURE)
        except (OSError, ValueError, KeyError) as exc:
            raise ModelLoadError(f"{version_dir} is not a usable export: {_why(exc)}") from exc
        self._loaded = loaded  # keeps the signatures' variables alive
        self._decodes, self._decodable = _decode_checks(self.preprocess.max_pixels)
        self.signatures = [
            SignatureInfo(layout.SERVING_SIGNATURE, f"{layout.IMAGES_INPUT}: string[-1]"),
            SignatureInfo(layout.PIXELS_SIGNATURE, f"{layout.PIXELS_INPUT}: uint8[-1,-1,-1,-1]"),
        ]
        if self._gradcam is not None:
            self.signatures.append(
                SignatureInfo(
                    layout.GRADCAM_SIGNATURE,
                    f"{layout.IMAGES_INPUT}: string[-1], {layout.CLASS_INDEX_INPUT}: int32[-1]",
                )
            )
        outputs = self._encoded.structured_outputs[layout.OUTPUT].shape[-1]
        if outputs != len(self.labels):
            raise ModelLoadError(f"{version_dir}: {len(self.labels)} labels for {outputs} outputs")

    def predict(self, images: Sequence[ImageInput]) -> list[Outcome]:
        """One probability vector (float32, sums to 1) or error per image, in order."""
        outcomes: list[Outcome | None] = [None] * len(images)
        encoded = {i: image for i, image in enumerate(images) if isinstance(image, EncodedImage)}
        kept = self._screen(encoded, outcomes)
        if kept:
            data = [encoded[i].data for i in kept]
            self._fill(outcomes, kept, data, self._run_encoded, self._decode_errors)
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for i, image in enumerate(images):
            if isinstance(image, PixelImage):
                by_shape.setdefault(image.array.shape, []).append(i)
        for members in by_shape.values():
            arrays = [images[i].array for i in members]  # type: ignore[union-attr]
            self._fill(outcomes, members, arrays, self._run_pixels)
        return outcomes  # type: ignore[return-value]

    @property
    def can_explain(self) -> bool:
        """Whether the export has the `gradcam` signature."""
        return self._gradcam is not None

    def explain(self, items: Sequence[ExplainInput]) -> list[Explanation | ServiceError]:
        """One Grad-CAM explanation or error per item, in order (one graph call)."""
        if self._gradcam is None:
            raise RuntimeError("explain() on a version without the gradcam signature")
        outcomes: list[Explanation | ServiceError | None] = [None] * len(items)
        kept = self._screen({i: item.image for i, item in enumerate(items)}, outcomes)
        if not kept:
            return outcomes  # type: ignore[return-value]
        self._fill(
            outcomes,  # type: ignore[arg-type]
            kept,
            [items[i] for i in kept],
            self._run_gradcam,
            lambda inputs: self._decode_errors([item.image.data for item in inputs]),
        )
        return outcomes  # type: ignore[return-value]

    def _run_gradcam(self, items: list[ExplainInput]) -> list[Explanation]:
        assert self._gradcam is not None
        out = self._gradcam(
            images=tf.constant([item.image.data for item in items]),
            class_index=tf.constant([item.class_index for item in items], tf.int32),
        )
        probabilities = out[layout.OUTPUT].numpy()
        chosen = out[layout.CLASS_INDEX_INPUT].numpy()
        heatmaps = out["heatmap_png"].numpy()
        overlays = out["overlay_png"].numpy()
        return [
            Explanation(probabilities[i], int(chosen[i]), bytes(heatmaps[i]), bytes(overlays[i]))
            for i in range(len(items))
        ]

    def _run_encoded(self, data: list) -> np.ndarray:
        return self._encoded(images=tf.constant(data))[layout.OUTPUT].numpy()

    def _run_pixels(self, arrays: list) -> np.ndarray:
        return self._pixels(pixels=tf.constant(np.stack(arrays)))[layout.OUTPUT].numpy()

    def _screen(self, images: dict[int, EncodedImage], outcomes: list) -> list[int]:
        """The positions of `images` less those cut short, whose errors go into `outcomes`.

        An image whose file lacks its end marker (`EncodedImage.ends_early`)
        is decoded alone, without the model, before the batch runs: one such
        image in a batched call would fail it, and finding it then costs the
        batch two more decodes and a second model call. Decoding it alone
        costs less than decoding a whole image does, and gives TensorFlow's
        own reason. One that decodes after all (the hint can be wrong) stays.
        """
        kept = []
        for position, image in images.items():
            reason = _decoder_refuses(image.data) if image.ends_early else None
            if reason is None:
                kept.append(position)
            else:
                outcomes[position] = _invalid(reason)
        return kept

    def _decode_error(self, data: bytes) -> str | None:
        """TensorFlow's reason why `data` does not decode, or None if it does."""
        try:
            self._decodes(tf.constant(data))
        except tf.errors.InvalidArgumentError as exc:
            return decode_error_reason(exc)
        return None

    def _decode_errors(self, data: list) -> dict[int, str]:
        """The images of `data` that do not decode, by index, with TensorFlow's reason."""
        decodable = set(self._decodable(tf.constant(data)).numpy().tolist())
        errors = {}
        for i in (i for i in range(len(data)) if i not in decodable):
            # Once more alone: a failed element of a dataset tells no reason.
            reason = self._decode_error(data[i])
            if reason is not None:
                errors[i] = reason
        return errors

    def _fill(
        self,
        outcomes: list[Outcome | None],
        positions: list[int],
        inputs: list,
        run: Callable[[list], Sequence | np.ndarray],
        find_bad: Callable[[list], dict[int, str]] | None = None,
    ) -> None:
        try:
            if self._on_call is not None:
                self._on_call(len(inputs))
            probabilities = run(inputs)
        except tf.errors.InvalidArgumentError as exc:
            if len(inputs) == 1:
                outcomes[positions[0]] = _invalid(decode_error_reason(exc))
                return
            bad = find_bad(inputs) if find_bad is not None else {}
            if not bad:
                # Nothing fails on its own (or no way to tell): halve until found.
                half = len(inputs) // 2
                self._fill(outcomes, positions[:half], inputs[:half], run, find_bad)
                self._fill(outcomes, positions[half:], inputs[half:], run, find_bad)
                return
            for i, reason in bad.items():
                outcomes[positions[i]] = _invalid(reason)
            good = [i for i in range(len(inputs)) if i not in bad]
            if good:
                self._fill(
                    outcomes,
                    [positions[i] for i in good],
                    [inputs[i] for i in good],
                    run,
                    find_bad,
                )
            return
        for position, row in zip(positions, probabilities, strict=True):
            outcomes[position] = row

    def warm_up(self, batch_sizes: Sequence[int]) -> float:
        """Runs each batch size once on every signature; returns the seconds taken.

        The first call at a new batch size pays for graph and kernel set-up;
        paying it here keeps it out of the first clients' latency.
        """
        started = time.perf_counter()
        sample = np.random.default_rng(0).integers(
            0, 256, (self.preprocess.height, self.preprocess.width, 3), dtype=np.uint8
        )
        buffer = io.BytesIO()
        Image.fromarray(sample).save(buffer, format="JPEG")
        image = buffer.getvalue()
        # Traced now, not when the first bad image comes.
        self._decodes(tf.constant(image))
        self._decodable(tf.constant([image]))
        for size in batch_sizes:
            self._run_encoded([image] * size)
            self._run_pixels([sample] * size)
        if self._gradcam is not None:
            jpeg = EncodedImage(image, "JPEG", self.preprocess.height, self.preprocess.width)
            for size in sorted({min(s, EXPLAIN_MAX_BATCH) for s in batch_sizes}):
                self._run_gradcam([ExplainInput(jpeg, -1)] * size)
        return time.perf_counter() - started


def _decode_checks(max_pixels: int) -> tuple[Callable, Callable]:
    """Graph functions over `model.preprocessing.decode`, without the model.

    `decodes(image)` fails with the decoder's reason; `decodable(images)` returns
    the indices of the images that decode, in one call: a tf.data pipeline
    whose `ignore_errors` drops the failing ones. One graph call for the batch
    costs about what decoding it does (9 ms for 32 JPEGs of 128x128 here); a
    call per image cost twice that, halving with decode-only calls three times.
    """

    @tf.function(input_signature=[tf.TensorSpec([], tf.string)])
    def decodes(image: tf.Tensor) -> tf.Tensor:
        return tf.shape(decode(image, max_pixels))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def decodable(images: tf.Tensor) -> tf.Tensor:
        indices = tf.data.Dataset.range(tf.size(images, out_type=tf.int64))
        pairs = tf.data.Dataset.zip((indices, tf.data.Dataset.from_tensor_slices(images)))
        decoded = pairs.map(lambda i, image: (i, tf.shape(decode(image, max_pixels))))
        survivors = decoded.ignore_errors().map(lambda i, _: i)
        # A sentinel keeps the one batch non-empty when nothing decodes
        # (Dataset.reduce would cope too, but costs ten times as much here).
        ended = survivors.concatenate(tf.data.Dataset.from_tensors(tf.constant(-1, tf.int64)))
        return ended.batch(tf.size(images, out_type=tf.int64) + 1).get_single_element()[:-1]

    return decodes, decodable


def _decoder_refuses(data: bytes) -> str | None:
    """TensorFlow's reason why its image decoder refuses `data`, or None if it decodes.

    The decoder op `model.preprocessing.decode` runs, with the same
    arguments, called eagerly: on a cut 128x128 JPEG that costs 0.25 ms of
    CPU, where a failing call of a graph function (`_decode_checks`) costs
    2 ms, most of it spent composing the error (the graph's node traces).
    decode()'s own size checks are not needed here: the header check ran the
    same limit, and an image that decodes still goes through decode() in
    its batch.
    """
    try:
        tf.io.decode_image(data, channels=3, expand_animations=False)
    except tf.errors.InvalidArgumentError as exc:
        return decode_error_reason(exc)
    return None


def _invalid(reason: str) -> InvalidImage:
    if reason.startswith("image is "):  # decode()'s size limit says it all
        return InvalidImage(reason)
    return InvalidImage(f"image does not decode: {reason}")


def _why(exc: BaseException) -> str:
    """One line naming the file when there is one (repr of an OSError omits it)."""
    if isinstance(exc, OSError) and exc.filename:
        return f"{exc.strerror or type(exc).__name__}: {exc.filename}"
    return " ".join(str(exc).split()) or type(exc).__name__
