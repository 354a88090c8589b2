"""The served model's routing: its loaded versions, each behind its own batcher.

`get` picks the version a request asks for; the data plane
(service.core.dataplane) validates the image and queues it in that version's
batcher. `explain` queues an image in the version's second batcher, for
Grad-CAM explanations: a gradient pass costs more than a forward pass, and
classification must not queue behind it. Which versions are loaded is decided elsewhere
(service.core.watcher: the model folder and the version policy); this module
only adds, removes and reports them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from service.core.batcher import Batcher
from service.core.errors import InvalidRequest, NotExplainable, Unavailable, VersionNotFound
from service.core.images import EncodedImage, ImageInput
from service.core.metrics import Metrics
from service.core.options import CoreOptions
from service.core.runtime import EXPLAIN_MAX_BATCH, ExplainInput, Explanation, LoadedModel
from service.core.versions import VersionState, VersionStatus

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
    def __init__(self, model: LoadedModel, options: CoreOptions, metrics: Metrics) -> None:
        self.model = model
        self.batcher: Batcher[ImageInput, np.ndarray] = Batcher(
            model.predict,
            max_batch_size=options.batch_size,
            max_wait_s=options.batch_wait_s,
            max_queue=options.max_queue,
            workers=options.model_workers,
            on_batch=metrics.observe_batch,
            name=f"model-v{model.version}",
        )
        # Its own queue and worker thread: classification never waits behind
        # a gradient pass. Same queue limit, small batches (see EXPLAIN_MAX_BATCH).
        self.explainer: Batcher[ExplainInput, Explanation] | None = None
        if model.can_explain:
            self.explainer = Batcher(
                model.explain,
                max_batch_size=min(options.batch_size, EXPLAIN_MAX_BATCH),
                max_wait_s=options.batch_wait_s,
                max_queue=options.max_queue,
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
    """The versions being served, and requests routed to them."""

    def __init__(self, options: CoreOptions, metrics: Metrics) -> None:
        self.options = options
        self.metrics = metrics
        self.name = options.model_name or Path(options.model_dir).resolve().name
        self._versions: dict[int, ServedVersion] = {}
        # Every version seen since start-up, in TF Serving's terms (ModelService).
        self._states: dict[int, VersionStatus] = {}
        self._closing = False
        # Read when Prometheus scrapes (on its HTTP thread), not set per request.
        metrics.queue_depth.set_function(
            lambda: sum(b.queue_depth for v in list(self._versions.values()) for b in v.batchers)
        )

    @property
    def versions(self) -> list[int]:
        return sorted(self._versions)

    def statuses(self) -> list[VersionStatus]:
        """The state of every version seen since start-up (unloaded and failed ones: END)."""
        return [self._states[v] for v in sorted(self._states)]

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

    @property
    def closing(self) -> bool:
        return self._closing

    def set_state(self, version: int, state: VersionState, error: str = "") -> None:
        """Records where `version` is in its life (ModelService reports it)."""
        self._states[version] = VersionStatus(version, state, error)

    def add(self, model: LoadedModel) -> None:
        """Starts routing requests to a loaded, warm version."""
        self._versions[model.version] = ServedVersion(model, self.options, self.metrics)
        self.set_state(model.version, VersionState.AVAILABLE)
        self.metrics.loaded_versions.labels(str(model.version)).set(1)
        self._publish_info()

    async def remove(self, version: int) -> None:
        """Stops routing to `version`, then answers what was queued for it and frees it."""
        served = self._versions.pop(version)  # new requests no longer reach it
        self.set_state(version, VersionState.UNLOADING)
        await served.close()  # answers the ones already queued
        self.set_state(version, VersionState.END)
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

    async def explain(
        self,
        served: ServedVersion,
        image: EncodedImage,
        class_index: int | None,
        deadline: float | None = None,
    ) -> tuple[Prediction, Explanation]:
        """Grad-CAM for `class_index` (None: the most probable class) of `image`.

        Raises:
            NotExplainable: the version has no `gradcam` signature.
            InvalidRequest: `class_index` is not a class of the model.
        """
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
