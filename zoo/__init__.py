"""The model zoo: datasets, architectures, objectives, training, checkpoints and loading.

A zoo model is any ``torch.nn.Module`` that honours one contract (see ``zoo.ZooModel``):
``encode(x)`` returns the representation used for transfer, ``recordable_layers()`` names the
layers worth recording, and ``config`` says how it was built.

The zoo is the bottom of the flow (zoo → probe → analyses → reports) and imports none of the other
packages. It also holds the few foundations that every package shares: atomic file writes, the
device choice, the "unknown name" error and the reducer contract of recordings.
"""

from zoo._augment import Augmentation, augment, augmentation_for, augmentation_from
from zoo._checkpoint import RunDir, load_tensor_file, save_tensor_file
from zoo._data import (
    DatasetInfo,
    DatasetStatus,
    ImageTensorDataset,
    TransformedDataset,
    class_labels,
    dataset_status,
    default_data_root,
    iterate_batches,
    list_datasets,
    load_dataset,
)
from zoo._corpora import TEXT_CORPORA, corpus_text, corpus_tokens, load_corpus
from zoo._device import resolve_device
from zoo._distributed import World, close_distributed, init_distributed, shard_range, single_process, world
from zoo._evaluate import evaluate_model, extract_features, knn_predict
from zoo._files import CorruptFileError, FolderLockedError
from zoo._finetune import TRAINABLE_PARTS, FinetunedClassifier, FinetuneResult, finetune, last_block
from zoo._io import (
    atomic_path,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
)
from zoo._load import load, load_state_dict_file, load_torchvision, load_weights
from zoo._model_spec import load_model
from zoo._names import UnknownNameError, unknown_name_error
from zoo._preprocessing import Preprocessing, check_input_shape, prepare_dataset, prepare_for
from zoo._pretrained import (
    PretrainedEntry,
    list_pretrained,
    load_pretrained,
    load_state_dict_by_order,
    register_pretrained,
)
from zoo._registry import (
    MAX_PARAMETERS,
    TrainDefaults,
    UnknownSettingError,
    check_model_config,
    create_model,
    get_objective,
    list_models,
    model_entry,
    register_model,
    train_defaults,
)
from zoo._text import (
    MASK,
    PAD,
    SPECIAL_TOKENS,
    UNK,
    TextInfo,
    TokenDataset,
    Vocabulary,
    subsample_keep_probability,
    tokenize,
)
from zoo._train import (
    OPTIMIZERS,
    SGD_MOMENTUM,
    TrainingDivergedError,
    TrainResult,
    default_run_dir,
    seed_everything,
    train,
)
from zoo._word_vectors import WordVectors, glove_installed, list_word_vectors, load_word_vectors
from zoo.models import ZooModel  # importing zoo.models registers every architecture

__all__ = [
    # data
    "DatasetInfo",
    "ImageTensorDataset",
    "TransformedDataset",
    "load_dataset",
    "class_labels",
    "list_datasets",
    "dataset_status",
    "DatasetStatus",
    "iterate_batches",
    "default_data_root",
    "Augmentation",
    "augment",
    "augmentation_for",
    "augmentation_from",
    # text
    "tokenize",
    "Vocabulary",
    "subsample_keep_probability",
    "TextInfo",
    "TokenDataset",
    "PAD",
    "UNK",
    "MASK",
    "SPECIAL_TOKENS",
    "TEXT_CORPORA",
    "load_corpus",
    "corpus_text",
    "corpus_tokens",
    "WordVectors",
    "load_word_vectors",
    "list_word_vectors",
    "glove_installed",
    # models
    "ZooModel",
    "register_model",
    "list_models",
    "create_model",
    "check_model_config",
    "MAX_PARAMETERS",
    "get_objective",
    "model_entry",
    "train_defaults",
    "OPTIMIZERS",
    "SGD_MOMENTUM",
    "TrainDefaults",
    # training and evaluation
    "train",
    "TrainResult",
    "TrainingDivergedError",
    "default_run_dir",
    "seed_everything",
    "evaluate_model",
    "extract_features",
    "knn_predict",
    "finetune",
    "FinetuneResult",
    "FinetunedClassifier",
    "last_block",
    "TRAINABLE_PARTS",
    # runs, checkpoints and loading
    "RunDir",
    "save_tensor_file",
    "load_tensor_file",
    "load",
    "load_weights",
    "load_state_dict_file",
    "load_torchvision",
    "load_model",
    # pretrained networks and what they expect
    "list_pretrained",
    "load_pretrained",
    "register_pretrained",
    "PretrainedEntry",
    "load_state_dict_by_order",
    "Preprocessing",
    "prepare_dataset",
    "prepare_for",
    "check_input_shape",
    "CorruptFileError",
    "FolderLockedError",
    # foundations shared by every package
    "resolve_device",
    "World",
    "world",
    "init_distributed",
    "close_distributed",
    "shard_range",
    "single_process",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "UnknownNameError",
    "UnknownSettingError",
    "unknown_name_error",
]
