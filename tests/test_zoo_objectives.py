"""Objectives: each checked against an independent computation, and each one's loss decreases."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Normal, kl_divergence

import zoo
from _zoo_inputs import SEQUENCE_LENGTH, WORDS, is_text_model, model_options
from zoo.models import contractive_penalty, corrupt, gaussian_kl, mae_objective, nt_xent


def brute_force_nt_xent(z1, z2, temperature):
    z = [F.normalize(v, dim=0) for v in torch.cat([z1, z2])]
    n = z1.shape[0]
    total = 0.0
    for i in range(2 * n):
        partner = (i + n) % (2 * n)
        numerator = math.exp(float(z[i] @ z[partner]) / temperature)
        denominator = sum(math.exp(float(z[i] @ z[k]) / temperature) for k in range(2 * n) if k != i)
        total += -math.log(numerator / denominator)
    return total / (2 * n)


@pytest.mark.parametrize("temperature", [0.1, 0.5, 1.0])
def test_nt_xent_matches_a_brute_force_loop(temperature):
    torch.manual_seed(0)
    z1, z2 = torch.randn(6, 5, dtype=torch.float64), torch.randn(6, 5, dtype=torch.float64)
    loss, accuracy = nt_xent(z1, z2, temperature)
    assert float(loss) == pytest.approx(brute_force_nt_xent(z1, z2, temperature), rel=1e-5)
    perfect, perfect_accuracy = nt_xent(z1, z1.clone(), 0.1)
    assert float(perfect_accuracy) == 1.0 and float(perfect) < float(loss)


def test_nt_xent_is_finite_in_half_precision():
    torch.manual_seed(1)
    z1, z2 = torch.randn(32, 16), torch.randn(32, 16)
    loss32, _ = nt_xent(z1, z2, 0.05)
    loss16, _ = nt_xent(z1.half(), z2.half(), 0.05)
    assert torch.isfinite(loss16) and float(loss16) == pytest.approx(float(loss32), rel=1e-2)
    with pytest.raises(ValueError, match="temperature"):
        nt_xent(z1, z2, 0.0)


def test_contractive_penalty_equals_the_autograd_jacobian():
    torch.manual_seed(0)
    model = zoo.create_model("ae-contractive", input_shape=(1, 4, 4), code_dim=6)
    x = torch.randn(3, 1, 4, 4)
    with torch.no_grad():
        closed_form = contractive_penalty(model.encode(x), model.encoder.fc.weight)
    for i in range(3):
        jacobian = torch.autograd.functional.jacobian(lambda v: model.encode(v.view(1, 1, 4, 4))[0], x[i].reshape(-1))
        assert float(closed_form[i]) == pytest.approx(float(jacobian.pow(2).sum()), rel=1e-5)


def test_gaussian_kl_matches_torch_distributions():
    torch.manual_seed(0)
    mu, logvar = torch.randn(4, 3), torch.randn(4, 3)
    expected = kl_divergence(Normal(mu, (0.5 * logvar).exp()), Normal(0.0, 1.0)).sum(1)
    assert torch.allclose(gaussian_kl(mu, logvar), expected, atol=1e-5)


def test_corruptions_have_the_requested_strength():
    torch.manual_seed(0)
    x = torch.ones(200, 1, 8, 8)
    assert float((corrupt(x, "masking", 0.3) == 0).float().mean()) == pytest.approx(0.3, abs=0.02)
    assert float((corrupt(x, "gaussian", 0.5) - x).std()) == pytest.approx(0.5, abs=0.02)
    with pytest.raises(ValueError, match="gaussian"):
        corrupt(x, "salt", 0.1)


def test_mae_loss_counts_masked_patches_only():
    torch.manual_seed(0)
    model = zoo.create_model("mae")
    x = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        pred, mask = model.predict_patches(x)
    target = model.patch_target(x)
    model.predict_patches = lambda images: (pred, mask)
    loss, _ = mae_objective(model, x, None)
    manual = sum(float((pred[b, i] - target[b, i]).pow(2).mean()) for b in range(4) for i in range(16) if mask[b, i]) / float(mask.sum())
    assert float(loss) == pytest.approx(manual, rel=1e-5)
    changed = pred.clone()
    changed[mask == 0] += 10.0  # visible patches do not count
    model.predict_patches = lambda images: (changed, mask)
    assert float(mae_objective(model, x, None)[0]) == pytest.approx(float(loss), rel=1e-6)


def test_norm_pix_target_is_normalised_per_patch():
    model = zoo.create_model("mae", norm_pix_loss=True)
    target = model.patch_target(torch.randn(2, 1, 8, 8) * 3 + 1)
    assert torch.allclose(target.mean(-1), torch.zeros(2, 16), atol=1e-5)


def test_supervised_objective_refuses_unlabelled_data():
    model = zoo.create_model("mlp")
    with pytest.raises(ValueError, match="labelled"):
        zoo.get_objective(model)(model, torch.randn(2, 1, 8, 8), torch.tensor([-1, -1]))


@pytest.fixture(scope="module")
def small_batch():
    train = zoo.load_dataset("digits")
    return train.get_batch(torch.arange(32))


@pytest.mark.parametrize("name", zoo.list_models())
def test_every_objective_decreases_under_a_few_adam_steps(name, small_batch):
    images, labels = small_batch
    n_steps = 6
    if name == "resnet18":  # 11 M parameters: a smaller batch and fewer steps keep the test quick
        images, labels, n_steps = images[:8], labels[:8], 3
    torch.manual_seed(0)
    model = zoo.create_model(name, **model_options(name))
    if is_text_model(name):  # sentences of the test vocabulary
        images, labels = torch.randint(3, len(WORDS), (32, SEQUENCE_LENGTH), generator=torch.Generator().manual_seed(0)), labels
    objective = zoo.get_objective(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def loss_at_fixed_seed():
        torch.manual_seed(123)  # the same noise, masks and views for the before/after comparison
        with torch.no_grad():
            return float(objective(model, images, labels)[0])

    model.train()
    before = loss_at_fixed_seed()
    for step in range(n_steps):
        torch.manual_seed(step)
        loss, metrics = objective(model, images, labels)
        assert all(value.dim() == 0 and not value.requires_grad for value in metrics.values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = loss_at_fixed_seed()
    assert after < before, f"{name}: loss {before:.4f} -> {after:.4f}"
