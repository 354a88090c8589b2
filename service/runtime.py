"""One loaded model version: the SavedModel's signatures behind a plain call.

`LoadedModel.predict` takes a batch of validated images and returns one
probability vector (or one error) per image. Encoded images go through the
`serving_default` signature in one call (decoded inside the graph, batched);
raw pixels go through `serving_pixels`, one call per image size. When a call
fails because an image does not decode, the batch is split in halves until the
bad image is found, so it fails alone and its batch-mates are answered.
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
from model.preprocessing import PreprocessConfig
from service.errors import InvalidImage, ServiceError
from service.images import EncodedImage, ImageInput, PixelImage

log = logging.getLogger(__name__)

Outcome = np.ndarray | ServiceError


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

    def __init__(self, name: str, version_dir: Path) -> None:
        self.name = name
        try:
            self.version = int(version_dir.name)
            self.labels = layout.read_labels(version_dir)
            self.preprocess: PreprocessConfig = layout.read_preprocessing(version_dir)
            self.preprocessing_json = (version_dir / layout.PREPROCESSING).read_text()
            loaded = tf.saved_model.load(str(version_dir))
            self._encoded = loaded.signatures[layout.SERVING_SIGNATURE]
            self._pixels = loaded.signatures[layout.PIXELS_SIGNATURE]
        except (OSError, ValueError, KeyError) as exc:
            raise ModelLoadError(f"{version_dir} is not a usable export: {exc!r}") from exc
        self._loaded = loaded  # keeps the signatures' variables alive
        self.signatures = [
            SignatureInfo(layout.SERVING_SIGNATURE, f"{layout.IMAGES_INPUT}: string[-1]"),
            SignatureInfo(layout.PIXELS_SIGNATURE, f"{layout.PIXELS_INPUT}: uint8[-1,-1,-1,-1]"),
        ]
        outputs = self._encoded.structured_outputs[layout.OUTPUT].shape[-1]
        if outputs != len(self.labels):
            raise ModelLoadError(f"{version_dir}: {len(self.labels)} labels for {outputs} outputs")

    def predict(self, images: Sequence[ImageInput]) -> list[Outcome]:
        """One probability vector (float32, sums to 1) or error per image, in order."""
        outcomes: list[Outcome | None] = [None] * len(images)
        encoded = [i for i, image in enumerate(images) if isinstance(image, EncodedImage)]
        if encoded:
            data = [images[i].data for i in encoded]  # type: ignore[union-attr]
            self._fill(outcomes, encoded, data, self._run_encoded)
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for i, image in enumerate(images):
            if isinstance(image, PixelImage):
                by_shape.setdefault(image.array.shape, []).append(i)
        for members in by_shape.values():
            arrays = [images[i].array for i in members]  # type: ignore[union-attr]
            self._fill(outcomes, members, arrays, self._run_pixels)
        return outcomes  # type: ignore[return-value]

    def _run_encoded(self, data: list) -> np.ndarray:
        return self._encoded(images=tf.constant(data))[layout.OUTPUT].numpy()

    def _run_pixels(self, arrays: list) -> np.ndarray:
        return self._pixels(pixels=tf.constant(np.stack(arrays)))[layout.OUTPUT].numpy()

    def _fill(
        self,
        outcomes: list[Outcome | None],
        positions: list[int],
        inputs: list,
        run: Callable[[list], np.ndarray],
    ) -> None:
        try:
            probabilities = run(inputs)
        except tf.errors.InvalidArgumentError as exc:
            if len(inputs) == 1:
                outcomes[positions[0]] = InvalidImage(f"image does not decode: {_reason(exc)}")
                return
            # Find the bad image(s) by halving; good ones are still answered.
            half = len(inputs) // 2
            self._fill(outcomes, positions[:half], inputs[:half], run)
            self._fill(outcomes, positions[half:], inputs[half:], run)
            return
        for position, row in zip(positions, probabilities, strict=True):
            outcomes[position] = row

    def warm_up(self, batch_sizes: Sequence[int]) -> float:
        """Runs each batch size once on both signatures; returns the seconds taken.

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
        for size in batch_sizes:
            self._run_encoded([image] * size)
            self._run_pixels([sample] * size)
        return time.perf_counter() - started


def _reason(exc: tf.errors.OpError) -> str:
    # TensorFlow's messages start with the graph node's name and may span lines.
    text = exc.message.split("}}")[-1].strip()
    return text.splitlines()[0] if text else "corrupt or truncated data"
