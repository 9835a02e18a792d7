"""probe analyze / Study.run: three kinds of model on an image folder, through the recordings cache.

The study's tables are checked against the analyses run directly on recordings made in memory
with ``probe.record`` (not through the cache), the report in headless Chromium, and a second run
against the first (it records nothing).
"""

import os
import textwrap
import time

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

import probe
import zoo
from analyses import cka_matrix
from probe.cli import main
from probe.study import Study, StudySpecError

from _browser import find_chromium, open_page

HOSTILE = "<script>alert(1)</script>"
FACTORY = '''
import torch
from torch import nn


def build(width=6):
    """A small convolutional network for 32 px RGB images."""
    return nn.Sequential(
        nn.Conv2d(3, width, 5, stride=2, padding=2), nn.ReLU(),
        nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, 3),
    )
'''


def _write_image_folder(root, n_per_class=8, size=32, seed=0):
    """Three classes of oriented gratings with noise: vertical, horizontal, diagonal."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    patterns = {"vertical": x, "horizontal": y, "diagonal": (x + y) / 2}
    for split in ("train", "test"):
        for name, phase in patterns.items():
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(n_per_class):
                frequency = rng.uniform(3, 6)
                grating = 0.5 + 0.4 * np.sin(2 * np.pi * frequency * phase + rng.uniform(0, 2 * np.pi))
                image = np.clip(grating[..., None] + rng.normal(0, 0.05, (size, size, 3)), 0, 1)
                Image.fromarray((image * 255).astype(np.uint8)).save(folder / f"{i}.png")


def _study_text(out="out"):
    return textwrap.dedent(f'''
        out = "{out}"
        title = "Three models on gratings"
        [data]
        dataset = "imagefolder:images"
        options = {{ image_size = 32 }}
        [[models]]
        name = "zoo cnn"
        run = "runs/cnn"
        [[models]]
        name = "resnet"
        arch = "torchvision:resnet18"
        weights = "resnet18.safetensors"
        layers = ["layer1", "layer2", "layer3", "layer4", "avgpool"]
        [[models]]
        name = "{HOSTILE}"
        factory = "net.py:build"
        weights = "net.safetensors"
        [analyses]
        summary = {{}}
        layers = {{}}
        similarity = {{ measures = ["rdm", "cka"], n_stimuli = 24 }}
        units = {{ k = 4, n_units = 4 }}
        subspaces = {{ ks = [2, 3], max_iter = 50, n_stimuli = 24 }}
        transfer = {{ labels_per_class = [1, 4], test_fraction = 0.5 }}
    ''')


@pytest.fixture(scope="module")
def study_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("study")
    _write_image_folder(folder / "images")
    zoo.train("cnn", dataset=f"imagefolder:{folder / 'images'}", out=folder / "runs" / "cnn", epochs=1, seed=0,
              device="cpu", progress=False, dataset_options={"image_size": 32})
    torch.manual_seed(0)
    import torchvision

    save_file(torchvision.models.resnet18(weights=None).state_dict(), folder / "resnet18.safetensors")
    (folder / "net.py").write_text(FACTORY)
    namespace = {}
    exec(compile(FACTORY, "net.py", "exec"), namespace)
    torch.manual_seed(1)
    save_file(namespace["build"]().state_dict(), folder / "net.safetensors")
    (folder / "study.toml").write_text(_study_text())
    return folder


@pytest.fixture(scope="module")
def two_runs(study_folder):
    study = Study.from_file(study_folder / "study.toml")
    started = time.perf_counter()
    first = study.run(progress=False, device="cpu")
    first_seconds = time.perf_counter() - started
    started = time.perf_counter()
    second = Study.from_file(study_folder / "study.toml").run(progress=False, device="cpu")
    return first, second, first_seconds, time.perf_counter() - started


def test_every_analysis_ran_on_every_model(two_runs):
    first, _, _, _ = two_runs
    assert first.failed == {}
    assert list(first.recordings) == ["zoo cnn", "resnet", HOSTILE]
    assert first.recordings["resnet"].layers == ["layer1", "layer2", "layer3", "layer4", "avgpool"]
    for name in ("summary", "layers", "similarity-cka", "similarity-rdm", "similarity-ranking", "units",
                 "subspaces", "transfer-layers", "transfer-label-efficiency"):
        assert (first.out / "results" / f"{name}.csv").is_file(), name
    assert set(pd.read_csv(first.out / "results" / "units.csv")["model"]) == {"zoo cnn", "resnet", HOSTILE}
    assert (first.out / "study.toml").read_text() == (first.out.parent / "study.toml").read_text()
    assert "torch" in (first.out / "versions.json").read_text()


def test_tables_equal_the_python_api_on_fresh_recordings(two_runs, study_folder):
    first, _, _, _ = two_runs
    stimuli = zoo.load_dataset(f"imagefolder:{study_folder / 'images'}", split="test", image_size=32)
    model = zoo.load_model("torchvision:resnet18", weights=study_folder / "resnet18.safetensors")
    layers = ["layer1", "layer2", "layer3", "layer4", "avgpool"]
    fresh = probe.record(model, zoo.prepare_for(model, stimuli), layers, device="cpu", progress=False)
    for layer in layers:
        np.testing.assert_allclose(first.recordings["resnet"][layer], fresh[layer], rtol=1e-5, atol=1e-6)
    # CKA of the whole set (the study's n_stimuli covers all 24), recomputed from the fresh recording
    table = pd.read_csv(first.out / "results" / "similarity-cka.csv")
    table = table[(table["model_a"] == "resnet") & (table["model_b"] == "resnet")]
    assert len(table) == len(layers) ** 2
    expected = cka_matrix({layer: np.asarray(fresh[layer], dtype=np.float64) for layer in layers}, progress=False)
    expected = expected.to_matrix_frame()
    for row in table.itertuples():
        assert row.value == pytest.approx(expected.loc[row.layer_a, row.layer_b], abs=1e-6)
    # the layers table is the recording's own summary
    layer_table = pd.read_csv(first.out / "results" / "layers.csv")
    assert list(layer_table[layer_table["model"] == "resnet"]["layer"]) == layers


def test_second_run_records_nothing(two_runs):
    first, second, first_seconds, second_seconds = two_runs
    assert all(first.recorded[name] for name in first.recordings)
    assert all(layers == [] for layers in second.recorded.values())
    layer_hits = {name: sorted(x for x in layers if not x.startswith("top-")) for name, layers in second.from_cache.items()}
    assert layer_hits == {name: sorted(rec.layers) for name, rec in first.recordings.items()}
    assert all(any(x.startswith("top-4 of ") for x in layers) for layers in second.from_cache.values())
    for name, recording in first.recordings.items():
        for layer in recording.layers:
            np.testing.assert_array_equal(second.recordings[name][layer], recording[layer])
    print(f"first run {first_seconds:.1f} s, second {second_seconds:.1f} s")


def test_report_names_the_cache_and_escapes_names(two_runs):
    _, second, _, _ = two_runs
    html = second.report.read_text()
    assert HOSTILE not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "read from the cache" in html


@pytest.mark.browser
@pytest.mark.skipif(find_chromium() is None and not os.environ.get("CI"),
                    reason="needs Chromium (apt-get install chromium); CI installs it")
def test_report_decodes_in_chromium(two_runs):
    first, _, _, _ = two_runs
    page = open_page(first.report, find_chromium())
    assert page.errors == []
    assert page.images and all(not image["error"] and image["width"] > 0 for image in page.images)
    assert page.n_scripts == 0
    assert HOSTILE in page.text  # shown as text


def test_adding_a_model_records_only_it(two_runs, study_folder, tmp_path):
    first, _, _, _ = two_runs
    text = _study_text(out=str(first.out)) + textwrap.dedent('''
        [[models]]
        name = "second net"
        factory = "net.py:build"
    ''')
    extended = study_folder / "extended.toml"
    extended.write_text(text.replace('summary = {}', 'summary = {}').replace(
        'units = { k = 4, n_units = 4 }\n', '').replace('subspaces = { ks = [2, 3], max_iter = 50, n_stimuli = 24 }\n', ''))
    result = Study.from_file(extended).run(progress=False, device="cpu")
    assert {name for name, layers in result.recorded.items() if layers} == {"second net"}


def test_unknown_layer_fails_before_recording_with_nearest_names(study_folder, tmp_path):
    text = _study_text(out=str(tmp_path / "out")).replace('"layer4", "avgpool"', '"layer5", "avgpool"')
    path = study_folder / "bad_layer.toml"
    path.write_text(text)
    with pytest.raises(StudySpecError, match=r"layer5.*layer4"):
        Study.from_file(path).run(progress=False, device="cpu")
    assert not (tmp_path / "out" / "cache").exists()  # nothing recorded


def test_cli_analyze_names_an_unknown_analysis_quickly(study_folder, capsys):
    path = study_folder / "bad_analysis.toml"
    path.write_text(_study_text().replace("similarity = {", "similarty = {"))
    started = time.perf_counter()
    assert main(["analyze", str(path)]) == 2
    assert time.perf_counter() - started < 2
    err = capsys.readouterr().err
    assert "similarty" in err and "similarity" in err


def test_init_study_writes_a_template_that_refuses_to_overwrite(tmp_path, capsys):
    path = tmp_path / "study.toml"
    assert main(["init-study", str(path)]) == 0
    assert "[[models]]" in path.read_text()
    assert main(["init-study", str(path)]) == 2
    assert "--force" in capsys.readouterr().err


def test_a_model_without_weights_is_the_same_in_every_run(two_runs):
    first, second, _, _ = two_runs
    extended_name = "second net"  # a factory without weights (test_adding_a_model_records_only_it)
    assert extended_name not in first.recordings  # the plain study has weights for every model
    study_a = Study.from_dict({"data": {"dataset": "digits", "limit": 20},
                               "models": [{"name": "random cnn", "arch": "cnn"}],
                               "analyses": {"layers": {}}}, out=first.out.parent / "random")
    one = study_a.run(progress=False, device="cpu")
    two = Study.from_dict({"data": {"dataset": "digits", "limit": 20},
                           "models": [{"name": "random cnn", "arch": "cnn"}],
                           "analyses": {"layers": {}}}, out=first.out.parent / "random").run(progress=False, device="cpu")
    assert one.recorded["random cnn"] and two.recorded["random cnn"] == []
