"""Loading trained models: zoo run directories and users' own state dicts — never a code-running pickle."""

from __future__ import annotations

import json
import os
import pickle
import warnings
from pathlib import Path
from typing import Mapping

import torch

from zoo._checkpoint import LATEST_FILE, MODEL_FILE, STATE_DIR, RunDir, load_tensor_file, read_tensor_metadata
from zoo._device import resolve_device
from zoo._names import UnknownNameError, unknown_name_error
from zoo._settings import MAX_PARAMETERS

__all__ = ["load", "load_weights", "load_state_dict_file", "load_torchvision"]

_PICKLE_SUFFIXES = {".pt", ".pth", ".bin", ".ckpt"}
# Keys under which training scripts commonly nest the state dict of the model itself.
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net", "weights")


def load(
    run_dir: str | os.PathLike,
    device: str | torch.device = "cpu",
    checkpoint: bool = False,
    *,
    verify: bool = True,
    max_parameters: int | None = MAX_PARAMETERS,
) -> torch.nn.Module:
    """Rebuild a zoo model from its run directory and load its weights; the model is in eval mode.

    Parameters
    ----------
    run_dir
        A folder written by ``zoo.train`` (``config.json`` + ``model.safetensors``).
    device
        Where to put the model (``"auto"`` picks CUDA when present).
    checkpoint
        Load the weights of the last checkpoint in ``state/`` instead of the final weights, for
        example to inspect a run that was interrupted.
    verify
        Check ``config.json`` and the weights against the sizes and SHA-256 in the run's
        ``manifest.json`` before reading them. A run written before the toolkit kept a manifest
        loads with a warning that its files cannot be verified.
    max_parameters
        Refuse a config that builds a larger model (see ``zoo.check_model_config``; None: no limit).

    Raises
    ------
    FileNotFoundError
        If the folder, its ``config.json`` or its weights are missing (the message says which).
    CorruptFileError
        If ``verify`` and a file differs from the one written (a bit flip, an edit); a ValueError.
    ValueError
        If ``config.json`` holds invalid settings, or the weights file is damaged, holds NaN or
        infinity, or holds weights of another architecture.
    """
    from zoo import create_model, model_entry  # the registry is built by the model modules, imported lazily

    run = RunDir.open(run_dir)
    config = run.read_config(verify=verify)
    name, options = _model_config(config, run)
    recover = "retrain with zoo.train(..., force=True)"
    if checkpoint:
        if verify:
            run.verify(f"{STATE_DIR}/{LATEST_FILE}", hint=recover)  # it names the checkpoint: trust it once verified
        folder = run.checkpoint_path()
        if folder is None:
            raise FileNotFoundError(
                f"{str(run.path)!r} holds no checkpoint in state/; load its final weights with checkpoint=False"
            )
        weights_path = folder / MODEL_FILE
    else:
        weights_path = run.model_path
        if not weights_path.is_file():
            hint = (
                "training did not finish: resume it with zoo.train(..., resume=True), "
                "or load the last checkpoint with zoo.load(run_dir, checkpoint=True)"
                if run.has_checkpoint()
                else "train the model first with zoo.train (or `probe train`)"
            )
            raise FileNotFoundError(f"{str(weights_path)!r} is missing; {hint}")
        recover = ("recover by re-running the training with zoo.train(..., resume=True) (it restarts from the last "
                   "checkpoint in state/) or by retraining with zoo.train(..., force=True)")
    try:
        options = {**model_entry(name).older_configs, **options}  # options its config.json predates
        model = create_model(name, max_parameters=max_parameters, **options)
    except UnknownNameError as err:
        message = f"cannot rebuild the model from {str(run.config_path)!r}: {err}"
        raise type(err)(message, err.name, err.closest) from None
    except (TypeError, ValueError) as err:  # an option the architecture refuses (the config was edited or is older)
        raise ValueError(
            f"cannot rebuild the model from {str(run.config_path)!r}: {err}; retrain with zoo.train(..., force=True)"
        ) from err
    if verify:
        run.verify(weights_path.relative_to(run.path).as_posix(), hint=recover)
    state = load_tensor_file(weights_path)
    load_weights(model, state, source_name=str(weights_path))
    return model.to(resolve_device(device)).eval()


def _model_config(config: dict, run: RunDir) -> tuple[str, dict]:
    """The architecture's name and options from ``config.json``: the model's own config, possibly
    with the training settings beside it under their own keys."""
    model_config = config.get("model") if isinstance(config.get("model"), dict) else config
    name = model_config.get("name")
    if not isinstance(name, str):
        found = "no 'name' key" if name is None else f"'name' is {name!r}, not a model name"
        raise ValueError(
            f"{str(run.config_path)!r} names no model architecture ({found}); retrain with zoo.train(..., force=True)"
        )
    return name, {key: value for key, value in model_config.items() if key != "name"}


