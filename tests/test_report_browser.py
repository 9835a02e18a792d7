"""The demo report opened in real headless Chromium: no console errors, every image decodes, names stay text."""

import os

import pytest

from _browser import find_chromium, open_page

CHROMIUM = find_chromium()
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        CHROMIUM is None and not os.environ.get("CI"),
        reason="needs Chromium (apt-get install chromium); CI installs it",
    ),
]


def assert_clean_page(report):
    assert report.errors == []
    assert report.images, "the page shows no image"
    undecoded = [image for image in report.images if image["error"] or image["width"] == 0]
    assert undecoded == []
    assert report.n_scripts == 0


def test_quick_demo_report_loads_cleanly(quick_demo):
    report = open_page(quick_demo / "report.html", CHROMIUM)
    assert_clean_page(report)
    assert "Zoo" in report.text


def test_hostile_names_are_shown_as_text(tmp_path):
    from reports import Report
    from test_reports import _summary
    from reports._zoo_section import zoo_section

    hostile = "<script>alert('pwned')</script>"
    page = Report(f"run {hostile}")
    for section in zoo_section([_summary(name=hostile)]):
        page.add(section)
    report = open_page(page.write(tmp_path / "hostile.html"), CHROMIUM)
    assert_clean_page(report)
    assert hostile in report.text
    assert report.title == f"run {hostile}"
