"""The study file of ``probe analyze``: parsing, defaults, paths, and one error listing every problem."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import tomllib

from probe.study._spec import (
    OPT_IN_ANALYSES,
    _OFFLINE_DATASETS,
    _OFFLINE_MODELS,
    _OFFLINE_PRETRAINED,
    _OFFLINE_SCHEMES,
    ANALYSES,
    DataSpec,
    ModelEntrySpec,
    Option,
    StudySpec,
    StudySpecError,
    _zoo,
    default_analyses,
    to_toml,
)
from probe.study._template import STUDY_TEMPLATE, write_template

ROOT = Path(__file__).resolve().parents[1]

ISSUE_EXAMPLE = """\
out = "runs/my-study"
[data]
dataset = "imagefolder:images"   # any dataset name the toolkit loads
limit = 500                      # optional subset, seeded
[[models]]
name = "resnet"
arch = "torchvision:resnet18"    # or: run = "runs/cnn" / pretrained = "efficientnet-lite0" / factory = "net.py:build"
weights = "resnet18.safetensors" # for arch and factory
layers = ["layer1", "layer2", "layer3", "layer4", "avgpool"]   # or "auto"
[analyses]
layers = {}
similarity = { measures = ["rdm", "cka"] }
units = { k = 9 }
transfer = { labels_per_class = [1, 10, 100] }
"""

# A valid study that needs no files; the error tests change one thing in it.
MINIMAL = """\
[data]
dataset = "digits"
[[models]]
name = "lite"
pretrained = "efficientnet-lite0"
"""


def write(folder: Path, text: str, name: str = "study.toml") -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def problems(folder: Path, text: str) -> str:
    """The message of the StudySpecError that the study ``text`` (in ``folder``) raises."""
    with pytest.raises(StudySpecError) as info:
        StudySpec.from_file(write(folder, text))
    assert isinstance(info.value, ValueError)
    return str(info.value)


def image_folder(folder: Path, splits=("test",)) -> Path:
    for split in splits:
        for label in ("cat", "dog"):
            (folder / split / label).mkdir(parents=True)
            (folder / split / label / "0.png").write_bytes(b"")
    return folder


def test_the_issue_example_parses(tmp_path):
    image_folder(tmp_path / "images")
    (tmp_path / "resnet18.safetensors").write_bytes(b"dummy")
    path = write(tmp_path, ISSUE_EXAMPLE)

    spec = StudySpec.from_file(path)

    assert spec.path == path and spec.folder == tmp_path and spec.text == ISSUE_EXAMPLE
    assert spec.out == tmp_path / "runs" / "my-study"
    assert spec.data == DataSpec(dataset=f"imagefolder:{tmp_path / 'images'}", split="test", limit=500, seed=0,
                                 options={})
    assert spec.models == (ModelEntrySpec(
        name="resnet", source="arch", spec="torchvision:resnet18", weights=str(tmp_path / "resnet18.safetensors"),
        layers=("layer1", "layer2", "layer3", "layer4", "avgpool"), reduce="auto", layout=None),)
    defaults = default_analyses()
    assert list(spec.analyses) == ["layers", "similarity", "units", "transfer"]  # the canonical order
    assert spec.analyses == {name: defaults[name] for name in spec.analyses}


def test_defaults_are_filled(tmp_path):
    spec = StudySpec.from_file(write(tmp_path, "seed = 7\n" + MINIMAL, name="my exp.toml"))

    assert spec.out == tmp_path / "runs" / "my exp" and spec.title == "Study: my exp"
    assert (spec.seed, spec.device, spec.batch_size) == (7, "auto", 64)
    assert spec.data == DataSpec(dataset="digits", split="test", limit=None, seed=7, options={})
    model = spec.models[0]
    assert (model.source, model.spec, model.weights) == ("pretrained", "pretrained:efficientnet-lite0", None)
    assert (model.layers, model.reduce, model.layout) == ("auto", "auto", None)
    # no [analyses]: every analysis but those that train models, each option at its ANALYSES default
    assert list(ANALYSES) == ["summary", "layers", "similarity", "measures", "units", "subspaces", "transfer", "neighbours", "code_plane",
                              "codes", "colorization", "words", "captions", "mask_ratio", "finetune", "greedy",
                              "function_views", "mlm_ratio"]
    assert list(spec.analyses) == [name for name in ANALYSES if name not in OPT_IN_ANALYSES] == list(ANALYSES)[:-5]
    assert spec.analyses == {name: {key: option.default for key, option in options.items()}
                             for name, options in ANALYSES.items() if name not in OPT_IN_ANALYSES}
    spec.analyses["similarity"]["measures"].append("x")  # a study's options are its own copies
    assert ANALYSES["similarity"]["measures"].default == ["rdm", "cka"]


def test_given_options_replace_defaults_and_ints_are_accepted_as_floats(tmp_path):
    spec = StudySpec.from_file(write(tmp_path, MINIMAL + """\
        [analyses]
        transfer = { C = 2, seeds = [0, 1] }
        subspaces = { layer = "lite/blocks.3" }
        """))
    assert spec.analyses["transfer"]["C"] == 2.0 and isinstance(spec.analyses["transfer"]["C"], float)
    assert spec.analyses["transfer"]["seeds"] == [0, 1] and spec.analyses["transfer"]["max_iter"] == 300
    assert spec.analyses["subspaces"]["layer"] == "lite/blocks.3"


def test_relative_paths_resolve_against_the_study_folder_not_the_working_directory(tmp_path, monkeypatch):
    study = tmp_path / "study"
    (study / "runs" / "cnn").mkdir(parents=True)
    (study / "runs" / "cnn" / "config.json").write_text("{}")
    (study / "nets").mkdir()
    (study / "nets" / "net.py").write_text("import torch\n\ndef build():\n    return torch.nn.Linear(2, 2)\n")
    (study / "nets" / "net.pt").write_bytes(b"")
    (study / "hf-model").mkdir()
    (study / "reference.npy").write_bytes(b"")
    image_folder(study / "pictures", splits=("train",))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    path = write(study, """\
        out = "../results"
        [data]
        dataset = "imagefolder:pictures"
        split = "train"
        [[models]]
        name = "cnn"
        run = "runs/cnn"
        [[models]]
        name = "mine"
        factory = "nets/net.py:build"
        weights = "nets/net.pt"
        [[models]]
        name = "bert"
        arch = "hf:hf-model"
        [analyses.similarity]
        reference = "reference.npy"
        """)

    spec = StudySpec.from_file(path)

    assert spec.out == tmp_path / "results"
    assert spec.data.dataset == f"imagefolder:{study / 'pictures'}"
    run, factory, hf = spec.models
    assert (run.source, run.spec) == ("run", str(study / "runs" / "cnn"))
    assert (factory.source, factory.spec) == ("factory", f"{study / 'nets' / 'net.py'}:build")
    assert factory.weights == str(study / "nets" / "net.pt")
    assert hf.spec == f"hf:{study / 'hf-model'}"
    assert spec.analyses["similarity"]["reference"] == str(study / "reference.npy")

    # the same file named relatively from another working directory
    monkeypatch.chdir(tmp_path)
    assert StudySpec.from_file("study/study.toml").models == spec.models


def test_library_weights_and_model_spellings(tmp_path):
    spec = StudySpec.from_file(write(tmp_path, """\
        [data]
        dataset = "digits"
        [[models]]
        name = "tv"
        arch = "torchvision:resnet18"
        weights = "pretrained"
        [[models]]
        name = "tv v1"
        arch = "torchvision:resnet18"
        weights = "IMAGENET1K_V1"
        [[models]]
        name = "zoo cnn"
        arch = "cnn"
        [[models]]
        name = "hub"
        arch = "hf:org/model"
        """))
    assert [(m.spec, m.weights) for m in spec.models] == [
        ("torchvision:resnet18", "pretrained"), ("torchvision:resnet18", "IMAGENET1K_V1"), ("cnn", None),
        ("hf:org/model", None)]


# -- errors ----------------------------------------------------------------------------------


def test_unknown_top_level_key_names_the_nearest_key(tmp_path):
    message = problems(tmp_path, 'outt = "x"\n' + MINIMAL)
    assert "outt: unknown key 'outt' at the top level of the study; did you mean 'out'?" in message
    assert "Valid keys: 'out', 'title', 'description', 'seed', 'device', 'batch_size', 'data', 'models', 'analyses'" in message
    assert "study.toml" in message


def test_unknown_analysis_suggests_the_nearest(tmp_path):
    message = problems(tmp_path, MINIMAL + "[analyses]\nsimilarty = {}\n")
    assert "analyses.similarty: unknown analysis 'similarty' in [analyses]; did you mean 'similarity'" in message
    assert ("Valid analyses: 'summary', 'layers', 'similarity', 'measures', 'units', 'subspaces', 'transfer', 'neighbours', 'code_plane', "
            "'codes', 'colorization', 'words', 'captions', 'mask_ratio', 'finetune', 'greedy', 'function_views', "
            "'mlm_ratio'.") in message


def test_unknown_option_suggests_the_nearest(tmp_path):
    message = problems(tmp_path, MINIMAL + '[analyses]\nsimilarity = { measure = ["rdm"] }\n')
    assert ("analyses.similarity.measure: unknown key 'measure' in [analyses.similarity]; did you mean "
            "'measures'? Valid keys: 'measures', 'reference', 'n_stimuli', 'n_bootstrap', 'models', 'max_rdm_panels'.") in message
    message = problems(tmp_path, MINIMAL + '[analyses]\nsimilarity = { measures = ["rmd"] }\n')
    assert "analyses.similarity.measures[0]: unknown value 'rmd'; did you mean 'rdm'?" in message


@pytest.mark.parametrize("change, expected", [
    ('[data]\ndataset = "digits"\nlimit = "ten"', "data.limit: expected an integer > 0, got 'ten' (a string)"),
    ('[data]\ndataset = "digits"\nlimit = 0', "data.limit: expected an integer > 0, got 0 (an integer)"),
    ('[data]\ndataset = "digits"\nsplit = "tset"', "data.split: unknown value 'tset'; did you mean 'test'?"),
    ("[analyses]\nunits = { k = true }", "analyses.units.k: expected an integer > 0, got true (a boolean)"),
    ("[analyses]\nunits = { k = 2.0 }", "analyses.units.k: expected an integer > 0, got 2.0 (a number)"),
    ("[analyses]\ntransfer = { test_fraction = 1 }",
     "analyses.transfer.test_fraction: expected a number in (0, 1), got 1 (an integer)"),
    ("[analyses]\nsubspaces = { ks = [2, 0] }", "analyses.subspaces.ks[1]: expected an integer > 0, got 0"),
    ("[analyses]\nsubspaces = { ks = [] }", "analyses.subspaces.ks: expected a list of integers > 0, got an empty list"),
    ("[analyses]\nunits = { layers = \"all\" }",
     "analyses.units.layers: expected 'auto' or a list of non-empty strings, got 'all' (a string)"),
    ("[analyses]\nlayers = true", "analyses.layers: expected a table of options (may be empty: layers = {})"),
    ("batch_size = 0", "batch_size: expected an integer > 0, got 0"),
])
def test_wrong_types_and_values_name_the_key(tmp_path, change, expected):
    text = MINIMAL.replace('[data]\ndataset = "digits"', change) if change.startswith("[data]") else (
        change + "\n" + MINIMAL if not change.startswith("[analyses]") else MINIMAL + change + "\n")
    assert expected in problems(tmp_path, text)


def test_model_sources(tmp_path):
    two = problems(tmp_path, MINIMAL + 'arch = "torchvision:resnet18"\n')
    assert "models[0]: 2 sources (arch, pretrained); give exactly one of run, arch, pretrained, factory" in two
    none = problems(tmp_path, MINIMAL.replace('pretrained = "efficientnet-lite0"\n', ""))
    assert "models[0]: no source; give exactly one of run = " in none
    weights = problems(tmp_path, MINIMAL + 'weights = "w.pt"\n')
    assert "models[0].weights: weights go with arch or factory only; a pretrained network brings its own" in weights
    library = problems(tmp_path, MINIMAL.replace('pretrained = "efficientnet-lite0"', 'arch = "cnn"')
                       + 'weights = "pretrained"\n')
    assert 'models[0].weights: weights = "pretrained" (the library\'s own weights) goes with arch' in library


def test_duplicate_model_names(tmp_path):
    message = problems(tmp_path, MINIMAL + MINIMAL.split("\n", 2)[2])
    assert "models[1].name: duplicate model name 'lite' (also models[0].name)" in message


def test_missing_files_name_the_key_the_path_given_and_the_path_looked_at(tmp_path):
    message = problems(tmp_path, """\
        [data]
        dataset = "imagefolder:images"
        [[models]]
        name = "resnet"
        arch = "torchvision:resnet18"
        weights = "weights/resnet18.safetensors"
        [[models]]
        name = "cnn"
        run = "runs/cnn"
        [[models]]
        name = "mine"
        factory = "net.py:build"
        """)
    assert (f"models[0].weights: file not found: 'weights/resnet18.safetensors' "
            f"(looked at {tmp_path / 'weights' / 'resnet18.safetensors'})") in message
    assert f"models[1].run: folder not found: 'runs/cnn' (looked at {tmp_path / 'runs' / 'cnn'})" in message
    assert f"models[2].factory: file not found: 'net.py' (looked at {tmp_path / 'net.py'})" in message
    assert f"data.dataset: folder not found: 'images' (looked at {tmp_path / 'images'})" in message
    assert message.startswith(f"{tmp_path / 'study.toml'} has 4 problems:\n")


def test_a_run_folder_needs_a_config(tmp_path):
    (tmp_path / "runs" / "cnn").mkdir(parents=True)
    message = problems(tmp_path, MINIMAL.replace('pretrained = "efficientnet-lite0"', 'run = "runs/cnn"'))
    assert "models[0].run: 'runs/cnn' is not a zoo run folder: it has no config.json" in message


def test_factory_function_is_checked_without_importing_the_file(tmp_path):
    (tmp_path / "net.py").write_text("raise RuntimeError('never imported')\n\ndef build_net():\n    pass\n\n"
                                     "class Other:\n    pass\n\ntry:\n    from x import made\nexcept ImportError:\n"
                                     "    made = None\n")
    text = MINIMAL.replace('pretrained = "efficientnet-lite0"', 'factory = "net.py:build"')
    message = problems(tmp_path, text)
    assert "models[0].factory: unknown factory in net.py 'build'; did you mean 'build_net'?" in message
    assert "Valid names: 'build_net', 'Other'." in message
    for defined in ("build_net", "Other", "made"):
        spec = StudySpec.from_file(write(tmp_path, text.replace("net.py:build", f"net.py:{defined}")))
        assert spec.models[0].spec == f"{tmp_path / 'net.py'}:{defined}"
    (tmp_path / "broken.py").write_text("def build(:\n")
    broken = problems(tmp_path, text.replace("net.py", "broken.py"))
    assert "models[0].factory: broken.py is not valid Python" in broken and "(line 1)" in broken


def test_unknown_pretrained_dataset_and_model_names_suggest_the_nearest(tmp_path):
    message = problems(tmp_path, MINIMAL.replace("efficientnet-lite0", "efficientnet-lite"))
    assert ("models[0].pretrained: unknown pretrained network 'efficientnet-lite'; did you mean "
            "'efficientnet-lite0'?") in message and "zoo.list_pretrained()" in message
    message = problems(tmp_path, MINIMAL.replace('"digits"', '"digts"'))
    assert "data.dataset: unknown dataset 'digts'; did you mean 'digits'?" in message
    assert "'imagefolder:PATH'" in message and "zoo.list_datasets()" in message
    message = problems(tmp_path, MINIMAL.replace('pretrained = "efficientnet-lite0"', 'arch = "cnnn"'))
    assert "models[0].arch: unknown model 'cnnn'; did you mean 'cnn'" in message
    message = problems(tmp_path, MINIMAL.replace('pretrained = "efficientnet-lite0"', 'arch = "torchvison:x"'))
    assert "models[0].arch: unknown model spelling 'torchvison:'; did you mean 'torchvision:'?" in message
    message = problems(tmp_path, MINIMAL.replace('pretrained = "efficientnet-lite0"', 'arch = "resnet18"'))
    assert "'resnet18' names more than one model; write arch = \"zoo:resnet18\"" in message


def test_an_image_folder_without_a_test_split_asks_for_split_train(tmp_path):
    image_folder(tmp_path / "images", splits=("cat",))  # images/cat/..., no test/
    message = problems(tmp_path, MINIMAL.replace('"digits"', '"imagefolder:images"'))
    assert "data.split: the image folder 'images' has no test/ sub-folder" in message
    assert 'split = "train"' in message


def test_subspaces_layer_names_a_model_of_the_study(tmp_path):
    text = MINIMAL.replace('pretrained = "efficientnet-lite0"', 'arch = "cnn"\nlayers = ["conv1", "fc"]')
    message = problems(tmp_path, text + '[analyses]\nsubspaces = { layer = "lyte/conv1" }\n')
    assert "analyses.subspaces.layer: unknown model 'lyte'" in message
    message = problems(tmp_path, text + '[analyses]\nsubspaces = { layer = "lite/conv2" }\n')
    assert "analyses.subspaces.layer: unknown layer 'conv2' of model 'lite' (its layers); did you mean 'conv1'" in message


def test_every_problem_is_reported_together(tmp_path):
    message = problems(tmp_path, """\
        seed = true
        colour = "red"
        [data]
        dataset = "digts"
        limit = "ten"
        [[models]]
        name = "a"
        [[models]]
        name = "a"
        pretrained = "resnet18"
        layers = []
        [analyses]
        similarty = {}
        units = { k = true }
        """)
    lines = message.splitlines()
    assert lines[0].endswith("has 9 problems:")
    for key in ("seed", "colour", "data.dataset", "data.limit", "models[0]", "models[1].layers", "models[1].name",
                "analyses.similarty", "analyses.units.k"):
        assert any(line.startswith(f"  - {key}: ") for line in lines[1:]), key


def test_missing_sections(tmp_path):
    message = problems(tmp_path, 'title = "t"\n')
    assert "data: missing; add a [data] table" in message and "models: missing; add at least one [[models]]" in message
    message = problems(tmp_path, '[data]\ndataset = "digits"\n[models]\nname = "x"\n')
    assert "models: expected an array of tables, got one table: write [[models]]" in message
    message = problems(tmp_path, MINIMAL + "[analyses]\n")
    assert "analyses: names no analysis" in message


def test_a_toml_syntax_error_names_the_file_and_line(tmp_path):
    message = problems(tmp_path, '[data]\ndataset = "digits"\nlimit 500\n')
    assert str(tmp_path / "study.toml") in message and "not valid TOML" in message and "line 3" in message


def test_a_missing_study_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(StudySpecError) as info:
        StudySpec.from_file("nope.toml")
    assert str(info.value) == f"file not found: 'nope.toml' (looked at {tmp_path / 'nope.toml'})"


def test_error_accepts_one_line_and_reads_as_a_value_error():
    error = StudySpecError("models[0].layers (model 'x'): unknown layer")
    assert isinstance(error, ValueError) and str(error) == error.args[0] == "models[0].layers (model 'x'): unknown layer"
    assert StudySpecError(["a: 1", "b: 2"], "s.toml").problems == ("a: 1", "b: 2")


# -- training, own stimuli, random weights, input size ------------------------------------------

RUN = MINIMAL.replace('pretrained = "efficientnet-lite0"', 'run = "runs/cnn"')


def test_a_run_with_train_is_checked_without_its_folder(tmp_path):
    spec = StudySpec.from_file(write(tmp_path, RUN + 'train = { model = "cnn", epochs = 2, settings = { lr = 0.01 } }\n'))
    (model,) = spec.models
    assert (model.source, model.spec) == ("run", str(tmp_path / "runs" / "cnn"))  # the study trains into it
    assert not (tmp_path / "runs").exists()  # checking makes nothing
    assert model.train == {"model": "cnn", "dataset": "digits", "epochs": 2, "seed": None, "dataset_options": {},
                           "settings": {"lr": 0.01}}
    assert "models[0].run: folder not found: 'runs/cnn'" in problems(tmp_path, RUN)  # without train, it must exist
    image_folder(tmp_path / "shapes", splits=("train",))
    spec = StudySpec.from_file(write(tmp_path, RUN + 'train = { model = "cnn", dataset = "imagefolder:shapes" }\n'))
    assert spec.models[0].train["dataset"] == f"imagefolder:{tmp_path / 'shapes'}" and spec.models[0].train["epochs"] is None


@pytest.mark.parametrize("change, expected", [
    ('arch = "cnn"\ntrain = { model = "cnn" }',
     'models[0].train: train goes with run = "RUN_FOLDER" only'),
    ('run = "runs/cnn"\ntrain = { model = "cnm" }',
     "models[0].train.model: unknown zoo model 'cnm'; did you mean 'cnn'?"),
    ('run = "runs/cnn"\ntrain = { epochs = 3 }', 'models[0].train.model: missing; name the zoo model to train'),
    ('run = "runs/cnn"\ntrain = { model = "cnn", dataset = "digts" }',
     "models[0].train.dataset: unknown dataset 'digts'; did you mean 'digits'?"),
    ('run = "runs/cnn"\ntrain = { model = "cnn", epochs = 0 }',
     "models[0].train.epochs: expected an integer > 0, got 0"),
    ('run = "runs/cnn"\ntrain = { model = "cnn", epoch = 3 }',
     "models[0].train.epoch: unknown key 'epoch' in [models[0].train]; did you mean 'epochs'?"),
])
def test_train_problems_name_the_key(tmp_path, change, expected):
    message = problems(tmp_path, MINIMAL.replace('pretrained = "efficientnet-lite0"', change))
    assert expected in message
    assert " problems:" not in message  # that one problem, not a cascade


def test_a_model_may_bring_its_own_stimuli(tmp_path):
    image_folder(tmp_path / "pictures", splits=("train",))
    spec = StudySpec.from_file(write(tmp_path, MINIMAL + """\
        data = { dataset = "imagefolder:pictures", split = "train", per_class = 3, limit = 5 }
        [[models]]
        name = "cnn"
        arch = "cnn"
        data = { dataset = "photos" }
        """))
    lite, cnn = spec.models
    assert spec.data == DataSpec(dataset="digits", split="test", limit=None, seed=0, options={})
    assert lite.data == DataSpec(dataset=f"imagefolder:{tmp_path / 'pictures'}", split="train", limit=5, seed=0,
                                 options={}, per_class=3)
    assert cnn.data == DataSpec(dataset="photos", split="test", limit=None, seed=0, options={})
    message = problems(tmp_path, MINIMAL + 'data = { dataset = "digts", per_class = 0 }\n')
    assert "models[0].data.dataset: unknown dataset 'digts'; did you mean 'digits'?" in message
    assert "models[0].data.per_class: expected an integer > 0, got 0" in message
    message = problems(tmp_path, MINIMAL + 'data = { split = "test" }\n')
    assert "models[0].data.dataset: missing" in message
    message = problems(tmp_path, MINIMAL + 'data = "digits"\n')
    assert "models[0].data: expected a table" in message


def test_per_class_and_description(tmp_path):
    text = 'description = "Edges first?"\n' + MINIMAL.replace('dataset = "digits"', 'dataset = "digits"\nper_class = 4\nlimit = 10')
    spec = StudySpec.from_file(write(tmp_path, text))
    assert spec.description == "Edges first?"
    assert spec.data == DataSpec(dataset="digits", split="test", limit=10, seed=0, options={}, per_class=4)
    assert StudySpec.from_file(write(tmp_path, MINIMAL)).description == ""
    assert "data.per_class: expected an integer > 0, got 0" in problems(
        tmp_path, MINIMAL.replace('dataset = "digits"', 'dataset = "digits"\nper_class = 0'))
    assert "description: expected a non-empty string, got 3" in problems(tmp_path, "description = 3\n" + MINIMAL)


def test_random_init_goes_with_pretrained_only_and_input_size_is_positive(tmp_path):
    spec = StudySpec.from_file(write(tmp_path, MINIMAL + 'init = "random"\ninput_size = 64\n'))
    assert (spec.models[0].init, spec.models[0].input_size) == ("random", 64)
    default = StudySpec.from_file(write(tmp_path, MINIMAL)).models[0]
    assert (default.init, default.input_size) == ("weights", None)
    message = problems(tmp_path, MINIMAL.replace('pretrained = "efficientnet-lite0"', 'arch = "cnn"') + 'init = "random"\n')
    assert 'models[0].init: init = "random" goes with pretrained = "NAME" only' in message
    message = problems(tmp_path, MINIMAL + 'init = "rand"\ninput_size = 0\n')
    assert "models[0].init: unknown value 'rand'; did you mean 'random'?" in message
    assert "models[0].input_size: expected an integer > 0, got 0" in message


# -- the new analyses' options ------------------------------------------------------------------

TWO = MINIMAL + '[[models]]\nname = "cnn/small"\narch = "cnn"\n'


def test_mask_ratio_runs_only_when_named(tmp_path):
    assert OPT_IN_ANALYSES == ("mask_ratio", "finetune", "greedy", "function_views", "mlm_ratio")
    assert not set(OPT_IN_ANALYSES) & set(default_analyses())
    assert "mask_ratio" not in StudySpec.from_file(write(tmp_path, MINIMAL)).analyses
    spec = StudySpec.from_file(write(tmp_path, MINIMAL + "[analyses]\nmask_ratio = {}\n"))
    assert spec.analyses == {"mask_ratio": {"ratios": [0.25, 0.5, 0.75, 0.9], "epochs": 3, "dataset": "digits",
                                            "seeds": [0]}}
    message = problems(tmp_path, MINIMAL + '[analyses]\nmask_ratio = { ratios = [0.5, 1.0], dataset = "digts" }\n')
    assert "analyses.mask_ratio.ratios[1]: expected a number in (0, 1), got 1.0" in message
    assert "analyses.mask_ratio.dataset: unknown dataset 'digts'; did you mean 'digits'?" in message
    message = problems(tmp_path, MINIMAL + '[analyses]\nmlm_ratio = { dataset = "bible-kvj" }\n')
    assert "analyses.mlm_ratio.dataset: unknown dataset 'bible-kvj'; did you mean 'bible-kjv'?" in message
    message = problems(tmp_path, MINIMAL + '[analyses]\nfinetune = { models = ["cnn", "simclrr"], dataset = "fashon-mnist" }\n')
    assert "analyses.finetune.models[1]: unknown zoo model 'simclrr'; did you mean 'simclr'?" in message
    assert "analyses.finetune.dataset: unknown dataset 'fashon-mnist'; did you mean 'fashion-mnist'?" in message
    message = problems(tmp_path, MINIMAL + '[analyses]\nfinetune = { pretrain_classes = [0, 1], probe_classes = [1, 2] }\n')
    assert "analyses.finetune: classes [1] are in both pretrain_classes and probe_classes" in message


def test_words_and_captions_options_name_models_of_the_study(tmp_path):
    message = problems(tmp_path, MINIMAL + '[analyses]\nwords = { vectors = ["glove-6b-5d"], method = "3cosine" }\n'
                                           'captions = { models = ["clipp"] }\n')
    assert "analyses.words.vectors[0]: unknown model 'glove-6b-5d'; did you mean 'glove-6b-50d'?" in message
    assert "analyses.words.method: unknown value '3cosine'. Valid values: '3cosadd', '3cosmul'." in message
    assert "analyses.captions.models[0]: unknown model 'clipp'" in message


def test_transfer_and_similarity_models_name_models_of_the_study(tmp_path):
    spec = StudySpec.from_file(write(tmp_path, TWO + """\
        [analyses]
        similarity = { models = ["cnn/small"], max_rdm_panels = 0 }
        transfer = { models = ["lite"], features = ["cnn/small/fc2", "lite/blocks.3"] }
        """))
    assert spec.analyses["similarity"]["models"] == ["cnn/small"] and spec.analyses["similarity"]["max_rdm_panels"] == 0
    assert spec.analyses["transfer"]["models"] == ["lite"]
    assert spec.analyses["transfer"]["features"] == ["cnn/small/fc2", "lite/blocks.3"]
    defaults = StudySpec.from_file(write(tmp_path, TWO)).analyses
    assert defaults["similarity"]["models"] == defaults["transfer"]["models"] == "all"
    assert defaults["transfer"]["features"] == "last"
    message = problems(tmp_path, TWO + '[analyses]\ntransfer = { models = ["lite", "lyte"] }\n'
                                       'similarity = { models = ["cnn/smal"] }\n')
    assert "analyses.transfer.models[1]: unknown model 'lyte'; did you mean 'lite'?" in message
    assert "analyses.similarity.models[0]: unknown model 'cnn/smal'; did you mean 'cnn/small'?" in message
    assert "Valid models: 'lite', 'cnn/small'." in message
    assert "analyses.transfer.models: expected 'all' or a list" in problems(
        tmp_path, TWO + '[analyses]\ntransfer = { models = "some" }\n')


@pytest.mark.parametrize("feature", ["lite", "lite/", "other/fc2", "/fc2", "cnn/fc2"])
def test_a_malformed_transfer_feature_is_refused(tmp_path, feature):
    message = problems(tmp_path, TWO + f'[analyses]\ntransfer = {{ features = ["lite/blocks.3", "{feature}"] }}\n')
    assert (f"analyses.transfer.features[1]: expected \"MODEL/LAYER\" with MODEL one of 'lite', 'cnn/small', "
            f"got '{feature}'") in message
    assert "features[0]" not in message


def test_the_new_units_and_subspaces_options(tmp_path):
    spec = StudySpec.from_file(write(tmp_path, MINIMAL + """\
        [analyses]
        units = { stretch = false, distinct_stimuli = true }
        subspaces = { pixels = true }
        """))
    assert (spec.analyses["units"]["stretch"], spec.analyses["units"]["distinct_stimuli"]) == (False, True)
    assert spec.analyses["subspaces"]["pixels"] is True
    defaults = default_analyses()
    assert defaults["units"]["stretch"] == defaults["units"]["distinct_stimuli"] == "auto"
    assert defaults["subspaces"]["pixels"] is False
    message = problems(tmp_path, MINIMAL + '[analyses]\nunits = { stretch = "yes" }\n')
    assert "analyses.units.stretch: expected 'auto' or a boolean, got 'yes'" in message


# -- dicts and text --------------------------------------------------------------------------


def test_from_dict_renders_toml_text_that_reads_back(tmp_path):
    (tmp_path / "w.pt").write_bytes(b"")
    mapping = {
        "title": 'a "quoted" title',
        "data": {"dataset": "photos", "limit": 40, "options": {"size": 64, "grayscale": True}},
        "models": [{"name": "m ü", "arch": "torchvision:resnet18", "weights": "w.pt", "reduce": {"layer1": "flatten"}},
                   {"name": "p", "pretrained": "resnet50", "layers": ["layer4"]}],
        "analyses": {"summary": {}, "transfer": {"C": 0.5, "seeds": [1, 2]}},
    }
    spec = StudySpec.from_dict(mapping, folder=tmp_path)
    assert tomllib.loads(spec.text) == mapping
    assert spec.path is None and spec.folder == tmp_path and spec.out == tmp_path / "runs" / "study"
    assert spec.data.options == {"size": 64, "grayscale": True}
    assert spec.models[0].weights == str(tmp_path / "w.pt") and spec.models[0].reduce == {"layer1": "flatten"}
    assert list(spec.analyses) == ["summary", "transfer"]
    assert StudySpec.from_text(spec.text, tmp_path).models == spec.models
    assert StudySpec.from_dict(mapping, folder=tmp_path, text="# mine\n").text == "# mine\n"


def test_to_toml_round_trips_nested_values():
    value = {"a": 1, "b": [1.5, "x"], "t": {"u": {"v": [{"w": 1}, {"w": 2}]}, "e": {}}, "arr": [{"k": "v"}]}
    assert tomllib.loads(to_toml(value)) == value


# -- template --------------------------------------------------------------------------------


def test_the_template_parses_to_exactly_the_analyses_defaults(tmp_path):
    path = write_template(tmp_path / "study.toml")
    assert path.read_text() == STUDY_TEMPLATE and 40 <= len(STUDY_TEMPLATE.splitlines()) <= 160
    image_folder(tmp_path / "images", splits=("cat",))
    (tmp_path / "resnet18.safetensors").write_bytes(b"")

    spec = StudySpec.from_file(path)

    assert spec.analyses == default_analyses()
    assert spec.models[0].spec == "torchvision:resnet18" and spec.data.split == "train"
    # the values shown in the comments are the defaults too: uncommented, they parse to the same
    # (the analyses that train models come last, their tables commented out: they run only when named)
    shown = STUDY_TEMPLATE.split(f"# [analyses.{OPT_IN_ANALYSES[0]}]")[0]
    on = [opts for name, opts in ANALYSES.items() if name not in OPT_IN_ANALYSES]
    options = [line for line in shown.splitlines() if line.startswith("# ") and " = " in line
               and line[2:].split(" = ")[0] in {key for opts in on for key in opts}]
    assert len(options) == sum(option.default is not None for opts in on for option in opts.values())
    uncommented = "\n".join(line[2:] if line in options else line for line in STUDY_TEMPLATE.splitlines())
    assert StudySpec.from_text(uncommented, tmp_path).analyses == default_analyses()


def test_write_template_refuses_to_overwrite_unless_forced(tmp_path):
    path = tmp_path / "study.toml"
    path.write_text("mine")
    with pytest.raises(FileExistsError, match="force"):
        write_template(path)
    assert path.read_text() == "mine"
    assert write_template(path, force=True) == path and path.read_text() == STUDY_TEMPLATE
    assert sorted(p.name for p in tmp_path.iterdir()) == ["study.toml"]  # no temporary file left


def test_every_option_default_passes_its_own_check():
    for name, options in ANALYSES.items():
        for key, option in options.items():
            assert isinstance(option, Option) and option.help, (name, key)
    assert StudySpec.from_dict({"data": {"dataset": "digits"}, "models": [{"name": "x", "arch": "cnn"}],
                                "analyses": default_analyses()}).analyses == default_analyses()


# -- speed and the zoo's names -----------------------------------------------------------------


def test_from_file_is_fast_and_does_not_import_torch(tmp_path):
    image_folder(tmp_path / "images")
    (tmp_path / "resnet18.safetensors").write_bytes(b"")
    path = write(tmp_path, ISSUE_EXAMPLE)
    code = textwrap.dedent(f"""
        import json, sys, time
        started = time.perf_counter()
        from probe.study._spec import StudySpec
        spec = StudySpec.from_file({str(path)!r})
        try:
            StudySpec.from_file({str(path)!r}.replace("study.toml", "missing.toml"))
        except ValueError:
            pass
        print(json.dumps({{"seconds": time.perf_counter() - started, "torch": "torch" in sys.modules,
                          "zoo": "zoo" in sys.modules, "models": len(spec.models)}}))
    """)
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                         check=False)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["models"] == 1
    assert not result["torch"] and not result["zoo"]
    assert result["seconds"] < 2.0


def test_the_names_kept_for_checking_without_torch_are_the_zoos(tmp_path):
    import zoo
    from zoo._model_spec import _SCHEMES

    assert list(_OFFLINE_DATASETS) == zoo.list_datasets()
    assert list(_OFFLINE_PRETRAINED) == zoo.list_pretrained()
    assert list(_OFFLINE_MODELS) == zoo.list_models()
    assert list(_OFFLINE_SCHEMES) == list(_SCHEMES)
    from analyses import list_measures
    from probe.study._spec import MEASURE_NAMES

    assert list(MEASURE_NAMES) == list_measures()
    from analyses._measures import RBF_CKA_NAME
    from probe.study._spec import MEASURE_PATTERNS

    assert [pattern for pattern, _ in MEASURE_PATTERNS] == [RBF_CKA_NAME.pattern]
    # once the zoo is imported, its own names and error are used
    live = _zoo()
    assert live.pretrained == tuple(zoo.list_pretrained()) and live.unknown_name_error is zoo.unknown_name_error
    message = problems(tmp_path, MINIMAL.replace("efficientnet-lite0", "efficientnet-lite"))
    assert "models[0].pretrained: unknown pretrained network 'efficientnet-lite'; did you mean" in message


# Two models to compare as seeds of one architecture, and the measures analysis with some options.
SEEDS = MINIMAL + """\
[[models]]
name = "lite2"
pretrained = "efficientnet-lite0"
[analyses.measures]
"""


def test_measures_are_named_as_the_registry_names_them_or_as_rbf_cka_at_a_positive_bandwidth(tmp_path):
    spec = StudySpec.from_file(write(tmp_path, SEEDS + 'measures = ["linear-cka", "rbf-cka-0.4", "rbf-cka-.8"]\n'
                                     'seed_models = ["lite", "lite2"]\nceiling_measure = "rbf-cka-0.40"\n'))
    assert spec.analyses["measures"]["measures"] == ["linear-cka", "rbf-cka-0.4", "rbf-cka-.8"]
    for bad in ("rbf-cka-0", "rbf-cka-x", "rbf-cka--1"):
        message = problems(tmp_path, SEEDS + f'measures = ["{bad}"]\n')
        assert f"analyses.measures.measures[0]: unknown value {bad!r}; did you mean 'rbf-cka'?" in message
        assert "'rsa-whitened', 'rbf-cka-<fraction of the median distance>'." in message


@pytest.mark.parametrize("options, expected", [
    ('seed_models = ["lite"]', "analyses.measures.seed_models: needs at least two models"),
    ('seed_models = ["lite", "lite3"]', "analyses.measures.seed_models[1]: unknown model 'lite3'; did you mean"),
    ('models = ["lit"]', "analyses.measures.models[0]: unknown model 'lit'; did you mean 'lite'"),
    ('measures = ["rsa"]\nseed_models = ["lite", "lite2"]',
     ("analyses.measures.ceiling_measure: 'linear-cka' is not among the measures computed ('rsa'); add it to "
      "measures or choose one of them")),
    ('measures = ["rbf-cka-0.4"]\nseed_models = ["lite", "lite2"]\nceiling_measure = "rbf-cka-0.5"',
     "analyses.measures.ceiling_measure: 'rbf-cka-0.5' is not among the measures computed"),
])
def test_the_measures_seed_models_are_two_of_the_studys_models_and_the_ceiling_measure_is_computed(
        tmp_path, options, expected):
    assert expected in problems(tmp_path, SEEDS + options + "\n")
