"""The measures analysis in a study and its report section: the maps with a measure selector, the disagreement,
layer identification over seed models and each other model against the seed-to-seed band."""

import re

import numpy as np
import pytest

from analyses import compare_representations, layer_identification, measure_disagreement, measure_matrices
from probe.study import Study, StudySpecError
from probe.study._measures_step import ceiling_scores, top_components
from reports import measures_section


def _net(seed, n=90):
    rng = np.random.default_rng(seed)
    h, out = np.random.default_rng(7).standard_normal((n, 4)), {}
    for i in range(3):
        h = np.tanh(h @ rng.standard_normal((h.shape[1], 6))) + 0.2 * rng.standard_normal((n, 6))
        out[f"l{i}"] = h
    return out


def test_top_components_keep_the_layer_geometry_up_to_rotation_and_report_the_variance_kept():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((50, 4)) @ rng.standard_normal((4, 30)) + 0.01 * rng.standard_normal((50, 30))
    reduced, share = top_components(X, 10)
    assert reduced.shape == (50, 10) and share == pytest.approx(1.0, abs=1e-3)
    centred = X - X.mean(0)
    np.testing.assert_allclose(reduced @ reduced.T, centred @ centred.T, atol=1e-2)  # Gram kept: CKA unchanged
    variance = np.linalg.svd(centred, compute_uv=False) ** 2
    assert top_components(X, 2)[1] == pytest.approx(variance[:2].sum() / variance.sum())
    narrow, share = top_components(X[:, :5], 10)
    np.testing.assert_allclose(narrow, X[:, :5] - X[:, :5].mean(0)) and share == 1.0


def test_the_stimulus_subsample_is_class_balanced_for_labelled_stimuli_and_seeded_otherwise():
    from probe.study._similarity_step import stimulus_subsample

    labels = np.repeat(np.arange(4), 30)
    chosen = stimulus_subsample(labels, 40, 3)
    assert np.array_equal(np.bincount(labels[chosen]), [10] * 4) and np.all(np.diff(chosen) > 0)
    unlabelled = np.full(120, -1)
    expected = np.sort(np.random.default_rng(3).permutation(120)[:40])
    np.testing.assert_array_equal(stimulus_subsample(unlabelled, 40, 3), expected)


def test_ceiling_scores_read_each_other_models_most_alike_layer():
    reps = {"s0": _net(0), "s1": _net(1), "other": _net(5)}
    maps = measure_matrices(reps, ["linear-cka", "procrustes"], progress=False)
    for measure, pick in (("linear-cka", max), ("procrustes", min)):
        scores = ceiling_scores(maps, measure, ["s0", "s1"]).set_index("layer")
        assert set(scores["other"]) == {"other"}
        for layer in ("l0", "l1", "l2"):
            values = {o: compare_representations(reps["s0"][layer], reps["other"][o], measure) for o in reps["other"]}
            assert scores.loc[layer, "value"] == pytest.approx(pick(values.values()))
            assert scores.loc[layer, "other_layer"] == pick(values, key=values.get)


def test_the_section_has_one_selector_button_per_map_and_lists_what_was_left_out():
    reps = {"s0": _net(0), "s1": _net(1), "other": _net(5)}
    maps = measure_matrices(reps, ["linear-cka", "procrustes", "rsa"], progress=False)
    identification = layer_identification({"s0": reps["s0"], "s1": reps["s1"]}, list(maps.maps), progress=False)
    section = measures_section(maps, disagreement=measure_disagreement(maps), identification=identification,
                               ceiling_scores=ceiling_scores(maps, "linear-cka", ["s0", "s1"]))
    body = str(section.body)
    assert len(re.findall(r'<input type="radio"', body)) == 3 and body.count('class="panel"') == 3
    assert body.count(" checked>") == 1  # the first measure shows
    for title in ("Where the measures disagree", "Layer identification across seeds",
                  "Cross-model scores against the seed-to-seed ceiling"):
        assert title in body
    assert "99.3" in body  # Kornblith et al.'s linear CKA figure beside ours
    with pytest.raises(ValueError, match="every measure was skipped"):
        measures_section(type(maps)({}, {"cca": "too few stimuli"}, {}))


def test_the_identification_table_also_scores_asymmetric_measures_on_both_directions_summed():
    reps = {f"s{seed}": _net(seed) for seed in range(3)}
    maps = measure_matrices(reps, ["linear-cka", "regression"], progress=False)
    identification = layer_identification(reps, ["linear-cka", "regression"], progress=False)
    body = str(measures_section(maps, identification=identification).body)
    assert "both directions, S + Sᵀ (%)" in body and "(S + Sᵀ)" in body
    hits = 0
    for a, net_a in reps.items():
        for b, net_b in reps.items():
            for i, layer in enumerate(net_a) if a != b else ():
                both = [compare_representations(net_a[layer], net_b[other], "regression")
                        + compare_representations(net_b[other], net_a[layer], "regression") for other in net_b]
                hits += int(both[i] > np.delete(both, i).max())
    row = re.search(r"<tr>(?:(?!</tr>).)*linear regression(?:(?!</tr>).)*</tr>", body, re.DOTALL).group(0)
    _, one_way, _, _, both_ways, _ = [cell.strip() for cell in re.findall(r"<td[^>]*>([^<]*)</td>", row)]
    assert both_ways == f"{100 * hits / 18:.1f}" != one_way
    linear = layer_identification(reps, ["linear-cka"], progress=False)
    assert "both directions" not in str(measures_section(measure_matrices(reps, ["linear-cka"], progress=False),
                                                         identification=linear).body)


