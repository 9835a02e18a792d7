"""Loading: zoo run folders (every registered model), damaged files, wrong architectures, users' state dicts."""

from __future__ import annotations

import pickle

import pytest
import torch
import torchvision

import zoo
from _zoo_inputs import example_input, is_text_model, model_options
from zoo import RunDir


def _input_for(model: torch.nn.Module, batch: int = 3) -> torch.Tensor:
    return example_input(model, batch)


def _assert_equal_outputs(a, b) -> None:
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            _assert_equal_outputs(a[key], b[key])
    elif isinstance(a, (tuple, list)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _assert_equal_outputs(x, y)
    else:
        assert a == b


def _seeded(fn, x):
    # MAE masks and VAE samples draw random numbers in forward; seed so both runs draw the same.
    torch.manual_seed(123)
    with torch.no_grad():
        return fn(x)


def _save_run(model: torch.nn.Module, path) -> RunDir:
    run = RunDir.create(path)
    run.write_config(model.config)
    run.save_final(model, {"loss": 0.0})
    return run


# ----------------------------------------------------------------------------- every registered model


@pytest.mark.parametrize("name", zoo.list_models())
def test_every_model_saves_and_loads_with_identical_outputs(name, tmp_path):
    torch.manual_seed(0)
    model = zoo.create_model(name, **(model_options(name) if is_text_model(name) else {})).eval()  # default shapes
    x = _input_for(model)
    encoded = _seeded(model.encode, x)
    assert encoded.ndim == 2 and encoded.shape[0] == x.shape[0]
    _save_run(model, tmp_path / name)

    torch.manual_seed(1)  # a different initialisation, overwritten by the load
    loaded = zoo.load(tmp_path / name)
    assert not loaded.training and type(loaded) is type(model) and loaded.config == model.config
    assert torch.equal(_seeded(loaded.encode, x), encoded)
    _assert_equal_outputs(_seeded(loaded, x), _seeded(model, x))
    if hasattr(model, "reconstruct"):
        _assert_equal_outputs(_seeded(loaded.reconstruct, x), _seeded(model.reconstruct, x))


# ----------------------------------------------------------------------------- clear errors


def test_missing_folder_and_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        zoo.load(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"):
        zoo.load(tmp_path / "empty")
    run = RunDir.create(tmp_path / "unfinished")
    run.write_config(zoo.create_model("mlp").config)
    with pytest.raises(FileNotFoundError, match=r"model\.safetensors.*train"):
        zoo.load(run.path)
    run.config_path.write_text("{")
    with pytest.raises(ValueError, match=r"config\.json.*damaged"):
        zoo.load(run.path)


def test_unfinished_run_points_to_resume_and_loads_its_checkpoint(tmp_path):
    model = zoo.create_model("mlp").eval()
    run = RunDir.create(tmp_path / "run")
    run.write_config(model.config)
    run.save_checkpoint(model=model, optimizer=None, scheduler=None, epoch=1, history=[], extra={})
    with pytest.raises(FileNotFoundError, match="resume=True"):
        zoo.load(run.path)
    loaded = zoo.load(run.path, checkpoint=True)
    x = _input_for(model)
    assert torch.equal(_seeded(loaded, x), _seeded(model, x))


@pytest.mark.parametrize("verify", [True, False])  # caught by the manifest's checksum, or else by the reader
@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_damaged_weights_say_how_to_recover(tmp_path, damage, verify):
    run = _save_run(zoo.create_model("mlp"), tmp_path / "run")
    data = run.model_path.read_bytes()
    damaged = {"truncate": data[: len(data) - 100], "garbage": b"\x00\x01not a safetensors file" * 10, "empty": b""}
    run.model_path.write_bytes(damaged[damage])
    with pytest.raises(ValueError, match=r"damaged.*resume=True.*retrain") as err:
        zoo.load(run.path, verify=verify)
    assert isinstance(err.value, zoo.CorruptFileError) == verify


def test_weights_of_another_architecture_name_both_and_the_mismatch(tmp_path):
    run = _save_run(zoo.create_model("mlp"), tmp_path / "run")
    run.write_config(zoo.create_model("cnn").config)  # config says cnn, weights are an mlp's
    with pytest.raises(ValueError, match=r"'mlp'.*'cnn'.*missing key"):
        zoo.load(run.path)

    wide = zoo.create_model("mlp", hidden=[17])
    with pytest.raises(ValueError, match=r"shape mismatch.*body.*\(17,"):
        zoo.load_weights(wide, run.model_path)


# ----------------------------------------------------------------------------- users' own state dicts


@pytest.fixture(scope="module")
def torchvision_resnet18():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=7).eval()
    with torch.no_grad():  # non-trivial batch-norm statistics, so that buffers matter
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    return model


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_torchvision_state_dict_round_trip(torchvision_resnet18, tmp_path, suffix):
    path = tmp_path / f"resnet18{suffix}"
    state = torchvision_resnet18.state_dict()
    if suffix == ".pt":
        torch.save({"epoch": 3, "state_dict": state}, path)  # a typical training-script checkpoint
    else:
        zoo.save_tensor_file(path, state)
    loaded_state = zoo.load_state_dict_file(path)
    assert sorted(loaded_state) == sorted(state)
    model = zoo.load_torchvision("resnet18", path, num_classes=7)
    assert not model.training
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), torchvision_resnet18(x))


