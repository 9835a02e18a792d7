"""The colorization pretext model: Lab conversion against scikit-image, the ab bins, the annealed mean,
the loss against a brute-force loop, save/load, and grey inputs."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

import zoo
from zoo import RunDir
from zoo.models.colorization import (
    ab_bin_centres,
    annealed_mean,
    colorization_loss,
    lab_to_rgb,
    rgb_to_lab,
    soft_encode_ab,
)

skcolor = pytest.importorskip("skimage.color", reason="pip install scikit-image")

PHOTO_STATS = {"mean": [0.45, 0.42, 0.38], "std": [0.25, 0.24, 0.26]}


def _random_rgb(seed: int = 0, n: int = 2, side: int = 5) -> torch.Tensor:
    rgb = torch.rand(n, 3, side, side, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    rgb[0, :, 0, 0], rgb[0, :, 0, 1] = 0.0, 1.0  # black and white
    rgb[0, :, 0, 2] = torch.tensor([0.01, 0.02, 0.03])  # the linear segments of sRGB and of f
    return rgb


def _skimage_lab(rgb: torch.Tensor) -> np.ndarray:
    return skcolor.rgb2lab(rgb.numpy().transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)


def test_rgb_to_lab_matches_scikit_image():
    rgb = _random_rgb()
    assert np.allclose(rgb_to_lab(rgb).numpy(), _skimage_lab(rgb), atol=1e-4)
    assert torch.allclose(rgb_to_lab(rgb.float()).double(), rgb_to_lab(rgb), atol=1e-3)


def test_lab_to_rgb_matches_scikit_image_and_inverts_rgb_to_lab():
    rgb = _random_rgb(seed=1)
    lab = rgb_to_lab(rgb)
    assert torch.allclose(lab_to_rgb(lab), rgb, atol=1e-6)
    expected = skcolor.lab2rgb(lab.numpy().transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    assert np.allclose(lab_to_rgb(lab).numpy(), expected, atol=1e-6)
    vivid = torch.tensor([[50.0, 100.0, -100.0], [70.0, -90.0, 90.0]], dtype=torch.float64).T.reshape(1, 3, 1, 2)
    clipped = lab_to_rgb(vivid)  # outside sRGB: clipped to its edge as scikit-image does
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scikit-image may warn that it clips
        expected = skcolor.lab2rgb(vivid.numpy().transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    assert np.allclose(clipped.numpy(), expected, atol=1e-6)
    assert (lab_to_rgb(vivid, clip=False) < 0).any()


def test_ab_bins_are_the_grid_squares_that_hold_srgb_colours():
    centres = ab_bin_centres()
    assert centres.shape == (262, 2) and (centres.remainder(10) == 0).all() and centres.abs().max() <= 110
    assert [0.0, 0.0] in centres.tolist() and [110.0, 110.0] not in centres.tolist()
    # Every sRGB colour lies in one kept square (at most 5 from its centre in a and in b).
    ab = rgb_to_lab(_random_rgb(seed=2, n=4, side=20)).movedim(1, -1).reshape(-1, 3)[:, 1:].float()
    nearest = torch.cdist(ab, centres).argmin(1)
    assert ((ab - centres[nearest]).abs().amax(1) <= 5 + 1e-4).all()
    with pytest.raises(ValueError, match="positive"):
        ab_bin_centres(0)


def test_soft_encoding_matches_a_hand_computation():
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0], [-10.0, 0.0], [20.0, 20.0]])
    ab = torch.tensor([3.0, 4.0]).view(1, 2, 1, 1)
    indices, weights = soft_encode_ab(ab, centres, n_neighbours=3, sigma=5.0)
    distances_squared = {0: 25.0, 2: 9.0 + 36.0, 1: 49.0 + 16.0}  # the three nearest, nearest first
    kernel = {i: math.exp(-d / 50.0) for i, d in distances_squared.items()}
    assert indices.flatten().tolist() == [0, 2, 1]
    expected = [kernel[i] / sum(kernel.values()) for i in (0, 2, 1)]
    assert weights.flatten().tolist() == pytest.approx(expected, rel=1e-5)


def test_annealed_mean_matches_a_hand_computation():
    centres = torch.tensor([[10.0, -20.0], [-30.0, 40.0], [0.0, 0.0]])
    logits = torch.tensor([1.0, 0.5, -1.0]).view(1, 3, 1, 1)
    for temperature in (0.38, 1.0):
        weights = [math.exp(z / temperature) for z in (1.0, 0.5, -1.0)]
        a = sum(w * c for w, c in zip(weights, (10.0, -30.0, 0.0))) / sum(weights)
        b = sum(w * c for w, c in zip(weights, (-20.0, 40.0, 0.0))) / sum(weights)
        assert annealed_mean(logits, centres, temperature).flatten().tolist() == pytest.approx([a, b], rel=1e-5)
    assert annealed_mean(logits, centres, 1e-3).flatten().tolist() == pytest.approx([10.0, -20.0])  # the mode
    with pytest.raises(ValueError, match="temperature"):
        annealed_mean(logits, centres, 0.0)


def test_loss_matches_a_brute_force_loop():
    torch.manual_seed(0)
    centres = ab_bin_centres()
    logits = torch.randn(2, len(centres), 3, 2, dtype=torch.float64)
    ab = torch.randn(2, 2, 3, 2, dtype=torch.float64) * 30
    total = 0.0
    for n in range(2):
        for y in range(3):
            for x in range(2):
                point = ab[n, :, y, x]
                distances = [float((point - c.double()).norm()) for c in centres]
                nearest = sorted(range(len(centres)), key=distances.__getitem__)[:5]
                kernel = [math.exp(-distances[q] ** 2 / 50.0) for q in nearest]
                log_normaliser = math.log(sum(math.exp(v) for v in logits[n, :, y, x].tolist()))
                total -= sum(k / sum(kernel) * (float(logits[n, q, y, x]) - log_normaliser) for k, q in zip(kernel, nearest))
    assert float(colorization_loss(logits, ab, centres)) == pytest.approx(total / 12, rel=1e-4)


def test_colorize_keeps_the_lightness_and_saves_and_loads_identically(tmp_path):
    torch.manual_seed(0)
    model = zoo.create_model("colorization", input_shape=(3, 8, 8), width=8, **PHOTO_STATS).eval()
    x = (torch.rand(2, 3, 8, 8) - torch.tensor(PHOTO_STATS["mean"]).view(3, 1, 1)) / torch.tensor(PHOTO_STATS["std"]).view(3, 1, 1)
    with torch.no_grad():
        colour = model.colorize(x)
        wanted = torch.cat([model.lab(x)[:, :1], model.predict_ab(x)], dim=1)  # the input's L, the predicted ab
    assert colour.shape == x.shape and model(x).shape == (2, model.n_bins, 8, 8)
    in_gamut = ((lab_to_rgb(wanted, clip=False) >= 0) & (lab_to_rgb(wanted, clip=False) <= 1)).all(1)
    assert in_gamut.float().mean() > 0.5
    assert torch.allclose(model.lab(colour).movedim(1, -1)[in_gamut], wanted.movedim(1, -1)[in_gamut], atol=1e-2)
    run = RunDir.create(tmp_path / "run")
    run.write_config(model.config)
    run.save_final(model, {"loss": 0.0})
    loaded = zoo.load(tmp_path / "run")
    assert loaded.config == model.config
    with torch.no_grad():
        assert torch.equal(loaded.colorize(x), colour) and torch.equal(loaded.encode(x), model.encode(x))


def test_grey_inputs_are_colourless_lightness_and_grey_datasets_are_refused():
    torch.manual_seed(0)
    model = zoo.create_model("colorization", input_shape=(1, 8, 8), width=8).eval()
    grey = torch.rand(2, 1, 8, 8)
    lab = model.lab(grey)
    assert (lab[:, 1:] == 0).all()
    assert torch.allclose(lab[:, 0], rgb_to_lab(grey.expand(-1, 3, -1, -1))[:, 0])
    with torch.no_grad():
        assert model.colorize(grey).shape == (2, 3, 8, 8)
    with torch.no_grad():
        loss, _ = zoo.get_objective(model)(model, grey, torch.zeros(2, dtype=torch.long))
        assert float(loss) == pytest.approx(float(colorization_loss(model.coarse_logits(model.lab(grey)[:, :1] / 50 - 1), torch.zeros(2, 2, 4, 4), model.ab_centres)), rel=1e-6)
    with pytest.raises(ValueError, match="colour images"):
        zoo.create_model("colorization", input_shape=(1, 8, 8), mean=[0.5], std=[0.2])
    digits = zoo.load_dataset("digits", split="test")
    with pytest.raises(ValueError, match="colour images"):
        model.evaluate(digits, digits)


def test_evaluate_reports_ab_error_against_grey_computed_by_scikit_image():
    train = zoo.load_dataset("photos", split="train", crop=8, n_crops=8)
    test = zoo.load_dataset("photos", split="test", crop=8, n_crops=8)
    info = test.info
    torch.manual_seed(0)
    model = zoo.create_model("colorization", input_shape=info.input_shape, width=8, mean=list(info.mean), std=list(info.std))
    metrics = zoo.evaluate_model(model, train, test)
    images, _ = test.get_batch(torch.arange(len(test)))
    pixels = info.denormalize(images).clamp(0, 1).double()
    grey_error = np.linalg.norm(_skimage_lab(pixels)[:, 1:], axis=1).mean()
    assert metrics["grey_ab_error"] == pytest.approx(grey_error, rel=1e-4)
    assert metrics["ab_error_ratio"] == pytest.approx(metrics["ab_error"] / metrics["grey_ab_error"])
    assert 0 <= metrics["bin_accuracy"] <= 1 and "knn_accuracy" in metrics
    other = zoo.create_model("colorization", input_shape=info.input_shape, width=8)  # no mean/std: raw pixels
    with pytest.raises(ValueError, match="build it with mean="):
        other.evaluate(train, test)
