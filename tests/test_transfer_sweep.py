"""probe.study: encoder features and the MAE mask-ratio sweep (tiny)."""

import numpy as np
import pandas as pd
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
    sweep = mask_ratio_sweep((0.5,), epochs=1, out=tmp_path, C=1.0, device="cpu", progress=False, seeds=(0, 1),
                             probe_per_class=20,
                             embed_dim=16, depth=1, decoder_dim=16, decoder_depth=1)
    assert isinstance(sweep, MaskRatioSweep)
    frame = sweep.to_frame()
    assert list(frame["mask_ratio"]) == [0.5, 0.5] and list(frame["seed"]) == [0, 1]
    assert frame["probe_accuracy"].between(0.1, 1).all()
    assert frame["probe_accuracy"].iloc[0] != frame["probe_accuracy"].iloc[1]  # two seeds, two MAEs
    assert (tmp_path / "mae-ratio-0.5-seed1" / "model.safetensors").exists()
    assert list(frame["n_probe_train"]) == [200, 200]  # 20 per class of the ten digits
    again = mask_ratio_sweep((0.5,), epochs=1, out=tmp_path, C=1.0, device="cpu", progress=False, seeds=0,
                             probe_per_class=20, embed_dim=16, depth=1, decoder_dim=16, decoder_depth=1)
    assert again.to_frame()["probe_accuracy"].iloc[0] == pytest.approx(frame["probe_accuracy"].iloc[0])
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        mask_ratio_sweep((0.5, 1.0), out=tmp_path)
    with pytest.raises(ValueError, match="distinct"):
        mask_ratio_sweep((0.5,), out=tmp_path, seeds=(1, 1))


def test_mask_ratio_summary_gives_mean_and_sd_over_seeds():
    frame = pd.DataFrame(dict(mask_ratio=[0.5, 0.5, 0.75, 0.75], seed=[0, 1, 0, 1],
                              probe_accuracy=[0.6, 0.8, 0.7, 0.75], knn_accuracy=[0.5, 0.5, 0.6, 0.6],
                              run_recon_ratio=[0.4, 0.6, 0.5, 0.5]))
    sweep = MaskRatioSweep(frame=frame, dataset="digits")
    summary = sweep.summary().set_index("mask_ratio")
    assert summary.loc[0.5, "probe_accuracy_mean"] == pytest.approx(0.7)
    assert summary.loc[0.5, "probe_accuracy_std"] == pytest.approx(np.std([0.6, 0.8], ddof=1))
    assert summary.loc[0.75, "n_seeds"] == 2 and summary.loc[0.5, "run_recon_ratio_mean"] == pytest.approx(0.5)
    assert sweep.best_ratio == 0.75


def test_a_run_killed_before_its_first_checkpoint_is_started_again(tmp_path):
    from probe.study._transfer_experiments import _trained_model

    killed = zoo.RunDir.create(tmp_path / "run")
    killed.write_config({"model": {"name": "mlp"}, "note": "killed before the first epoch ended"})
    (tmp_path / "run" / "notes.txt").write_text("the user's own file")
    assert not killed.has_checkpoint()
    model = _trained_model("mlp", tmp_path / "run", dataset="digits", epochs=1, seed=0, device="cpu", progress=False)
    assert zoo.RunDir.open(tmp_path / "run").read_config()["model"]["name"] == "mlp"
    assert (tmp_path / "run" / "model.safetensors").exists() and model.config["hidden"]
    assert (tmp_path / "run" / "notes.txt").read_text() == "the user's own file"  # not the toolkit's: kept


def test_subset_dataset_holds_exactly_the_rows_asked_for():
    from probe.study._transfer_experiments import subset_dataset

    dataset = zoo.load_dataset("digits", split="test")
    rows = np.array([5, 0, 17])
    subset = subset_dataset(dataset, rows)
    assert len(subset) == 3
    for i, row in enumerate(rows):
        assert torch.equal(subset[i][0], dataset[int(row)][0]) and int(subset[i][1]) == int(dataset[int(row)][1])
