"""The model registry: names -> model builders, objectives and training defaults.

Adding a model is one decorated class in ``zoo/models/<family>.py``::

    @register_model("cnn", objective=classification_objective, defaults=TrainDefaults(epochs=30, lr=3e-3))
    class SmallCNN(ZooModel): ...
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch
from torch import nn

from zoo._names import unknown_name_error
from zoo._settings import MAX_PARAMETERS, UnknownSettingError, check_builder_config, check_setting

__all__ = [
    "MAX_PARAMETERS",
    "UnknownSettingError",
    "TrainDefaults",
    "ModelEntry",
    "register_model",
    "list_models",
    "create_model",
    "check_model_config",
    "check_setting",
    "get_objective",
    "train_defaults",
    "model_entry",
]

# objective(model, images, labels) -> (loss, {metric name: detached 0-d tensor})
Objective = Callable[[nn.Module, torch.Tensor, torch.Tensor], tuple[torch.Tensor, dict[str, torch.Tensor]]]


@dataclass(frozen=True)
class TrainDefaults:
    """Training hyper-parameters a model uses unless ``zoo.train`` is told otherwise.

    Attributes
    ----------
    epochs
        Passes over the training set.
    lr
        Peak learning rate (reached after the warm-up, then cosine decay to ``lr * 0.01``).
    batch_size
        Images per step.
    weight_decay
        Weight decay of the weight matrices and kernels (not of biases and norm scales): AdamW's decoupled
        decay, or SGD's L2 penalty.
    warmup_epochs
        Linear warm-up length, as a fraction of ``epochs`` when below 1 or in epochs otherwise.
    optimizer
        ``"adamw"``, or ``"sgd"``: SGD with Nesterov momentum 0.9, the recipe of most CNN papers (it wants
        a larger ``lr``, e.g. 0.1 at batch size 128).
    """

    epochs: int = 20
    lr: float = 1e-3
    batch_size: int = 128
    weight_decay: float = 1e-4
    warmup_epochs: float = 0.05
    optimizer: str = "adamw"


@dataclass(frozen=True)
class ModelEntry:
    """A registered model: its builder, family, objective and training defaults."""

    name: str
    builder: Callable[..., nn.Module]
    family: str
    objective: Objective
    defaults: TrainDefaults
    older_configs: Mapping[str, Any] = field(default_factory=dict)


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(name: str, *, objective: Objective, defaults: TrainDefaults | None = None, family: str | None = None,
                   older_configs: Mapping[str, Any] | None = None):
    """Class decorator that registers a model under ``name``.

    Parameters
    ----------
    name
        The zoo name (``create_model(name)``).
    objective
        The loss of this model: ``objective(model, images, labels) -> (loss, metrics)``.
    defaults
        Training hyper-parameters for ``zoo.train``.
    family
        Defaults to the class's ``family`` attribute.
    older_configs
        Options added to the architecture after runs of it were written, with the value that those runs (whose
        ``config.json`` lacks the option) were built with, so that they load as they were trained rather than
        with the option's newer default.

    Raises
    ------
    ValueError
        If ``name`` is already registered.
    """

    def decorate(builder):
        if name in _REGISTRY:
            raise ValueError(f"a model named {name!r} is already registered ({_REGISTRY[name].builder!r}); choose another name")
        model_family = family or getattr(builder, "family", None)
        if not model_family:
            raise ValueError(f"model {name!r} needs a family: set a `family` class attribute or pass family=")
        _REGISTRY[name] = ModelEntry(name, builder, model_family, objective, defaults or TrainDefaults(),
                                      dict(older_configs or {}))
        return builder

    return decorate


def list_models(family: str | None = None) -> list[str]:
    """Registered model names (of one family if given), sorted."""
    return sorted(name for name, entry in _REGISTRY.items() if family is None or entry.family == family)


def model_entry(name: str) -> ModelEntry:
    """The registry entry of ``name``; an unknown name raises KeyError listing the nearest names."""
    if name not in _REGISTRY:
        raise unknown_name_error("model", name, sorted(_REGISTRY), listing="zoo.list_models()")
    return _REGISTRY[name]


def create_model(name: str, *, max_parameters: int | None = MAX_PARAMETERS, **config: Any) -> nn.Module:
    """Build a fresh (untrained) zoo model, after checking its options (see ``check_model_config``).

    Parameters
    ----------
    name
        A name from ``list_models()``.
    max_parameters
        Refuse a model with more parameters than this (None: no limit).
    **config
        Model options, e.g. ``input_shape=(1, 8, 8)``, ``n_classes=10``, ``code_dim=16``.

    Returns
    -------
    nn.Module
        The model, with ``family``, ``config`` (including ``"name"``), ``encode`` and ``recordable_layers``.

    Raises
    ------
    UnknownNameError
        If ``name`` is unknown, or an option is (then an ``UnknownSettingError``, also a TypeError).
    ValueError
        If an option has the wrong type or range, or the model would be too large.
    """
    entry = model_entry(name)
    check_model_config(name, config, max_parameters=max_parameters)
    model = entry.builder(**config)
    model.config = {"name": name, **model.config}
    return model


def check_model_config(name: str, config: Mapping[str, Any], *, max_parameters: int | None = MAX_PARAMETERS) -> int:
    """Check the options of the registered model ``name`` before building it; returns its parameter count.

    See ``zoo._settings.check_builder_config`` for what is checked.

    Raises
    ------
    UnknownNameError
        If ``name`` is unknown, or an option is (then an ``UnknownSettingError``, also a TypeError).
    ValueError
        If ``config`` is not a dict, an option has the wrong type or range, or the model is too large.
    """
    return check_builder_config(name, model_entry(name).builder, config, max_parameters=max_parameters)


def get_objective(model_or_name: nn.Module | str) -> Objective:
    """The objective of a model (or model name)."""
    name = model_or_name if isinstance(model_or_name, str) else model_or_name.config["name"]
    return model_entry(name).objective


def train_defaults(name: str) -> TrainDefaults:
    """The training defaults of a model name."""
    return model_entry(name).defaults
