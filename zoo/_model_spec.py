"""One function for every way of naming a model: ``zoo.load_model(spec)``.

=========================  =====================================================================
spelling                   what it loads
=========================  =====================================================================
``RUN_DIR``                a run folder written by ``zoo.train`` (``zoo.load``)
``zoo:NAME`` / ``NAME``    an untrained zoo model (``zoo.create_model``); a bare name only when no
                           other spelling knows it
``pretrained:NAME``        a pretrained network of ``zoo.list_pretrained()`` (``zoo.load_pretrained``)
``torchvision:NAME``       a torchvision architecture; random weights unless ``weights`` is given
``timm:NAME``              a timm architecture; random weights unless ``weights`` is given
``hf:PATH``                a Hugging Face model from a local folder (or the Hugging Face cache)
``FILE.py:FACTORY``        ``FACTORY()`` of a Python file, with ``weights`` loaded if given
=========================  =====================================================================
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from zoo._device import resolve_device
from zoo._load import load_weights
from zoo._names import UnknownNameError, unknown_name_error
from zoo._preprocessing import Preprocessing
from zoo._pretrained import (
    PIP_PRETRAINED,
    imagenet_class_names,
    list_pretrained,
    load_pretrained,
    require_package,
    torchvision_preprocessing,
    torchvision_state_dict,
    torchvision_weights,
)

__all__ = ["SPELLINGS", "load_model"]

PIP_HF = 'pip install "neuroprobe[hf]"'
#: How each spelling reads, for messages.
SPELLINGS = ("RUN_DIR", "zoo:NAME", "pretrained:NAME", "torchvision:NAME", "timm:NAME", "hf:PATH", "FILE.py:FACTORY")
#: ``weights`` value that asks torchvision or timm for their own pretrained weights.
LIBRARY_WEIGHTS = "pretrained"
_FACTORY = re.compile(r"(?P<file>.+\.py):(?P<factory>[A-Za-z_]\w*)")
_LISTING = "zoo.list_models() or zoo.list_pretrained(), or spell the model " + " / ".join(SPELLINGS)


def load_model(
    spec: str | os.PathLike,
    *,
    weights: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    allow_download: bool = False,
) -> nn.Module:
    """Any model a researcher names, in eval mode, with ``model.preprocessing`` (a ``Preprocessing`` or None).

    Parameters
    ----------
    spec
        A run folder, ``zoo:NAME`` or a bare zoo name, ``pretrained:NAME``, ``torchvision:NAME``,
        ``timm:NAME``, ``hf:PATH`` or ``path/to/file.py:FACTORY`` (see the module's table). A bare
        name that more than one spelling knows (the zoo's ``resnet18`` and torchvision's) is refused
        with the spellings to choose from.
    weights
        A ``.safetensors`` or ``.pt`` / ``.pth`` file (read with ``weights_only=True``) loaded strictly
        into the model built from ``spec``; for ``torchvision:`` and ``timm:`` also ``"pretrained"``
        (the library's own ImageNet weights, from its cache) or a torchvision weights name such as
        ``"IMAGENET1K_V2"``. Not taken by ``pretrained:`` and ``hf:``, which bring their own.
    device
        Where to put the model (``"auto"`` picks CUDA when present).
    allow_download
        Download weights that are not in their cache (``pretrained:``, ``torchvision:`` and ``timm:``
        with ``weights="pretrained"``, ``hf:`` with a Hub id); never done otherwise.

    Returns
    -------
    nn.Module
        The model. ``model.preprocessing`` says the input it expects: a pretrained network's own, a zoo
        run's (its ``input_shape`` and its training dataset's mean and std), None when unknown (an
        untrained zoo model, a text model, a factory that sets none).

    Raises
    ------
    UnknownNameError
        An unknown name or spelling (a KeyError and a ValueError; the message lists the nearest ones).
    ValueError
        A bare name that several spellings know, or weights that do not fit the model.
    FileNotFoundError
        A run folder, file or cached weights that do not exist (the message says how to get them).
    ModuleNotFoundError
        An optional package is missing; the message gives the pip line.
    """
    spec = os.fspath(spec)
    model = _build(spec, weights, allow_download)
    if not hasattr(model, "preprocessing"):
        model.preprocessing = None
    return model.to(resolve_device(device)).eval()


def _build(spec: str, weights: Any, allow_download: bool) -> nn.Module:
    if not spec:
        raise ValueError(f"name a model: {_LISTING}")
    if Path(spec).is_dir():
        return _run_folder(Path(spec), weights)
    scheme, colon, rest = spec.partition(":")
    if colon and scheme in _SCHEMES:
        if not rest:
            raise ValueError(f"{spec!r} names no model after {scheme + ':'!r}, e.g. {scheme}:NAME")
        return _SCHEMES[scheme](rest, weights, allow_download)
    factory = _FACTORY.fullmatch(spec)
    if factory:
        return _from_file(Path(factory["file"]), factory["factory"], weights)
    if colon and not re.fullmatch(r"[A-Za-z]", scheme):  # not a Windows drive letter
        raise unknown_name_error("model spelling", f"{scheme}:", [f"{s}:" for s in _SCHEMES], listing=_LISTING)
    if spec.endswith(".py"):
        raise ValueError(f"name the function that builds the model: {spec}:FACTORY")
    if "/" in spec or "\\" in spec or spec.startswith("."):
        raise FileNotFoundError(
            f"run directory {spec} does not exist; pass a run directory from zoo.train (or `probe train`), a zoo model "
            f"name (see zoo.list_models()) or another spelling: {', '.join(SPELLINGS)}"
        )
    return _bare(spec, weights, allow_download)


# -- bare names ------------------------------------------------------------------------------
def _bare(name: str, weights: Any, allow_download: bool) -> nn.Module:
    import zoo  # through the package, so that the registry is complete

    spellings = (["zoo"] if name in zoo.list_models() else []) + _claims(name)
    if spellings in (["zoo"], ["pretrained"]):
        return _SCHEMES[spellings[0]](name, weights, allow_download)
    if spellings:
        problem = "names more than one model" if len(spellings) > 1 else "is not a zoo or pretrained model"
        raise ValueError(
            f"{name!r} {problem}; spell the one you mean: "
            + ", ".join(f"{scheme}:{name} ({_MEANING[scheme]})" for scheme in spellings)
        )
    try:
        return _zoo(name, weights, allow_download)  # a name that only the zoo's registry can still know
    except UnknownNameError as err:
        valid = sorted({*zoo.list_models(), *list_pretrained()})
        raise unknown_name_error("model", name, valid, listing=_LISTING) from err


def _claims(name: str) -> list[str]:
    """The spellings other than ``zoo:`` that know ``name``."""
    import torchvision

    known = ["pretrained"] if name in list_pretrained() else []
    if name in torchvision.models.list_models():
        known.append("torchvision")
    if importlib.util.find_spec("timm") is not None:
        import timm

        if timm.is_model(name):
            known.append("timm")
    return known


_MEANING = {
    "zoo": "the zoo's untrained model",
    "pretrained": "pretrained weights, see zoo.list_pretrained()",
    "torchvision": "torchvision's architecture, random weights unless weights are given",
    "timm": "timm's architecture, random weights unless weights are given",
}


# -- zoo models ------------------------------------------------------------------------------
def _run_folder(path: Path, weights: Any) -> nn.Module:
    import zoo

    if _is_hugging_face_folder(path):
        raise ValueError(f"{str(path)!r} holds a Hugging Face model, not a zoo run: spell it hf:{path}")
    model = zoo.load(path)
    if weights is not None:
        load_weights(model, weights)
    model.preprocessing = _run_preprocessing(model, path)
    return model


def _is_hugging_face_folder(path: Path) -> bool:
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and "model_type" in config and "model" not in config


def _run_preprocessing(model: nn.Module, path: Path) -> Preprocessing | None:
    """A zoo run's input: its ``input_shape``, and its training dataset's mean, std and class names."""
    import zoo

    config = getattr(model, "config", None)
    shape = config.get("input_shape") if isinstance(config, dict) else None
    if shape is None or len(shape) != 3:
        return None
    try:
        name, options = zoo.RunDir(path).training_dataset()
        info = zoo.load_dataset(name, split="train", **options).info
        class_names = info.class_names if config.get("n_classes") == info.n_classes else None
        return Preprocessing(tuple(shape[1:]), info.mean, info.std, channels=int(shape[0]), class_names=class_names)
    except (OSError, LookupError, ValueError, TypeError, AttributeError):  # the dataset is not here, or unnamed
        return None


def _zoo(name: str, weights: Any, allow_download: bool) -> nn.Module:
    import zoo

    model = zoo.create_model(name)
    if weights is not None:
        load_weights(model, weights)
    return model


def _pretrained(name: str, weights: Any, allow_download: bool) -> nn.Module:
    if weights is not None:
        raise ValueError(
            f"pretrained:{name} brings its own weights; to load {weights} into an architecture, spell it "
            f"torchvision:NAME, timm:NAME or FILE.py:FACTORY"
        )
    return load_pretrained(name, allow_download=allow_download)


# -- torchvision and timm architectures --------------------------------------------------------
def _torchvision(name: str, weights: Any, allow_download: bool) -> nn.Module:
    import torchvision

    valid = torchvision.models.list_models()
    if name not in valid:
        raise unknown_name_error("torchvision model", name, valid, listing="torchvision.models.list_models()")
    model = torchvision.models.get_model(name, weights=None)
    try:
        default = torchvision_weights(name)
    except UnknownNameError:
        default = None
    preprocessing = torchvision_preprocessing(default, class_names=False) if default is not None else None
    if isinstance(weights, str) and _names_library_weights(weights):
        chosen = torchvision_weights(name, "DEFAULT" if weights == LIBRARY_WEIGHTS else weights)
        load_weights(model, torchvision_state_dict(chosen, allow_download), source_name=f"torchvision's {chosen}")
        preprocessing = torchvision_preprocessing(chosen)
    elif weights is not None:
        load_weights(model, weights)
    model.preprocessing = preprocessing
    return model


def _names_library_weights(weights: str) -> bool:
    """``"pretrained"`` or a torchvision weights name (``"IMAGENET1K_V1"``), not a file."""
    if weights == LIBRARY_WEIGHTS:
        return True
    return re.fullmatch(r"[A-Z][A-Z0-9_]*", weights) is not None and not Path(weights).exists()


def _timm(name: str, weights: Any, allow_download: bool) -> nn.Module:
    timm = require_package("timm", PIP_PRETRAINED, f"timm:{name}")
    if not timm.is_model(name):
        raise unknown_name_error("timm model", name, timm.list_models(), listing="timm.list_models()")
    pretrained = weights == LIBRARY_WEIGHTS
    if pretrained:
        model = _timm_pretrained(timm, name, allow_download)
    else:
        model = timm.create_model(name, pretrained=False)
        if weights is not None:
            load_weights(model, weights)
    config = timm.data.resolve_data_config({}, model=model)
    channels, height, width = config["input_size"]
    interpolation = config.get("interpolation")
    model.preprocessing = Preprocessing(
        (height, width),
        config["mean"],
        config["std"],
        channels=channels,
        class_names=imagenet_class_names() if pretrained and getattr(model, "num_classes", None) == 1000 else None,
        interpolation=interpolation if interpolation in ("bilinear", "bicubic", "nearest") else "bilinear",
        crop_fraction=min(1.0, float(config.get("crop_pct", 1.0))),
    )
    return model


def _timm_pretrained(timm: Any, name: str, allow_download: bool) -> nn.Module:
    """timm's pretrained weights: from the Hugging Face cache, or downloaded by timm when allowed."""
    from huggingface_hub import constants, try_to_load_from_cache

    hub_id = getattr(timm.models.get_pretrained_cfg(name), "hf_hub_id", None)
    for filename in ("model.safetensors", "pytorch_model.bin") if hub_id else ():
        cached = try_to_load_from_cache(hub_id, filename)
        if isinstance(cached, str):
            return timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"file": cached})
    if not allow_download:
        raise FileNotFoundError(
            f"timm's pretrained weights of {name} ({hub_id or 'a URL'}) are not in the Hugging Face cache "
            f"{constants.HF_HUB_CACHE!r}; allow the download with allow_download=True"
        )
    return timm.create_model(name, pretrained=True)


