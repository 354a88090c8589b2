"""The documentation: the MkDocs site builds with --strict, and the README stays a README.

`make docs` builds the same site in CI; building it here too means `make test`
alone fails on a broken link, a dead anchor or a page left out of the nav.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]  # not tests.helpers: no TensorFlow import here
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.rglob("*.md"))
README = ROOT / "README.md"
# Our own issues cited as "issue 17", "issues 3 and 4" or "#17". An upstream
# reference names its repository (keras-team/keras#20585) and is allowed.
INTERNAL_ISSUE = re.compile(r"\bissues? #?\d+|(?<![\w/.-])#\d+\b", re.I)
MIGRATION_NOTE = re.compile(r"\bformerly\b", re.I)


def nav_pages(entries: list[object]) -> list[str]:
    """Every page a MkDocs `nav` lists, at any depth."""
    found: list[str] = []
    for entry in entries:
        values = entry.values() if isinstance(entry, dict) else [entry]
        for value in values:
            if isinstance(value, list):
                found += nav_pages(value)
            elif isinstance(value, str):
                found.append(value)
    return found


def test_the_site_builds_with_strict_checks(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert (tmp_path / "index.html").exists()
    assert (tmp_path / "search" / "search_index.json").exists()


def test_every_page_is_in_the_nav_and_every_nav_entry_exists() -> None:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    assert config["strict"] is True and config["docs_dir"] == "docs"
    listed = nav_pages(config["nav"])
    assert len(listed) == len(set(listed)), "a page is listed twice"
    assert set(listed) == {page.relative_to(DOCS).as_posix() for page in PAGES}


def test_the_readme_is_short() -> None:
    lines = README.read_text().count("\n")
    assert lines <= 260, f"README.md has {lines} lines; move detail into docs/"


@pytest.mark.parametrize("path", [README, *PAGES], ids=lambda p: p.relative_to(ROOT).as_posix())
def test_no_internal_issue_numbers_or_migration_notes(path: Path) -> None:
    # What changed belongs in CHANGELOG.md; the docs describe what is.
    text = path.read_text()
    assert not INTERNAL_ISSUE.findall(text), INTERNAL_ISSUE.findall(text)
    assert not MIGRATION_NOTE.findall(text), "a migration note: move it to CHANGELOG.md"


def test_the_readmes_links_reach_files() -> None:
    # MkDocs checks the docs' links; the README is read on GitHub, outside the site.
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", README.read_text())
    local = [t for t in targets if "://" not in t]
    assert local
    missing = [t for t in local if not (ROOT / t).exists()]
    assert not missing, missing
