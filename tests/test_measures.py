"""The measure registry, all-pairs maps, their disagreement, layer identification and inference for any measure,
each checked against the single-pair functions called in a loop (and scipy for rank correlations)."""

import numpy as np
import pandas as pd
import pytest
import scipy.spatial
import scipy.stats

import analyses
from analyses import (
    MEASURES,
    bootstrap_measure,
    cca_similarity,
    cka,
    cknna,
    compare_rdms,
    compare_representations,
    layer_identification,
    measure_disagreement,
    measure_matrices,
    mutual_knn,
    permutation_test_measure,
    procrustes_distance,
    pwcca,
    rdm,
    regression_r2,
    seed_ceiling,
    shape_distance,
    svcca,
)


def _layers(n=80, seed=0, widths=(6, 8, 5)):
    """A small 'network': each layer a noisy nonlinear map of the previous one."""
    rng = np.random.default_rng(seed)
    h, out = np.random.default_rng(99).standard_normal((n, 5)), {}
    for i, width in enumerate(widths):
        h = np.tanh(h @ rng.standard_normal((h.shape[1], width))) + 0.3 * rng.standard_normal((n, width))
        out[f"l{i}"] = h
    return out


# The public function each registered measure stands for, with the registry's fixed options.
REFERENCES = {
    "linear-cka": lambda X, Y: cka(X, Y),
    "debiased-cka": lambda X, Y: cka(X, Y, debiased=True),
    "rbf-cka": lambda X, Y: cka(X, Y, kernel="rbf"),
    "cca": cca_similarity,
    "svcca": svcca,
    "pwcca": pwcca,
    "procrustes": procrustes_distance,
    "shape": lambda X, Y: shape_distance(*[(A - A.mean(0)) / np.linalg.norm(A - A.mean(0)) for A in (X, Y)], alpha=0.5),
    "mutual-knn": lambda X, Y: mutual_knn(X, Y, k=10),
    "cknna": lambda X, Y: cknna(X, Y, k=10),
    "regression": regression_r2,
    "rsa": lambda X, Y: compare_rdms(rdm(X, "correlation"), rdm(Y, "correlation"), "spearman"),
    "rsa-whitened": lambda X, Y: compare_rdms(rdm(X, "correlation"), rdm(Y, "correlation"), "corr_cov"),
}


def test_every_measure_is_registered_with_its_convention_and_equals_its_public_function():
    assert set(analyses.list_measures()) == set(REFERENCES)
    layers = _layers()
    X, Y = layers["l0"], layers["l1"]
    for name, reference in REFERENCES.items():
        spec = MEASURES[name]
        value = compare_representations(X, Y, name)
        assert value == pytest.approx(reference(X, Y), abs=1e-10), name
        assert spec.low <= value <= spec.high, name
        assert spec.kind in ("similarity", "distance")
        if spec.symmetric:
            assert compare_representations(Y, X, name) == pytest.approx(value, abs=1e-10), name


def test_every_registered_measure_keeps_the_invariances_its_definition_promises():
    layers = _layers()
    X, Y = layers["l0"], layers["l1"]
    rotation = np.linalg.qr(np.random.default_rng(2).standard_normal((6, 6)))[0]
    # rotation, isotropic scaling and a shift of every unit: all but these see them
    exceptions = {
        "pwcca": 7.5 * X[:, ::-1] + 3.0,  # weights sum |.| over X's units: permutations, not rotations
        "mutual-knn": 7.5 * X @ rotation,  # cosine neighbourhoods: no shift
        "cknna": 7.5 * X @ rotation,
        "rsa": 7.5 * X[:, ::-1],  # correlation RDMs: permutations and scaling of units only
        "rsa-whitened": 7.5 * X[:, ::-1],
    }
    for name in MEASURES:
        moved = exceptions.get(name, 7.5 * X @ rotation + 3.0)
        expected = compare_representations(X, Y, name)
        assert compare_representations(moved, Y, name) == pytest.approx(expected, abs=1e-9), name


