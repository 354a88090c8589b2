"""Settings: flags win over VGGSERVE_* variables, which win over defaults."""

from __future__ import annotations

import pytest

from service.settings import Settings


def test_defaults() -> None:
    settings = Settings.parse(["--model-dir", "models/x"], env={})
    assert settings.port == 8500 and settings.max_batch_size == 32
    assert settings.batching is True and settings.batch_timeout_s == pytest.approx(0.002)


def test_environment_then_flags() -> None:
    env = {
        "VGGSERVE_MODEL_DIR": "models/env",
        "VGGSERVE_PORT": "9000",
        "VGGSERVE_BATCHING": "false",
        "VGGSERVE_MAX_BATCH_SIZE": "64",
    }
    settings = Settings.parse(["--max-batch-size", "16"], env=env)
    assert settings.model_dir == "models/env"
    assert settings.port == 9000
    assert settings.batching is False
    assert settings.max_batch_size == 16


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        ([], {}, "--model-dir"),
        (
            [],
            {"VGGSERVE_MODEL_DIR": "m", "VGGSERVE_PORT": "eighty"},
            "VGGSERVE_PORT='eighty': expected an integer",
        ),
    ],
)
def test_errors_name_the_setting(argv, env, message, capsys) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SystemExit):
        Settings.parse(argv, env=env)
    assert message in capsys.readouterr().err
