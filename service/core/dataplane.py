"""The data plane: the one object every protocol adapter calls.

`Core` is to vggserve what `ServerCore` is to TensorFlow Serving and
`DataPlane` to MLServer: health, the models and their versions, metadata,
classify and explain, each taking a `RequestContext` and plain Python
values. It owns the repository (versions and their batchers), the folder
watcher and the metrics; adapters see none of them. Every call runs the same
order whatever its protocol: admission (counts and claimed shapes, as a
whole), per-image header checks, the version's batcher, per-image counting.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import TypeVar

from service.core import admission, explain_limits, images
from service.core.context import RequestContext
from service.core.errors import (
    InvalidImage,
    InvalidRequest,
    ModelNotFound,
    ServiceError,
    VersionNotFound,
)
from service.core.explain_limits import ExplainGate, ExplainLimits
from service.core.images import EncodedImage, ImageInput, Limits
from service.core.metrics import Metrics
from service.core.options import CoreOptions
from service.core.repository import ModelRepository, Prediction, ServedVersion
from service.core.requests import Encoded, Images, Pixels, RawImage
from service.core.runtime import Explanation
from service.core.versions import VersionStatus
from service.core.watcher import VersionWatcher

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class ModelInfo:
    """What metadata calls report about one version of the served model."""

    name: str
    version: int  # the version described (the latest when none was asked)
    versions: list[int]  # every loaded version
    labels: list[str]
    input_height: int
    input_width: int
    preprocessing_json: str
    signatures: list[str]
    max_batch_size: int
    can_explain: bool


class Core:
    """Serves the model of `options.model_dir`; build it with `service.core.build_core`."""

    def __init__(self, options: CoreOptions, metrics: Metrics | None = None) -> None:
        self.options = options
        self.metrics = metrics or Metrics()
        self.limits = Limits(options.max_image_bytes, options.max_image_pixels, options.max_queue)
        self.explain_limits = ExplainLimits(
            options.explain_max_pixels, options.max_answer_bytes, options.explain_max_concurrent
        )
        # Images explained at once, every protocol together (explain_limits).
        self.explain_gate = ExplainGate(options.explain_max_concurrent)
        self._repository = ModelRepository(options, self.metrics)
        self._watcher = VersionWatcher(self._repository, options, self.metrics)
        self._watch: asyncio.Task[None] | None = None
        # Whether the server wants new traffic: False until the model is warm
        # and from the start of a drain. Every protocol's readiness answer
        # reads it, so a balancer of any kind sees the drain at once; calls
        # that do arrive are still answered meanwhile.
        self._serving = False

    # --- life -----------------------------------------------------------------------------

    async def start(self) -> list[int]:
        """Loads and warms the versions the policy selects; then watches the folder.

        Raises:
            ModelLoadError: no version could be loaded.
        """
        versions = await self._watcher.load()
        if self.options.poll_interval_s > 0:
            self._watch = asyncio.create_task(
                self._watcher.watch(self.options.poll_interval_s), name="model-watch"
            )
        return versions

    def set_serving(self, serving: bool) -> None:
        """Whether readiness answers say "send traffic" (the server's drain sets False)."""
        self._serving = serving

    def stop_watching(self) -> None:
        if self._watch is not None:
            self._watch.cancel()

    async def close(self) -> None:
        """Refuses new work, then answers every queued image and frees the versions."""
        self.stop_watching()
        await self._repository.close()

    # --- health and models --------------------------------------------------------------------

    @property
    def model_name(self) -> str:
        return self._repository.name

    @property
    def max_images(self) -> int:
        """The most images one request may carry (adapters bound their parsing by it)."""
        return self.limits.max_images

    def live(self) -> bool:
        return True  # answering at all is being live

    def ready(self) -> bool:
        """Warm, not draining, and a version loaded."""
        if not self._serving:
            return False
        try:
            self._repository.get(0)
        except ServiceError:  # nothing loaded yet, or shutting down
            return False
        return True

    def model_ready(self, ctx: RequestContext) -> bool:
        """Ready, and the model and version `ctx` asks for are served."""
        if not self._serving:
            return False
        try:
            self._served(ctx)
        except ServiceError:
            return False
        return True

    def models(self) -> list[str]:
        return [self._repository.name]

    def loaded_versions(self) -> list[int]:
        return self._repository.versions

    def metadata(self, ctx: RequestContext) -> ModelInfo:
        """The version `ctx` asks for (its latest by default); NOT_FOUND when not served."""
        served = self._served(ctx)
        model = served.model
        return ModelInfo(
            name=self._repository.name,
            version=model.version,
            versions=self._repository.versions,
            labels=list(model.labels),
            input_height=model.preprocess.height,
            input_width=model.preprocess.width,
            preprocessing_json=model.preprocessing_json,
            signatures=[str(s) for s in model.signatures],
            max_batch_size=served.batcher.max_batch_size,
            can_explain=model.can_explain,
        )

    def version_states(self, ctx: RequestContext) -> list[VersionStatus]:
        """Every version seen since start-up (ctx.version 0), or the one asked for."""
        self._check_model(ctx)
        found = [s for s in self._repository.statuses() if ctx.version in (0, s.version)]
        if not found:
            what = f"version {ctx.version} of model" if ctx.version else "any version of model"
            raise VersionNotFound(f"could not find {what} {self._repository.name!r}")
        return found

    # --- inference ------------------------------------------------------------------------------

    async def classify(self, ctx: RequestContext, raw: RawImage) -> Prediction:
        """One image through validation and its version's batcher."""
        served = self._served_counted(ctx, 1)
        with self._counted(ctx.protocol):
            return await self._classify(served, raw, ctx.deadline)

    async def classify_each(
        self, ctx: RequestContext, raws: Images
    ) -> list[Prediction | ServiceError]:
        """Several images at once (they share batches); each gets its own outcome.

        The request as a whole is admitted first (count, claimed shapes); an
        unknown model or version fails the whole call, a bad image only itself.
        """
        admission.request(raws, self.limits)
        served = self._served_counted(ctx, len(raws))

        async def one(raw: RawImage) -> Prediction | ServiceError:
            try:
                with self._counted(ctx.protocol):
                    return await self._classify(served, raw, ctx.deadline)
            except ServiceError as exc:
                return exc

        if len(raws) == 1:
            # The usual TF Serving / V2 request: no task for gather() to make.
            return [await one(next(iter(raws)))]
        return list(await asyncio.gather(*(one(raw) for raw in raws)))

    async def classify_all(self, ctx: RequestContext, raws: Images) -> list[Prediction]:
        """Several images answered as a whole (TF Serving's and V2's way).

        If any fails, the call fails with the first failure's kind of error,
        naming that image ("image 1 of 3: ...").
        """
        return _whole(await self.classify_each(ctx, raws))

    async def explain(
        self, ctx: RequestContext, raw: RawImage, class_index: int | None = None
    ) -> tuple[Prediction, Explanation]:
        """Grad-CAM of one encoded image through its version's Explain batcher.

        Explain's own limits (service.core.explain_limits) come before any
        work: pixels, the answer's size, a place among the images explained
        at once.
        """
        served = self._served_counted(ctx, 1)
        with self._counted(ctx.protocol):
            return await self._explain(served, raw, class_index, ctx)

    async def explain_all(
        self, ctx: RequestContext, raws: Sequence[RawImage], class_indices: Sequence[int | None]
    ) -> list[tuple[Prediction, Explanation]]:
        """`explain` for several images, answered as a whole like `classify_all`."""
        admission.count(len(raws), self.limits)
        if len(class_indices) != len(raws):
            raise InvalidRequest(f"{len(class_indices)} class indices for {len(raws)} images")
        served = self._served_counted(ctx, len(raws))

        async def one(
            raw: RawImage, wanted: int | None
        ) -> tuple[Prediction, Explanation] | ServiceError:
            try:
                with self._counted(ctx.protocol):
                    return await self._explain(served, raw, wanted, ctx, admitted=True)
            except ServiceError as exc:
                return exc

        try:  # the whole answer's size and the places, before any image's work
            if served.model.can_explain:
                explain_limits.check_request(
                    raws, self._validate, served.model.preprocess, self.explain_limits, ctx.protocol
                )
            self.explain_gate.acquire(len(raws))
        except ServiceError as exc:
            for _ in raws:
                self.metrics.record_image(ctx.protocol, exc.code)
            raise
        try:
            return _whole(await asyncio.gather(*map(one, raws, class_indices)))
        finally:
            self.explain_gate.release(len(raws))

    def check(self, ctx: RequestContext) -> None:
        """NOT_FOUND (or UNAVAILABLE) unless the model and version `ctx` asks for are
        served: adapters call it before reading a large body."""
        self._served(ctx)

    def admit(self, count: int, pixel_shape: tuple[int, int, int] | None = None) -> None:
        """Checks a request's claim before its images are built: the image count
        and, for a pixel tensor, its (height, width, channels). Adapters call it
        as soon as they know the claim; the inference calls check again."""
        admission.count(count, self.limits)
        if pixel_shape is not None:
            admission.shape(*pixel_shape, self.limits)

    def finish(self, ctx: RequestContext, code: str, seconds: float) -> None:
        """Records one answered call (its code: "OK" or a status code name)."""
        self.metrics.record_rpc(ctx.protocol, ctx.method, code, seconds)

    # --- inside -----------------------------------------------------------------------------

    def _check_model(self, ctx: RequestContext) -> None:
        if ctx.model and ctx.model != self._repository.name:
            raise ModelNotFound(
                f"model '{ctx.model}' is not served here; this server serves "
                f"'{self._repository.name}'"
            )

    def _served(self, ctx: RequestContext) -> ServedVersion:
        self._check_model(ctx)
        if ctx.label:
            raise InvalidRequest(
                f"version label {ctx.label!r}: this server has no version labels; "
                "name a version number, or none for the latest"
            )
        return self._repository.get(ctx.version)

    def _served_counted(self, ctx: RequestContext, images_asked: int) -> ServedVersion:
        """The version asked; when it is not served, every image is counted with the error."""
        try:
            return self._served(ctx)
        except ServiceError as exc:
            for _ in range(min(images_asked, self.limits.max_images)):
                self.metrics.record_image(ctx.protocol, exc.code)
            raise

    def _validate(self, raw: RawImage) -> ImageInput:
        """The checked image, or InvalidImage naming the fault (headers only, no decoding)."""
        if isinstance(raw, Encoded):
            return images.encoded(raw.data, self.limits)
        if isinstance(raw, Pixels):
            return images.pixels(raw.data, raw.height, raw.width, raw.channels, self.limits)
        raise InvalidImage("request has no image: send encoded image bytes or raw pixels")

    async def _classify(
        self, served: ServedVersion, raw: RawImage, deadline: float | None
    ) -> Prediction:
        probabilities = await served.batcher.submit(self._validate(raw), deadline)
        model = served.model
        return Prediction(probabilities, model.labels, self._repository.name, model.version)

    async def _explain(
        self,
        served: ServedVersion,
        raw: RawImage,
        class_index: int | None,
        ctx: RequestContext,
        admitted: bool = False,
    ) -> tuple[Prediction, Explanation]:
        """`admitted`: the caller holds this image's place in `explain_gate`."""
        if isinstance(raw, Pixels):
            raise InvalidImage(
                "Explain takes encoded image bytes (JPEG/PNG/BMP/GIF), not raw pixels"
            )
        image = self._validate(raw)
        assert isinstance(image, EncodedImage)
        model = served.model
        if model.can_explain:  # else the repository says why it cannot
            explain_limits.check(image, model.preprocess, self.explain_limits, ctx.protocol)
        with nullcontext() if admitted else self.explain_gate.admit():
            return await self._repository.explain(served, image, class_index, ctx.deadline)

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


def _whole(outcomes: Sequence[T | ServiceError]) -> list[T]:
    """The answers, or the first failure's kind of error naming its image."""
    for index, outcome in enumerate(outcomes):
        if isinstance(outcome, ServiceError):
            if len(outcomes) == 1:
                raise outcome
            raise type(outcome)(f"image {index} of {len(outcomes)}: {outcome.message}")
    return list(outcomes)  # type: ignore[arg-type]  # no ServiceError left