def test_debiased_cka_equals_analyses_cka_also_on_layers_wider_than_the_stimulus_count():
    rng = np.random.default_rng(3)
    X, Y = rng.standard_normal((30, 80)), rng.standard_normal((30, 7))
    Y[:, :3] += X[:, :3]
    for A, B in ((X, Y), (Y, X), (X, X[:, ::-1] * 2)):
        assert compare_representations(A, B, "debiased-cka") == pytest.approx(cka(A, B, debiased=True), abs=1e-12)


def test_an_unknown_measure_names_the_nearest_and_how_to_list_them():
    with pytest.raises(KeyError, match=r"'linear-ckaa'.*linear-cka.*list_measures"):
        compare_representations(np.eye(4), np.eye(4), "linear-ckaa")
    with pytest.raises(KeyError, match=r"'procrustse'.*procrustes.*list_measures"):
        analyses.get_measure("procrustse")
    # a known name gives its registry entry, and an entry is passed through as it is
    assert all(analyses.get_measure(name) is MEASURES[name] for name in analyses.list_measures())
    assert analyses.get_measure(MEASURES["svcca"]) is MEASURES["svcca"]


def test_the_map_equals_every_pair_computed_alone_within_and_across_models():
    representations = {"a": _layers(seed=0), "b": _layers(seed=1)}
    maps = measure_matrices(representations, progress=False)
    assert maps.skipped == {} and list(maps.maps) == list(MEASURES)
    flat = {f"{m}/{layer}": x for m, layers in representations.items() for layer, x in layers.items()}
    for name, matrix in maps.maps.items():
        assert matrix.names == list(flat)
        expected = [[compare_representations(flat[i], flat[j], name) for j in flat] for i in flat]
        np.testing.assert_allclose(matrix.values, expected, atol=1e-10, err_msg=name)
    frame = maps.to_frame()
    assert len(frame) == len(MEASURES) * len(flat) ** 2 and set(frame["kind"]) == {"similarity", "distance"}


def test_a_measure_undefined_on_the_data_is_skipped_with_its_reason_or_raised():
    rng = np.random.default_rng(0)
    wide = {"x": rng.standard_normal((20, 15)), "y": rng.standard_normal((20, 15)), "z": rng.standard_normal((20, 3))}
    with pytest.warns(UserWarning, match="cca"):
        maps = measure_matrices(wide, ["linear-cka", "cca"], progress=False)
    assert list(maps.maps) == ["linear-cka"] and "too few stimuli" in maps.skipped["cca"]
    with pytest.raises(KeyError, match="too few stimuli"):
        maps["cca"]
    with pytest.raises(ValueError, match="'x' vs 'x'.*too few stimuli"):
        measure_matrices(wide, ["cca"], on_undefined="raise", progress=False)


def test_disagreement_rank_correlates_the_maps_and_flags_the_conclusions_that_change():
    maps = measure_matrices({"a": _layers(seed=0), "b": _layers(seed=1)}, ["linear-cka", "procrustes", "rsa"],
                            progress=False)
    result = measure_disagreement(maps)
    off = ~np.eye(len(maps.names), dtype=bool)
    for a in ("linear-cka", "procrustes", "rsa"):
        for b in ("linear-cka", "procrustes", "rsa"):
            sign = (-1 if a == "procrustes" else 1) * (-1 if b == "procrustes" else 1)
            expected = sign * scipy.stats.spearmanr(maps[a].values[off], maps[b].values[off]).statistic
            assert result.agreement.loc[a, b] == pytest.approx(expected, abs=1e-12)
    conclusions = result.conclusions.set_index(["model", "layer", "other"])
    for name in ("linear-cka", "rsa"):
        block = maps[name].block("a", "b")
        for layer in block.index:
            assert conclusions.loc[("a", layer, "b"), name] == block.loc[layer].idxmax()
    block = maps["procrustes"].block("a", "b")
    for layer in block.index:
        assert conclusions.loc[("a", layer, "b"), "procrustes"] == block.loc[layer].idxmin()
    picks = result.conclusions[["linear-cka", "procrustes", "rsa"]]
    np.testing.assert_array_equal(result.conclusions["changes"], picks.nunique(axis=1) > 1)
    for _, row in result.conclusions.iterrows():
        counts = picks.loc[row.name].value_counts()
        assert row["agreement"] == pytest.approx(counts.max() / 3) and counts[row["majority"]] == counts.max()
    assert list(result.flagged["agreement"]) == sorted(result.flagged["agreement"])


