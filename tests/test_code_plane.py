"""An autoencoder's code plane: the stimuli's codes (PCA for wider codes) and the decoded grid."""

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA

import zoo
from probe.study import Study
from probe.study._code_plane import code_plane, has_code_plane
from reports import code_plane_section


def _trained(name, code_dim, tmp_path):
    return zoo.train(name, dataset="digits", out=tmp_path / name, epochs=2, progress=False, code_dim=code_dim).model


def test_a_two_dimensional_code_is_the_plane_and_the_grid_decodes_its_points(tmp_path):
    model = _trained("ae-vae", 2, tmp_path)
    test = zoo.load_dataset("digits", split="test")
    plane = code_plane(model, test, n_grid=4, name="vae")
    images, labels = test.get_batch(torch.arange(len(test)))
    with torch.no_grad():
        codes = model.encode(images).numpy()
    np.testing.assert_allclose(plane.points, codes - codes.mean(0), rtol=1e-5, atol=1e-6)
    assert plane.code_dim == 2 and plane.explained_variance == 1.0 and plane.labels.tolist() == labels.tolist()
    # the top-left tile is the decoder's image at (smallest first axis, largest second axis)
    corner = torch.tensor([[plane.axes[0][0], plane.axes[1][-1]]], dtype=torch.float32) + torch.as_tensor(codes.mean(0))
    with torch.no_grad():
        expected = test.info.denormalize(model.decode(corner)).clamp(0, 1)[0, 0].numpy()
    np.testing.assert_allclose(plane.decoded[0, 0], expected, atol=1e-5)
    assert plane.decoded.shape == (4, 4, 8, 8) and plane.decoded.min() >= 0 and plane.decoded.max() <= 1


def test_a_wider_code_is_shown_on_its_principal_plane(tmp_path):
    model = _trained("ae-mlp", 6, tmp_path)
    test = zoo.load_dataset("digits", split="test")
    plane = code_plane(model, test, n_grid=3)
    with torch.no_grad():
        codes = model.encode(test.get_batch(torch.arange(len(test)))[0]).double().numpy()
    pca = PCA(2).fit(codes)
    np.testing.assert_allclose(np.abs(plane.points), np.abs(pca.transform(codes)), atol=1e-6)
    assert plane.explained_variance == pytest.approx(pca.explained_variance_ratio_.sum())
    assert "principal components of its 6-D code" in code_plane_section([plane]).body


def test_the_study_shows_every_autoencoder_and_refuses_other_models(tmp_path):
    spec = {"title": "codes", "data": {"dataset": "digits", "split": "test", "limit": 80},
            "models": [{"name": "vae", "run": "runs/vae", "train": {"model": "ae-vae", "dataset": "digits", "epochs": 1,
                                                                   "settings": {"code_dim": 2}}},
                       {"name": "cnn", "arch": "zoo:cnn", "layers": ["relu_fc1"]}],
            "analyses": {"code_plane": {"n_grid": 3}}}
    result = Study.from_dict(spec, folder=tmp_path, out=tmp_path / "out").run(progress=False)
    assert result.failed == {} and set(result.tables["code-plane"]["model"]) == {"vae"}
    assert len(result.tables["code-plane"]) == 80 and not has_code_plane(zoo.create_model("cnn"))
    spec["analyses"] = {"code_plane": {"models": ["cnn"]}}
    failed = Study.from_dict(spec, folder=tmp_path, out=tmp_path / "out2").run(progress=False).failed
    assert "'cnn', which is not an autoencoder" in failed["code_plane"]
