"""The registry and the model contract, over every registered model."""

import json

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

import zoo
from _zoo_inputs import example_input, is_text_model, model_options
from zoo.models import MaskedAutoencoder, default_patch_size, patchify, random_masking, unpatchify

FAMILIES = {"supervised", "autoencoder", "mae", "contrastive", "image-text", "word-embedding", "masked-lm", "pretext"}
SHAPES = [(1, 8, 8), (3, 16, 16), (1, 28, 28)]


def test_registry_lists_the_contracted_models():
    expected = {"cnn", "cnn10", "mlp", "resnet18", "ae-linear", "ae-mlp", "ae-conv", "ae-denoising", "ae-sparse",
                "ae-contractive", "ae-vae", "mae", "simclr", "clip", "word2vec", "mlm", "vq-vae", "colorization"}
    assert expected <= set(zoo.list_models())
    assert zoo.list_models("mae") == ["mae"]
    assert {zoo.model_entry(name).family for name in zoo.list_models()} == FAMILIES


def test_register_model_refuses_duplicates():
    with pytest.raises(ValueError, match="already registered"):
        zoo.register_model("cnn", objective=lambda m, x, y: None)(nn.Linear)


def test_unknown_model_lists_nearest_first():
    with pytest.raises(KeyError, match=r"unknown model 'cnnn'; did you mean 'cnn'.*zoo.list_models"):
        zoo.create_model("cnnn")


@pytest.mark.parametrize("name", zoo.list_models())
def test_model_honours_the_contract(name):
    torch.manual_seed(0)
    options = model_options(name)
    options.pop("n_classes", None)  # the supervised models' default
    model = zoo.create_model(name, **options).eval()
    assert model.family in FAMILIES and model.family == zoo.model_entry(name).family
    assert model.config["name"] == name and model.config["input_shape"] == list(options["input_shape"])
    x = example_input(model)
    features = model.encode(x)
    assert features.dim() == 2 and features.shape[0] == 3
    modules = dict(model.named_modules())
    assert model.recordable_layers() and all(layer in modules for layer in model.recordable_layers())
    called = set()  # what probe.record hooks: each recordable layer must run in forward
    hooks = [modules[layer].register_forward_hook(lambda *_, layer=layer: called.add(layer))
             for layer in model.recordable_layers()]
    with torch.no_grad():
        model(x)
    for hook in hooks:
        hook.remove()
    assert called == set(model.recordable_layers())
    if model.family == "autoencoder":
        assert model.reconstruct(x).shape == x.shape
    if model.family == "mae":
        x_hat, mask = model.reconstruct(x)
        assert x_hat.shape == x.shape and mask.shape == (3, model.n_patches)
    # The config rebuilds the same architecture (what zoo.load relies on).
    rebuilt = zoo.create_model(**json.loads(json.dumps(model.config)))  # as zoo.load does, from config.json
    shapes = lambda m: {k: tuple(v.shape) for k, v in m.state_dict().items()}
    assert shapes(rebuilt) == shapes(model) and json.dumps(rebuilt.config) == json.dumps(model.config)


@pytest.mark.parametrize("shape", SHAPES[1:])
@pytest.mark.parametrize("name", [n for n in zoo.list_models() if n != "resnet18" and not is_text_model(n)])
def test_models_adapt_to_input_shape_and_classes(name, shape):
    config = {"input_shape": shape}
    if zoo.model_entry(name).family == "supervised":
        config["n_classes"] = 7
    model = zoo.create_model(name, **config).eval()
    x = torch.randn(2, *shape)
    assert model.encode(x).shape[0] == 2
    if "n_classes" in config:
        assert model(x).shape == (2, 7)


