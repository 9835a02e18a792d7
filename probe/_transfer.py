"""Transfer experiments that train zoo models: the MAE mask-ratio sweep.

These orchestrate ``zoo`` (training) and ``analyses`` (probes); the measures themselves live in
``analyses._transfer``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch

__all__ = ["encode_features", "MaskRatioSweep", "mask_ratio_sweep"]


def encode_features(model: torch.nn.Module, dataset: Any, batch_size: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """``model.encode`` of every stimulus of ``dataset``.

    Returns
    -------
    tuple
        Features of shape (n_stimuli, d) (float64, CPU) and labels of shape (n_stimuli,).
    """
    import zoo

    features, labels = zoo.extract_features(model, dataset, batch_size=batch_size)
    return features.detach().cpu().double().numpy(), labels.cpu().numpy()


@dataclass
class MaskRatioSweep:
    """Frozen-encoder accuracy of MAEs pretrained with different mask ratios.

    Attributes
    ----------
    frame
        One row per mask ratio: mask_ratio, probe_accuracy, knn_accuracy, C, reconstruction
        metrics of the training run (when the zoo reports them), run_dir.
    dataset
        The dataset pretrained on and probed.
    """

    frame: pd.DataFrame
    dataset: str

    def to_frame(self) -> pd.DataFrame:
        """The per-ratio table (a copy)."""
        return self.frame.copy()


def _trained_mae(run_dir: Path, **train_options: Any) -> torch.nn.Module:
    """Load a finished run, resume an interrupted one, or train a new one."""
    import zoo

    if (run_dir / "model.safetensors").exists():
        return zoo.load(run_dir, device=zoo.resolve_device(train_options["device"]))
    return zoo.train("mae", out=run_dir, resume=run_dir.exists(), **train_options).model


def mask_ratio_sweep(
    ratios: Sequence[float] = (0.25, 0.5, 0.75, 0.9),
    *,
    dataset: str = "digits",
    epochs: int | None = None,
    out: str | os.PathLike = "runs/mask-ratio",
    seed: int = 0,
    device: str | torch.device = "auto",
    C: float | None = None,
    knn_k: int = 5,
    progress: bool = True,
    **model_options: Any,
) -> MaskRatioSweep:
    """Pretrain one MAE per mask ratio, then probe its frozen encoder (linear probe and kNN).

    Parameters
    ----------
    ratios
        Mask ratios, each in (0, 1).
    dataset
        Zoo dataset name (must be labelled).
    epochs
        Training epochs per MAE (None: the zoo's default).
    out
        Folder of the run directories (one per ratio, ``mae-ratio-0.75`` ...); finished runs are
        loaded, interrupted ones resumed.
    seed
        Seed of training and of the probe's folds.
    device
        Where to train and probe.
    C
        Probe inverse penalty; None: cross-validated.
    knn_k
        Neighbours of the cosine kNN read-out.
    progress
        Progress bars.
    **model_options
        Other MAE options passed to ``zoo.train``.
    """
    import zoo
    from analyses import knn_accuracy, linear_probe

    ratios = [float(r) for r in ratios]
    if not ratios or any(not 0.0 < r < 1.0 for r in ratios):
        raise ValueError(f"mask ratios must lie strictly between 0 and 1; got {ratios}")
    train_set = zoo.load_dataset(dataset, split="train")
    test_set = zoo.load_dataset(dataset, split="test")
    if train_set.info.n_classes in (0, None):
        raise ValueError(f"dataset {dataset!r} is unlabelled; a mask-ratio sweep probes labels, pick a labelled one")
    rows = []
    for ratio in ratios:
        run_dir = Path(out) / f"mae-ratio-{ratio:g}"
        model = _trained_mae(run_dir, dataset=dataset, epochs=epochs, seed=seed, device=device, progress=progress,
                             mask_ratio=ratio, **model_options)
        X_train, y_train = encode_features(model, train_set)
        X_test, y_test = encode_features(model, test_set)
        probe = linear_probe(X_train, y_train, X_test, y_test, C=C, random_state=seed, device=device,
                             model=f"mae-{ratio:g}")
        rows.append(dict(mask_ratio=ratio, probe_accuracy=probe.accuracy,
                         knn_accuracy=knn_accuracy(X_train, y_train, X_test, y_test, k=knn_k, device=device),
                         C=probe.C, run_dir=str(run_dir)))
    return MaskRatioSweep(frame=pd.DataFrame(rows), dataset=dataset)
