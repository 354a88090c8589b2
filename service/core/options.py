"""What the core is built from: its own options, not the command line.

`service.settings.Settings` (flags and VGGSERVE_* variables) is mapped onto
`CoreOptions` by `service.server`; an embedding program (the batch tool's
--local engine, a Ray actor) builds one directly. Nothing here imports the
settings, so the core can be used without the server's command line.
"""

from __future__ import annotations

from dataclasses import dataclass

from service.version_policy import VersionPolicy


@dataclass(frozen=True)
class CoreOptions:
    """Everything the data plane needs to serve one model folder.

    Attributes:
        model_dir: the model's folder (`models/<name>`, numbered versions inside).
        model_name: the name clients use (empty: the folder's name).
        versions: which versions to serve (`latest`, `latest:N`, `1,3`).
        max_batch_size: most images per model call.
        batch_timeout_s: longest a batch waits to fill.
        batching: coalesce concurrent requests (False: one image per model call).
        max_queue: most images waiting for the model; also the most images one
            request may carry (a request the queue could never hold is refused
            whole, before any per-image work).
        model_workers: model calls at once.
        max_image_bytes: largest encoded image.
        max_image_pixels: largest width x height, checked from the header.
        max_answer_bytes: largest answer a protocol can carry (its message limit).
        explain_max_pixels: largest width x height Explain takes (before any work).
        explain_max_concurrent: images explained at once, all protocols together;
            beyond: RESOURCE_EXHAUSTED at once (service.core.explain_limits).
        poll_interval_s: seconds between looks at the model folder (0: never).
    """

    model_dir: str
    model_name: str = ""
    versions: str = "latest"
    max_batch_size: int = 32
    batch_timeout_s: float = 0.002
    batching: bool = True
    max_queue: int = 1024
    model_workers: int = 1
    max_image_bytes: int = 16 * 1024 * 1024
    max_image_pixels: int = 36_000_000
    max_answer_bytes: int = 16 * 1024 * 1024
    explain_max_pixels: int = 16_777_216
    explain_max_concurrent: int = 4
    poll_interval_s: float = 0.0

    def __post_init__(self) -> None:
        VersionPolicy.parse(self.versions)  # ValueError naming what is allowed
        for name in (
            "max_batch_size",
            "max_queue",
            "model_workers",
            "max_image_bytes",
            "explain_max_pixels",
            "explain_max_concurrent",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.max_image_pixels < 1 or self.max_answer_bytes < 1:
            raise ValueError("max_image_pixels and max_answer_bytes must be at least 1")

    @property
    def batch_size(self) -> int:
        """The batch size the batchers use (1 with batching off)."""
        return self.max_batch_size if self.batching else 1

    @property
    def batch_wait_s(self) -> float:
        return self.batch_timeout_s if self.batching else 0.0
