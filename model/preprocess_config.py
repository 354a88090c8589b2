"""The preprocessing settings of an export, readable without TensorFlow.

`model.preprocessing` applies them (and re-exports PreprocessConfig); this
module only holds them, so `model.layout` can read an export's assets in a
process that never imports TensorFlow (clients, tools, the metadata).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class PreprocessConfig:
    """How encoded bytes or raw pixels become model input.

    Stored as JSON in every exported version's assets, so a client (or a
    person) can read it without TensorFlow. `channel_order` and `input_range`
    describe what clients send (always RGB 0-255); the `model_*` fields and
    `mean` describe what the model's own first layers do with it.
    """

    height: int
    width: int
    resize_method: str = "bilinear"
    channel_order: str = "RGB"
    input_range: tuple[float, float] = (0.0, 255.0)
    # The model's first layer maps input_range to this range.
    model_range: tuple[float, float] = (0.0, 1.0)
    # ... then reorders the channels to this order (still RGB for models trained
    # from scratch; "BGR" for ImageNet weights, see model.transfer) ...
    model_channel_order: str = "RGB"
    # ... and subtracts this per-channel mean, in model_channel_order. Exports
    # made before these two fields existed read as RGB and no mean.
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    # Largest width x height `decode` accepts (the server's default limit): a
    # file that claims or decodes to more fails with InvalidArgument. Exports
    # written before this field load with the default.
    max_pixels: int = 36_000_000
    # Longest side of the Explain overlay PNG (`gradcam` signature): a larger
    # image's overlay is drawn scaled down to it, aspect kept, so the answer's
    # size does not grow with the image's. None: the image's own size, which
    # is how exports written before this field read (`from_dict`).
    overlay_max_side: int | None = 1024

    def __post_init__(self) -> None:
        if self.overlay_max_side is not None and self.overlay_max_side < 1:
            raise ValueError(
                f"overlay_max_side must be at least 1 pixel, or None for the image's own "
                f"size; got {self.overlay_max_side}"
            )

    def overlay_size(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) of the overlay the `gradcam` signature draws for such an image.

        `model.gradcam.overlay_size` computes the same in the graph, with the
        same integer arithmetic (rounding half up); the server estimates an
        answer's size from this one before any work.
        """
        side = self.overlay_max_side
        if side is None or max(height, width) <= side:
            return height, width
        long = max(height, width)
        scaled = max(1, (min(height, width) * side + long // 2) // long)
        return (side, scaled) if height >= width else (scaled, side)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreprocessConfig:
        fields = {f.name for f in dataclasses.fields(cls)}
        # JSON has lists where the dataclass has tuples.
        values: dict[str, Any] = {
            k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in fields
        }
        # Written before overlays were bounded: those exports draw them at the
        # image's own size, whatever this release's default is.
        values.setdefault("overlay_max_side", None)
        return cls(**values)
