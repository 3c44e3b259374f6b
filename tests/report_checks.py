"""Checks shared by the tests of the HTML report pages (data report and eval report).

Plain functions, imported as ``checks`` by ``tests/data/test_report_html.py`` and
``tests/test_eval_report_html.py`` after they put ``tests/`` on ``sys.path`` (``tests``
is not a package).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable
from typing import Any

#: A feature name with markup in it; the page must show it as text.
BOLD_FEATURE = "<b>bold</b> & co"

#: What a self-contained page must not hold: links, scripts, imports, remote URLs.
EXTERNAL = ("http://", "https://", "src=", "<link", "href=", "<script", "@import", "url(")


def render(render_html: Callable[[Any], str], data: Any) -> tuple[str, ET.Element]:
    """The page ``render_html`` makes of ``data``, and its parsed root element."""
    page = render_html(data)
    return page, ET.fromstring(page)  # the page is well-formed XML, inline SVG included


def page_text(root: ET.Element) -> str:
    """All text under ``root``, with white space folded."""
    return " ".join(" ".join(root.itertext()).split())


def section(root: ET.Element, section_id: str) -> ET.Element:
    """The ``<section>`` with ``id="section_id"``; it must be there."""
    found = root.find(f".//section[@id='{section_id}']")
    assert found is not None, section_id
    return found


def assert_shows(element: ET.Element, phrases: Iterable[str]) -> None:
    """Every one of ``phrases`` appears in the text under ``element``."""
    text = page_text(element)
    for expected in phrases:
        assert expected in text, expected


def assert_self_contained(page: str, charts: int) -> None:
    """A complete, offline page: well-formed, doctype, charset, inline CSS and SVGs.

    ``charts`` is how many inline ``<svg>`` charts the page must hold.
    """
    root = ET.fromstring(page)
    assert page.startswith("<!DOCTYPE html>")
    assert root.find("head/meta[@charset='utf-8']") is not None
    assert root.find("head/style") is not None
    for external in EXTERNAL:
        assert external not in page, external
    assert len(root.findall(".//svg")) == charts


def assert_escaped(page: str, root: ET.Element, shown: Iterable[str]) -> None:
    """Markup from the data (``BOLD_FEATURE`` as the feature, a ``<script>``) is text.

    Every string in ``shown`` must appear in the page's text as written.
    """
    assert "<script>" not in page
    assert "<b>bold" not in page
    assert root.findtext(".//h1") == BOLD_FEATURE
    assert_shows(root, shown)