def _brute_identification(seeds, measure):
    names, layers = list(seeds), list(next(iter(seeds.values())))
    spec = MEASURES[measure]
    hits = total = 0
    for a in names:
        for b in names:
            if a == b:
                continue
            for i, layer in enumerate(layers):
                values = spec.closeness([compare_representations(seeds[a][layer], seeds[b][other], measure)
                                         for other in layers])
                hits += int(values[i] > np.delete(values, i).max())
                total += 1
    return hits / total


def test_layer_identification_equals_the_loop_over_seed_pairs_and_layers():
    seeds = {f"seed{s}": _layers(seed=s, widths=(6, 6, 6, 6)) for s in range(3)}
    result = layer_identification(seeds, ["linear-cka", "procrustes", "pwcca"], progress=False)
    for measure in ("linear-cka", "procrustes", "pwcca"):
        row = result.accuracy.set_index("measure").loc[measure]
        assert row["accuracy"] == pytest.approx(_brute_identification(seeds, measure))
        assert row["total"] == 3 * 2 * 4
    assert list(result.accuracy["accuracy"]) == sorted(result.accuracy["accuracy"], reverse=True)
    per_layer = result.per_layer[result.per_layer["measure"] == "linear-cka"]
    assert per_layer["accuracy"].mean() == pytest.approx(result.accuracy.set_index("measure").loc["linear-cka",
                                                                                                   "accuracy"])


def test_symmetrized_identification_scores_asymmetric_measures_on_both_directions_summed():
    seeds = {f"seed{s}": _layers(seed=s, widths=(6, 6, 6, 6)) for s in range(3)}
    result = layer_identification(seeds, ["linear-cka", "regression", "pwcca"], progress=False)
    symmetrized = result.symmetrized()
    layers = list(seeds["seed0"])
    X, Y = seeds["seed0"]["l0"], seeds["seed1"]["l1"]
    swapped = [m for m in result.measures if compare_representations(X, Y, m) != pytest.approx(
        compare_representations(Y, X, m), abs=1e-9)]
    assert result.asymmetric == swapped == ["regression", "pwcca"] and symmetrized.asymmetric == []
    for measure in ("regression", "pwcca"):
        hits = 0
        for a in seeds:
            for b in seeds:
                if a == b:
                    continue
                for i, layer in enumerate(layers):
                    both = [compare_representations(seeds[a][layer], seeds[b][other], measure)
                            + compare_representations(seeds[b][other], seeds[a][layer], measure) for other in layers]
                    hits += int(both[i] > np.delete(both, i).max())
        assert symmetrized.accuracy.set_index("measure").loc[measure, "accuracy"] == pytest.approx(hits / 24)
        assert symmetrized.measures[measure].label.endswith("(S + S^T)") and symmetrized.measures[measure].high == 2
        same = [compare_representations(seeds[a]["l0"], seeds[b]["l0"], measure)
                + compare_representations(seeds[b]["l0"], seeds[a]["l0"], measure)
                for a, b in (("seed0", "seed1"), ("seed0", "seed2"), ("seed1", "seed2"))]
        assert symmetrized.ceiling.band("l0", measure) == pytest.approx((min(same), np.mean(same), max(same)))
    pd.testing.assert_frame_equal(symmetrized.per_layer[symmetrized.per_layer["measure"] == "linear-cka"],
                                  result.per_layer[result.per_layer["measure"] == "linear-cka"])
    assert result.values["regression"]["seed0", "seed1"] == pytest.approx(
        np.array([[regression_r2(seeds["seed0"][x], seeds["seed1"][y]) for y in layers] for x in layers]))


