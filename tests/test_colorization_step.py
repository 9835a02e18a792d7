"""The study's colorization analysis: grey input, prediction and truth of a few stimuli, their ab errors against
scikit-image's Lab and the model's evaluate, the section, the finding, and which models it takes."""

import numpy as np
import pytest
import torch

import zoo
from probe.study import Study
from probe.study._colorization_step import colorization_analysis, colorization_examples, colorization_findings
from probe.study._context import StudyContext
from reports._colorization_section import colorization_section

skcolor = pytest.importorskip("skimage.color", reason="pip install scikit-image")


@pytest.fixture(scope="module")
def photos():
    return zoo.load_dataset("photos", split="test", crop=8, n_crops=10)


@pytest.fixture(scope="module")
def model(photos):
    info = photos.info
    torch.manual_seed(0)
    return zoo.create_model("colorization", input_shape=info.input_shape, width=8, mean=list(info.mean),
                            std=list(info.std)).eval()


def _pixels(dataset, rows):
    images = torch.stack([torch.as_tensor(dataset[int(i)][0]) for i in rows])
    return dataset.info.denormalize(images).clamp(0, 1).double().numpy().transpose(0, 2, 3, 1)  # (n, H, W, 3)


def test_examples_are_evenly_spaced_and_their_errors_match_scikit_image(model, photos):
    examples = colorization_examples(model, photos, n_images=4, name="net")
    assert examples.indices.tolist() == [0, 3, 6, 9]
    truth = _pixels(photos, examples.indices)
    np.testing.assert_allclose(examples.truth, truth, atol=1e-6)
    lab = skcolor.rgb2lab(truth)
    np.testing.assert_allclose(examples.grey_ab_error, np.linalg.norm(lab[..., 1:], axis=-1).mean(axis=(1, 2)),
                               rtol=1e-4, atol=1e-4)  # float32 Lab
    # the grey input is the truth's lightness without colour
    grey = skcolor.lab2rgb(np.concatenate([lab[..., :1], np.zeros_like(lab[..., 1:])], axis=-1)).mean(-1)
    np.testing.assert_allclose(examples.grey, grey, atol=1e-4)
    assert examples.predicted.shape == truth.shape and 0 <= examples.predicted.min() and examples.predicted.max() <= 1
    frame = examples.to_frame()
    assert list(frame.columns) == ["model", "index", "ab_error", "grey_ab_error"] and len(frame) == 4


def test_over_every_stimulus_the_mean_errors_are_the_models_evaluate(model, photos):
    examples = colorization_examples(model, photos, n_images=50)
    assert examples.indices.tolist() == list(range(10)) and examples.n_stimuli == 10
    metrics = model.evaluate(photos, photos)
    assert examples.metrics == pytest.approx(metrics)
    assert examples.ab_error.mean() == pytest.approx(metrics["ab_error"], rel=1e-4)
    assert examples.grey_ab_error.mean() == pytest.approx(metrics["grey_ab_error"], rel=1e-4)


def test_only_colorization_models_are_shown(tmp_path):
    ctx = StudyContext(out=tmp_path)
    ctx.models = {"cnn": zoo.create_model("cnn")}
    ctx.stimuli = {"cnn": zoo.load_dataset("digits", split="test")}
    assert colorization_analysis(ctx) == [] and "colorization" not in ctx.results
    with pytest.raises(ValueError, match="'cnn', which is not a colorization model"):
        colorization_analysis(ctx, models=["cnn"])


def test_the_study_shows_a_colorization_run_it_trains(tmp_path):
    spec = {"title": "colour", "data": {"dataset": "digits", "split": "test", "limit": 12},
            "models": [{"name": "colour", "run": "runs/colour", "layers": ["features.relu3"],
                        "train": {"model": "colorization", "dataset": "photos", "epochs": 1,
                                  "dataset_options": {"crop": 16, "n_crops": 32}, "settings": {"width": 8}},
                        "data": {"dataset": "photos", "split": "test", "limit": 12,
                                 "options": {"crop": 16, "n_crops": 24}}},
                       {"name": "cnn", "arch": "zoo:cnn", "layers": ["relu_fc1"]}],
            "analyses": {"colorization": {"n_images": 4}}}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny convolutions: a second thread only adds contention on a shared CPU
    try:
        result = Study.from_dict(spec, folder=tmp_path, out=tmp_path / "out").run(progress=False)
    finally:
        torch.set_num_threads(threads)
    assert result.failed == {} and list(result.results["colorization"]) == ["colour"]
    examples = result.results["colorization"]["colour"]
    table = result.tables["colorization"]
    assert table["index"].tolist() == [0, 4, 7, 11] and set(table["model"]) == {"colour"}
    np.testing.assert_allclose(table["ab_error"], examples.ab_error)
    np.testing.assert_allclose(table["grey_ab_error"], examples.grey_ab_error)
    assert examples.truth.shape == (4, 16, 16, 3) and examples.grey.shape == (4, 16, 16)

    section = colorization_section([examples])
    assert section.body.count("data:image/png;base64,") == 1 and "<table" in section.body
    assert f"{examples.ab_error[0]:.2f}" in section.body and f"{examples.metrics['ab_error']:.1f}" in section.summary

    ctx = StudyContext(out=tmp_path)
    ctx.results["colorization"] = result.results["colorization"]
    (finding,) = colorization_findings(ctx)
    metrics = examples.metrics
    assert finding.model == "colour" and finding.value == pytest.approx(metrics["ab_error_ratio"])
    assert f"{metrics['ab_error']:.1f}" in finding.text and f"{metrics['grey_ab_error']:.1f}" in finding.text
    assert ("better than grey" if metrics["ab_error_ratio"] < 1 else "no better than grey") in finding.text
