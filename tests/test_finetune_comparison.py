"""probe.study.finetune_comparison: linear probe, last block and full fine-tuning on unseen classes (tiny)."""

import shutil

import numpy as np
import pandas as pd
import pytest

import zoo
from analyses import linear_probe
from probe.study import FinetuneComparison, encode_features, finetune_comparison
from probe.study._pretraining_experiments import labelled_subset


@pytest.fixture(scope="module")
def comparison(tmp_path_factory):
    out = tmp_path_factory.mktemp("class-split")
    return finetune_comparison(["cnn"], dataset="digits", labels_per_class=(1, 5), seeds=(0, 1), pretrain_epochs=1,
                               steps=5, out=out, device="cpu", progress=False), out


def test_every_adaptation_is_scored_on_the_same_labelled_draws(comparison):
    result, out = comparison
    frame = result.to_frame()
    assert len(frame) == 1 * 2 * 2 * 3  # models x budgets x seeds x adaptations
    assert set(frame["adaptation"]) == {"linear probe", "last block", "full"}
    assert frame.groupby(["labels_per_class", "seed"])["n_train"].nunique().eq(1).all()
    assert set(frame.loc[frame["labels_per_class"] == 5, "n_train"]) == {25}  # 5 probe classes
    assert frame["accuracy"].between(0, 1).all() and result.chance == pytest.approx(0.2)
    assert dict(zip(frame["adaptation"], frame["trained"])) == {"linear probe": "none", "last block": "fc1", "full": "all"}
    # the linear probe's cell, recomputed independently from the pretrained run and the same draw
    encoder = zoo.load(next(out.iterdir()), device="cpu").eval()
    train = zoo.load_dataset("digits", classes=[5, 6, 7, 8, 9])
    test = zoo.load_dataset("digits", split="test", classes=[5, 6, 7, 8, 9])
    X, y = encode_features(encoder, train)
    X_test, y_test = encode_features(encoder, test)
    rows = labelled_subset(y, 5, 1)
    expected = linear_probe(X[rows], y[rows], X_test, y_test, C=None, random_state=1, device="cpu").accuracy
    cell = frame.query("adaptation == 'linear probe' and labels_per_class == 5 and seed == 1")["accuracy"].item()
    assert cell == pytest.approx(expected, abs=1e-9)


def test_summary_and_gains_follow_the_table():
    frame = pd.DataFrame(dict(model="m", family="f", adaptation=["linear probe", "linear probe", "full", "full"],
                              labels_per_class=1, seed=[0, 1, 0, 1], n_train=5, accuracy=[0.4, 0.6, 0.7, 0.9],
                              trained="none"))
    result = FinetuneComparison(frame=frame, dataset="digits", pretrain_classes=(0,), probe_classes=(1, 2),
                                pretrain_metrics={})
    summary = result.summary()
    assert list(summary["adaptation"]) == ["linear probe", "full"]
    assert summary["accuracy_std"].iloc[0] == pytest.approx(np.std([0.4, 0.6], ddof=1))
    assert result.gains()["full"].item() == pytest.approx(0.3)


def test_refuses_overlapping_classes_and_bad_budgets(tmp_path):
    with pytest.raises(ValueError, match="disjoint"):
        finetune_comparison(["cnn"], (0, 1), (1, 2), out=tmp_path)
    with pytest.raises(ValueError, match="positive integers"):
        finetune_comparison(["cnn"], labels_per_class=(0,), out=tmp_path)
    with pytest.raises(ValueError, match="not compared"):
        finetune_comparison(["cnn"], model_settings={"mae": {}}, out=tmp_path)


def test_the_study_runs_the_comparison_reusing_finished_runs_and_reports_it(comparison, tmp_path):
    from probe.study import Study

    _, pretrained = comparison
    shutil.copytree(pretrained, tmp_path / "out" / "class-split")  # the same settings: loaded, not trained again
    (weights,) = (tmp_path / "out" / "class-split").glob("cnn-*/model.safetensors")
    written = weights.stat().st_mtime_ns
    spec = {"title": "finetune", "data": {"dataset": "digits", "split": "test", "limit": 40},
            "models": [{"name": "mlp", "arch": "zoo:mlp", "layers": ["body.relu1"]}],
            "analyses": {"finetune": {"models": ["cnn"], "labels_per_class": [1, 3], "seeds": [0, 1],
                                      "pretrain_epochs": 1, "steps": 3}}}
    result = Study.from_dict(spec, folder=tmp_path, out=tmp_path / "out").run(progress=False)
    assert result.failed == {}
    table = result.tables["finetune"]
    assert len(table) == 2 * 2 * 3 and set(table["model"]) == {"cnn"}
    assert weights.stat().st_mtime_ns == written
    html = result.report.read_text()
    assert "Fine-tuning against linear read-outs" in html and "Gain over the linear probe" in html
    gains = result.results["finetune"].gains().set_index("labels_per_class")["full"]
    findings = result.tables["findings"].query("topic == 'Fine-tuning'")["text"].tolist()
    assert len(findings) == 2 and f"largest gain is cnn's, {gains.loc[1]:+.3f}" in findings[0]


def test_the_section_says_when_a_budget_is_more_than_the_split_holds():
    from reports import finetune_section

    frame = pd.DataFrame(dict(model="m", family="f", adaptation=["linear probe", "full"] * 2, labels_per_class=[1, 1, 100, 100],
                              seed=0, n_train=[2, 2, 150, 150], accuracy=[0.5, 0.6, 0.8, 0.9], trained=["none", "all"] * 2))
    result = FinetuneComparison(frame=frame, dataset="digits", pretrain_classes=(0,), probe_classes=(1, 2),
                                pretrain_metrics={})
    body = finetune_section(result).body
    assert "fewer than 100 images of some probe classes: that budget uses 150 images in all (75 per class" in body
    assert "fewer than 1 images" not in body and "Gain over the linear probe" in body