def test_rbf_cka_at_another_bandwidth_equals_the_kernel_formula_and_is_taken_in_place_of_a_name():
    layers = _layers(n=50)
    X, Y = layers["l0"], layers["l1"]

    def rbf_cka(X, Y, fraction):  # Kornblith et al. 2019, eq. 3-4, with the bandwidth a fraction of the median
        grams = []
        for A in (X, Y):
            squared = scipy.spatial.distance.cdist(A, A, "sqeuclidean")
            kernel = np.exp(-squared / (2 * fraction**2 * np.median(squared)))
            centring = np.eye(len(A)) - 1 / len(A)
            grams.append(centring @ kernel @ centring)
        return np.sum(grams[0] * grams[1]) / np.sqrt(np.sum(grams[0] ** 2) * np.sum(grams[1] ** 2))

    for fraction in (0.2, 0.4, 0.8):
        measure = analyses.rbf_cka_measure(fraction)
        assert measure.name == f"rbf-cka-{fraction}" and measure.kind == "similarity"
        assert compare_representations(X, Y, measure) == pytest.approx(rbf_cka(X, Y, fraction), abs=1e-10)
    assert compare_representations(X, Y, analyses.rbf_cka_measure(0.5)) == pytest.approx(
        compare_representations(X, Y, "rbf-cka"), abs=1e-12)
    maps = measure_matrices({"net": layers}, [analyses.rbf_cka_measure(0.4)], progress=False)
    assert maps.maps["rbf-cka-0.4"].values[0, 1] == pytest.approx(rbf_cka(X, Y, 0.4), abs=1e-10)
    for bad in (0, -0.4, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="median_fraction must be a positive finite number"):
            analyses.rbf_cka_measure(bad)


def test_rbf_cka_at_another_bandwidth_is_also_named_rbf_cka_and_its_fraction():
    layers = _layers(n=50)
    X, Y = layers["l0"], layers["l1"]
    for name, fraction in (("rbf-cka-0.4", 0.4), ("rbf-cka-0.40", 0.4), ("rbf-cka-.8", 0.8), ("rbf-cka-2e-1", 0.2),
                           ("rbf-cka-10", 10.0)):
        measure = analyses.get_measure(name)
        assert measure.name == f"rbf-cka-{fraction:g}"
        assert compare_representations(X, Y, name) == compare_representations(X, Y, analyses.rbf_cka_measure(fraction))
    maps = measure_matrices({"net": layers}, ["rbf-cka-0.40", "rbf-cka-0.4", "linear-cka"], progress=False)
    assert list(maps.maps) == ["rbf-cka-0.4", "linear-cka"]  # one measure, however its fraction is written
    for bad in ("rbf-cka-0", "rbf-cka-0.0", "rbf-cka--0.4", "rbf-cka-x", "rbf-cka-0.4x"):
        with pytest.raises(KeyError, match=r"'rbf-cka-<fraction>', with a positive fraction.*'rbf-cka-0.4'"):
            analyses.get_measure(bad)
    with pytest.raises(ValueError, match=r"'rbf-cka-1e999': median_fraction must be a positive finite number"):
        analyses.get_measure("rbf-cka-1e999")


def test_a_tie_between_layers_is_a_miss_and_a_copy_of_a_network_is_identified_fully():
    layers = _layers()
    tied = dict(layers, l2=layers["l1"])  # two layers identical: neither can be told apart
    result = layer_identification({"s0": tied, "s1": tied}, ["linear-cka"], progress=False)
    per_layer = result.per_layer.set_index("layer")["accuracy"]
    assert per_layer["l0"] == 1.0 and per_layer["l1"] == 0.0 and per_layer["l2"] == 0.0
    assert set(result.confusions["picked"]) == {"(tie)"}
    rotated = {k: v @ np.linalg.qr(np.random.default_rng(1).standard_normal((v.shape[1],) * 2))[0]
               for k, v in layers.items()}
    assert layer_identification({"s0": layers, "s1": rotated}, ["linear-cka", "procrustes"],
                                progress=False).accuracy["accuracy"].tolist() == [1.0, 1.0]


