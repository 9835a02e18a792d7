"""The training loop: run directory, reproducibility, exact resume, divergence, evaluation."""

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.neighbors import KNeighborsClassifier

import zoo
from zoo import _registry, _train

FAST = {"batch_size": 256, "progress": False}


def _weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_train_writes_a_run_directory(tmp_path):
    result = zoo.train("mlp", out=tmp_path / "run", epochs=2, **FAST)
    assert isinstance(result, zoo.TrainResult) and not result.model.training
    for name in ("config.json", "log.csv", "model.safetensors", "metrics.json", "state"):
        assert (result.run_dir / name).exists()
    log = pd.read_csv(result.run_dir / "log.csv")
    assert list(log["epoch"]) == [1, 2] == list(result.history["epoch"])
    for column in ("train_loss", "train_accuracy", "test_accuracy", "knn_accuracy", "lr", "seconds"):
        assert column in log
    assert log["lr"].iloc[-1] < log["lr"].iloc[0]  # cosine decay
    assert set(result.metrics) >= {"test_accuracy", "knn_accuracy", "train_loss"} and result.metrics["epochs"] == 2
    loaded = zoo.load(result.run_dir)
    x = torch.randn(5, 1, 8, 8)
    assert torch.allclose(loaded(x), result.model.cpu()(x))


def test_same_seed_same_weights_other_seed_other_weights(tmp_path):
    a = zoo.train("mlp", out=tmp_path / "a", epochs=1, seed=3, **FAST).model
    b = zoo.train("mlp", out=tmp_path / "b", epochs=1, seed=3, **FAST).model
    c = zoo.train("mlp", out=tmp_path / "c", epochs=1, seed=4, **FAST).model
    wa, wb, wc = _weights(a), _weights(b), _weights(c)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not torch.equal(wa["head.weight"], wc["head.weight"])


class _Interrupt(Exception):
    pass


@pytest.mark.parametrize("name", ["mlp", "ae-denoising"])  # dropout / corruption noise must replay too
def test_resume_after_an_interruption_reproduces_the_uninterrupted_run(tmp_path, monkeypatch, name):
    whole = zoo.train(name, out=tmp_path / "whole", epochs=3, eval_every=3, **FAST)
    original = zoo.RunDir.save_checkpoint

    def crash_after_epoch_two(self, **kwargs):
        if kwargs["epoch"] == 2:
            raise _Interrupt
        return original(self, **kwargs)

    monkeypatch.setattr(zoo.RunDir, "save_checkpoint", crash_after_epoch_two)
    with pytest.raises(_Interrupt):
        zoo.train(name, out=tmp_path / "cut", epochs=3, eval_every=3, **FAST)
    monkeypatch.setattr(zoo.RunDir, "save_checkpoint", original)
    resumed = zoo.train(name, out=tmp_path / "cut", epochs=3, eval_every=3, resume=True, **FAST)
    expected, got = _weights(whole.model), _weights(resumed.model)
    assert all(torch.equal(expected[k], got[k]) for k in expected)
    assert list(pd.read_csv(tmp_path / "cut" / "log.csv")["epoch"]) == [1, 2, 3]
    assert resumed.metrics == pytest.approx(whole.metrics)


def test_resume_with_other_settings_is_refused(tmp_path):
    zoo.train("ae-linear", out=tmp_path / "run", epochs=1, **FAST)
    with pytest.raises(ValueError, match="other settings"):
        zoo.train("ae-linear", out=tmp_path / "run", epochs=1, resume=True, lr=0.5, **FAST)
    with pytest.raises(FileExistsError):
        zoo.train("ae-linear", out=tmp_path / "run", epochs=1, **FAST)