def test_resnet18_keeps_torchvision_names_and_small_image_stem():
    ours = zoo.create_model("resnet18", input_shape=(3, 32, 32), n_classes=10)
    reference = torchvision.models.resnet18(num_classes=10).state_dict()
    state = ours.state_dict()
    assert list(state) == list(reference)
    differing = {k for k in state if state[k].shape != reference[k].shape}
    assert differing == {"conv1.weight"}
    assert ours.conv1.kernel_size == (3, 3) and ours.conv1.stride == (1, 1) and isinstance(ours.maxpool, nn.Identity)
    reference.pop("conv1.weight")
    ours.load_state_dict(reference, strict=False)  # a torchvision state_dict maps onto it
    assert torch.equal(ours.layer3[1].conv2.weight, reference["layer3.1.conv2.weight"])
    gray = zoo.create_model("resnet18", input_shape=(1, 8, 8), n_classes=4)
    assert gray(torch.randn(2, 1, 8, 8)).shape == (2, 4)


def test_conv_autoencoder_rejects_odd_sizes():
    with pytest.raises(ValueError, match="even"):
        zoo.create_model("ae-conv", input_shape=(1, 7, 7))


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="corruption"):
        zoo.create_model("ae-denoising", corruption="salt")
    with pytest.raises(ValueError, match="mask_ratio"):
        zoo.create_model("mae", mask_ratio=1.0)
    with pytest.raises(TypeError):
        zoo.create_model("ae-mlp", not_an_option=1)


@pytest.mark.parametrize("shape, patch", [((1, 8, 8), 2), ((3, 12, 12), 2), ((3, 32, 32), 4)])
def test_patchify_matches_a_loop_and_unpatchify_inverts_it(shape, patch):
    x = torch.randn(2, *shape)
    patches = patchify(x, patch)
    channels, height, width = shape
    cols = width // patch
    for b in range(2):
        for index in range(patches.shape[1]):
            r, c = divmod(index, cols)
            block = x[b, :, r * patch : (r + 1) * patch, c * patch : (c + 1) * patch]  # (C, p, p)
            assert torch.equal(patches[b, index], block.permute(1, 2, 0).reshape(-1))
    assert torch.equal(unpatchify(patches, patch, shape), x)


def test_random_masking_hides_the_ratio_per_sample():
    torch.manual_seed(0)
    ids_keep, ids_restore, mask = random_masking(64, 16, 0.75)
    assert mask.shape == (64, 16) and torch.all(mask.sum(1) == 12)
    assert len({tuple(row.tolist()) for row in mask}) > 1  # independent per sample
    hidden = torch.ones(64, 16).scatter(1, ids_keep, 0.0)
    assert torch.equal(hidden, mask)
    shuffle = ids_restore.argsort(1)
    assert torch.equal(shuffle[:, :4], ids_keep)


def test_default_patch_size():
    assert [default_patch_size(h, h) for h in (8, 16, 28, 32, 224)] == [2, 2, 4, 4, 16]
    model = MaskedAutoencoder((3, 32, 32))
    assert model.patch_size == 4 and model.n_patches == 64


def test_augment_presets_suit_the_data_and_are_reproducible():
    digits_preset, rgb_preset = zoo.augmentation_for((1, 8, 8)), zoo.augmentation_for((3, 32, 32))
    assert not digits_preset.flip and digits_preset.color_jitter == 0 and digits_preset.max_rotation > 0
    assert rgb_preset.flip and rgb_preset.color_jitter > 0
    x = torch.randn(16, 1, 8, 8)
    torch.manual_seed(0)
    a = zoo.augment(x, digits_preset)
    torch.manual_seed(0)
    assert torch.equal(a, zoo.augment(x, digits_preset)) and a.shape == x.shape and not torch.allclose(a, x)
    identity = zoo.augmentation_for((1, 8, 8), max_rotation=0, max_shift=0, scale=(1, 1), noise_std=0)
    assert torch.allclose(zoo.augment(x, identity), x, atol=1e-5)
    with pytest.raises(ValueError, match="unknown augmentation"):
        zoo.augmentation_for((1, 8, 8), hue=0.1)


