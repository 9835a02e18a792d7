"""A report: an ordered list of sections rendered into one self-contained HTML file."""

from __future__ import annotations

import datetime as _dt
import re
from dataclasses import dataclass, field
from pathlib import Path

from markupsafe import Markup

from reports._render import render_fragment

__all__ = ["Section", "Report"]


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"


@dataclass
class Section:
    """One titled part of a report.

    Parameters
    ----------
    title
        Heading shown in the page and its table of contents (escaped when rendered).
    body
        The section's HTML, usually from ``render_fragment``; it must be ``Markup``, so that only
        HTML built through autoescaping templates reaches the page.
    summary
        One plain-text line shown under the heading.
    """

    title: str
    body: Markup
    summary: str = ""
    anchor: str = field(default="")

    def __post_init__(self) -> None:
        if not isinstance(self.body, Markup):
            raise TypeError("Section.body must be markupsafe.Markup (render it with reports.render_fragment)")
        self.anchor = self.anchor or _slug(self.title)


class Report:
    """An HTML report built from sections; every image is inline, so the file stands alone.

    Parameters
    ----------
    title
        Page title (escaped when rendered).
    subtitle
        One plain-text line under the title.

    Examples
    --------
    >>> report = Report("My analysis")
    >>> report.add(Section("Notes", render_fragment("sections/text.html.j2", text="hello")))
    >>> html = report.render()
    """

    def __init__(self, title: str, subtitle: str = "") -> None:
        self.title = title
        self.subtitle = subtitle
        self.sections: list[Section] = []

    def add(self, section: Section) -> "Report":
        """Append a section; anchors are made unique. Returns the report."""
        taken = {s.anchor for s in self.sections}
        base, n = section.anchor, 2
        while section.anchor in taken:
            section.anchor, n = f"{base}-{n}", n + 1
        self.sections.append(section)
        return self

    def render(self) -> str:
        """Return the whole page as a string."""
        created = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
        return str(
            render_fragment(
                "report.html.j2", title=self.title, subtitle=self.subtitle, sections=self.sections, created=created
            )
        )

    def write(self, path: str | Path) -> Path:
        """Write the page atomically to ``path`` and return the path."""
        from zoo._io import atomic_write_text

        path = Path(path)
        atomic_write_text(path, self.render())
        return path