def test_a_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    entry = _registry.model_entry("ae-linear")
    calls = {"n": 0}

    def nan_in_second_epoch(model, images, labels):
        calls["n"] += 1
        loss, metrics = entry.objective(model, images, labels)
        return (loss * float("nan") if calls["n"] > 6 else loss), metrics  # 5 steps per epoch at batch 256

    monkeypatch.setitem(_registry._REGISTRY, "ae-linear", dataclasses.replace(entry, objective=nan_in_second_epoch))
    with pytest.raises(zoo.TrainingDivergedError, match="diverged.*epoch 2") as err:
        zoo.train("ae-linear", out=tmp_path / "run", epochs=3, **FAST)
    assert "epoch-000001" in str(err.value)
    model = zoo.load(tmp_path / "run", checkpoint=True)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_bad_settings_are_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown mlp setting 'hiden'; did you mean 'hidden'"):
        zoo.train("mlp", out=tmp_path / "a", epochs=1, hiden=[3], **FAST)
    with pytest.raises(ValueError, match="unlabelled"):
        zoo.train("cnn", dataset="natural-patches", out=tmp_path / "b", epochs=1, **FAST)
    with pytest.raises(KeyError, match="did you mean"):
        zoo.train("cnm", out=tmp_path / "c", epochs=1, **FAST)


def test_settings_reach_the_model_and_the_optimiser(tmp_path):
    result = zoo.train("ae-linear", out=tmp_path / "run", epochs=1, code_dim=5, lr=0.02, **FAST)
    assert result.model.config["code_dim"] == 5 and result.model.encode(torch.randn(2, 1, 8, 8)).shape == (2, 5)
    assert zoo.RunDir.open(result.run_dir).read_config()["training"]["lr"] == 0.02


def test_sgd_takes_a_nesterov_momentum_step_on_the_whole_batch(tmp_path, monkeypatch):
    # One epoch of one full batch: the first Nesterov step from an empty momentum buffer moves each weight by
    # lr (1 + momentum) times its gradient, plus the L2 term for the decayed weight matrices.
    initial = {}
    build_optimizer = _train._optimizer

    def remember_initial_weights(model, hyper):
        initial.update({name: p.detach().clone() for name, p in model.named_parameters()})
        return build_optimizer(model, hyper)

    monkeypatch.setattr(_train, "_optimizer", remember_initial_weights)
    lr, decay = 0.05, 0.01
    result = zoo.train("ae-linear", out=tmp_path / "run", epochs=1, optimizer="sgd", lr=lr, weight_decay=decay,
                       batch_size=4096, progress=False)
    model = zoo.create_model("ae-linear", input_shape=(1, 8, 8), code_dim=result.model.config["code_dim"])
    model.load_state_dict(initial, strict=False)
    train_set = zoo.load_dataset("digits", split="train")
    images, labels = train_set.get_batch(torch.arange(len(train_set)))  # normalised, as training sees them
    loss, _ = _registry.model_entry("ae-linear").objective(model.train(), images, labels)
    loss.backward()
    trained = dict(result.model.cpu().named_parameters())
    for name, p in model.named_parameters():
        gradient = p.grad + (decay * p.detach() if p.dim() >= 2 else 0)
        expected = p.detach() - lr * (1 + _train.SGD_MOMENTUM) * gradient
        assert torch.allclose(trained[name].detach(), expected, atol=1e-6), name
    assert zoo.RunDir.open(result.run_dir).read_config()["training"]["optimizer"] == "sgd"


def test_an_unknown_optimizer_names_the_valid_ones(tmp_path):
    with pytest.raises(ValueError, match="unknown optimizer 'sgdd'; did you mean 'sgd'"):
        zoo.train("mlp", out=tmp_path / "run", epochs=1, optimizer="sgdd", **FAST)
    assert not (tmp_path / "run").exists()