def test_a_pure_shift_moves_the_image_by_whole_pixels():
    x = torch.zeros(1, 1, 8, 8)
    x[0, 0, 3, 3] = 1.0
    torch.manual_seed(0)
    shifted = zoo.augment(x, zoo.Augmentation(max_shift=0.25))  # up to 2 pixels, a random fraction
    assert float(shifted.sum()) == pytest.approx(1.0, abs=1e-5)  # bilinear resampling keeps the mass inside


def test_augmentation_from_sets_only_the_named_transforms():
    aug = zoo.augmentation_from({"max_shift": 0.1, "flip": True, "scale": [1.0, 1.2]})
    assert aug == zoo.Augmentation(max_shift=0.1, flip=True, scale=(1.0, 1.2))
    assert aug.max_rotation == 0 and aug.noise_std == 0 and aug.color_jitter == 0
    assert zoo.augmentation_from(aug.to_dict()) == aug  # what a run's config.json stores reads back
    with pytest.raises(ValueError, match="unknown augmentation option 'flips'.*'flip'"):
        zoo.augmentation_from({"flips": True})


@pytest.mark.parametrize("name, side", [("cnn", 8), ("cnn10", 12)])
def test_a_classifier_augments_only_while_training(name, side):
    from zoo.models.supervised import classification_objective, training_augmentation

    assert training_augmentation(None) is None and training_augmentation({}) is None
    model = zoo.create_model(name, input_shape=(1, side, side), augment={"flip": True, "max_shift": 0.2})
    assert model.config["augment"] == zoo.augmentation_from({"flip": True, "max_shift": 0.2}).to_dict()
    plain = zoo.create_model(name, input_shape=(1, side, side))
    assert plain.augmentation is None and plain.config["augment"] is None
    images, labels = torch.randn(32, 1, side, side), torch.arange(32) % 10
    model.train()
    torch.manual_seed(0)
    loss, _ = classification_objective(model, images, labels)
    torch.manual_seed(0)
    expected = nn.functional.cross_entropy(model(zoo.augment(images, model.augmentation)), labels)
    assert torch.allclose(loss, expected)
    assert not torch.allclose(loss, nn.functional.cross_entropy(model(images), labels))
    model.eval()
    loss, _ = classification_objective(model, images, labels)
    assert torch.equal(loss, nn.functional.cross_entropy(model(images), labels))


def test_a_run_trained_with_augmentation_keeps_it_and_resumes_only_with_it(tmp_path):
    # 8x8 digits: too small for the unpadded 7th conv
    options = {"out": tmp_path / "run", "progress": False, "device": "cpu", "width": 4, "conv7_padding": "same"}
    zoo.train("cnn10", "digits", epochs=1, augment={"flip": True}, **options)
    assert zoo.load(tmp_path / "run").augmentation == zoo.Augmentation(flip=True)
    with pytest.raises(ValueError, match="model.augment.flip"):
        zoo.train("cnn10", "digits", epochs=2, resume=True, **options)
    zoo.train("cnn10", "digits", epochs=2, resume=True, augment={"flip": True}, **options)
    assert len(zoo.RunDir(tmp_path / "run").read_log_rows()) == 2


def test_a_run_written_before_the_augment_option_resumes_without_augmentation(tmp_path):
    options = {"out": tmp_path / "run", "progress": False, "device": "cpu", "width": 4, "conv7_padding": "same"}
    zoo.train("cnn10", "digits", epochs=1, **options)
    config = zoo.RunDir(tmp_path / "run").read_config()
    assert config["model"]["augment"] is None
    del config["model"]["augment"]  # as runs were written before the option existed
    zoo.RunDir(tmp_path / "run").write_config(config)
    zoo.train("cnn10", "digits", epochs=2, resume=True, **options)
    assert zoo.load(tmp_path / "run").augmentation is None
    with pytest.raises(ValueError, match=r"'model.augment.flip': \('\(not set\)', True\)"):
        zoo.train("cnn10", "digits", epochs=3, resume=True, augment={"flip": True}, **options)


