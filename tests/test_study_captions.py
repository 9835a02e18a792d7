"""A study with a CLIP-style model trained without some classes: the captions analysis reads the held-out
classes from its run and measures what ``probe.study.measure_captions`` measures; its image features are
recorded and probed like any model's."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import zoo
from probe.study import Study, measure_captions

SEEN = [0, 1, 2, 3, 4, 5, 6, 7]


@pytest.fixture(scope="module")
def study_result(tmp_path_factory):
    folder = tmp_path_factory.mktemp("captions-study")
    spec = {
        "title": "captions",
        "data": {"dataset": "digits", "split": "test", "per_class": 10},
        "models": [{"name": "clip", "run": "runs/clip",
                    "train": {"model": "clip", "dataset": "digits", "epochs": 1, "dataset_options": {"classes": SEEN},
                              "settings": {"width": 8, "text_encoder": "bag-of-words"}}}],
        "analyses": {"captions": {"n_cka": 60},
                     "transfer": {"labels_per_class": [3], "models": ["clip"], "features": ["clip/image_encoder.projection"]}},
    }
    return folder, Study.from_dict(spec, folder=folder, out=folder / "out").run(progress=False)


def test_captions_reads_the_held_out_classes_from_the_run(study_result):
    folder, result = study_result
    assert result.failed == {}
    experiment = result.results["captions"]["clip"]
    assert experiment.seen_classes == tuple(str(d) for d in SEEN) and experiment.held_out_classes == ("8", "9")
    model = zoo.load_model(str(folder / "runs" / "clip"))
    direct = measure_captions(model, zoo.load_dataset("digits", "train"), zoo.load_dataset("digits", "test"), SEEN,
                              [8, 9], n_cka=60, seed=0, device="cpu")
    table = result.tables["captions"]
    pd.testing.assert_frame_equal(table.drop(columns="model").reset_index(drop=True),
                                  direct.to_frame().reset_index(drop=True), check_dtype=False)
    chance = table.set_index(["images", "method", "candidates"])["chance"]
    assert chance["held-out", "zero-shot", "held-out names"] == pytest.approx(1 / 2)
    assert chance["seen", "zero-shot", "all names"] == pytest.approx(1 / 10)
    assert "Images and captions: clip" in result.report.read_text()
    findings = result.tables["findings"].query("topic == 'Captions'")
    scores = table.set_index(["images", "method", "candidates"])["accuracy"]
    assert list(findings["value"]) == pytest.approx([scores["seen", "zero-shot", "seen names"],
                                                     scores["held-out", "zero-shot", "held-out names"]])


def test_the_image_features_are_recorded_and_probed(study_result):
    _, result = study_result
    assert "image_encoder.projection" in result.recordings["clip"].layers
    transfer = result.tables["transfer-layers"] if "transfer-layers" in result.tables else None
    assert transfer is not None and set(transfer["model"]) >= {"clip"}
    assert np.isfinite(transfer["accuracy"]).all()
