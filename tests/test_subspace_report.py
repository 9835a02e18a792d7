"""The subspace report section and demo step."""

from pathlib import Path

import numpy as np
import pytest

from analyses import compare_subspaces
from reports import Report, Section
from reports._subspace_section import subspace_section


@pytest.fixture(scope="module")
def comparison():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((80, 6)) * np.array([5.0, 4.0, 3.0, 2.0, 1.0, 0.5])
    return compare_subspaces(X, ks=(1, 3), source="toy <layer>", max_iter=300, device="cpu", progress=False)


def test_subspace_section_renders_figures_and_escapes(comparison):
    section = subspace_section([comparison, comparison])
    assert isinstance(section, Section)
    html = Report("r").add(section).render()
    assert html.count("data:image/png;base64,") >= 6  # 3 figures per comparison
    assert "toy &lt;layer&gt;" in html and "<layer>" not in html
    assert "<script" not in html.lower()
    assert "subspace distance" in section.summary
    with pytest.raises(ValueError, match="at least one"):
        subspace_section([])


def test_subspaces_demo_step_quick(tmp_path: Path):
    from probe.study import DemoContext
    from probe.study._subspaces_step import subspaces_step

    ctx = DemoContext(out=tmp_path, quick=True)
    sections = subspaces_step(ctx)
    assert len(sections) == 1 and "digits pixels" in sections[0].summary
    assert ctx.results["subspaces"][0].n_units == 64
