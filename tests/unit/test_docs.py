"""The documentation's links land: every relative link in README.md, BENCHMARKS.md and docs/
names a file that exists and, with a `#fragment`, a heading or an `<a id>` anchor of that file
(slugged as GitHub does), so moving a section between pages cannot leave a dead link behind."""

from __future__ import annotations

import re
from collections import Counter
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = sorted([ROOT / "README.md", ROOT / "BENCHMARKS.md", *(ROOT / "docs").glob("*.md")])
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
_ANCHOR = re.compile(r"""<a (?:id|name)="([^"]+)"></a>""")
_FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)


def slug(heading: str) -> str:
    """GitHub's heading id: lower case, punctuation (backticks, dashes of text) dropped, spaces to
    hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@cache
def anchors(page: Path) -> frozenset[str]:
    text = _FENCE.sub("", page.read_text(encoding="utf-8"))
    found = set(_ANCHOR.findall(text))
    seen: Counter[str] = Counter()
    for line in text.splitlines():
        if heading := re.match(r"#{1,6} (.+)", line):
            base = slug(heading[1])
            found.add(base if not seen[base] else f"{base}-{seen[base]}")
            seen[base] += 1
    return frozenset(found)


def links(page: Path) -> list[str]:
    text = _FENCE.sub("", page.read_text(encoding="utf-8"))
    return [target for target in _LINK.findall(text) if not re.match(r"[a-z]+:", target)]


def test_the_docs_pages_are_there() -> None:
    names = {page.name for page in PAGES}
    assert {"guarantees.md", "contract.md", "configuration.md", "operations.md"} <= names


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_every_relative_link_lands(page: Path) -> None:
    dead = []
    for target in links(page):
        path, _, fragment = target.partition("#")
        goal = (page.parent / path).resolve() if path else page
        if not goal.exists() or (fragment and fragment not in anchors(goal)):
            dead.append(target)
    assert not dead, f"dead links in {page.relative_to(ROOT)}: {dead}"


def test_the_slugs_are_github_s() -> None:
    assert slug("Redelivery: `request_id` is the idempotency key") == (
        "redelivery-request_id-is-the-idempotency-key"
    )
    assert slug("Dead letters — topic `generation.requests.dlq`") == (
        "dead-letters--topic-generationrequestsdlq"
    )
    assert slug("Probes, shutdown and disruptions") == "probes-shutdown-and-disruptions"
