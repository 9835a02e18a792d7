"""One "unknown name" error everywhere: same wording, cutoff and format (zoo.unknown_name_error)."""

import difflib
from collections import OrderedDict

import numpy as np
import pytest
import torch
from torch import nn

import analyses
import probe
import zoo
from probe.cli import main
from zoo._names import CLOSEST_CUTOFF, MAX_CLOSEST, MAX_LISTED


def test_message_names_the_ask_the_closest_and_how_to_list():
    error = zoo.unknown_name_error("dataset", "digts", ["digits", "mnist", "cifar10"], listing="zoo.list_datasets()")
    assert str(error) == (
        "unknown dataset 'digts'; did you mean 'digits'? Valid names: 'digits', 'mnist', 'cifar10'. "
        "List them all with zoo.list_datasets()."
    )
    assert error.name == "digts" and error.closest == ("digits",)
    hinted = zoo.unknown_name_error("dataset", "digts", ["digits"], listing="zoo.list_datasets()",
                                    hint="Image folders are named 'imagefolder:PATH'.")
    assert str(hinted) == hinted.args[0] == ("unknown dataset 'digts'; did you mean 'digits'? Valid names: 'digits'. "
                                              "List them all with zoo.list_datasets(). Image folders are named "
                                              "'imagefolder:PATH'.")
    assert isinstance(error, KeyError) and isinstance(error, ValueError) and isinstance(error, LookupError)


def test_closest_names_follow_difflib_with_the_shared_cutoff():
    valid = [f"layer{i}.conv{j}" for i in range(4) for j in range(3)] + ["fc", "head"]
    for asked in ("layer1.conv", "layer9.conv2", "haed", "xyz"):
        expected = tuple(difflib.get_close_matches(asked, valid, n=MAX_CLOSEST, cutoff=CLOSEST_CUTOFF))
        assert zoo.unknown_name_error("layer", asked, valid).closest == expected
    assert "did you mean" not in str(zoo.unknown_name_error("layer", "xyz", valid))


def test_long_lists_give_the_listing_or_are_cut_short():
    valid = [f"unit{i}" for i in range(MAX_LISTED + 5)]
    with_listing = str(zoo.unknown_name_error("layer", "unit", valid, listing="`probe layers RUN`"))
    assert "Valid names" not in with_listing and with_listing.endswith("List them all with `probe layers RUN`.")
    without = str(zoo.unknown_name_error("layer", "unit", valid))
    assert "and 5 more." in without and "'unit29'" in without and "'unit30'" not in without
    assert str(zoo.unknown_name_error("layer", "a", [])).endswith("There are no valid names.")


def _net():
    layers = {"conv": nn.Conv2d(1, 2, 3), "relu": nn.ReLU(), "flatten": nn.Flatten(), "fc": nn.Linear(2 * 6 * 6, 3)}
    return nn.Sequential(OrderedDict(layers)).eval()


X = np.random.default_rng(0).normal(size=(10, 4))

SITES = {
    "dataset": lambda: zoo.load_dataset("digitz"),
    "model": lambda: zoo.create_model("cnnn"),
    "augmentation option": lambda: zoo.augmentation_for((1, 8, 8), noise_sdt=0.0),
    "corruption": lambda: zoo.models.corrupt(torch.zeros(1, 1, 8, 8), "gausian"),
    "kNN metric": lambda: zoo.knn_predict(torch.rand(4, 2), torch.tensor([0, 1, 0, 1]), torch.rand(2, 2), 1,
                                          metric="cosin"),
    "layer": lambda: probe.record(_net(), torch.rand(4, 1, 8, 8), "rleu", device="cpu", progress=False),
    "reduction": lambda: probe.Reduction("spatial_mean"),
    "RDM metric": lambda: analyses.rdm(X, "corelation"),
    "CKA kernel": lambda: analyses.cka(X, X, "rbg"),
    "RDM comparison method": lambda: analyses.compare_rdms(analyses.rdm(X), analyses.rdm(X), "spearmann"),
    "pooling": lambda: analyses.StreamingCKA(pool="maen"),
    "receptive-field layer": lambda: analyses.receptive_field(_net(), "conv1", (1, 8, 8)),
    "kNN read-out metric": lambda: analyses.knn_accuracy(X, [0, 1] * 5, X, [0, 1] * 5, metric="cosin"),
}


@pytest.mark.parametrize("site", sorted(SITES))
def test_every_site_raises_the_shared_error(site):
    with pytest.raises(zoo.UnknownNameError) as caught:
        SITES[site]()
    message = str(caught.value)
    assert message.startswith("unknown ") and "; did you mean '" in message, message


def test_the_command_line_prints_the_shared_error(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "cnn", "--dataset", "digitz", "--out", "x"]) == 2
    assert "unknown dataset 'digitz'; did you mean 'digits'?" in capsys.readouterr().err


def test_check_input_shape_names_both_shapes_and_the_callers_advice():
    import torch

    import zoo

    model = torch.nn.Linear(2, 2)
    model.config = {"input_shape": [1, 8, 8]}
    digits = zoo.load_dataset("digits", split="test")
    zoo.check_input_shape(model, digits, subject="x", advice="y")  # the same shape passes
    model.config = {"input_shape": [3, 32, 32]}
    with pytest.raises(ValueError, match=r"--dataset digits has images of shape \(1, 8, 8\), .*\(3, 32, 32\); use this"):
        zoo.check_input_shape(model, digits, subject="--dataset digits", advice="use this")
    zoo.check_input_shape(torch.nn.Linear(2, 2), digits, subject="x", advice="y")  # a model that does not say
