"""Greedy layer-wise pretraining: the layer autoencoders, the stack, the two MLPs and the experiment's tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import zoo
from analyses import sample_per_class
from probe.study._pretraining_experiments import (
    METHODS,
    GreedyStack,
    build_mlp,
    fine_tune,
    greedy_layerwise_experiment,
    greedy_pretrain,
    labelled_subset,
    pretrained_mlp,
)

WIDTHS = (16, 8)


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    data = zoo.load_dataset("digits", split="train")
    images, labels = zip(*zoo.iterate_batches(data, 2048))
    return torch.cat(images).flatten(1), torch.cat(labels)


@pytest.fixture(scope="module")
def stack(digits) -> GreedyStack:
    torch.set_num_threads(1)
    return greedy_pretrain(digits[0], WIDTHS, epochs=5, seed=0, lr=1e-2)


def _tiny_experiment(seeds=(0,)):
    return greedy_layerwise_experiment("digits", widths=WIDTHS, labels_per_class=(3, "all"), seeds=seeds,
                                       pretrain_epochs=1, finetune_epochs=1, min_finetune_steps=2, progress=False)


def test_each_layer_reconstructs_its_codes_better_than_their_means(stack, digits):
    inputs = digits[0]
    for row, autoencoder in zip(stack.reconstruction.itertuples(), stack.autoencoders):
        with torch.no_grad():
            recon_mse = float(((autoencoder(inputs) - inputs) ** 2).mean())
            mean_code_mse = float(((inputs - inputs.mean(0)) ** 2).mean())
            inputs = autoencoder.encoder(inputs)
        assert row.recon_mse == pytest.approx(recon_mse, rel=1e-5)
        assert row.mean_code_mse == pytest.approx(mean_code_mse, rel=1e-5)
        assert row.ratio == pytest.approx(recon_mse / mean_code_mse, rel=1e-5)
        assert row.ratio < 1.0
    assert list(stack.reconstruction["width"]) == list(WIDTHS)


def test_stacked_encoder_holds_copies_of_the_trained_encoders(stack, digits):
    linears = [module for module in stack.encoder if isinstance(module, nn.Linear)]
    assert len(stack.encoder) == 2 * len(WIDTHS)
    for linear, autoencoder in zip(linears, stack.autoencoders):
        trained = autoencoder.encoder[0]
        assert torch.equal(linear.weight, trained.weight) and torch.equal(linear.bias, trained.bias)
        assert linear.weight.data_ptr() != trained.weight.data_ptr()  # copied, not shared
    with torch.no_grad():
        expected = stack.autoencoders[1].encoder(stack.autoencoders[0].encoder(digits[0]))
        assert torch.allclose(stack.encoder(digits[0]), expected)


def test_end_to_end_mlp_starts_from_the_plain_seeded_mlp():
    model = build_mlp(64, WIDTHS, 10, seed=3)
    torch.manual_seed(3)
    plain = [nn.Linear(64, 16), nn.Linear(16, 8), nn.Linear(8, 10)]
    ours = [module for module in model.modules() if isinstance(module, nn.Linear)]
    for mine, reference in zip(ours, plain, strict=True):
        assert torch.equal(mine.weight, reference.weight) and torch.equal(mine.bias, reference.bias)
    assert not torch.equal(build_mlp(64, WIDTHS, 10, seed=4).head.weight, model.head.weight)


def test_fine_tuning_moves_the_pretrained_weights_and_leaves_the_stack(stack, digits):
    X, y = digits
    model = pretrained_mlp(stack, 10, seed=0)
    start = {name: value.clone() for name, value in model.state_dict().items()}
    for name, value in stack.encoder.state_dict().items():
        assert torch.equal(start[f"body.{name}"], value)
    reference_head = build_mlp(64, WIDTHS, 10, seed=0).head
    assert torch.equal(model.head.weight, reference_head.weight)  # both methods share the head's start
    fine_tune(model, X[:200], y[:200], epochs=2, seed=0)
    assert not torch.equal(model.body[0].weight, stack.encoder[0].weight)
    assert not torch.equal(model.body[2].weight, stack.encoder[2].weight)
    assert torch.equal(stack.encoder[0].weight, stack.autoencoders[0].encoder[0].weight)  # stack untouched


def test_fine_tune_takes_at_least_min_steps(digits):
    X, y = digits
    model = build_mlp(64, WIDTHS, 10, seed=0)
    calls = []
    model.register_forward_hook(lambda module, inputs, output: calls.append(len(inputs[0])))
    fine_tune(model, X[:10], y[:10], epochs=1, seed=0, batch_size=4, min_steps=5)
    assert calls == [4, 4, 2, 4, 4, 2]  # one epoch gives 3 steps, so a second pass is made


def test_labelled_subset_draws_exactly_k_per_class_as_the_toolkit_does(digits):
    labels = digits[1].numpy()
    rows = labelled_subset(labels, 7, seed=5)
    assert np.array_equal(np.bincount(labels[rows]), np.full(10, 7))
    assert len(np.unique(rows)) == len(rows)
    assert np.array_equal(rows, sample_per_class(labels, 7, 5))
    rng = np.random.default_rng(5)  # the draw written out: each class in increasing label order
    written_out = np.sort(np.concatenate([rng.choice(np.flatnonzero(labels == c), 7, replace=False) for c in range(10)]))
    assert np.array_equal(rows, written_out)
    assert not np.array_equal(rows, labelled_subset(labels, 7, seed=6))
    assert np.array_equal(labelled_subset(labels, "all", seed=0), np.arange(len(labels)))
    assert np.array_equal(labelled_subset(labels, None, seed=0), np.arange(len(labels)))
    for bad in (0, 2.5, "some"):
        with pytest.raises(ValueError, match="labels per class"):
            labelled_subset(labels, bad, seed=0)


def test_same_seed_same_results():
    first, second = _tiny_experiment(), _tiny_experiment()
    pd.testing.assert_frame_equal(first.to_frame(), second.to_frame())
    other = _tiny_experiment(seeds=(1,))
    assert not np.allclose(first.reconstruction["ratio"], other.reconstruction["ratio"])


def test_result_tables_shape_and_columns():
    result = _tiny_experiment(seeds=(0, 1))
    frame = result.to_frame()
    assert len(frame) == len(METHODS) * 2 * 2
    assert list(frame.columns) == ["method", "budget", "labels_per_class", "seed", "n_train", "accuracy",
                                   "reconstruction_ratio_1", "reconstruction_ratio_2"]
    assert set(frame["method"]) == set(METHODS) and set(frame["budget"]) == {"3", "all"}
    assert (frame.loc[frame["budget"] == "3", "n_train"] == 30).all()
    assert (frame.loc[frame["budget"] == "all", "n_train"] == 1437).all()
    assert frame["accuracy"].between(0, 1).all()
    greedy = frame["method"] == METHODS[0]
    assert frame.loc[greedy, "reconstruction_ratio_1"].notna().all()
    assert frame.loc[~greedy, "reconstruction_ratio_1"].isna().all()
    summary = result.summary()
    assert len(summary) == 4
    some = summary.iloc[0]
    runs = frame[(frame["method"] == some["method"]) & (frame["budget"] == some["budget"])]["accuracy"]
    assert some["accuracy_mean"] == pytest.approx(runs.mean()) and some["accuracy_sd"] == pytest.approx(runs.std())
    difference = result.difference().set_index("budget")
    by_seed = frame[frame["budget"] == "3"].pivot(index="seed", columns="method", values="accuracy")
    assert difference.loc["3", "difference_mean"] == pytest.approx((by_seed[METHODS[0]] - by_seed[METHODS[1]]).mean())


def test_bad_settings_are_refused_with_the_fix(digits):
    with pytest.raises(zoo.UnknownNameError):
        greedy_pretrain(digits[0], WIDTHS, epochs=1, activation="relux")
    with pytest.raises(ValueError, match="positive integers"):
        greedy_pretrain(digits[0], (16, 0), epochs=1)
    with pytest.raises(ValueError, match="flatten"):
        greedy_pretrain(digits[0].reshape(-1, 8, 8), WIDTHS, epochs=1)
    with pytest.raises(ValueError, match="'all'"):
        greedy_layerwise_experiment("digits", widths=WIDTHS, labels_per_class=(0,), progress=False)