def test_seed_ceiling_is_the_same_layer_across_every_pair_of_seeds():
    seeds = {f"seed{s}": _layers(seed=s) for s in range(3)}
    ceiling = seed_ceiling(seeds, "linear-cka", progress=False)
    for layer in ("l0", "l1", "l2"):
        values = [cka(seeds[a][layer], seeds[b][layer]) for a, b in (("seed0", "seed1"), ("seed0", "seed2"),
                                                                    ("seed1", "seed2"))]
        low, mean, high = ceiling.band(layer, "linear-cka")
        assert (low, mean, high) == pytest.approx((min(values), np.mean(values), max(values)))
    with pytest.raises(ValueError, match="same layers"):
        layer_identification({"a": _layers(), "b": {"l0": _layers()["l0"], "x": _layers()["l1"]}})


def test_bootstrap_resamples_stimuli_as_the_loop_does_and_keeps_distinct_stimuli_for_neighbour_measures():
    layers = _layers(n=60)
    X, Y = layers["l0"], layers["l1"]
    result = bootstrap_measure(X, Y, "linear-cka", n_bootstrap=25, seed=3, progress=False)
    rng = np.random.default_rng(3)
    expected = []
    for _ in range(25):
        index = rng.integers(0, 60, 60)
        expected.append(cka(X[index], Y[index]))
    np.testing.assert_allclose(result.samples, expected, atol=1e-12)
    assert result.ci_low == pytest.approx(np.quantile(expected, 0.025))
    assert result.estimate == pytest.approx(cka(X, Y))
    knn = bootstrap_measure(X, Y, "mutual-knn", n_bootstrap=5, seed=3, progress=False)
    rng = np.random.default_rng(3)
    index = np.unique(rng.integers(0, 60, 60))
    assert knn.samples[0] == pytest.approx(mutual_knn(X[index], Y[index], k=10))
    again = bootstrap_measure(X, Y, "mutual-knn", n_bootstrap=5, seed=3, progress=False)
    np.testing.assert_array_equal(knn.samples, again.samples)


def test_permutation_p_value_follows_the_measure_direction():
    layers = _layers(n=60)
    X = layers["l0"]
    related = X @ np.random.default_rng(0).standard_normal((6, 6)) + 0.05 * np.random.default_rng(1).standard_normal(
        (60, 6))
    for measure in ("linear-cka", "procrustes"):
        result = permutation_test_measure(X, related, measure, n_permutations=50, seed=0, progress=False)
        assert result.p_value == pytest.approx(1 / 51), measure
    unrelated = np.random.default_rng(5).standard_normal((60, 6))
    result = permutation_test_measure(X, unrelated, "procrustes", n_permutations=50, seed=0, progress=False)
    rng = np.random.default_rng(0)
    null = [procrustes_distance(X, unrelated[rng.permutation(60)]) for _ in range(50)]
    np.testing.assert_allclose(result.null, null, atol=1e-12)
    assert result.p_value == pytest.approx((1 + sum(v <= result.observed for v in null)) / 51)


def _degenerate_inputs():
    rng = np.random.default_rng(4)
    X = rng.standard_normal((40, 6))
    Y = np.tanh(X @ rng.standard_normal((6, 5))) + 0.1 * rng.standard_normal((40, 5))
    constant_unit = X.copy()
    constant_unit[:, 2] = 3.0
    duplicated = np.concatenate([X, X[:, :3]], axis=1)  # rank-deficient: 9 units spanning 6 directions
    wide = rng.standard_normal((40, 60))  # more units than stimuli
    return {
        "a constant unit": (constant_unit, Y),
        "duplicated units": (duplicated, Y),
        "more units than stimuli": (wide, Y),
        "float16": (X.astype(np.float16), Y.astype(np.float16)),
    }


