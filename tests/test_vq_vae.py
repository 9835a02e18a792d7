"""The VQ-VAE: straight-through gradient, losses against a hand computation, perplexity against NumPy,
dead-code restarts, the quantised codes as a recordable layer, and saving and loading."""

import numpy as np
import pytest
import torch

import zoo
from zoo import RunDir
from zoo.models import VectorQuantizer, code_perplexity, vq_objective


def _model(**options):
    torch.manual_seed(0)
    return zoo.create_model("vq-vae", input_shape=(1, 8, 8), width=8, n_codes=6, code_dim=3, **options)


def _brute_force_nearest(vectors, codebook):
    """Index of the nearest code of each row, by a loop over rows and codes."""
    out = []
    for v in vectors:
        distances = [float(((v - c) ** 2).sum()) for c in codebook]
        out.append(int(np.argmin(distances)))
    return torch.tensor(out)


def test_straight_through_gradient_reaches_the_encoder_output_unchanged():
    torch.manual_seed(0)
    quantizer = VectorQuantizer(5, 4)
    z = torch.randn(2, 4, 3, 3, requires_grad=True)
    quantized = quantizer(z)
    quantized.retain_grad()
    weights = torch.randn_like(quantized)
    (quantized * weights).pow(2).sum().backward()
    assert z.grad is not None and torch.equal(z.grad, quantized.grad)
    assert not torch.equal(quantized, z)


def test_losses_match_a_hand_computation_and_the_codebook_gets_only_its_own_gradient():
    model = _model(beta=0.4).eval()  # eval: no restarts, no usage counting
    x = torch.randn(5, 1, 8, 8)
    loss, metrics = vq_objective(model, x)
    with torch.no_grad():
        z = model.encoder(x)  # (5, 3, 2, 2)
    vectors = z.permute(0, 2, 3, 1).reshape(-1, 3)
    indices = _brute_force_nearest(vectors, model.quantizer.codebook.detach())
    chosen = model.quantizer.codebook.detach()[indices]
    grid = chosen.reshape(5, 2, 2, 3).permute(0, 3, 1, 2)
    with torch.no_grad():
        recon = float(((model.decoder(grid) - x) ** 2).mean())
    distance = float(((chosen - vectors) ** 2).mean())
    assert float(metrics["recon_mse"]) == pytest.approx(recon, rel=1e-5)
    assert float(metrics["codebook_loss"]) == pytest.approx(distance, rel=1e-5)
    assert float(metrics["commitment_loss"]) == pytest.approx(distance, rel=1e-5)
    assert float(loss.detach()) == pytest.approx(recon + distance + 0.4 * distance, rel=1e-5)
    loss.backward()
    # d/de of mean ||sg[z] - e||^2 is the only gradient the codebook receives.
    expected = torch.zeros(6, 3)
    expected.index_add_(0, indices, 2 * (chosen - vectors) / vectors.numel())
    assert torch.allclose(model.quantizer.codebook.grad, expected, atol=1e-6)


def test_usage_and_perplexity_match_numpy():
    indices = torch.tensor([[0, 0, 1], [3, 3, 3], [0, 7, 7]])
    usage, perplexity = code_perplexity(indices, 10)
    counts = np.bincount(indices.numpy().ravel(), minlength=10)
    p = counts[counts > 0] / counts.sum()
    assert float(usage) == pytest.approx(4 / 10)
    assert float(perplexity) == pytest.approx(np.exp(-(p * np.log(p)).sum()), rel=1e-6)
    assert float(code_perplexity(torch.zeros(7, dtype=torch.long), 4)[1]) == pytest.approx(1.0)
    assert float(code_perplexity(torch.arange(4), 4)[1]) == pytest.approx(4.0)


