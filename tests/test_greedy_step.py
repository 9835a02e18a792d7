"""The study's greedy analysis: greedy layer-wise pretraining against end-to-end training, its tables, section
and finding."""

import numpy as np
import pandas as pd
import pytest
import torch

from probe.study import Study
from probe.study._context import StudyContext
from probe.study._greedy_step import greedy_findings
from probe.study._pretraining_experiments import METHODS, GreedyLayerwiseResult
from reports._greedy_section import greedy_section

OPTIONS = {"widths": [16, 8], "seeds": [0, 1], "labels_per_class": [5], "pretrain_epochs": 1, "finetune_epochs": 1}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    # thousands of tiny optimiser steps: a second thread only adds contention on a shared CPU (20 s vs 3 s)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("greedy")
    spec = {"title": "greedy", "data": {"dataset": "digits", "split": "test", "limit": 20},
            "models": [{"name": "cnn", "arch": "zoo:cnn", "layers": ["relu_fc1"]}],
            "analyses": {"greedy": OPTIONS}}
    try:
        return Study.from_dict(spec, folder=folder, out=folder / "out").run(progress=False)
    finally:
        torch.set_num_threads(threads)


def test_the_study_runs_the_experiment_with_every_label_added(study):
    assert study.failed == {}
    result = study.results["greedy"]
    assert result.widths == (16, 8) and result.dataset == "digits"
    frame = study.tables["greedy"]
    assert sorted(frame["budget"].unique()) == ["5", "all"] and sorted(frame["seed"].unique()) == [0, 1]
    assert set(frame["method"]) == set(METHODS) and len(frame) == 2 * 2 * 2
    assert (frame.loc[frame["budget"] == "5", "n_train"] == 50).all()  # digits: 10 classes x 5 labels
    pd.testing.assert_frame_equal(frame, result.to_frame())
    pd.testing.assert_frame_equal(study.tables["greedy-layers"], result.reconstruction.reset_index(drop=True))
    layers = study.tables["greedy-layers"]
    assert list(layers["width"]) == [16, 8, 16, 8]
    np.testing.assert_allclose(layers["ratio"], layers["recon_mse"] / layers["mean_code_mse"], rtol=1e-6)


def test_the_section_shows_both_figures_and_the_tables_of_the_result(study):
    result = study.results["greedy"]
    section = greedy_section(result)
    assert section.body.count("data:image/png;base64,") == 2
    # the paired differences: recomputed from the per-run table
    runs = study.tables["greedy"].pivot_table(index=["budget", "seed"], columns="method", values="accuracy")
    paired = (runs[METHODS[0]] - runs[METHODS[1]]).groupby(level="budget")
    for budget, values in paired:
        assert f"{values.mean():.4g}" in section.body and f"{values.std(ddof=1):.4g}" in section.body
        assert f"{budget} labels/class: {values.mean():+.3f} ± {values.std(ddof=1):.3f}" in section.summary
    for row in result.summary().itertuples():
        assert f"{row.accuracy_mean:.4g}" in section.body


def _result(differences: list[float], budgets=("10", "all")) -> GreedyLayerwiseResult:
    """A result whose greedy run beats end to end by ``differences`` (one per seed) at every budget."""
    rows = []
    for budget in budgets:
        for seed, difference in enumerate(differences):
            rows += [{"method": METHODS[0], "budget": budget, "labels_per_class": 10.0, "seed": seed, "n_train": 100,
                      "accuracy": 0.5 + difference},
                     {"method": METHODS[1], "budget": budget, "labels_per_class": 10.0, "seed": seed, "n_train": 100,
                      "accuracy": 0.5}]
    reconstruction = pd.DataFrame({"layer": [1], "width": [4], "recon_mse": [0.5], "mean_code_mse": [1.0],
                                   "ratio": [0.5], "seed": [0]})
    return GreedyLayerwiseResult(pd.DataFrame(rows), reconstruction, "digits", (4,), 100)


def test_the_finding_reads_the_smallest_budget_and_says_when_it_is_within_one_sd(tmp_path):
    ctx = StudyContext(out=tmp_path)
    assert greedy_findings(ctx) == []
    ctx.results["greedy"] = _result([0.01, -0.02, 0.03], budgets=("100", "10", "all"))
    (finding,) = greedy_findings(ctx)
    sd = float(np.std([0.01, -0.02, 0.03], ddof=1))
    assert finding.analysis == "greedy" and finding.value == pytest.approx(0.02 / 3)
    assert "With 10 labels per class" in finding.text and f"± {sd:.3f}" in finding.text
    assert "3 seeds" in finding.text and "within one sd of 0" in finding.text
    ctx.results["greedy"] = _result([0.10, 0.12])
    (finding,) = greedy_findings(ctx)
    assert "+0.110 ± 0.014" in finding.text and "within one sd" not in finding.text and "a gain" in finding.text
