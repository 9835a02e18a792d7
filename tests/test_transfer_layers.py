"""probe_layers, label_efficiency and resolve_features on synthetic recordings."""

import numpy as np
import pytest

from analyses import LabelEfficiency, LayerTransfer, label_efficiency, linear_probe, probe_layers, resolve_features
from probe import Recording


def _recordings(seed=0, n_train=150, n_test=90):
    """Three layers whose class signal grows with depth: noise, weak, strong."""
    rng = np.random.default_rng(seed)

    def make(n):
        labels = rng.integers(0, 3, size=n)
        means = np.eye(3, 6) * 3.0
        layers = {
            "early": rng.standard_normal((n, 6)),
            "middle": rng.standard_normal((n, 6)) + 0.4 * means[labels],
            "late": rng.standard_normal((n, 6)) + means[labels],
        }
        return Recording(layers, labels=labels)

    return make(n_train), make(n_test)


def test_probe_layers_accuracy_rises_with_signal_and_matches_direct_probe():
    train, test = _recordings()
    result = probe_layers({"toy": (train, test)}, C=1.0, progress=False, device="cpu")
    assert isinstance(result, LayerTransfer)
    frame = result.to_frame()
    assert list(frame["layer"]) == ["early", "middle", "late"]
    assert list(frame["depth"]) == [0, 1, 2]
    accuracy = frame.set_index("layer")["accuracy"]
    assert accuracy["early"] < 0.55 < accuracy["middle"] < accuracy["late"]
    direct = linear_probe(train["late"], train.labels, test["late"], test.labels, C=1.0, device="cpu")
    assert accuracy["late"] == pytest.approx(direct.accuracy)
    assert frame["knn_accuracy"].between(0, 1).all()
    assert result.pivot().shape == (3, 1)


def test_probe_layers_several_models_and_dict_sources():
    train, test = _recordings()
    other_train = {"a": train["late"], "b": train["early"]}
    other_test = {"a": test["late"], "b": test["early"]}
    result = probe_layers({"arrays": (other_train, other_test)}, y_train=train.labels, y_test=test.labels, C=1.0,
                          knn_k=None, progress=False, device="cpu")
    frame = result.to_frame()
    assert list(frame["layer"]) == ["a", "b"] and frame["knn_accuracy"].isna().all()
    with pytest.raises(KeyError, match="unknown recorded layer 'lat'; did you mean 'late'"):
        probe_layers({"rec": (train, test)}, layers=["lat"], C=1.0, progress=False)
    with pytest.raises(KeyError, match="no entry"):
        probe_layers({"rec": (train, test)}, layers={"other": ["late"]}, C=1.0, progress=False)


def test_label_efficiency_counts_seeds_and_budgets():
    train, test = _recordings(n_train=240)
    result = label_efficiency({"late": ((train, "late"), (test, "late")), "early": ((train, "early"), (test, "early"))},
                              labels_per_class=(1, 5, None), seeds=(0, 1), C=1.0, progress=False, device="cpu")
    assert isinstance(result, LabelEfficiency)
    frame = result.to_frame()
    assert len(frame) == 2 * (2 + 2 + 1)  # "all" is drawn once
    five = frame[(frame["features"] == "late") & (frame["budget"] == "5")]
    assert (five["n_train"] == 15).all() and (five["labels_per_class"] == 5).all()
    summary = result.summary().set_index(["features", "budget"])
    assert summary.loc[("late", "5"), "n_seeds"] == 2
    assert summary.loc[("late", "5"), "accuracy_mean"] == pytest.approx(five["accuracy"].mean())
    assert summary.loc[("late", "5"), "accuracy_sd"] == pytest.approx(five["accuracy"].std())
    assert summary.loc[("late", "all"), "accuracy_mean"] > summary.loc[("early", "all"), "accuracy_mean"]
    # A seed fixes the draw: same seed, same accuracy.
    again = label_efficiency({"late": ((train, "late"), (test, "late"))}, labels_per_class=(5,), seeds=(1,), C=1.0,
                             progress=False, device="cpu").to_frame()
    assert again["accuracy"].iloc[0] == pytest.approx(five[five["seed"] == 1]["accuracy"].iloc[0])


def test_resolve_features_and_bad_input():
    train, _ = _recordings()
    features, labels = resolve_features((train, "late"))
    np.testing.assert_array_equal(features, train["late"])
    np.testing.assert_array_equal(labels, train.labels)
    with pytest.raises(ValueError, match="pass \\(recording, layer\\)"):
        resolve_features(train)
    with pytest.raises(ValueError, match="labels are required"):
        resolve_features(np.ones((4, 2)))
    with pytest.raises(ValueError, match="unlabelled"):
        resolve_features(np.ones((3, 2)), labels=[0, -1, 1])
    with pytest.raises(ValueError, match="one label per stimulus"):
        resolve_features(np.ones((3, 2)), labels=[0, 1])
    with pytest.raises(ValueError, match="positive integers"):
        label_efficiency({"x": ((train, "late"), (train, "late"))}, labels_per_class=(0,), progress=False)