@pytest.mark.parametrize("case", list(_degenerate_inputs()))
def test_no_measure_returns_nan_on_degenerate_input_it_answers_in_range_or_says_what_to_do(case):
    X, Y = _degenerate_inputs()[case]
    for name, spec in MEASURES.items():
        try:
            value = compare_representations(X, Y, name)
        except ValueError as error:
            assert "use" in str(error) or "drop" in str(error) or "reduce" in str(error), (name, str(error))
            continue
        assert np.isfinite(value) and spec.low - 1e-9 <= value <= spec.high + 1e-9, (case, name, value)
        if case == "float16":  # the same as on the float16 values read in float64
            expected = compare_representations(X.astype(np.float64), Y.astype(np.float64), name)
            assert value == pytest.approx(expected, abs=1e-12), name


def test_a_representation_that_is_the_same_for_every_stimulus_is_refused_by_every_measure():
    Y = np.random.default_rng(0).standard_normal((30, 4))
    for name in MEASURES:
        with pytest.raises(ValueError):
            compare_representations(Y, np.ones((30, 5)), name)
        if name == "regression":  # a constant predictor explains none of Y: R^2 = 0, its documented convention
            assert compare_representations(np.ones((30, 5)), Y, name) == 0.0
            continue
        with pytest.raises(ValueError):
            compare_representations(np.ones((30, 5)), Y, name)


@pytest.mark.gpu
def test_maps_on_the_gpu_equal_those_on_the_cpu():
    import torch

    layers = _layers(n=120)
    on_gpu = {name: torch.as_tensor(x, device="cuda") for name, x in layers.items()}
    cpu, gpu = measure_matrices(layers, progress=False), measure_matrices(on_gpu, progress=False)
    for name in cpu:
        np.testing.assert_allclose(gpu[name].values, cpu[name].values, atol=1e-8, err_msg=name)


def test_measures_that_share_a_summary_prepare_each_layer_once():
    from dataclasses import replace

    calls = []

    def counting(X):
        calls.append(X.shape)
        return MEASURES["cca"].prepare(X)

    cca, pwcca = replace(MEASURES["cca"], prepare=counting), replace(MEASURES["pwcca"], prepare=counting)
    layers = _layers()
    maps = measure_matrices(layers, [cca, pwcca], progress=False)
    assert len(calls) == len(layers)
    reference = measure_matrices(layers, ["cca", "pwcca"], progress=False)
    for name in ("cca", "pwcca"):
        np.testing.assert_allclose(maps[name].values, reference[name].values)


def test_identification_read_off_maps_equals_identification_from_the_seeds():
    from analyses import layer_identification_from_maps

    seeds = {f"seed{s}": _layers(seed=s, widths=(6, 6, 6, 6)) for s in range(3)}
    measures = ["linear-cka", "procrustes", "pwcca"]
    direct = layer_identification(seeds, measures, progress=False)
    maps = measure_matrices(dict(seeds, other=_layers(seed=9, widths=(5, 7))), measures, progress=False)
    read = layer_identification_from_maps(maps, list(seeds), ["l0", "l1", "l2", "l3"])
    for field in ("accuracy", "per_layer", "confusions"):
        np.testing.assert_array_equal(getattr(read, field).to_numpy(), getattr(direct, field).to_numpy(),
                                      err_msg=field)
    np.testing.assert_allclose(read.ceiling.frame[["mean", "sd", "min", "max"]],
                               direct.ceiling.frame[["mean", "sd", "min", "max"]], atol=1e-12)
    with pytest.raises(ValueError, match="no entries"):
        layer_identification_from_maps(maps, ["seed0", "other"], ["l0", "l3"])