def test_a_run_written_before_the_optimizer_setting_resumes_as_adamw(tmp_path):
    run = zoo.train("ae-linear", out=tmp_path / "run", epochs=1, **FAST).run_dir
    config = zoo.RunDir.open(run).read_config()
    del config["training"]["optimizer"]  # as runs were written before there was a choice
    zoo.RunDir.open(run).write_config(config)
    zoo.train("ae-linear", out=run, epochs=2, resume=True, **FAST)
    with pytest.raises(ValueError, match=r"'training.optimizer': \('adamw', 'sgd'\)"):  # what the old run used
        zoo.train("ae-linear", out=run, epochs=3, resume=True, optimizer="sgd", **FAST)


def test_unlabelled_data_trains_an_autoencoder_without_knn(tmp_path):
    result = zoo.train("ae-conv", dataset="natural-patches", dataset_options={"n_patches": 256, "patch_size": 8},
                       out=tmp_path / "run", epochs=1, **FAST)
    assert "knn_accuracy" not in result.metrics and result.metrics["recon_ratio"] > 0


def test_knn_predict_matches_sklearn():
    rng = np.random.default_rng(0)
    train_x, test_x = rng.normal(size=(200, 6)), rng.normal(size=(50, 6))
    train_y = rng.integers(0, 4, 200)
    ours = zoo.knn_predict(torch.from_numpy(train_x), torch.from_numpy(train_y), torch.from_numpy(test_x), k=5)
    reference = KNeighborsClassifier(5, metric="cosine", algorithm="brute").fit(train_x, train_y).predict(test_x)
    assert np.array_equal(ours.numpy(), reference)


def test_evaluate_model_against_direct_computations():
    train, test = zoo.load_dataset("digits"), zoo.load_dataset("digits", "test")
    torch.manual_seed(0)
    model = zoo.create_model("ae-linear")
    metrics = zoo.evaluate_model(model, train, test)
    x_train = train.get_batch(torch.arange(len(train)))[0].double()
    x_test = test.get_batch(torch.arange(len(test)))[0].double()
    with torch.no_grad():
        recon = float((model.reconstruct(x_test.float()).double() - x_test).pow(2).mean())
    baseline = float((x_test - x_train.mean(0)).pow(2).mean())
    assert metrics["recon_mse"] == pytest.approx(recon, rel=1e-5)
    assert metrics["mean_image_mse"] == pytest.approx(baseline, rel=1e-5)
    assert metrics["recon_ratio"] == pytest.approx(recon / baseline, rel=1e-5)
    features, labels = zoo.extract_features(model, train)
    assert torch.equal(labels, train.labels) and torch.allclose(features, model.encode(x_train.float()).detach(), atol=1e-5)
    features = features.numpy()
    knn = KNeighborsClassifier(5, metric="cosine", algorithm="brute").fit(features, train.labels.numpy())
    expected = knn.score(model.encode(x_test.float()).detach().numpy(), test.labels.numpy())
    assert metrics["knn_accuracy"] == pytest.approx(expected, abs=1 / len(test) + 1e-9)
    mae = zoo.create_model("mae")
    assert zoo.evaluate_model(mae, train, test)["recon_mse"] == zoo.evaluate_model(mae, train, test)["recon_mse"]


def test_seed_everything_fixes_every_generator():
    import random

    zoo.seed_everything(7)
    first = (random.random(), np.random.rand(), torch.rand(1).item())
    zoo.seed_everything(7)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == first


def test_default_run_dir_is_a_safe_folder_name():
    assert str(zoo.default_run_dir("cnn", "imagefolder:/data/x", 1)) == "runs/cnn-imagefolder_data_x-seed1"


@pytest.mark.gpu
def test_training_on_cuda_with_mixed_precision(tmp_path):
    result = zoo.train("cnn", out=tmp_path / "run", epochs=2, device="cuda", **FAST)
    assert next(result.model.parameters()).is_cuda and result.metrics["test_accuracy"] > 0.5  # chance is 0.1
    result = zoo.train("simclr", out=tmp_path / "simclr", epochs=1, device="cuda", **FAST)
    assert np.isfinite(result.metrics["train_loss"])