def test_train_defaults_are_registered_per_model():
    assert all(zoo.train_defaults(name).epochs >= 1 for name in zoo.list_models())
    assert zoo.train_defaults("ae-linear").weight_decay == 0.0  # the PCA comparison needs an unregularised optimum


def _map_sides(model: nn.Module, side: int) -> list[int]:
    x = torch.randn(2, 1, side, side)
    sides = []
    for name, layer in model.features.named_children():
        x = layer(x)
        if name.startswith("relu"):
            sides.append(x.shape[-1])
    return sides


def test_cnn10_has_the_tiny10_layout_with_an_unpadded_seventh_conv():
    # Kornblith et al. 2019, Table E.1: 3x3 convs at 16, 16, 32 (stride 2), 32, 32, 64 (stride 2), 64 (valid
    # padding), a 1x1 at 64; the map sides follow from the strides and the one unpadded 3x3 conv
    model = zoo.create_model("cnn10", input_shape=(1, 28, 28))
    assert model.config["conv7_padding"] == "valid"
    assert [model.features.get_submodule(f"conv{i}").out_channels for i in range(1, 9)] == [16, 16, 32, 32, 32, 64,
                                                                                           64, 64]
    assert _map_sides(model, 28) == [28, 28, 14, 14, 14, 7, 5, 5]
    assert _map_sides(zoo.create_model("cnn10", input_shape=(1, 32, 32)), 32) == [32, 32, 16, 16, 16, 8, 6, 6]
    padded = zoo.create_model("cnn10", input_shape=(1, 28, 28), conv7_padding="same")
    assert _map_sides(padded, 28) == [28, 28, 14, 14, 14, 7, 7, 7]
    assert _map_sides(zoo.create_model("cnn10", input_shape=(1, 9, 9)), 9)[-1] == 1  # the smallest it takes
    with pytest.raises(ValueError, match="at least 9x9; give conv7_padding='same'"):
        zoo.create_model("cnn10", input_shape=(1, 8, 8))
    with pytest.raises(ValueError, match="conv7_padding must be one of"):
        zoo.create_model("cnn10", conv7_padding="full")


def _labelled_image_folder(root) -> str:
    """Two classes of random 12x12 grey images, train/ and test/: big enough for cnn10's unpadded conv."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for label in ("a", "b"):
            (root / split / label).mkdir(parents=True)
            for i in range(4):
                Image.fromarray(rng.integers(0, 256, (12, 12), dtype=np.uint8)).save(root / split / label / f"{i}.png")
    return f"imagefolder:{root}"


def test_a_cnn10_run_written_before_conv7_padding_loads_and_resumes_as_it_was_trained(tmp_path):
    dataset = _labelled_image_folder(tmp_path / "images")
    options = {"out": tmp_path / "run", "progress": False, "device": "cpu", "width": 4,
               "dataset_options": {"image_size": 12, "grayscale": True}}
    trained = zoo.train("cnn10", dataset, epochs=1, conv7_padding="same", **options).model.eval()
    run = zoo.RunDir(tmp_path / "run")
    config = run.read_config()
    del config["model"]["conv7_padding"]  # as runs were written before the option existed
    run.write_config(config)
    loaded = zoo.load(tmp_path / "run")
    assert loaded.config["conv7_padding"] == "same" and loaded.features.conv7.padding == (1, 1)
    x = torch.randn(3, 1, 12, 12)
    with torch.no_grad():
        assert torch.equal(loaded(x), trained(x))
    with pytest.raises(ValueError, match=r"'model.conv7_padding': \('same', 'valid'\)"):
        zoo.train("cnn10", dataset, epochs=2, resume=True, **options)  # the default is the paper's layout now
    zoo.train("cnn10", dataset, epochs=2, resume=True, conv7_padding="same", **options)
    assert len(run.read_log_rows()) == 2
