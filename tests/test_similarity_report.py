"""The similarity report section and the similarity analysis, built from synthetic recordings."""

import numpy as np
import pytest
from markupsafe import Markup

from analyses import RDM, cka_matrix, layer_rdms, rank_layers, rdm_mds, rdm_similarity_matrix
from probe.study import StudyContext
from probe.study._similarity_step import similarity_analysis
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


def _linear_cka(x, y):
    """Linear CKA (Kornblith et al. 2019), written out: ||Y'X||² / (||X'X|| ||Y'Y||) on centred features."""
    x, y = x - x.mean(0), y - y.mean(0)
    return np.linalg.norm(y.T @ x) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y))


def test_similarity_analysis_of_one_group(tmp_path):
    ctx = StudyContext(out=tmp_path, progress=False)
    ctx.recordings = _recordings(n=200)
    sections = similarity_analysis(ctx, n_stimuli=250, max_rdm_panels=2)
    assert [s.title for s in sections] == ["Representational similarity"] and "CKA" in str(sections[0].body)
    assert str(sections[0].body).count("data:image/png;base64,") == 5  # RDM panels, CKA, RDM map, MDS, ranking
    result = ctx.results["similarity"]
    assert ctx.results["similarity_by_stimuli"] == {"": result}
    assert result["cka"].values.shape == (6, 6)
    # n_stimuli above the number of stimuli: every stimulus, so CKA is that of the whole recordings
    for (i, a), (j, b) in [((0, "cnn/layer0"), (5, "mlp/layer2")), ((1, "cnn/layer1"), (2, "cnn/layer2"))]:
        assert result["cka"].names[i] == a and result["cka"].names[j] == b
        expected = _linear_cka(*(ctx.recordings[n.split("/")[0]][n.split("/")[1]] for n in (a, b)))
        np.testing.assert_allclose(result["cka"].values[i, j], expected, rtol=1e-6)
    # the category reference is matched better by deeper layers in this synthetic zoo
    frame = result["ranking"].to_frame()
    cnn = frame[frame["model"] == "cnn"].sort_values("depth")["score"].to_numpy()
    assert cnn[-1] > cnn[0]
    for table in ("similarity-cka", "similarity-rdm", "similarity-mds", "similarity-ranking"):
        assert (ctx.tables[table]["stimuli"] == "").all(), table
    np.testing.assert_allclose(ctx.tables["similarity-cka"]["value"], result["cka"].to_frame()["value"])


def _models(per_layer):
    return list(dict.fromkeys(per_layer))


def test_similarity_analysis_compares_only_models_recorded_on_the_same_stimuli(tmp_path):
    ctx = StudyContext(out=tmp_path, progress=False, seed=3)
    digits, photos = _recordings(n=200, seed=0), _recordings(n=120, seed=1)
    ctx.recordings = {"cnn": digits["cnn"], "net": photos["cnn"], "mlp": digits["mlp"], "vit": photos["mlp"]}
    ctx.data_of = {"cnn": "digits (test)", "mlp": "digits (test)", "net": "photos (test)", "vit": "photos (test)"}
    options = dict(n_stimuli=100, max_rdm_panels=1)
    sections = similarity_analysis(ctx, **options)
    assert [s.title for s in sections] == ["Representational similarity · digits (test)",
                                           "Representational similarity · photos (test)"]
    assert "digits (test)" in str(sections[0].body) and "photos (test)" in str(sections[1].body)
    by_stimuli = ctx.results["similarity_by_stimuli"]
    assert list(by_stimuli) == ["digits (test)", "photos (test)"] and ctx.results["similarity"] is by_stimuli["digits (test)"]
    assert _models(by_stimuli["digits (test)"]["cka"].models) == ["cnn", "mlp"]
    assert _models(by_stimuli["photos (test)"]["cka"].models) == ["net", "vit"]
    for table in ("similarity-cka", "similarity-rdm", "similarity-mds", "similarity-ranking"):
        frame = ctx.tables[table]
        assert list(frame["stimuli"].unique()) == ["digits (test)", "photos (test)"], table
    cka = ctx.tables["similarity-cka"]
    for words, models in [("digits (test)", {"cnn", "mlp"}), ("photos (test)", {"net", "vit"})]:
        rows = cka[cka["stimuli"] == words]
        assert len(rows) == 36 and set(rows["model_a"]) == set(rows["model_b"]) == models
    # a group's measures do not depend on the other group: the same as the group alone
    alone = StudyContext(out=tmp_path, progress=False, seed=3)
    alone.recordings = {"net": photos["cnn"], "vit": photos["mlp"]}
    (section,) = similarity_analysis(alone, measures=["cka"], **options)
    assert section.title == "Representational similarity"
    np.testing.assert_array_equal(alone.results["similarity"]["cka"].values, by_stimuli["photos (test)"]["cka"].values)

    # models=[...]: only those, grouped as before
    sections = similarity_analysis(ctx, models=["vit", "mlp", "net"], measures=["cka"], **options)
    # the groups in the study's order of the models kept: "net" (photos) comes before "mlp" (digits)
    assert [s.title for s in sections] == ["Representational similarity · photos (test)",
                                           "Representational similarity · digits (test)"]
    by_stimuli = ctx.results["similarity_by_stimuli"]
    assert _models(by_stimuli["digits (test)"]["cka"].models) == ["mlp"]
    assert _models(by_stimuli["photos (test)"]["cka"].models) == ["net", "vit"]
    assert set(ctx.tables["similarity-cka"]["model_a"]) == {"mlp", "net", "vit"}
    (section,) = similarity_analysis(ctx, models=["net", "vit"], measures=["cka"], **options)
    assert section.title == "Representational similarity"  # one group left: no words in the title
    assert list(ctx.results["similarity_by_stimuli"]) == ["photos (test)"]
    with pytest.raises(KeyError, match="needs recordings"):
        similarity_analysis(ctx, models=["nobody"])
