"""README, docs/ and the recipe guides: every relative link resolves, no page needs our machines."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = sorted((REPO / "docs").glob("*.md"))
GUIDES = [*sorted((REPO / "recipes").rglob("README.md")), REPO / "data_prep" / "README.md"]
PAGES = [REPO / "README.md", *DOCS, *GUIDES]
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")  # [text](target), not images


def anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    headings = re.findall(r"^#{1,6} (.+)$", page.read_text(encoding="utf-8"), flags=re.MULTILINE)
    slugs = set()
    for heading in headings:
        text = re.sub(r"[`*_]", "", heading.strip().lower())
        slugs.add(re.sub(r"[^\w\- ]", "", text).replace(" ", "-"))
    return slugs


def relative_links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.DOTALL)
    return [t for t in LINK.findall(text) if not re.match(r"[a-z]+:", t)]


def test_the_readme_links_every_docs_page():
    linked = {(REPO / t).resolve() for t in relative_links(REPO / "README.md")}
    assert set(DOCS) <= linked, sorted(p.name for p in set(DOCS) - linked)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_relative_link_resolves(page):
    assert relative_links(page) or page != REPO / "README.md"
    for target in relative_links(page):
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        assert resolved.exists(), f"{page.name}: {target} does not exist"
        if anchor and resolved.suffix == ".md":
            assert anchor in anchors(resolved), f"{page.name}: no heading #{anchor} in {path}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_no_page_needs_files_outside_the_repository(page):
    text = page.read_text(encoding="utf-8")
    for outside in ("../shared", "/work/", "DESIGN.md", "/home/", "/root/"):
        assert outside not in text, f"{page.name} refers to {outside}"


@pytest.mark.parametrize(
    "config", sorted((REPO / "audiodiff" / "assets" / "models").glob("*/config.json")),
    ids=lambda p: p.parent.name,
)  # fmt: skip
def test_no_bundled_model_records_a_path_of_our_machines(config):
    text = config.read_text(encoding="utf-8")
    for outside in ("../shared", "/work/", "/tmp/", "/home/", "/root/"):
        assert outside not in text, f"{config.parent.name}/config.json refers to {outside}"
