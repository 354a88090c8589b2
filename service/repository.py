"""The served model: its loaded versions, each behind its own batcher.

This is the service core (no gRPC): `classify` validates nothing (the caller
passes validated images), picks the version, queues the image in that
version's batcher and returns a `Prediction`. `explain` does the same with
the version's second batcher, for Grad-CAM explanations: a gradient pass
costs several forward passes, and classification must not queue behind it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model import layout
from service.batcher import Batcher
from service.errors import InvalidRequest, NotExplainable, Unavailable, VersionNotFound
from service.images import EncodedImage, ImageInput
from service.metrics import Metrics
from service.runtime import (
    EXPLAIN_MAX_BATCH,
    ExplainInput,
    Explanation,
    LoadedModel,
    ModelLoadError,
)
from service.settings import Settings
from service.versions import VersionPolicy

log = logging.getLogger(__name__)

DEFAULT_TOP_K = 5


@dataclass(frozen=True)
class Prediction:
    probabilities: np.ndarray
    labels: Sequence[str]
    model_name: str
    version: int

    def top(self, k: int) -> list[tuple[int, str, float]]:
        """The k most probable classes, most probable first (k=0: the default 5)."""
        k = min(k or DEFAULT_TOP_K, len(self.probabilities))
        order = np.argsort(-self.probabilities, kind="stable")[:k]
        return [(int(i), self.labels[i], float(self.probabilities[i])) for i in order]


class ServedVersion:
    def __init__(self, model: LoadedModel, settings: Settings, metrics: Metrics) -> None:
        self.model = model
        self.batcher: Batcher[ImageInput, np.ndarray] = Batcher(
            model.predict,
            max_batch_size=settings.max_batch_size if settings.batching else 1,
            max_wait_s=settings.batch_timeout_s if settings.batching else 0.0,
            max_queue=settings.max_queue,
            workers=settings.model_workers,
            on_batch=metrics.observe_batch,
            name=f"model-v{model.version}",
        )
        # Its own queue and worker thread: classification never waits behind
        # a gradient pass. Same limits, so Explain cannot hold more memory.
        self.explainer: Batcher[ExplainInput, Explanation] | None = None
        if model.can_explain:
            self.explainer = Batcher(
                model.explain,
                max_batch_size=(
                    min(settings.max_batch_size, EXPLAIN_MAX_BATCH) if settings.batching else 1
                ),
                max_wait_s=settings.batch_timeout_s if settings.batching else 0.0,
                max_queue=settings.max_queue,
                workers=1,
                # Not in the batch histograms: those describe classification
                # (Explain's latency is in the per-RPC metrics).
                name=f"explain-v{model.version}",
            )

    @property
    def batchers(self) -> list[Batcher]:  # type: ignore[type-arg]
        return [self.batcher] + ([self.explainer] if self.explainer is not None else [])

    async def close(self) -> None:
        """Answers everything queued on both batchers, then stops them."""
        await asyncio.gather(*(b.close() for b in self.batchers))


class ModelRepository:
    """Loads the versions the policy selects and routes requests to them."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.root = Path(settings.model_dir)
        self.name = settings.model_name or self.root.resolve().name
        self.policy = VersionPolicy.parse(settings.versions)
        self._versions: dict[int, ServedVersion] = {}
        # Versions that failed to load, with the files' stamp when they did.
        self._failed: dict[int, float] = {}
        self._closing = False
        # Read when Prometheus scrapes (on its HTTP thread), not set per request.
        metrics.queue_depth.set_function(
            lambda: sum(b.queue_depth for v in list(self._versions.values()) for b in v.batchers)
        )

    @property
    def versions(self) -> list[int]:
        return sorted(self._versions)

    def default(self) -> ServedVersion:
        if not self._versions:
            raise Unavailable("no model version is loaded yet; retry shortly")
        return self._versions[max(self._versions)]

    def get(self, version: int) -> ServedVersion:
        if self._closing:
            raise Unavailable("the server is shutting down; retry on another replica")
        if version < 0:
            raise InvalidRequest(f"model_version must be 0 (latest) or positive, got {version}")
        if version == 0:
            return self.default()
        served = self._versions.get(version)
        if served is None:
            loaded = ", ".join(map(str, self.versions)) or "none"
            raise VersionNotFound(f"model version {version} is not loaded (loaded: {loaded})")
        return served

    async def load(self) -> list[int]:
        """Loads and warms the versions the policy selects (start-up); returns them.

        Raises:
            ModelLoadError: no version could be loaded.
        """
        await self.sync()
        if not self._versions:
            found = ", ".join(map(str, layout.list_versions(self.root))) or "none"
            failed = ", ".join(map(str, sorted(self._failed)))
            raise ModelLoadError(
                f"no usable exported version under {self.root} matches "
                f"'{self.settings.versions}' (found: {found}"
                f"{'; failed to load: ' + failed if failed else ''}); run `make train` first"
            )
        return self.versions

    async def watch(self, interval_s: float) -> None:
        """Re-reads the model folder every `interval_s` seconds, forever."""
        while not self._closing:
            await asyncio.sleep(interval_s)
            try:
                await self.sync()
            except Exception:  # keep watching: the next poll may succeed
                log.exception("model folder check failed")

    async def sync(self) -> None:
        """Brings the loaded versions in line with the folder and the policy.

        New versions are loaded and warmed off the event loop, then switched to
        in one step; versions no longer wanted are removed from routing first,
        then closed, which answers everything already queued for them. A
        version that fails to load is logged and skipped (until its files
        change); the versions being served stay.
        """
        usable = [v for v in layout.list_versions(self.root) if not self._known_bad(v)]
        wanted = self.policy.select(usable)
        for version in wanted:
            if version not in self._versions and not self._closing:
                await self._load(version)
        keep = [v for v in wanted if v in self._versions]
        if not keep:
            return  # nothing wanted could be loaded: keep serving what we have
        for version in [v for v in self._versions if v not in keep]:
            await self._unload(version)

    def _known_bad(self, version: int) -> bool:
        stamp = self._failed.get(version)
        return stamp is not None and stamp == _stamp(self.root / str(version))

    async def _load(self, version: int) -> None:
        started = time.perf_counter()
        try:
            model = await asyncio.to_thread(self._load_and_warm, version)
        except Exception as exc:  # a broken export must never take the server down
            self._failed[version] = _stamp(self.root / str(version))
            self.metrics.loads.labels("failure").inc()
            log.error(
                "not serving %s version %d: it failed to load: %s",
                self.name,
                version,
                _one_line(exc),
            )
            return
        self._versions[version] = ServedVersion(model, self.settings, self.metrics)
        self.metrics.loads.labels("success").inc()
        self.metrics.loaded_versions.labels(str(version)).set(1)
        self._publish_info()
        log.info(
            "loaded %s version %d in %.2f s", self.name, version, time.perf_counter() - started
        )

    async def _unload(self, version: int) -> None:
        served = self._versions.pop(version)  # new requests no longer reach it
        await served.close()  # answers the ones already queued
        self.metrics.loaded_versions.remove(str(version))
        self.metrics.unloads.inc()
        self._publish_info()
        log.info("unloaded %s version %d", self.name, version)

    def _publish_info(self) -> None:
        """vggserve_model_info names the version requests go to now."""
        if not self._versions:
            return
        latest = self.default().model
        self.metrics.model.info(
            {
                "name": self.name,
                "default_version": str(latest.version),
                "input": f"{latest.preprocess.height}x{latest.preprocess.width}",
            }
        )

    def _load_and_warm(self, version: int) -> LoadedModel:
        model = LoadedModel(
            self.name, self.root / str(version), on_call=lambda _: self.metrics.model_calls.inc()
        )
        sizes = sorted({1, 2, 4, 8, 16, 32, 64, 128, 256, self.settings.max_batch_size})
        seconds = model.warm_up([s for s in sizes if s <= self.settings.max_batch_size])
        log.info("warmed up version %d in %.2f s", version, seconds)
        return model

    async def classify(
        self, image: ImageInput, version: int = 0, deadline: float | None = None
    ) -> Prediction:
        served = self.get(version)
        probabilities = await served.batcher.submit(image, deadline)
        return Prediction(probabilities, served.model.labels, self.name, served.model.version)

    async def explain(
        self,
        image: EncodedImage,
        class_index: int | None,
        version: int = 0,
        deadline: float | None = None,
    ) -> tuple[Prediction, Explanation]:
        """Grad-CAM for `class_index` (None: the most probable class) of `image`.

        Raises:
            NotExplainable: the version has no `gradcam` signature.
            InvalidRequest: `class_index` is not a class of the model.
        """
        served = self.get(version)
        model = served.model
        if served.explainer is None:
            raise NotExplainable(
                f"model version {model.version} was exported before Grad-CAM explanations "
                "(its SavedModel has no 'gradcam' signature); re-export it with this "
                "release's model.train to explain it, or ask a version that has it"
            )
        if class_index is not None and class_index >= len(model.labels):
            raise InvalidRequest(
                f"class_index {class_index} is out of range: the model has "
                f"{len(model.labels)} classes (0-{len(model.labels) - 1})"
            )
        wanted = -1 if class_index is None else class_index
        explanation = await served.explainer.submit(ExplainInput(image, wanted), deadline)
        prediction = Prediction(explanation.probabilities, model.labels, self.name, model.version)
        return prediction, explanation

    async def close(self) -> None:
        """Refuses new work, then finishes every queued image."""
        self._closing = True
        await asyncio.gather(*(v.close() for v in self._versions.values()))


def _stamp(version_dir: Path) -> float:
    """Changes when the version's SavedModel is rewritten (then it is tried again)."""
    try:
        return (version_dir / "saved_model.pb").stat().st_mtime
    except OSError:
        return -1.0


def _one_line(exc: BaseException) -> str:
    text = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return " ".join(str(text).split())[:500]
