"""The subspace report section and the subspaces analysis."""

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


def _study(tmp_path):
    """A tiny cnn recorded on 60 random grey 8 x 8 stimuli, in words "digits (test)"."""
    import torch
    from torch.utils.data import TensorDataset

    import probe
    import zoo
    from probe.study import StudyContext

    torch.manual_seed(0)
    model = zoo.create_model("cnn", input_shape=[1, 8, 8], width=4, hidden=8).eval()
    ctx = StudyContext(out=tmp_path, progress=False)
    ctx.models["cnn"] = model
    ctx.stimuli["cnn"] = TensorDataset(torch.rand(60, 1, 8, 8), torch.arange(60) % 3)
    ctx.recordings["cnn"] = probe.record(model, ctx.stimuli["cnn"], ["features.relu3", "relu_fc1", "fc2"],
                                         device="cpu", progress=False)
    ctx.data_of["cnn"] = "digits (test)"
    return ctx


def test_subspaces_analysis_on_a_recorded_layer_and_the_pixels(tmp_path: Path):
    from probe.study._subspaces_step import subspaces_analysis

    ctx = _study(tmp_path)
    options = dict(ks=[2], max_iter=10, n_stimuli=40)
    (section,) = subspaces_analysis(ctx, pixels=True, **options)
    pixels, layer = ctx.results["subspaces"]
    assert (pixels.source, pixels.n_units, pixels.n_stimuli) == ("pixels of digits (test)", 1 * 8 * 8, 40)
    # then the deepest layer but the output: relu_fc1's 8 units, over the first n_stimuli stimuli
    assert (layer.source, layer.n_units, layer.n_stimuli) == ("cnn:relu_fc1", 8, 40)
    assert "pixels of digits (test)" in str(section.body)
    # the pixels' PCA is that of the first n_stimuli images, flattened: their covariance's eigenvalues
    x = ctx.stimuli["cnn"].tensors[0][:40].reshape(40, -1).double().numpy()
    eigenvalues = np.sort(np.linalg.eigvalsh(np.cov(x, rowvar=False)))[::-1]
    ratio = np.asarray(pixels.explained_variance_ratio)
    np.testing.assert_allclose(ratio, (eigenvalues / eigenvalues.sum())[: len(ratio)], rtol=1e-6, atol=1e-12)
    assert list(ctx.tables["subspaces"]["source"].unique()) == ["pixels of digits (test)", "cnn:relu_fc1"]
    # by default, no pixels; a named layer replaces the automatic choice
    subspaces_analysis(ctx, layer="cnn/features.relu3", **options)
    assert [(c.source, c.n_units) for c in ctx.results["subspaces"]] == [("cnn:features.relu3", 16)]