def test_dead_codes_are_moved_onto_encoder_outputs_and_live_ones_are_kept():
    model = _model(restart_after=3).train()
    x = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        used = set(model.codes(x).flatten().tolist())
    unused = sorted(set(range(6)) - used)
    assert unused, "the test needs a code the batch does not choose"
    before = model.quantizer.codebook.detach().clone()
    for _ in range(3):  # three steps without being chosen: unused codes reach the limit
        vq_objective(model, x)
    assert torch.equal(model.quantizer.codebook.detach(), before)
    assert all(model.quantizer.steps_unused[c] == 3 for c in unused)
    assert all(model.quantizer.steps_unused[c] == 0 for c in used)
    torch.manual_seed(5)
    vq_objective(model, x)  # the fourth step restarts them before quantising
    after = model.quantizer.codebook.detach()
    with torch.no_grad():
        outputs = model.encoder(x).permute(0, 2, 3, 1).reshape(-1, 3)
    for c in unused:
        assert not torch.equal(after[c], before[c])
        assert any(torch.allclose(after[c], row) for row in outputs)
    for c in used:
        assert torch.equal(after[c], before[c])
    # Deterministic given torch's RNG: the same restart again from the same state.
    again = _model(restart_after=3).train()
    for _ in range(3):
        vq_objective(again, x)
    torch.manual_seed(5)
    vq_objective(again, x)
    assert torch.equal(again.quantizer.codebook.detach(), after)
    never = _model(restart_after=0).train()
    never.quantizer.steps_unused.fill_(10**6)
    kept = never.quantizer.codebook.detach().clone()
    vq_objective(never, x)
    assert torch.equal(never.quantizer.codebook.detach(), kept)  # 0 switches restarts off


def test_the_quantizer_layer_records_codebook_vectors_and_encode_flattens_them():
    model = _model().eval()
    x = torch.randn(3, 1, 8, 8)
    recorded = []
    handle = model.quantizer.register_forward_hook(lambda module, inputs, output: recorded.append(output))
    with torch.no_grad():
        features = model.encode(x)
    handle.remove()
    codes = model.codes(x)
    assert codes.shape == (3, 2, 2) and codes.dtype == torch.long
    expected = model.quantizer.codebook.detach()[codes].permute(0, 3, 1, 2)
    assert torch.allclose(recorded[0], expected, atol=1e-6)
    assert features.shape == (3, 12) and torch.allclose(features, expected.flatten(1), atol=1e-6)
    assert "quantizer" in model.recordable_layers()


@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 16, 16), (1, 28, 28)])
def test_builds_for_the_zoo_shapes(shape):
    model = zoo.create_model("vq-vae", input_shape=shape)
    x = torch.randn(2, *shape)
    assert model.reconstruct(x).shape == x.shape
    assert model.codes(x).shape == (2, shape[1] // 4, shape[2] // 4)


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="multiples of 4"):
        zoo.create_model("vq-vae", input_shape=(1, 10, 10))
    with pytest.raises(ValueError, match="n_codes"):
        zoo.create_model("vq-vae", n_codes=1)


def test_save_and_reload_keep_codebook_counters_and_outputs(tmp_path):
    model = _model(restart_after=2).train()
    x = torch.randn(4, 1, 8, 8)
    for _ in range(3):
        vq_objective(model, x)
    model.eval()
    run = RunDir.create(tmp_path / "vq")
    run.write_config(model.config)
    run.save_final(model, {"loss": 0.0})
    torch.manual_seed(1)
    loaded = zoo.load(tmp_path / "vq")
    assert torch.equal(loaded.quantizer.steps_unused, model.quantizer.steps_unused)
    with torch.no_grad():
        assert torch.equal(loaded.codes(x), model.codes(x))
        assert torch.equal(loaded.reconstruct(x), model.reconstruct(x))
        assert torch.equal(loaded.encode(x), model.encode(x))


def test_evaluation_reports_reconstruction_usage_and_perplexity():
    train, test = zoo.load_dataset("digits"), zoo.load_dataset("digits", split="test")
    metrics = zoo.evaluate_model(_model(), train, test)
    assert {"recon_ratio", "codebook_usage", "perplexity", "knn_accuracy"} <= set(metrics)
    assert 0 < metrics["codebook_usage"] <= 1 and 1 <= metrics["perplexity"] <= 6
