"""The similarity report section and demo step, built from synthetic recordings."""

import numpy as np
import pytest
from markupsafe import Markup

from analyses import RDM, cka_matrix, layer_rdms, rank_layers, rdm_mds, rdm_similarity_matrix
from probe.study import DemoContext
from reports import Report
from reports._similarity_section import similarity_section
from _fakes import FakeRecording


def _recordings(n=150, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    prototypes = rng.normal(size=(10, 16))
    recordings = {}
    for model in ["cnn", "mlp"]:
        x = rng.normal(size=(n, 16))
        arrays = {}
        for depth in range(3):
            x = 0.6 * x + 0.4 * prototypes[labels] @ rng.normal(size=(16, 16)) + 0.1 * rng.normal(size=(n, 16))
            arrays[f"layer{depth}"] = np.maximum(x, 0) + 1e-3 * rng.random((n, 16))
        recordings[model] = FakeRecording(arrays, labels)
    return recordings


def test_similarity_section_renders_every_part():
    recordings = _recordings()
    rdms = layer_rdms(recordings, progress=False)
    labels = recordings["cnn"].labels
    category = RDM((labels[:, None] != labels[None, :]).astype(float), "category", name="category")
    section = similarity_section(
        rdms=dict(list(rdms.items())[:2]),
        cka=cka_matrix(recordings, progress=False),
        rdm_similarity=rdm_similarity_matrix(rdms, progress=False),
        mds=rdm_mds(rdm_similarity_matrix(rdms, progress=False)),
        ranking=rank_layers(category, rdms, "rho-a", n_bootstrap=10, progress=False),
        intro="<b>escaped</b>",
    )
    assert isinstance(section.body, Markup)
    html = Report("test").add(section).render()
    assert html.count("data:image/png;base64,") == 5
    assert "<script" not in html.lower()
    assert "&lt;b&gt;escaped&lt;/b&gt;" in html
    for title in ["Layer RDMs", "CKA across layers", "MDS of the layer RDMs", "versus the reference RDM"]:
        assert title in html
    with pytest.raises(ValueError, match="at least one result"):
        similarity_section()


def test_demo_step_with_recordings(tmp_path):
    from probe.study._similarity_step import similarity_step

    ctx = DemoContext(out=tmp_path, quick=True)
    ctx.recordings = _recordings(n=200)
    sections = similarity_step(ctx)
    assert len(sections) == 1 and "CKA" in str(sections[0].body)
    result = ctx.results["similarity"]
    assert result["cka"].values.shape == (6, 6)
    # the category reference is matched better by deeper layers in this synthetic zoo
    frame = result["ranking"].to_frame()
    cnn = frame[frame["model"] == "cnn"].sort_values("depth")["score"].to_numpy()
    assert cnn[-1] > cnn[0]
