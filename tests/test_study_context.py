"""probe.study.StudyContext: what a study's analyses share."""

import zoo
from probe.study import StudyContext


def test_each_dataset_is_loaded_once_and_shared(tmp_path):
    ctx = StudyContext(out=tmp_path)
    test = ctx.dataset("digits")
    assert ctx.dataset("digits", "test") is test and ctx.datasets["digits", "test"] is test
    assert len(test) == len(zoo.load_dataset("digits", split="test"))
    train = ctx.dataset("digits", "train")
    assert train is not test and len(train) != len(test)  # split is part of the key
    patches = ctx.dataset("natural-patches", "train", n_patches=32)
    assert len(patches) == 32 and ctx.dataset("natural-patches", "train") is patches  # options: first load only
    assert set(ctx.datasets) == {("digits", "test"), ("digits", "train"), ("natural-patches", "train")}


def _ctx(tmp_path, names, data_of):
    ctx = StudyContext(out=tmp_path)
    ctx.recordings = {name: object() for name in names}
    ctx.data_of = dict(data_of)
    return ctx


def test_stimulus_groups_group_the_recordings_by_their_stimuli_in_the_studys_order(tmp_path):
    ctx = _ctx(tmp_path, ["a", "b", "c", "d"],
               {"a": "digits (test)", "b": "photos (test)", "c": "digits (test)", "d": "photos (test)"})
    groups = ctx.stimulus_groups()
    assert groups == {"digits (test)": ["a", "c"], "photos (test)": ["b", "d"]}
    assert list(groups) == ["digits (test)", "photos (test)"]  # the first model's group first
    # the groups only hold recorded models: a model with words but no recording is left out
    ctx.data_of["e"] = "cifar10 (test)"
    assert ctx.stimulus_groups() == groups


def test_stimulus_groups_keep_only_the_models_named(tmp_path):
    ctx = _ctx(tmp_path, ["a", "b", "c"], {"a": "digits (test)", "b": "photos (test)", "c": "digits (test)"})
    assert ctx.stimulus_groups(["c", "b"]) == {"photos (test)": ["b"], "digits (test)": ["c"]}  # recording order
    assert ctx.stimulus_groups(["c"]) == {"digits (test)": ["c"]}
    assert ctx.stimulus_groups(["nobody"]) == {}
    assert ctx.stimulus_groups("all") == ctx.stimulus_groups()


def test_models_without_words_form_one_group(tmp_path):
    ctx = _ctx(tmp_path, ["a", "b", "c"], {"b": "digits (test)"})
    assert ctx.stimulus_groups() == {"": ["a", "c"], "digits (test)": ["b"]}
    assert _ctx(tmp_path, ["a", "b"], {}).stimulus_groups() == {"": ["a", "b"]}
    assert StudyContext(out=tmp_path).stimulus_groups() == {}


def test_stimulus_pixels_flattens_the_first_stimuli():
    import numpy as np
    import torch
    from torch.utils.data import TensorDataset

    from probe.study._context import stimulus_pixels

    images = torch.arange(5 * 2 * 3 * 3, dtype=torch.float32).reshape(5, 2, 3, 3)
    data = TensorDataset(images, torch.zeros(5))
    np.testing.assert_array_equal(stimulus_pixels(data), images.reshape(5, -1).double().numpy())
    assert stimulus_pixels(data, 2).shape == (2, 18) and stimulus_pixels(data, 9).shape == (5, 18)
