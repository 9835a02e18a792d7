"""The held-out zero-shot experiment (tiny, on digits) and the "Images and captions" report section."""

import base64
import io
import re

import numpy as np
import pytest
from PIL import Image

import zoo
from probe.study._caption_experiments import clip_zero_shot_experiment, measure_captions
from reports import Report
from reports._captions_section import captions_section


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    out = tmp_path_factory.mktemp("captions") / "clip"
    return clip_zero_shot_experiment("digits", ("8", "9"), epochs=1, out=out, seed=0, device="cpu", n_cka=60,
                                     progress=False, width=4, downsample=1, embed_dim=8, feature_dim=16,
                                     text_hidden=16, text_encoder="bag-of-words", batch_size=64,
                                     probe_train_per_class=30)


def test_experiment_returns_sane_numbers(experiment):
    frame = experiment.to_frame()
    assert set(frame["method"]) == {"zero-shot", "linear probe"}
    assert frame["accuracy"].between(0, 1).all()
    chance = {("seen", "seen names"): 1 / 8, ("held-out", "held-out names"): 1 / 2, ("seen", "all names"): 1 / 10,
              ("held-out", "all names"): 1 / 10}
    for (images, candidates), expected in chance.items():
        rows = frame[(frame["images"] == images) & (frame["candidates"] == candidates)]
        assert np.allclose(rows["chance"], expected), (images, candidates)
    assert experiment.held_out_classes == ("8", "9") and len(experiment.seen_classes) == 8
    test_labels = np.array([label for _, label in zoo.load_dataset("digits", split="test")])
    assert (frame.loc[frame["images"] == "held-out", "n_test"] == np.isin(test_labels, [8, 9]).sum()).all()
    assert (frame.loc[frame["images"] == "seen", "n_test"] == (~np.isin(test_labels, [8, 9])).sum()).all()
    n_train = frame.set_index(["images", "method"])["n_train"]
    assert n_train[("seen", "linear probe")] == 8 * 30 and n_train[("held-out", "linear probe")] == 2 * 30
    assert (frame.loc[frame["method"] == "zero-shot", "n_train"] == 0).all()
    # The probe learns digits from image embeddings far better than chance even after one epoch.
    assert experiment.score("seen", "linear probe", "seen names") > 0.5
    assert experiment.similarity.shape == (10, 10) and experiment.similarity_images.shape == (10, 8, 8, 1)
    assert np.all(np.abs(experiment.similarity) <= 1 + 1e-5)
    for matrix in (experiment.image_cka, experiment.text_cka):
        np.testing.assert_allclose(np.diag(matrix.values), 1.0, atol=1e-6)
    assert experiment.cross_modal["cka"].between(0, 1 + 1e-9).all() and 0 <= experiment.image_text_cka <= 1 + 1e-9


def test_a_finished_run_is_reused_and_other_settings_are_refused(experiment):
    again = clip_zero_shot_experiment("digits", ("8", "9"), epochs=1, out=experiment.run_dir, device="cpu", n_cka=60,
                                      progress=False, width=4, downsample=1, embed_dim=8, feature_dim=16,
                                      text_hidden=16, text_encoder="bag-of-words", batch_size=64,
                                      probe_train_per_class=30)
    assert again.accuracy.equals(experiment.accuracy)
    with pytest.raises(ValueError, match="other settings"):
        clip_zero_shot_experiment("digits", ("7", "9"), epochs=1, out=experiment.run_dir, device="cpu", progress=False)
    with pytest.raises(ValueError, match="not classes"):
        clip_zero_shot_experiment("digits", ("cat", "9"), epochs=1, device="cpu", progress=False)


def _decoded_images(html: str) -> list[Image.Image]:
    images = []
    for payload in re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", html):
        image = Image.open(io.BytesIO(base64.b64decode(payload)))
        image.load()
        images.append(image)
    return images


def test_section_renders_with_decodable_images(experiment):
    section = captions_section(experiment, notes="trained <briefly>")
    html = Report("r").add(section).render()
    images = _decoded_images(html)
    assert len(images) == 5
    assert all(image.width > 100 and image.height > 100 for image in images)
    assert max(image.width for image in images) <= 1280  # legible in a 1280-px page without shrinking
    assert "Images and captions" in html and "trained &lt;briefly&gt;" in html
    assert "<script" not in html.lower()
    assert section.summary.startswith("zero-shot") and "chance 0.500" in section.summary


def test_measure_captions_without_held_out_classes(experiment):
    model = zoo.load(experiment.run_dir)
    train_set, test_set = zoo.load_dataset("digits", split="train"), zoo.load_dataset("digits", split="test")
    result = measure_captions(model, train_set, test_set, list(range(10)), [], n_cka=40, device="cpu",
                              probe_train_per_class=20)
    assert set(result.to_frame()["images"]) == {"seen"} and result.run_dir is None and result.run_metrics == {}
    assert result.score("seen", "zero-shot", "seen names") == result.score("seen", "zero-shot", "all names")
    section = captions_section(result)
    assert "held-out" not in section.summary and "every class of digits" in section.body
    assert len(_decoded_images(str(section.body))) == 5