def test_the_study_compares_every_measure_and_identifies_layers_across_seed_models(tmp_path):
    train = {"model": "cnn", "dataset": "digits", "epochs": 1}
    spec = {"title": "measures", "data": {"dataset": "digits", "split": "test", "limit": 120},
            "models": [{"name": "a", "run": "runs/a", "train": dict(train, seed=0)},
                       {"name": "b", "run": "runs/b", "train": dict(train, seed=1)},
                       {"name": "mlp", "run": "runs/mlp", "train": {"model": "mlp", "dataset": "digits", "epochs": 1}}],
            "analyses": {"measures": {"measures": ["linear-cka", "rbf-cka-0.4", "cca", "mutual-knn"], "n_stimuli": 60,
                                      "seed_models": ["a", "b"], "ceiling_measure": "rbf-cka-0.40"}}}
    result = Study.from_dict(spec, folder=tmp_path, out=tmp_path / "out").run(progress=False)
    assert result.failed == {}
    tables = result.tables
    names = {"linear-cka", "rbf-cka-0.4", "cca", "mutual-knn"}
    assert set(tables["measures-maps"]["measure"]) == set(tables["measures-identification"]["measure"]) == names
    assert (tables["measures-identification"]["total"] == 2 * 5).all()  # 2 ordered seed pairs x 5 cnn layers
    report = result.report.read_text()
    assert "Similarity measures" in report and "Layer identification" in report
    # the ceiling of RBF CKA at the paper's 0.4 x median, however its fraction is written, beside the paper's 99.1 %
    assert "Cross-model scores against the seed-to-seed ceiling" in report and "RBF CKA (0.4 x median)" in report
    assert "99.1" in report
    findings = tables["findings"].set_index("topic")
    best = tables["measures-identification"].iloc[0]
    assert f"{100 * best['accuracy']:.0f} %" in findings.loc["Layer identification", "text"]
    conclusions = tables["measures-conclusions"]
    most = int((conclusions["agreement"] >= 0.75).sum())
    assert f"{most} for at least three quarters" in findings.loc["Measures", "text"]
    spec["analyses"]["measures"]["seed_models"] = ["a", "nope"]
    with pytest.raises(StudySpecError, match=r"analyses.measures.seed_models\[1\]: unknown model 'nope'"):
        Study.from_dict(spec, folder=tmp_path, out=tmp_path / "out2")
    spec["analyses"]["measures"]["seed_models"] = ["a", "b"]
    study = Study.from_dict(spec, folder=tmp_path, out=tmp_path / "out2")
    study.spec.analyses["measures"]["seed_models"] = ["a", "nope"]  # a spec changed after its check
    assert "seed_models ['nope'] are not recorded models" in study.run(progress=False).failed["measures"]


def test_a_reference_of_several_subjects_is_pooled_and_its_noise_ceiling_drawn(tmp_path):
    import zoo
    from analyses import noise_ceiling, pool_rdms
    from probe.study._similarity_step import RANKING_METHOD, stimulus_subsample

    labels = np.array([zoo.load_dataset("digits", split="test")[i][1] for i in range(60)])
    category = (labels[:, None] != labels[None, :]).astype(float)
    rng = np.random.default_rng(0)
    subjects = []
    for _ in range(3):
        noise = rng.random((60, 60))
        subject = category + 0.8 * (noise + noise.T)
        np.fill_diagonal(subject, 0)
        subjects.append(subject)
    np.save(tmp_path / "subjects.npy", np.stack(subjects))
    spec = {"title": "ceiling", "data": {"dataset": "digits", "split": "test", "limit": 60},
            "models": [{"name": "cnn", "arch": "zoo:cnn"}],
            "analyses": {"similarity": {"measures": ["rdm"], "reference": "subjects.npy", "n_stimuli": 40}}}
    result = Study.from_dict(spec, folder=tmp_path, out=tmp_path / "out").run(progress=False)
    assert result.failed == {}
    ranking = result.results["similarity"]["ranking"]
    index = stimulus_subsample(np.asarray(result.recordings["cnn"].labels), 40, 0)  # the analysis's draw
    chosen = np.stack(subjects)[:, index][:, :, index]
    expected = noise_ceiling(chosen, RANKING_METHOD)
    assert (ranking.ceiling.lower, ranking.ceiling.upper) == pytest.approx((expected.lower, expected.upper))
    assert "noise ceiling" in result.report.read_text()
    # the pooled reference: the mean of the subjects' ranks (rho-a pools ranks, as rsatoolbox)
    ranks = [np.argsort(np.argsort(s[np.triu_indices(len(index), 1)], kind="stable"), kind="stable") for s in chosen]
    assert np.corrcoef(pool_rdms(chosen, RANKING_METHOD), np.mean(ranks, axis=0))[0, 1] > 0.999

