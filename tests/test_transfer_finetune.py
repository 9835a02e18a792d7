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


@pytest.mark.parametrize(("name", "options", "expected"), [
    ("cnn", {"n_classes": 10}, ["fc1"]),                    # recorded at its ReLUs: the last weight layer
    ("resnet18", {"n_classes": 10}, ["layer4"]),            # the last residual stage
    ("mae", {}, ["blocks.3", "norm"]),                      # the last transformer block and the final norm
    ("vq-vae", {}, ["encoder.code"]),                       # not the codebook: straight-through bypasses it
])
def test_last_block_is_the_last_trained_block_of_encode(name, options, expected):
    model = zoo.create_model(name, input_shape=[1, 8, 8], **options)
    assert zoo.last_block(model) == expected
    with pytest.raises(TypeError, match="encode"):
        zoo.last_block(torch.nn.Linear(2, 2))


def test_last_block_trains_only_that_block_and_steps_fix_the_number_of_updates(digits):
    train, test = digits
    torch.manual_seed(0)
    model = zoo.create_model("cnn", input_shape=[1, 8, 8], n_classes=10)
    result = finetune(model, train, test, trainable="last_block", steps=7, batch_size=64, eval_every=100, lr=3e-2, encoder_lr=3e-2,
                      device="cpu", progress=False)
    assert result.trained_modules == ["fc1"]
    before, after = model.state_dict(), result.model.encoder.state_dict()
    changed = {k for k in before if before[k].is_floating_point() and not torch.equal(before[k], after[k])}
    assert changed == {"fc1.weight", "fc1.bias"}  # batch-norm statistics of the frozen part stay as they were
    assert result.history["steps"].iloc[-1] == 7 and len(result.history) == 1
    assert result.accuracy == result.history["test_accuracy"].iloc[-1] > 0.2  # chance is 0.1
    whole = finetune(model, train, test, trainable="all", steps=3, batch_size=1000, device="cpu", progress=False)
    assert whole.trained_modules == [""] and list(whole.history["steps"]) == [2, 3]
    assert whole.history["test_accuracy"].notna().all()
    with pytest.raises(ValueError, match="trainable must be one of"):
        finetune(model, train, test, trainable="middle")
    with pytest.raises(ValueError, match="contradicts"):
        finetune(model, train, test, freeze_encoder=True, trainable="all")


def test_normalized_features_enter_the_head_standardised_and_the_head_starts_at_zero(digits):
    train, test = digits
    torch.manual_seed(0)
    model = zoo.create_model("mlp", input_shape=[1, 8, 8], n_classes=10)
    classifier = FinetunedClassifier(model, 128, 10, normalize_features=True)
    norm, linear = classifier.head
    assert not norm.affine and torch.count_nonzero(linear.weight) == 0 and torch.count_nonzero(linear.bias) == 0
    images = torch.stack([train[i][0] for i in range(200)])
    features = classifier.encode(images)
    standardised = norm(features)  # train mode: the batch's statistics
    live = features.std(0) > 1e-6
    torch.testing.assert_close(standardised[:, live], (features[:, live] - features[:, live].mean(0))
                               / torch.sqrt(features[:, live].var(0, unbiased=False) + norm.eps))
    result = finetune(model, train, test, trainable="head", normalize_features=True, steps=40, lr=1e-2,
                      device="cpu", progress=False)
    assert result.accuracy > 0.5  # chance is 0.1
