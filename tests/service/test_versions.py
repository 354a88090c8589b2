"""VersionPolicy: what `--versions` accepts, and which versions it selects."""

from __future__ import annotations

import pytest

from service.version_policy import VersionPolicy


@pytest.mark.parametrize(
    ("text", "policy"),
    [
        ("latest", VersionPolicy(latest=1)),
        (" latest ", VersionPolicy(latest=1)),
        ("latest:1", VersionPolicy(latest=1)),
        ("latest:3", VersionPolicy(latest=3)),
        ("7", VersionPolicy(latest=0, pinned=(7,))),
        ("3,1", VersionPolicy(latest=0, pinned=(1, 3))),
        ("1, 3, 3", VersionPolicy(latest=0, pinned=(1, 3))),
    ],
)
def test_good_policies(text: str, policy: VersionPolicy) -> None:
    assert VersionPolicy.parse(text) == policy


@pytest.mark.parametrize(
    "text",
    [
        "",
        "newest",
        "latest:",
        "latest:0",
        "latest:-1",
        "latest:2.5",
        "0",
        "-1",
        "1,,3",
        "1,x",
        "1_000",
        "+3",
        "latest,1",
        "\u0661",  # an Arabic-Indic digit one: int() takes it
    ],
)
def test_bad_policies_say_what_is_allowed(text: str) -> None:
    with pytest.raises(ValueError) as info:
        VersionPolicy.parse(text)
    message = str(info.value)
    assert message.startswith(f"version policy {text!r}: use 'latest', 'latest:N'")
    assert "\n" not in message


@pytest.mark.parametrize(
    ("text", "available", "selected"),
    [
        ("latest", [1, 2, 10], [10]),  # numeric order, not text order
        ("latest:2", [3, 1, 2], [2, 3]),
        ("latest:5", [1, 2], [1, 2]),
        ("latest", [], []),
        ("1,3", [1, 2, 3], [1, 3]),
        ("1,4", [1, 2, 3], [1]),  # a pinned version not on disk is not invented
    ],
)
def test_select(text: str, available: list[int], selected: list[int]) -> None:
    assert VersionPolicy.parse(text).select(available) == selected
