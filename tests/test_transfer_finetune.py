"""zoo finetune: encoder + linear head trained end to end."""

import pytest
import torch

import zoo
from zoo._finetune import FinetunedClassifier, finetune


@pytest.fixture(scope="module")
def digits():
    return zoo.load_dataset("digits", split="train"), zoo.load_dataset("digits", split="test")


def test_finetune_learns_and_leaves_the_input_model_alone(digits):
    train, test = digits
    torch.manual_seed(0)
    model = zoo.create_model("mlp", input_shape=[1, 8, 8], n_classes=10)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = finetune(model, train, test, epochs=2, lr=3e-3, encoder_lr=3e-3, device="cpu", progress=False)
    assert isinstance(result.model, FinetunedClassifier)
    assert result.accuracy > 0.5  # chance is 0.1
    assert list(result.history["epoch"]) == [1, 2]
    assert result.history["train_loss"].iloc[1] < result.history["train_loss"].iloc[0]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    tuned = result.model.encoder.state_dict()
    assert any(not torch.equal(before[k], tuned[k]) for k in before if before[k].is_floating_point())


def test_frozen_encoder_only_trains_the_head(digits):
    train, test = digits
    torch.manual_seed(0)
    model = zoo.create_model("mlp", input_shape=[1, 8, 8], n_classes=10)
    result = finetune(model, train, test, epochs=1, freeze_encoder=True, device="cpu", progress=False)
    tuned = result.model.encoder.state_dict()
    assert all(torch.equal(v, tuned[k]) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match="epochs"):
        finetune(model, train, test, epochs=0)
    with pytest.raises(TypeError, match="encode"):
        finetune(torch.nn.Linear(2, 2), train, test)