def test_torchvision_errors(torchvision_resnet18, tmp_path):
    path = tmp_path / "resnet18.pt"
    torch.save(torchvision_resnet18.state_dict(), path)
    with pytest.raises(KeyError, match="resnet18"):
        zoo.load_torchvision("resnet81", path)
    with pytest.raises(ValueError, match=r"fc\.weight: file \(7, 512\) vs model \(1000, 512\)"):
        zoo.load_torchvision("resnet18", path)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ValueError, match="damaged"):
        zoo.load_state_dict_file(truncated)
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(ValueError, match="no state dict"):
        zoo.load_state_dict_file(tmp_path / "list.pt")
    (tmp_path / "weights.npz").write_bytes(b"")
    with pytest.raises(ValueError, match="suffix"):
        zoo.load_state_dict_file(tmp_path / "weights.npz")


class _Payload:
    """Unpickling this object would create a file: the code-execution that weights_only prevents."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


class _CustomLayerConfig:
    """A user's own class pickled into a checkpoint: rebuilding it means importing and running user code."""

    def __init__(self):
        self.width = 3


@pytest.mark.parametrize("payload", ["code", "custom-class"])
def test_pickles_that_would_run_code_are_refused(tmp_path, payload):
    marker = tmp_path / "pwned"
    obj = _Payload(marker) if payload == "code" else _CustomLayerConfig()
    path = tmp_path / "evil.pth"
    torch.save({"weight": torch.zeros(2), "payload": obj}, path, pickle_module=pickle)
    with pytest.raises(ValueError, match=r"refused.*code-executing.*safetensors"):
        zoo.load_state_dict_file(path)
    with pytest.raises(ValueError, match="refused"):
        zoo.load_torchvision("resnet18", path)
    assert not marker.exists()


def test_torchvision_resnet18_state_dict_into_the_zoo_resnet18(tmp_path):
    zoo_model = zoo.create_model("resnet18", input_shape=(3, 16, 16), n_classes=10).eval()
    # a torchvision resnet18 adapted the same way (3x3 stem, no max-pool) maps key for key
    reference = torchvision.models.resnet18(weights=None, num_classes=10)
    reference.conv1 = torch.nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    reference.maxpool = torch.nn.Identity()
    reference.eval()
    path = tmp_path / "adapted.pth"
    torch.save(reference.state_dict(), path)
    zoo.load_weights(zoo_model, path)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(zoo_model(x), reference(x))

    # the stock architecture differs in its stem and classifier: strict loading names them ...
    stock = torchvision.models.resnet18(weights=None).state_dict()
    with pytest.raises(ValueError, match=r"conv1\.weight: file \(64, 3, 7, 7\) vs model \(64, 3, 3, 3\)"):
        zoo.load_weights(zoo_model, stock)
    # ... and skip_mismatched keeps those two at their current values and loads the rest
    with pytest.warns(UserWarning, match=r"conv1\.weight.*fc\.weight"):
        zoo.load_weights(zoo_model, stock, skip_mismatched=True)
    assert torch.equal(zoo_model.layer1[0].conv1.weight, stock["layer1.0.conv1.weight"])
    assert torch.equal(zoo_model.conv1.weight, reference.conv1.weight)


def test_prefixed_state_dicts_are_matched(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    source = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    wrapped = {f"module.{key}": value for key, value in source.state_dict().items()}  # DataParallel naming
    zoo.load_weights(model, wrapped)
    for key, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[key], value)