# -- Hugging Face models and users' own files ------------------------------------------------
def _hugging_face(path: str, weights: Any, allow_download: bool) -> nn.Module:
    transformers = require_package("transformers", PIP_HF, f"hf:{path}")
    if weights is not None:
        raise ValueError(f"hf:{path} loads the weights of its folder; weights={weights!r} is not used")
    folder = Path(path).expanduser()
    if not folder.is_dir() and path.startswith((".", "/", "~")):
        raise FileNotFoundError(f"hf:{path}: no such folder; save a model there with model.save_pretrained(folder)")
    try:
        model = transformers.AutoModel.from_pretrained(str(folder), local_files_only=not allow_download)
    except OSError as err:
        if folder.is_dir() or allow_download:
            raise
        raise FileNotFoundError(
            f"hf:{path} is not a folder here and not in the Hugging Face cache; allow the download from the Hub "
            "with allow_download=True"
        ) from err
    model.preprocessing = _hugging_face_preprocessing(folder) if folder.is_dir() else None
    return model


def _hugging_face_preprocessing(folder: Path) -> Preprocessing | None:
    """From the folder's ``preprocessor_config.json`` (image models), else None."""
    try:
        config = json.loads((folder / "preprocessor_config.json").read_text())
        size = config.get("crop_size") or config.get("size")
        if isinstance(size, dict):
            size = (size["height"], size["width"]) if "height" in size else (size["shortest_edge"],) * 2
        elif isinstance(size, int):
            size = (size, size)
        mean, std = config["image_mean"], config["image_std"]
        return Preprocessing(tuple(size), mean, std, channels=len(mean))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _from_file(path: Path, factory: str, weights: Any) -> nn.Module:
    if not path.is_file():
        raise FileNotFoundError(
            f"{str(path)!r} does not exist; FILE.py:FACTORY names a Python file and a function in it"
        )
    resolved = path.resolve()
    module_name = f"neuroprobe_user_{resolved.stem}_{hashlib.sha1(str(resolved).encode()).hexdigest()[:8]}"
    spec = importlib.util.spec_from_file_location(module_name, resolved)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses and pickling look modules up by name
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    build = getattr(module, factory, None)
    if not callable(build):
        own = [n for n, v in vars(module).items() if callable(v) and getattr(v, "__module__", None) == module_name]
        raise unknown_name_error(f"factory in {path}", factory, [n for n in own if not n.startswith("_")])
    model = build()
    if not isinstance(model, nn.Module):
        raise TypeError(f"{path}:{factory}() returned a {type(model).__name__}, not a torch.nn.Module")
    if weights is not None:
        load_weights(model, weights)
    return model


_SCHEMES: dict[str, Callable[[str, Any, bool], nn.Module]] = {
    "zoo": _zoo,
    "pretrained": _pretrained,
    "torchvision": _torchvision,
    "timm": _timm,
    "hf": _hugging_face,
}
