"""The model zoo: datasets, architectures, objectives, training and checkpoints.

A zoo model is any ``torch.nn.Module`` that honours one contract (see ``zoo.ZooModel``):
``encode(x)`` returns the representation used for transfer, ``recordable_layers()`` names the
layers worth recording, and ``config`` says how it was built.
"""

from zoo._device import resolve_device
from zoo._io import atomic_path, atomic_write_bytes, atomic_write_json, atomic_write_text

__all__ = [
    "resolve_device",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
]

# --- data, models, objectives, training ---
from zoo._augment import Augmentation, augment, augmentation_for
from zoo._data import DatasetInfo, ImageTensorDataset, TransformedDataset, default_data_root, iterate_batches, list_datasets, load_dataset
from zoo._evaluate import evaluate_model, extract_features, knn_accuracy, knn_predict
from zoo._registry import TrainDefaults, create_model, get_objective, list_models, model_entry, register_model, train_defaults
from zoo.models import ZooModel  # importing zoo.models registers every architecture
from zoo._train import TrainingDivergedError, TrainResult, default_run_dir, seed_everything, train

__all__ += [
    "DatasetInfo",
    "ImageTensorDataset",
    "TransformedDataset",
    "load_dataset",
    "list_datasets",
    "iterate_batches",
    "default_data_root",
    "ZooModel",
    "register_model",
    "list_models",
    "create_model",
    "get_objective",
    "model_entry",
    "train_defaults",
    "TrainDefaults",
    "Augmentation",
    "augment",
    "augmentation_for",
    "train",
    "TrainResult",
    "TrainingDivergedError",
    "default_run_dir",
    "seed_everything",
    "evaluate_model",
    "extract_features",
    "knn_predict",
    "knn_accuracy",
]
# --- end data, models, objectives, training ---

# --- checkpoints and loading ---
from zoo._checkpoint import RunDir, load_tensor_file, save_tensor_file
from zoo._load import load, load_state_dict_file, load_torchvision, load_weights

__all__ += ["RunDir", "save_tensor_file", "load_tensor_file", "load", "load_weights", "load_state_dict_file", "load_torchvision"]
# --- end checkpoints and loading ---

# --- fine-tuning (issue 6) ---
from zoo._finetune import FinetunedClassifier, FinetuneResult, finetune

__all__ += ["FinetunedClassifier", "FinetuneResult", "finetune"]
# --- end fine-tuning ---
