"""A study's layer names checked before torch loads, against the module names stored when the model was built.

The torch-free resolver is checked against ``probe.resolve_layers`` on real models (same layers, same
errors), the check against the slow path's message, the store against a cache folder that cannot be
written, the listings shipped with the package against live builds, and ``probe train`` against the
listing a study of its run reads.
"""

import dataclasses
import gzip
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torchvision
from torch import nn

import probe
import zoo
from probe._layer_names import resolve_layer_names
from probe.cli import main
from probe.study import Study, StudySpecError, _layer_listing, default_layers
from probe.study._layer_listing import (
    listing_folder,
    listing_key,
    precheck_layers,
    remember_layers,
    remember_run_layers,
    shipped_listing,
    stored_listing,
)
from probe.study._spec import ModelEntrySpec, StudySpec

ROOT = Path(__file__).resolve().parents[1]
FACTORY = """\
from collections import OrderedDict

from torch import nn


def build():
    layers = OrderedDict(conv=nn.Conv2d(1, 4, 3), relu=nn.ReLU(), flat=nn.Flatten(), head=nn.Linear(4 * 6 * 6, 3))
    return nn.Sequential(layers)
"""


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    """Listings go to a fresh folder, never to the user's cache."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("NEUROPROBE_CACHE", str(folder))
    return folder


@pytest.fixture
def factory_study(tmp_path):
    """A study of one factory model (``net.py:build``) and a function giving it other layers."""
    (tmp_path / "net.py").write_text(FACTORY)

    def with_layers(*layers: str) -> StudySpec:
        model = {"name": "net", "factory": "net.py:build", "layers": list(layers)}
        return StudySpec.from_dict({"data": {"dataset": "digits"}, "models": [model], "analyses": {"layers": {}}},
                                   folder=tmp_path)

    return with_layers


def outcome(resolve, *args, **options):
    """What a resolution gives: ("ok", names) or (error type, message)."""
    try:
        return "ok", resolve(*args, **options)
    except (KeyError, ValueError) as err:
        return type(err).__name__, str(err)


MODELS = {
    "torchvision resnet18": lambda: torchvision.models.resnet18(weights=None),
    "zoo cnn": lambda: zoo.create_model("cnn"),
    "sequential": lambda: nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Sequential(nn.Linear(8, 2), nn.Tanh())),
}
SELECTIONS = [
    "0", "layer1", ["layer4", "layer1", "layer4"], "layer*", "layer?.0", "[02]", "*.weight", ["2.*", "0"],
    "*", "", ["", "*"], "layer5", "layr1.0", "2.3", "decoder*", ["0", "nope"], [], ["layer1", 3],
]


@pytest.mark.parametrize("model_name", MODELS)
def test_the_stored_names_resolve_as_the_model_does(model_name, tmp_path):
    model = MODELS[model_name]()
    # any entry with a key will do: what is tested is the stored listing
    entry = ModelEntrySpec(name=model_name, source="factory", spec=f"{tmp_path / 'net.py'}:build")
    (tmp_path / "net.py").write_text(f"# {model_name}\n")
    remember_layers(entry, model, default_layers(model))
    stored = stored_listing(entry)
    assert stored["modules"] == [name for name, _ in model.named_modules() if name]
    assert stored["auto"] == default_layers(model)
    for selection in SELECTIONS:
        expected = outcome(probe.resolve_layers, model, selection)
        got = outcome(resolve_layer_names, stored["modules"], selection, unknown_name_error=zoo.unknown_name_error)
        assert got == expected, selection


def test_resolver_by_hand():
    names = ["features", "features.0", "features.1", "head"]

    def resolve(layers):
        return resolve_layer_names(names, layers, unknown_name_error=zoo.unknown_name_error)

    assert resolve(["head", "features.*", "features.0"]) == ["head", "features.0", "features.1"]
    assert resolve("") == [""]  # the root, named only explicitly
    with pytest.raises(KeyError, match=r"unknown layer 'features\.2'; did you mean 'features\.1', 'features\.0'"):
        resolve("features.2")
    with pytest.raises(zoo.UnknownNameError, match="probe layers"):
        resolve("head*.x")


def test_a_stored_listing_refuses_an_unknown_layer_as_building_the_model_does(factory_study, tmp_path):
    bad = factory_study("conv", "haed")
    assert stored_listing(bad.models[0]) is None
    precheck_layers(bad)  # no listing yet: left to the slow path
    with pytest.raises(StudySpecError) as slow:
        Study(bad, out=tmp_path / "out").run(progress=False, device="cpu")
    entry = bad.models[0]
    model = zoo.load_model(entry.spec)
    remember_layers(entry, model, default_layers(model))
    with pytest.raises(StudySpecError) as fast:
        precheck_layers(bad)
    assert str(fast.value) == str(slow.value)
    assert str(fast.value).startswith("models[0].layers (model 'net'): unknown layer 'haed'; did you mean 'head'?")
    precheck_layers(factory_study("conv", "relu", "head"))
    precheck_layers(factory_study("*"))


def test_the_check_imports_no_torch(factory_study, cache):
    spec = factory_study("conv")
    model = zoo.load_model(spec.models[0].spec)
    remember_layers(spec.models[0], model, default_layers(model))
    code = textwrap.dedent(f"""\
        import sys
        from probe.study._layer_listing import precheck_layers
        from probe.study._spec import StudySpec, StudySpecError
        model = {{"name": "net", "factory": "net.py:build", "layers": ["conv", "haed"]}}
        spec = StudySpec.from_dict({{"data": {{"dataset": "digits"}}, "models": [model]}}, folder={str(spec.folder)!r})
        try:
            precheck_layers(spec)
        except StudySpecError as err:
            print(err)
        print(sorted(m for m in ("torch", "numpy", "zoo", "torchvision") if m in sys.modules))
    """)
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
                         env={**os.environ, "NEUROPROBE_CACHE": str(cache)})
    assert run.returncode == 0, run.stderr
    message, loaded = run.stdout.strip().splitlines()
    assert "unknown layer 'haed'; did you mean 'head'" in message
    assert loaded == "[]"


def test_an_unwritable_cache_is_skipped(factory_study, tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("NEUROPROBE_CACHE", str(blocker))
    spec = factory_study("conv")
    remember_layers(spec.models[0], nn.Sequential(nn.ReLU()), ["0"])  # no error
    assert stored_listing(spec.models[0]) is None
    precheck_layers(spec)


def test_a_damaged_listing_is_ignored(factory_study):
    spec = factory_study("nope")
    remember_layers(spec.models[0], nn.Sequential(nn.ReLU()), ["0"])
    with pytest.raises(StudySpecError, match="unknown layer 'nope'"):
        precheck_layers(spec)
    path = next(listing_folder().glob("*.json"))
    path.write_text('{"key": "another model", "modules": ["0"]}')
    precheck_layers(spec)
    path.write_text("{not json")
    precheck_layers(spec)


def test_keys_change_with_what_builds_the_model(tmp_path):
    factory = tmp_path / "net.py"
    factory.write_text(FACTORY)
    entry = ModelEntrySpec(name="net", source="factory", spec=f"{factory}:build")
    first = listing_key(entry)
    assert first is not None and listing_key(entry) == first
    assert listing_key(ModelEntrySpec(name="other name", source="factory", spec=f"{factory}:build")) == first
    assert listing_key(ModelEntrySpec(name="net", source="factory", spec=f"{factory}:other")) != first
    factory.write_text(FACTORY.replace("head=", "out="))
    second = listing_key(entry)
    assert second != first
    (tmp_path / "blocks.py").write_text("# a module the factory may import\n")
    assert listing_key(entry) != second
    assert listing_key(ModelEntrySpec(name="net", source="factory", spec=f"{tmp_path / 'gone.py'}:build")) is None

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"model": "cnn"}))
    run_key = listing_key(ModelEntrySpec(name="r", source="run", spec=str(run)))
    (run / "config.json").write_text(json.dumps({"model": "mlp"}))
    assert listing_key(ModelEntrySpec(name="r", source="run", spec=str(run))) not in (None, run_key)

    trained = ModelEntrySpec(name="t", source="run", spec=str(tmp_path / "not trained yet"),
                             train={"model": "cnn", "dataset": "digits", "epochs": 1})
    assert listing_key(trained) is not None  # the study trains it: keyed by what it asks for, not the folder
    assert listing_key(trained) != listing_key(dataclasses.replace(trained, train={**trained.train, "model": "mlp"}))

    arch = listing_key(ModelEntrySpec(name="a", source="arch", spec="torchvision:resnet18"))
    assert torchvision.__version__.split("+")[0] in arch
    assert arch != listing_key(ModelEntrySpec(name="a", source="arch", spec="torchvision:resnet34"))
    assert listing_key(ModelEntrySpec(name="h", source="arch", spec="hf:someone/some-model")) is None


def test_the_cache_folder_follows_the_environment(monkeypatch, tmp_path):
    assert listing_folder() == tmp_path / "cache" / "layer-names"
    monkeypatch.delenv("NEUROPROBE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert listing_folder() == tmp_path / "xdg" / "neuroprobe" / "layer-names"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert listing_folder() == tmp_path / "home" / ".cache" / "neuroprobe" / "layer-names"


# ----------------------------------------------------------------------------------------------
# the listings shipped with the package, and those ``probe train`` stores

SHIPPED_SAMPLE = ["torchvision:resnet18", "torchvision:vit_b_16", "torchvision:efficientnet_b0",
                  "torchvision:convnext_tiny", "torchvision:mobilenet_v3_small"]
REGENERATE = "re-run tools/generate_layer_listing.py"


def build_shipped(spelling: str) -> nn.Module:
    """What a study builds for ``arch = "torchvision:NAME"`` or ``pretrained = "NAME"``, with random weights."""
    scheme, _, name = spelling.partition(":")
    return zoo.load_pretrained(name, random_weights=True) if scheme == "pretrained" else zoo.load_model(spelling)


def shipped_entry(spelling: str) -> ModelEntrySpec:
    source = "pretrained" if spelling.startswith("pretrained:") else "arch"
    return ModelEntrySpec(name="m", source=source, spec=spelling)


# over every pretrained network: a change to one in zoo/_pretrained.py must come with a new listing
@pytest.mark.parametrize("spelling", SHIPPED_SAMPLE + [f"pretrained:{name}" for name in zoo.list_pretrained()])
def test_the_shipped_listing_equals_a_live_build(spelling):
    if spelling == "pretrained:efficientnet-lite0":
        pytest.importorskip("timm", reason='it needs timm: pip install "neuroprobe[pretrained]"')
    shipped = shipped_listing(shipped_entry(spelling))
    if shipped is None:
        made_with = _layer_listing._shipped_listings()["models"].get(spelling)
        assert made_with is not None, f"no shipped listing of {spelling}: {REGENERATE}"
        versions = _layer_listing._shipped_listings()["versions"]
        pytest.skip(f"the shipped listing of {spelling} was made with other versions of "
                    f"{', '.join(f'{lib} {versions[lib]}' for lib in made_with['libraries'])}: {REGENERATE} here")
    model = build_shipped(spelling)
    live = {"modules": [name for name, _ in model.named_modules() if name], "auto": default_layers(model)}
    assert shipped == live, f"the shipped listing of {spelling} is out of date: {REGENERATE}"
    assert stored_listing(shipped_entry(spelling)) == {"key": None, **shipped}  # the cache is empty: it is used


def test_a_torchvision_study_is_refused_on_first_use_without_torch(cache):
    assert not cache.exists()
    code = textwrap.dedent("""\
        import sys
        from probe.study._layer_listing import precheck_layers
        from probe.study._spec import StudySpec, StudySpecError
        model = {"name": "resnet", "arch": "torchvision:resnet18", "layers": ["layer1", "layer5"]}
        spec = StudySpec.from_dict({"data": {"dataset": "digits"}, "models": [model]}, folder=".")
        try:
            precheck_layers(spec)
        except StudySpecError as err:
            print(err)
        print(sorted(m for m in ("torch", "numpy", "zoo", "torchvision") if m in sys.modules))
    """)
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                         check=False, env={**os.environ, "NEUROPROBE_CACHE": str(cache)})
    assert run.returncode == 0, run.stderr
    message, loaded = run.stdout.strip().splitlines()
    with pytest.raises(KeyError) as slow:  # what building the model says
        probe.resolve_layers(torchvision.models.resnet18(weights=None), ["layer1", "layer5"])
    assert message == f"models[0].layers (model 'resnet'): {slow.value.args[0]}"
    assert loaded == "[]"  # what makes it quick (timed in the closing note, not here)
    assert not cache.exists()  # nothing written: the listing was the package's


def test_the_shipped_listing_needs_the_versions_it_was_made_with(monkeypatch):
    entry = shipped_entry("torchvision:resnet18")
    bad = StudySpec.from_dict({"data": {"dataset": "digits"},
                               "models": [{"name": "resnet", "arch": "torchvision:resnet18", "layers": ["layer5"]}]})
    generated_with = _layer_listing._shipped_listings()["versions"]["torchvision"]
    real_version = _layer_listing._version

    def pretend(torchvision_version):
        monkeypatch.setattr(_layer_listing, "_version",
                            lambda name: torchvision_version if name == "torchvision" else real_version(name))

    pretend(generated_with + "+cu999")  # another build of the same release
    if shipped_listing(entry) is None:
        pytest.skip(f"the shipped listing does not fit this environment's libraries: {REGENERATE}")
    with pytest.raises(StudySpecError, match="unknown layer 'layer5'"):
        precheck_layers(bad)
    pretend("0.1.0")
    assert shipped_listing(entry) is None and stored_listing(entry) is None
    precheck_layers(bad)  # left to the build
    pretend(None)  # torchvision missing
    assert shipped_listing(entry) is None
    monkeypatch.undo()
    assert shipped_listing(entry) is not None
    assert shipped_listing(ModelEntrySpec(name="t", source="arch", spec="timm:resnet18")) is None
    assert shipped_listing(ModelEntrySpec(name="t", source="arch", spec="torchvision:resnet1800")) is None


def test_a_damaged_shipped_file_is_ignored(monkeypatch, tmp_path):
    entry = shipped_entry("torchvision:resnet18")
    for content in (None, b"not gzip", gzip.compress(b"{not json"), gzip.compress(b'{"models": {}}')):
        path = tmp_path / "listing.json.gz"
        if content is not None:
            path.write_bytes(content)
        monkeypatch.setattr(_layer_listing, "SHIPPED_LISTINGS", path)
        _layer_listing._shipped_listings.cache_clear()
        try:
            assert shipped_listing(entry) is None
        finally:
            _layer_listing._shipped_listings.cache_clear()


def test_probe_train_stores_the_listing_a_study_of_its_run_reads(tmp_path):
    out = tmp_path / "run"
    args = ["mlp", "--dataset", "digits", "--epochs", "1", "--device", "cpu", "--quiet", "--set", "hidden=[16]"]
    assert main(["train", *args, "--out", str(out)]) == 0
    model_entry = {"name": "mlp", "run": "run", "layers": ["fc9"]}
    study = StudySpec.from_dict({"data": {"dataset": "digits"}, "models": [model_entry]}, folder=tmp_path)
    stored = stored_listing(study.models[0])
    assert stored is not None and stored["key"] == listing_key(study.models[0])
    model = zoo.load_model(str(out))
    assert stored["modules"] == [name for name, _ in model.named_modules() if name]
    assert stored["auto"] == default_layers(model)
    with pytest.raises(StudySpecError, match=re.escape("models[0].layers (model 'mlp'): unknown layer 'fc9'")):
        precheck_layers(study)


def test_a_run_of_a_model_without_recordable_layers_is_listed_as_the_study_lists_it(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model": {"name": "net"}}))
    model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(), nn.Sequential(nn.ReLU(), nn.Linear(8, 2)))
    remember_run_layers(tmp_path, model)
    stored = stored_listing(ModelEntrySpec(name="net", source="run", spec=str(tmp_path)))
    assert stored["modules"] == ["0", "1", "2", "2.0", "2.1"] and stored["auto"] == default_layers(model)