def load_weights(
    model: torch.nn.Module,
    source: Mapping[str, torch.Tensor] | str | os.PathLike,
    *,
    strict: bool = True,
    skip_mismatched: bool = False,
    source_name: str | None = None,
    check_finite: bool = True,
) -> torch.nn.Module:
    """Load a state dict (or a weights file) into ``model``, explaining any mismatch.

    Keys that differ from the model's only by a common prefix (``module.`` from DataParallel, or
    a wrapper attribute such as ``net.`` around a torchvision backbone) are matched up, so a
    torchvision ``resnet18`` state dict loads into a model that wraps one.

    Parameters
    ----------
    model
        The model to load into, in place.
    source
        A state dict, or a path to a ``.safetensors`` / ``.pt`` / ``.pth`` file.
    source_name
        How to name the weights in error messages (a path ending in ``.safetensors`` also lets the
        message name the architecture the file was saved from).
    strict
        Require the keys to match exactly (after prefix matching). With False, missing and
        unexpected keys are tolerated but shapes must still match.
    skip_mismatched
        Leave the parameters whose shapes differ at their current values (with a warning that
        names them) instead of failing, e.g. to load a torchvision ResNet-18 into the zoo's
        small-image ``resnet18`` whose stem and classifier differ.
    check_finite
        Refuse floating-point weights that hold NaN or infinity: a diverged training or a
        damaged file, never something to record from.

    Returns
    -------
    torch.nn.Module
        ``model`` itself.

    Raises
    ------
    ValueError
        If keys or shapes do not match (the message names the first mismatches and the two
        architectures when they are known), or ``check_finite`` and a weight is NaN or infinite.
    """
    label = source_name
    if isinstance(source, (str, os.PathLike)):
        label = label or str(source)
        state = load_state_dict_file(source)
        is_safetensors = str(source).endswith(".safetensors")
        file_architecture = read_tensor_metadata(source).get("architecture") if is_safetensors else None
    else:
        file_architecture = None
        state = dict(source)
        if label and label.endswith(".safetensors") and Path(label).is_file():
            file_architecture = read_tensor_metadata(label).get("architecture")
    label = label or "the state dict"
    expected = model.state_dict()
    state = _align_prefixes(state, expected)
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    wrong_shape = [
        (key, tuple(state[key].shape), tuple(expected[key].shape))
        for key in expected
        if key in state and tuple(state[key].shape) != tuple(expected[key].shape)
    ]
    if skip_mismatched and wrong_shape:
        warnings.warn(
            f"kept {len(wrong_shape)} parameter(s) at their current values because their shapes differ in {label}: "
            + ", ".join(f"{key} (file {file} vs model {mine})" for key, file, mine in wrong_shape),
            stacklevel=2,
        )
        skipped = {key for key, _, _ in wrong_shape}
        state = {key: value for key, value in state.items() if key not in skipped}
        state.update({key: expected[key] for key in skipped})
        wrong_shape = []
    if wrong_shape or (strict and (missing or unexpected)):
        raise ValueError(_mismatch_message(model, label, file_architecture, missing, unexpected, wrong_shape, strict))
    if check_finite:
        _refuse_non_finite(state, expected, label)
    model.load_state_dict(state, strict=strict)
    return model


def _refuse_non_finite(state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor], label: str) -> None:
    bad = [
        key
        for key, tensor in state.items()
        if key in expected and tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())
    ]
    if bad:
        raise ValueError(
            f"{label} holds NaN/inf values in {len(bad)} tensor(s) ({', '.join(bad[:3])}): the weights come from a "
            "diverged training or a damaged file; refusing to load them. Retrain (with a lower lr), or load an earlier "
            "checkpoint"
        )


