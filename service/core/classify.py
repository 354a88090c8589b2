"""The one entry every protocol adapter calls: raw image input in, predictions out.

An adapter turns its wire format into "encoded bytes" or "raw pixels and a
shape" and calls `classify`; validation (headers, limits), the version, the
batcher, the deadline and the per-image metrics all happen here, the same
for every protocol. Nothing here knows gRPC, HTTP or protobuf.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

from service.core import images
from service.core.errors import InvalidImage, ModelNotFound, ServiceError
from service.core.images import EncodedImage, ImageInput, Limits
from service.core.metrics import Metrics
from service.core.repository import ModelRepository, Prediction
from service.core.runtime import Explanation


@dataclass(frozen=True, slots=True)
class Encoded:
    """An encoded image (JPEG, PNG, BMP, GIF) as the client sent it."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Pixels:
    """Raw row-major uint8 pixels and the shape the client says they have."""

    data: bytes
    height: int
    width: int
    channels: int


RawImage = Encoded | Pixels | None  # None: the request carried no image
T = TypeVar("T")


class Core:
    def __init__(self, repository: ModelRepository, metrics: Metrics, limits: Limits) -> None:
        self.repository = repository
        self.metrics = metrics
        self.limits = limits
        # Whether the server wants new traffic: False until the model is warm
        # and from the start of a drain (the server sets it). Every protocol's
        # readiness answer reads it, so a load balancer of any kind sees the
        # drain at once; calls that do arrive are still answered meanwhile.
        self.serving = False

    def check_model(self, name: str) -> None:
        """ModelNotFound unless `name` is the served model's (the protocols that name one)."""
        if name != self.repository.name:
            raise ModelNotFound(
                f"model '{name}' is not served here; this server serves '{self.repository.name}'"
            )

    @contextmanager
    def _counted(self, protocol: str) -> Iterator[None]:
        """Counts the one image handled inside under `protocol`, by its outcome."""
        try:
            yield
        except ServiceError as exc:
            self.metrics.record_image(protocol, exc.code)
            raise
        except asyncio.CancelledError:
            self.metrics.record_image(protocol, "CANCELLED")
            raise
        except Exception:
            self.metrics.record_image(protocol, "INTERNAL")
            raise
        self.metrics.record_image(protocol, "OK")

    def validate(self, raw: RawImage) -> ImageInput:
        """The checked image, or InvalidImage naming the fault (headers only, no decoding)."""
        if isinstance(raw, Encoded):
            return images.encoded(raw.data, self.limits)
        if isinstance(raw, Pixels):
            return images.pixels(raw.data, raw.height, raw.width, raw.channels, self.limits)
        raise InvalidImage("request has no image: send encoded image bytes or raw pixels")

    async def classify(
        self, protocol: str, raw: RawImage, version: int = 0, deadline: float | None = None
    ) -> Prediction:
        """One image through validation and its version's batcher.

        Every image is counted once under `protocol`, whatever stops it (the
        header check, the version, the queue, the deadline, the decoder).
        """
        with self._counted(protocol):
            return await self.repository.classify(self.validate(raw), version, deadline)

    async def explain(
        self,
        protocol: str,
        raw: RawImage,
        class_index: int | None = None,
        version: int = 0,
        deadline: float | None = None,
    ) -> tuple[Prediction, Explanation]:
        """Grad-CAM of one encoded image through its version's Explain batcher.

        The same validation, limits and per-image counting as `classify`; raw
        pixels are refused (the overlay is drawn on the file as decoded).
        """
        with self._counted(protocol):
            if isinstance(raw, Pixels):
                raise InvalidImage(
                    "Explain takes encoded image bytes (JPEG/PNG/BMP/GIF), not raw pixels"
                )
            image = self.validate(raw)
            assert isinstance(image, EncodedImage)
            return await self.repository.explain(image, class_index, version, deadline)

    async def classify_each(
        self,
        protocol: str,
        raws: Sequence[RawImage],
        version: int = 0,
        deadline: float | None = None,
    ) -> list[Prediction | ServiceError]:
        """Several images at once (they share batches); each gets its own outcome.

        An unknown version fails the whole call (every image counted with its
        code), as a bad image fails only itself.
        """
        try:
            self.repository.get(version)
        except ServiceError as exc:
            for _ in raws:
                self.metrics.record_image(protocol, exc.code)
            raise

        async def one(raw: RawImage) -> Prediction | ServiceError:
            try:
                return await self.classify(protocol, raw, version, deadline)
            except ServiceError as exc:
                return exc

        if len(raws) == 1:
            # The usual TF Serving / V2 request: no task for gather() to make.
            return [await one(raws[0])]
        return list(await asyncio.gather(*(one(raw) for raw in raws)))

    async def classify_all(
        self,
        protocol: str,
        raws: Sequence[RawImage],
        version: int = 0,
        deadline: float | None = None,
    ) -> list[Prediction]:
        """Several images answered as a whole (TF Serving's and V2's way).

        Every image still gets its own check and batch slot; if any fails,
        the call fails with the first failure's kind of error, naming that
        image ("image 1 of 3: ..."), as those protocols have no per-image
        error. No images at all is INVALID_ARGUMENT.
        """
        if not raws:
            raise InvalidImage("the request holds no image: send at least one")
        return _whole(await self.classify_each(protocol, raws, version, deadline))

    async def explain_all(
        self,
        protocol: str,
        raws: Sequence[RawImage],
        class_indices: Sequence[int | None],
        version: int = 0,
        deadline: float | None = None,
    ) -> list[tuple[Prediction, Explanation]]:
        """`explain` for several images at once, answered as a whole like `classify_all`."""
        if not raws:
            raise InvalidImage("the request holds no image: send at least one")
        self.repository.get(version)  # an unknown version fails the call once

        async def one(
            raw: RawImage, wanted: int | None
        ) -> tuple[Prediction, Explanation] | ServiceError:
            try:
                return await self.explain(protocol, raw, wanted, version, deadline)
            except ServiceError as exc:
                return exc

        return _whole(await asyncio.gather(*map(one, raws, class_indices)))


def _whole(outcomes: Sequence[T | ServiceError]) -> list[T]:
    """The answers, or the first failure's kind of error naming its image."""
    for index, outcome in enumerate(outcomes):
        if isinstance(outcome, ServiceError):
            if len(outcomes) == 1:
                raise outcome
            raise type(outcome)(f"image {index} of {len(outcomes)}: {outcome.message}")
    return list(outcomes)  # type: ignore[arg-type]  # no ServiceError left
