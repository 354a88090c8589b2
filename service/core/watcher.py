"""Which versions are served: the model folder, the version policy, loading.

`VersionWatcher` reads the model folder (TF Serving's layout: one numbered
folder per version), asks the policy which versions to serve, loads and warms
new ones off the event loop and hands them to the repository, and removes
the ones no longer wanted. The repository (service.core.repository) only
routes requests to what it is given.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from model import layout
from service.core.metrics import Metrics
from service.core.options import CoreOptions
from service.core.repository import ModelRepository
from service.core.runtime import LoadedModel, ModelLoadError
from service.core.versions import VersionState
from service.version_policy import VersionPolicy

log = logging.getLogger(__name__)


class VersionWatcher:
    """Keeps `repository` serving the versions of `options.model_dir` the policy selects."""

    def __init__(self, repository: ModelRepository, options: CoreOptions, metrics: Metrics) -> None:
        self.repository = repository
        self.options = options
        self.metrics = metrics
        self.root = Path(options.model_dir)
        self.policy = VersionPolicy.parse(options.versions)
        # Versions that failed to load, with the files' stamp when they did.
        self._failed: dict[int, float] = {}

    async def load(self) -> list[int]:
        """Loads and warms the versions the policy selects (start-up); returns them.

        Raises:
            ModelLoadError: no version could be loaded.
        """
        await self.sync()
        if not self.repository.versions:
            found = ", ".join(map(str, layout.list_versions(self.root))) or "none"
            failed = ", ".join(map(str, sorted(self._failed)))
            raise ModelLoadError(
                f"no usable exported version under {self.root} matches "
                f"'{self.options.versions}' (found: {found}"
                f"{'; failed to load: ' + failed if failed else ''}); run `make train` first"
            )
        return self.repository.versions

    async def watch(self, interval_s: float) -> None:
        """Re-reads the model folder every `interval_s` seconds until the repository closes."""
        while not self.repository.closing:
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
        loaded = self.repository.versions
        usable = [v for v in layout.list_versions(self.root) if not self._known_bad(v)]
        wanted = self.policy.select(usable)
        new = [v for v in wanted if v not in loaded]
        for version in new:
            self.repository.set_state(version, VersionState.START)
        for version in new:
            if not self.repository.closing:
                await self._load(version)
        loaded = self.repository.versions
        keep = [v for v in wanted if v in loaded]
        if not keep:
            return  # nothing wanted could be loaded: keep serving what we have
        for version in [v for v in loaded if v not in keep]:
            await self.repository.remove(version)

    def _known_bad(self, version: int) -> bool:
        stamp = self._failed.get(version)
        return stamp is not None and stamp == _stamp(self.root / str(version))

    async def _load(self, version: int) -> None:
        started = time.perf_counter()
        name = self.repository.name
        self.repository.set_state(version, VersionState.LOADING)
        try:
            model = await asyncio.to_thread(self._load_and_warm, version)
        except Exception as exc:  # a broken export must never take the server down
            self._failed[version] = _stamp(self.root / str(version))
            self.repository.set_state(
                version, VersionState.END, f"failed to load: {_one_line(exc)}"
            )
            self.metrics.loads.labels("failure").inc()
            log.error(
                "not serving %s version %d: it failed to load: %s", name, version, _one_line(exc)
            )
            return
        self.repository.add(model)
        self.metrics.loads.labels("success").inc()
        log.info("loaded %s version %d in %.2f s", name, version, time.perf_counter() - started)

    def _load_and_warm(self, version: int) -> LoadedModel:
        model = LoadedModel(
            self.repository.name,
            self.root / str(version),
            on_call=lambda _: self.metrics.model_calls.inc(),
        )
        sizes = sorted({1, 2, 4, 8, 16, 32, 64, 128, 256, self.options.max_batch_size})
        seconds = model.warm_up([s for s in sizes if s <= self.options.max_batch_size])
        log.info("warmed up version %d in %.2f s", version, seconds)
        return model


def _stamp(version_dir: Path) -> float:
    """Changes when the version's SavedModel is rewritten (then it is tried again)."""
    try:
        return (version_dir / "saved_model.pb").stat().st_mtime
    except OSError:
        return -1.0


def _one_line(exc: BaseException) -> str:
    text = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return " ".join(str(text).split())[:500]
