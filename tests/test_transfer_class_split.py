"""zoo.load_dataset(classes=...) and probe.class_split_transfer (tiny runs)."""

import importlib
import json

import numpy as np
import pytest
import torch

import zoo
from probe.study import ClassSplitTransfer, class_split_transfer

_train_module = importlib.import_module("zoo._train")


@pytest.mark.parametrize("split", ["train", "test"])
def test_classes_filter_matches_a_brute_force_selection(split):
    full = zoo.load_dataset("digits", split=split)
    kept = zoo.load_dataset("digits", split=split, classes=[7, 2, 2])
    expected = [full[i] for i in range(len(full)) if full[i][1] in (2, 7)]
    assert len(kept) == len(expected) > 0
    np.testing.assert_array_equal(kept.labels.numpy(), [label for _, label in expected])
    torch.testing.assert_close(torch.stack([kept[i][0] for i in range(len(kept))]), torch.stack([image for image, _ in expected]))
    assert kept.info == full.info and kept.info.n_classes == 10  # the full dataset's classes and normalisation
    by_name = zoo.load_dataset("digits", split=split, classes=["2", "7"])
    assert torch.equal(by_name.labels, kept.labels)


def test_classes_filter_on_an_image_folder(tmp_path):
    from PIL import Image

    for class_name, count in {"cat": 2, "dog": 3, "owl": 1}.items():
        (tmp_path / class_name).mkdir()
        for i in range(count):
            Image.fromarray(np.full((6, 6, 3), 40 * i, np.uint8)).save(tmp_path / class_name / f"{i}.png")
    full = zoo.load_dataset(f"imagefolder:{tmp_path}", image_size=4)
    kept = zoo.load_dataset(f"imagefolder:{tmp_path}", image_size=4, classes=["dog", 2])
    expected = [full[i] for i in range(len(full)) if full[i][1] in (1, 2)]
    assert [kept[i][1] for i in range(len(kept))] == [label for _, label in expected] == [1, 1, 1, 2]
    torch.testing.assert_close(torch.stack([kept[i][0] for i in range(len(kept))]), torch.stack([image for image, _ in expected]))
    assert kept.info.class_names == ("cat", "dog", "owl")


def test_classes_filter_rejects_bad_requests():
    with pytest.raises(ValueError, match="unlabelled"):
        zoo.load_dataset("natural-patches", n_patches=4, patch_size=4, classes=[0])
    with pytest.raises(ValueError, match=r"no class 10; valid labels: 0\.\.9"):
        zoo.load_dataset("digits", classes=[3, 10])
    with pytest.raises(ValueError, match="no class 'seven'"):
        zoo.load_dataset("digits", classes=["seven"])
    with pytest.raises(ValueError, match="empty"):
        zoo.load_dataset("digits", classes=[])


def test_class_split_transfer_never_pretrains_on_probe_classes(tmp_path, monkeypatch):
    trained_labels = []

    def recording_batches(*args, **kwargs):
        for images, labels in zoo.iterate_batches(*args, **kwargs):
            trained_labels.append(labels.clone())
            yield images, labels

    initial_weights = {}

    def recording_create_model(name, **config):
        model = _train_module.__dict__["_real_create_model"](name, **config)
        initial_weights.update({key: value.clone() for key, value in model.state_dict().items()})
        return model

    monkeypatch.setattr(_train_module, "iterate_batches", recording_batches)
    monkeypatch.setitem(_train_module.__dict__, "_real_create_model", _train_module.create_model)
    monkeypatch.setattr(_train_module, "create_model", recording_create_model)
    options = dict(epochs=1, out=tmp_path / "run", device="cpu", progress=False, C=1.0, width=8, hidden=16)
    result = class_split_transfer("cnn", (0, 1, 2, 3, 4), (5, 6, 7, 8, 9), **options)

    seen = torch.cat(trained_labels)
    n_pretrain = int(np.isin(zoo.load_dataset("digits").labels.numpy(), [0, 1, 2, 3, 4]).sum())
    assert set(seen.tolist()) == {0, 1, 2, 3, 4} and len(seen) == n_pretrain // 64 * 64  # one epoch, full batches
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["dataset"] == {"name": "digits", "options": {"classes": [0, 1, 2, 3, 4]}}
    reloaded = zoo.load(tmp_path / "run")
    assert reloaded.config["n_classes"] == 10  # the full head, so the run reloads
    # The "random weights" reference is rebuilt from the seed: it must be the run's starting point.
    zoo.seed_everything(0)
    rebuilt = zoo.create_model("cnn", **{k: v for k, v in reloaded.config.items() if k != "name"}).state_dict()
    assert initial_weights.keys() == rebuilt.keys()
    assert all(torch.equal(initial_weights[key], rebuilt[key]) for key in rebuilt)

    assert isinstance(result, ClassSplitTransfer) and result.chance == pytest.approx(0.2)
    frame = result.to_frame()
    assert list(frame["representation"]) == ["pretrained", "random weights", "raw pixels"]
    assert frame[["probe_accuracy", "knn_accuracy"]].stack().between(0.5, 1.0).all()  # digits 5-9 are easy; chance is 0.2
    assert list(frame["n_features"]) == [16, 16, 64]
    assert 0.0 <= result.pretrain_metrics["test_accuracy"] <= 1.0

    trained_labels.clear()
    again = class_split_transfer("cnn", (4, 3, 2, 1, 0), (5, 6, 7, 8, 9), **options)
    assert not trained_labels  # the finished run is reused, not retrained
    assert again.to_frame()["probe_accuracy"].tolist() == pytest.approx(frame["probe_accuracy"].tolist())
    with pytest.raises(ValueError, match="other settings"):
        class_split_transfer("cnn", **{**options, "epochs": 2})


def test_class_split_transfer_rejects_overlapping_classes(tmp_path):
    with pytest.raises(ValueError, match=r"classes \[4\] are in both"):
        class_split_transfer("cnn", (0, 1, 2, 3, 4), (4, 5, 6), out=tmp_path)
    with pytest.raises(ValueError, match="two probe classes"):
        class_split_transfer("cnn", (0, 1), (5,), out=tmp_path)