def _align_prefixes(state: dict[str, torch.Tensor], expected: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if not state or set(state) == set(expected):
        return state
    for old, new in _prefix_candidates(list(state), list(expected)):
        renamed = {new + key[len(old):]: value for key, value in state.items() if key.startswith(old)}
        if len(renamed) == len(state) and set(renamed) == set(expected):
            return renamed
    return state


def _prefix_candidates(keys: list[str], expected: list[str]) -> list[tuple[str, str]]:
    # Candidate (strip, add) pairs: strip a leading "a.b." component from the file's keys, and/or
    # add one of the model's leading components.
    def leading(names: list[str]) -> set[str]:
        out = {""}
        for name in names:
            parts = name.split(".")
            for depth in range(1, min(3, len(parts))):
                out.add(".".join(parts[:depth]) + ".")
        return out

    return [(old, new) for old in leading(keys) for new in leading(expected) if (old, new) != ("", "")]


def _mismatch_message(model, label, file_architecture, missing, unexpected, wrong_shape, strict) -> str:
    config = getattr(model, "config", None)
    model_architecture = (config or {}).get("name") if isinstance(config, dict) else None
    model_architecture = model_architecture or type(model).__name__
    parts = [f"the weights in {label}"]
    if file_architecture:
        parts.append(f"(saved from architecture {file_architecture!r})")
    parts.append(f"do not fit the architecture {model_architecture!r}:")
    details = []
    if wrong_shape:
        shown = ", ".join(f"{key}: file {file} vs model {model}" for key, file, model in wrong_shape[:3])
        details.append(f"{len(wrong_shape)} shape mismatch(es) ({shown})")
    if strict and missing:
        details.append(f"{len(missing)} missing key(s) {missing[:3]}")
    if strict and unexpected:
        details.append(f"{len(unexpected)} unexpected key(s) {unexpected[:3]}")
    fix = (
        "; load it into the architecture it was saved from"
        if file_architecture
        else "; check that the file and the model are the same architecture (and the same number of classes)"
    )
    return " ".join(parts) + " " + "; ".join(details) + fix


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state dict from a weights file without running any code stored in it.

    ``.safetensors`` files are read with safetensors; ``.pt`` / ``.pth`` / ``.bin`` / ``.ckpt``
    files with ``torch.load(weights_only=True)``, which refuses pickled Python objects. A
    checkpoint that nests the state dict under ``"state_dict"`` or ``"model"`` is unwrapped.

    Returns
    -------
    dict
        Parameter and buffer names to CPU tensors.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is damaged, holds objects that only a code-running unpickler could rebuild,
        has an unknown suffix, or holds no tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        return load_tensor_file(path)
    if suffix not in _PICKLE_SUFFIXES:
        valid = ", ".join([".safetensors", *sorted(_PICKLE_SUFFIXES)])
        raise ValueError(f"cannot tell the format of {str(path)!r} from its suffix {suffix!r}; use one of {valid}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(
            f"refused to load {str(path)!r}: it holds Python objects that only a code-executing unpickler "
            f"could rebuild ({_first_line(err)}). Save only the state dict (torch.save(model.state_dict(), path)) "
            "or convert it to .safetensors in an environment you trust"
        ) from err
    except (RuntimeError, EOFError, OSError) as err:
        raise ValueError(f"{str(path)!r} is damaged or not a PyTorch file ({_first_line(err)})") from err
    return _unwrap_state_dict(obj, path)


def _unwrap_state_dict(obj, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return dict(obj)
    if isinstance(obj, Mapping):
        for key in _WRAPPER_KEYS:
            inner = obj.get(key)
            if isinstance(inner, Mapping) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                return dict(inner)
    found = sorted(obj)[:8] if isinstance(obj, Mapping) else type(obj).__name__
    raise ValueError(
        f"{str(path)!r} holds no state dict of tensors (found {found}); "
        f"save one with torch.save(model.state_dict(), path) or nest it under one of {list(_WRAPPER_KEYS)}"
    )


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def load_torchvision(
    arch: str,
    path: str | os.PathLike,
    *,
    device: str | torch.device = "cpu",
    **kwargs,
) -> torch.nn.Module:
    """Build a torchvision architecture and load a user's state dict into it (strictly); eval mode.

    Parameters
    ----------
    arch
        A torchvision model name, e.g. ``"resnet18"`` (see ``torchvision.models.list_models()``).
    path
        The weights: ``.safetensors``, or ``.pt`` / ``.pth`` read with ``weights_only=True``.
    device
        Where to put the model.
    **kwargs
        Passed to the architecture's builder, e.g. ``num_classes=10``.

    Raises
    ------
    KeyError
        If ``arch`` is not a torchvision model; the message lists the nearest names.
    ValueError
        If the weights do not fit the architecture, or the file is refused (see
        ``load_state_dict_file``).
    """
    import torchvision

    valid = torchvision.models.list_models()
    if arch not in valid:
        raise unknown_name_error("torchvision architecture", arch, valid, listing="torchvision.models.list_models()")
    state = load_state_dict_file(path)
    model = torchvision.models.get_model(arch, weights=None, **kwargs)
    try:
        load_weights(model, state, source_name=str(path))
    except ValueError as err:
        raise ValueError(f"{err} (built torchvision {arch!r} with {json.dumps(kwargs, default=str)})") from None
    return model.to(resolve_device(device)).eval()
