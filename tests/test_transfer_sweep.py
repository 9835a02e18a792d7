"""probe.study: encoder features and the MAE mask-ratio sweep (tiny)."""

import numpy as np
import pytest
import torch

import zoo
from probe.study import MaskRatioSweep, encode_features, mask_ratio_sweep


def test_encode_features_matches_a_forward_pass():
    torch.manual_seed(0)
    model = zoo.create_model("mlp", input_shape=[1, 8, 8], n_classes=10).eval()
    dataset = zoo.load_dataset("digits", split="test")
    features, labels = encode_features(model, dataset, batch_size=100)
    with torch.no_grad():
        expected = model.encode(torch.stack([dataset[i][0] for i in range(5)])).double().numpy()
    np.testing.assert_allclose(features[:5], expected, rtol=1e-5, atol=1e-6)
    assert labels.shape == (len(dataset),) and features.dtype == np.float64


@pytest.mark.slow  # trains a (tiny) MAE for one epoch
def test_mask_ratio_sweep_trains_once_and_reuses_runs(tmp_path):
    sweep = mask_ratio_sweep((0.5,), epochs=1, out=tmp_path, C=1.0, device="cpu", progress=False,
                             embed_dim=16, depth=1, decoder_dim=16, decoder_depth=1)
    assert isinstance(sweep, MaskRatioSweep)
    frame = sweep.to_frame()
    assert list(frame["mask_ratio"]) == [0.5] and frame["probe_accuracy"].between(0.1, 1).all()
    assert (tmp_path / "mae-ratio-0.5" / "model.safetensors").exists()
    again = mask_ratio_sweep((0.5,), epochs=1, out=tmp_path, C=1.0, device="cpu", progress=False,
                             embed_dim=16, depth=1, decoder_dim=16, decoder_depth=1)
    assert again.to_frame()["probe_accuracy"].iloc[0] == pytest.approx(frame["probe_accuracy"].iloc[0])
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        mask_ratio_sweep((0.5, 1.0), out=tmp_path)
