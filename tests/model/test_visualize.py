"""The feature-map visualiser draws a PNG from an exported version."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from model.train import TrainResult
from model.visualize import main
from tests.helpers import encode, random_pixels


def test_writes_a_png_of_the_expected_size(tiny_model: TrainResult, tmp_path: Path) -> None:
    image = tmp_path / "in.png"
    image.write_bytes(encode(random_pixels(30, 40)))
    out = tmp_path / "maps.png"
    assert (
        main(
            [
                "--model",
                str(tiny_model.version_dir.parent),
                "--image",
                str(image),
                "--out",
                str(out),
                "--max-maps",
                "8",
            ]
        )
        == 0
    )
    with Image.open(out) as png:
        # 9 columns (label + 8 maps) at 1 inch, 80 dpi; 2 + 6 feature-map rows.
        assert png.format == "PNG"
        assert png.size == (9 * 80, round(8 * 1.1 * 80))


def test_unreadable_image_is_a_clear_error(tiny_model: TrainResult, tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"nope")
    assert main(["--model", str(tiny_model.version_dir), "--image", str(bad)]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_gradcam_writes_the_overlay_at_the_image_size(
    tiny_model: TrainResult, tmp_path: Path, capsys
) -> None:
    image = tmp_path / "in.png"
    image.write_bytes(encode(random_pixels(30, 40)))
    out = tmp_path / "cam.png"
    model = str(tiny_model.version_dir.parent)
    args = ["--model", model, "--image", str(image), "--out", str(out), "--gradcam"]
    assert main([*args, "--class-index", "4"]) == 0
    assert "Grad-CAM of green_square" in capsys.readouterr().out
    with Image.open(out) as png:
        assert (png.format, png.size, png.mode) == ("PNG", (40, 30), "RGB")
    assert main([*args, "--class-index", "12"]) == 2
    assert "--class-index 12: the model has 12 classes" in capsys.readouterr().err
