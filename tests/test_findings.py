"""The study's findings (computed from result objects) and its per-step wall time and peak memory."""

import numpy as np
import pandas as pd
import pytest

from analyses import cka_matrix, compare_subspaces, probe_layers
from probe import Recording
from probe.study._context import StudyContext
from probe.study._findings import compute_findings, findings_frame
from probe.study._resources import StepMeter
from probe.study._similarity_step import best_layer_pairs
from probe.study._transfer_experiments import MaskRatioSweep


def _ctx(tmp_path):
    return StudyContext(out=tmp_path)


def test_the_most_alike_layers_of_two_models_are_found(tmp_path):
    rng = np.random.default_rng(0)
    shared = rng.standard_normal((60, 12))
    layers = {"a": {"l1": rng.standard_normal((60, 8)), "l2": shared},
              "b": {"m1": shared @ np.linalg.qr(rng.standard_normal((12, 12)))[0], "m2": rng.standard_normal((60, 5))}}
    ctx = _ctx(tmp_path)
    cka = cka_matrix(layers, progress=False)
    ctx.results["similarity_by_stimuli"] = {"digits (test)": {"cka": cka, "best_pairs": best_layer_pairs(cka)}}
    found = {f.model: f for f in compute_findings(ctx) if f.topic == "Similarity"}
    # a rotation leaves linear CKA at 1: a · l2 and b · m1 are the pair, whatever the other layers
    assert "a · l2 and b · m1" in found["a"].text and found["a"].value == pytest.approx(1.0)
    assert "b · m1 and a · l2" in found["b"].text and found["b"].stimuli == "digits (test)"


def test_the_best_transfer_layer_is_read_against_raw_pixels(tmp_path):
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(3), 40)
    informative = np.eye(3)[labels] * 3 + rng.standard_normal((120, 3)) * 0.3
    noise = rng.standard_normal((120, 4))

    def split(arrays, rows):
        return Recording({k: v[rows] for k, v in arrays.items()}, labels=labels[rows])

    train, test = np.arange(0, 120, 2), np.arange(1, 120, 2)
    pairs = {"raw pixels": (split({"pixels": noise}, train), split({"pixels": noise}, test)),
             "net": (split({"early": noise, "late": informative}, train), split({"early": noise, "late": informative}, test))}
    transfer = probe_layers(pairs, C=1.0, progress=False)
    ctx = _ctx(tmp_path)
    ctx.results["transfer_by_stimuli"] = {"": {"layers": transfer, "label_efficiency": None}}
    (finding,) = [f for f in compute_findings(ctx) if f.topic == "Transfer"]
    accuracy = transfer.to_frame().set_index(["model", "layer"])["accuracy"]
    assert finding.model == "net" and "best from late" in finding.text
    assert finding.value == accuracy["net", "late"] and f"raw pixels: {accuracy['raw pixels', 'pixels']:.2f}" in finding.text


def test_subspace_finding_says_whether_the_autoencoders_span_pca(tmp_path):
    x = np.random.default_rng(2).standard_normal((200, 6)) * np.array([5, 4, 3, 1, 0.5, 0.2])
    comparison = compare_subspaces(x, ks=(2,), max_iter=3000, random_state=0, progress=False, source="toy")
    ctx = _ctx(tmp_path)
    ctx.results["subspaces"] = [comparison]
    (finding,) = compute_findings(ctx)
    largest = comparison.metrics.query("k == 2 and method != 'pca'")["max_angle_deg"].max()
    assert finding.value == largest
    assert ("span PCA's 2-dimensional subspace" in finding.text) == (largest < 1.0)


def test_a_mask_ratio_whose_mae_did_not_learn_carries_a_caveat(tmp_path):
    frame = pd.DataFrame({"mask_ratio": [0.25, 0.75], "probe_accuracy": [0.9, 0.7], "run_recon_ratio": [1.2, 0.6]})
    ctx = _ctx(tmp_path)
    ctx.results["mask_ratio"] = MaskRatioSweep(frame=frame, dataset="digits")
    (finding,) = compute_findings(ctx)
    assert "0.25 probes best" in finding.text and "no better than the mean image" in finding.text
    frame["run_recon_ratio"] = [0.5, 0.6]
    (finding,) = compute_findings(ctx)
    assert "mean image" not in finding.text


def test_a_mask_ratio_peak_within_one_sd_of_the_next_is_called_unresolved(tmp_path):
    frame = pd.DataFrame({"mask_ratio": [0.5, 0.5, 0.75, 0.75], "seed": [0, 1, 0, 1],
                          "probe_accuracy": [0.70, 0.74, 0.69, 0.71], "run_recon_ratio": 0.5})
    ctx = _ctx(tmp_path)
    ctx.results["mask_ratio"] = MaskRatioSweep(frame=frame, dataset="digits")
    (finding,) = compute_findings(ctx)
    sd = np.std([0.70, 0.74], ddof=1)
    assert f"0.5 probes best (accuracy 0.72 ± {sd:.2f} (sd over 2 seeds)" in finding.text
    assert "within one sd of the ratio 0.75 (0.70)" in finding.text and finding.value == pytest.approx(0.72)
    frame.loc[frame["mask_ratio"] == 0.75, "probe_accuracy"] = [0.5, 0.52]
    (finding,) = compute_findings(ctx)
    assert "within one sd" not in finding.text


def test_no_results_no_findings_and_the_table_has_its_columns(tmp_path):
    assert compute_findings(_ctx(tmp_path)) == []
    assert list(findings_frame([]).columns) == ["topic", "model", "text", "value", "analysis", "stimuli"]


def test_step_meter_measures_each_steps_own_peak():
    meter = StepMeter()
    with meter.step("big"):
        block = np.ones(300 * 2**20 // 8)  # 300 MiB, touched
        del block
    with meter.step("small"):
        pass
    big, small = meter.usage["big"], meter.usage["small"]
    assert big.peak_rss - small.peak_rss > 250 * 2**20 if small.per_step else big.peak_rss >= 300 * 2**20
    assert big.seconds >= 0 and small.peak_gpu is None


def test_the_most_selective_units_are_named_per_group_of_stimuli(tmp_path):
    from types import SimpleNamespace

    from analyses import class_selectivity

    rng = np.random.default_rng(3)
    labels = np.repeat(np.arange(3), 20)
    responses = rng.random((60, 6))
    responses[labels == 2, 4] += 5  # unit 4 answers class 2 only

    def patches(ids):
        return SimpleNamespace(selectivity=class_selectivity(responses, labels, ("a", "b", "c")),
                               unit_names=lambda rows: np.asarray(ids)[rows], class_names=("a", "b", "c"))

    ctx = _ctx(tmp_path)
    ctx.models = {"net": None, "other": None}
    ctx.data_of = {"net": "digits (test)", "other": "photos (train)"}
    ctx.results["units"] = {"net · conv": patches([10, 11, 12, 13, 14, 15]), "other · conv": patches(range(6))}
    found = [f for f in compute_findings(ctx) if f.topic == "Units"]
    assert [f.stimuli for f in found] == ["digits (test)"] * 3 + ["photos (train)"] * 3
    best = found[0]
    index = class_selectivity(responses, labels).index
    assert best.model == "net" and "unit 14, prefers class 'c'" in best.text and best.value == pytest.approx(index.max())
