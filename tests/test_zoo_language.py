"""word2vec (skip-gram with negative sampling) and the masked language model: sampling, losses, metrics, runs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import zoo
from zoo._evaluate import EVAL_MASK_SEED
from zoo._text import SPECIAL_TOKENS, TokenDataset, Vocabulary, subsample_keep_probability
from zoo.models.language import (
    bert_masking,
    draw_noise_words,
    masked_lm_objective,
    noise_distribution,
    sample_skipgram,
    sgns_loss,
    skipgram_pairs,
    word2vec_objective,
)

WORDS = ["the", "king", "queen", "man", "woman", "dog", "cat", "runs", "sleeps", "and"]


def _vocabulary(counts=(50, 9, 8, 7, 6, 5, 4, 3, 2, 1)) -> Vocabulary:
    return Vocabulary(SPECIAL_TOKENS + tuple(WORDS), (0, 3, 0) + tuple(counts))


def _model(name: str, vocabulary: Vocabulary | None = None, **options):
    vocabulary = vocabulary or _vocabulary()
    torch.manual_seed(0)
    return zoo.create_model(name, input_shape=[8], vocabulary=list(vocabulary.words),
                            word_counts=list(vocabulary.counts), **options)


def _random_ids(shape, vocabulary_size, seed=0, low=3):
    return torch.randint(low, vocabulary_size, shape, generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------- word2vec sampling


def test_pairs_lie_within_the_window_of_the_kept_words():
    # Every id occurs once in the batch, so a pair's ids give its positions.
    batch, length, window = 6, 12, 3
    ids = torch.arange(batch * length).reshape(batch, length) + 3
    ids[:, 4] = 1  # an <unk> in each sequence: dropped, and the words around it close up
    keep = torch.ones(batch * length + 3)
    torch.manual_seed(0)
    centres, contexts = skipgram_pairs(ids, keep, window)
    kept_position = {}
    for row in ids.tolist():
        for position, word in enumerate(w for w in row if w >= 3):
            kept_position[word] = (row[0], position)
    distances = []
    for centre, context in zip(centres.tolist(), contexts.tolist()):
        (row_c, pos_c), (row_x, pos_x) = kept_position[centre], kept_position[context]
        assert row_c == row_x and 1 <= abs(pos_c - pos_x) <= window
        distances.append(abs(pos_c - pos_x))
    # every centre pairs with its neighbours (radius >= 1), across the dropped <unk>
    assert len([d for d in distances if d == 1]) == 2 * batch * (length - 2)
    assert (ids[0, 3].item(), ids[0, 5].item()) in set(zip(centres.tolist(), contexts.tolist()))


def test_window_radius_is_uniform_from_one_to_window():
    batch, length, window = 400, 16, 4
    ids = torch.arange(batch * length).reshape(batch, length) + 3
    torch.manual_seed(1)
    centres, contexts = skipgram_pairs(ids, torch.ones(batch * length + 3), window)
    distance = (centres - contexts).abs()
    # a centre reaches distance d when its radius is >= d: probability (window - d + 1) / window
    n_reachable = {d: 2 * batch * (length - d) for d in range(1, window + 1)}
    for d in range(1, window + 1):
        share = int((distance == d).sum()) / n_reachable[d]
        assert share == pytest.approx((window - d + 1) / window, abs=0.02)


def test_subsampling_keeps_each_word_with_its_keep_probability():
    counts = np.array([0, 0, 0, 1000, 1, 1, 1, 1])
    keep = torch.tensor(subsample_keep_probability(counts, threshold=0.05), dtype=torch.float32)
    assert 0.2 < keep[3] < 0.5 and keep[4] == 1
    # sequences alternate the frequent word 3 with always-kept rare words, so every kept word has a pair
    ids = torch.tensor([3, 4, 3, 5, 3, 6, 3, 7] * 20000).reshape(-1, 8)
    torch.manual_seed(2)
    sample = sample_skipgram(ids, keep, 7, noise_distribution(counts).cumsum(0), 1)
    kept_share = int((sample.centre_words == 3).sum()) / int((ids == 3).sum())
    assert kept_share == pytest.approx(float(keep[3]), abs=0.01)
    assert int((sample.centre_words == 5).sum()) == int((ids == 5).sum())


def test_noise_words_follow_counts_to_the_three_quarters():
    counts = np.array([0, 40, 0, 100, 10, 1, 0, 50])
    expected = np.where(np.arange(8) >= 3, counts.astype(float) ** 0.75, 0.0)
    expected /= expected.sum()
    np.testing.assert_allclose(noise_distribution(counts).numpy(), expected, rtol=1e-12)
    torch.manual_seed(3)
    drawn = draw_noise_words(noise_distribution(counts).cumsum(0), (200_000,))
    np.testing.assert_allclose(np.bincount(drawn.numpy(), minlength=8) / drawn.numel(), expected, atol=0.005)
    # each pair's noise words, picked from the batch's pool, are distributed the same way
    shares = np.zeros(8)
    for seed in range(40):
        torch.manual_seed(seed)
        sample = sample_skipgram(torch.tensor([[3, 4, 5, 7] * 8] * 32), torch.ones(8), 5,
                                 noise_distribution(counts).cumsum(0), 5)
        shares += np.bincount(sample.negatives.flatten().numpy(), minlength=8) / sample.negatives.numel() / 40
    np.testing.assert_allclose(shares, expected, atol=0.01)


def test_word2vec_loss_equals_a_brute_force_loop_over_the_same_pairs_and_noise_words():
    model = _model("word2vec", dim=6, window=2, negatives=3, subsample=0.0)
    torch.nn.init.normal_(model.embed.weight)
    torch.nn.init.normal_(model.context.weight)
    ids = _random_ids((5, 8), len(WORDS) + 3, low=1)
    torch.manual_seed(7)
    loss, metrics = word2vec_objective(model, ids)
    torch.manual_seed(7)
    sample = sample_skipgram(ids, model.keep_probability, 2, model.noise_cdf, 3)
    E, C = model.embed.weight.detach().double().numpy(), model.context.weight.detach().double().numpy()
    log_sigmoid = lambda x: -math.log1p(math.exp(-x))
    terms, wins, ties = [], [], 0
    for centre, context, noise in zip(sample.centres.tolist(), sample.contexts.tolist(), sample.negatives.tolist()):
        positive = float(E[centre] @ C[context])
        term = -log_sigmoid(positive)
        for word in noise:
            term -= log_sigmoid(-float(E[centre] @ C[word]))
            wins.append(positive > float(E[centre] @ C[word]))
            ties += word == context  # equal scores, which float32 rounding may order either way
        terms.append(term)
    assert len(terms) > 20
    assert float(loss.detach()) == pytest.approx(np.mean(terms), rel=1e-5)
    assert abs(float(metrics["pair_accuracy"]) - np.mean(wins)) <= ties / len(wins) + 1e-6
    reference = sgns_loss(model.embed(sample.centres), model.context(sample.contexts), model.context(sample.negatives))
    assert float(reference.detach()) == pytest.approx(np.mean(terms), rel=1e-5)
    # and the fast gradient equals autograd's through nn.Embedding
    loss.backward()
    fast = model.embed.weight.grad.clone(), model.context.weight.grad.clone()
    model.zero_grad()
    reference.backward()
    torch.testing.assert_close(fast[0], model.embed.weight.grad)
    torch.testing.assert_close(fast[1], model.context.weight.grad)


def test_word2vec_contract_and_word_vectors():
    model = _model("word2vec", dim=4).eval()
    ids = _random_ids((3, 8), len(WORDS) + 3)
    assert model.family == "word-embedding" and model.recordable_layers() == ["embed", "context"]
    assert torch.equal(model(ids), model.embed.weight[ids]) and model.encode(ids).shape == (3, 32)
    wv = model.word_vectors()
    assert tuple(wv.words) == tuple(WORDS) and wv.vectors.dtype == np.float32
    np.testing.assert_array_equal(wv.vectors[WORDS.index("queen")], model.embed.weight[model.config["vocabulary"].index("queen")].detach().numpy())
    with pytest.raises(ValueError, match="vocabulary"):
        zoo.create_model("word2vec", input_shape=[8])


# ----------------------------------------------------------------------------- masked language model


def test_bert_masking_follows_the_80_10_10_rule():
    vocabulary_size = 10_000
    ids = _random_ids((400, 64), vocabulary_size)
    ids[:, 48:] = 0  # padding
    torch.manual_seed(4)
    corrupted, chosen = bert_masking(ids, 0.3, vocabulary_size)
    real = ids != 0
    assert not chosen[~real].any() and torch.equal(corrupted[~chosen], ids[~chosen])
    assert int(chosen.sum()) / int(real.sum()) == pytest.approx(0.3, abs=0.01)
    n = int(chosen.sum())
    masked = corrupted[chosen] == 2
    kept = corrupted[chosen] == ids[chosen]
    replaced = ~masked & ~kept
    assert int(masked.sum()) / n == pytest.approx(0.8, abs=0.01)
    assert int(kept.sum()) / n == pytest.approx(0.1, abs=0.01)
    assert int(replaced.sum()) / n == pytest.approx(0.1, abs=0.01)
    assert int(corrupted[chosen][replaced].min()) >= 3  # random replacements are real words


def test_masked_accuracy_and_unigram_baseline_match_a_hand_count():
    vocabulary = _vocabulary()
    model = _model("mlm", vocabulary, dim=16, depth=1, heads=2, mask_ratio=0.4).eval()
    ids = _random_ids((20, 8), len(vocabulary), seed=5, low=1)
    ids[0, 5:] = 0
    dataset = TokenDataset(ids, zoo.TextInfo("tiny", vocabulary, 8))
    result = model.masked_accuracy(dataset)
    torch.manual_seed(EVAL_MASK_SEED)
    corrupted, chosen = bert_masking(ids, 0.4, len(vocabulary))
    with torch.no_grad():
        predictions = model(corrupted).argmax(-1)
    most_frequent = max(range(len(vocabulary)), key=lambda i: (vocabulary.counts[i], -i))
    correct = unigram = total = 0
    for row in range(ids.shape[0]):
        for position in range(ids.shape[1]):
            if chosen[row, position]:
                total += 1
                correct += int(predictions[row, position] == ids[row, position])
                unigram += int(ids[row, position] == most_frequent)
    assert total > 10 and result["n_masked"] == total
    assert result["masked_accuracy"] == pytest.approx(correct / total)
    assert result["unigram_accuracy"] == pytest.approx(unigram / total) and unigram > 0
    assert model.evaluate(dataset, dataset)["masked_accuracy"] == result["masked_accuracy"]
    assert model.masked_accuracy(dataset, 0.9)["n_masked"] > total


def test_mlm_contract_word_vectors_and_a_decreasing_loss():
    vocabulary = _vocabulary()
    model = _model("mlm", vocabulary, dim=16, depth=2, heads=2)
    ids = _random_ids((4, 8), len(vocabulary))
    ids[1, 6:] = 0
    assert model.recordable_layers() == ["embed", "blocks.0", "blocks.1", "norm"]
    assert model(ids).shape == (4, 8, len(vocabulary)) and model.encode(ids).shape == (4, 16)
    # padding is neither attended to nor averaged: the padded sequence encodes as its real tokens alone
    model.embed.positions.weight.data[6:] = 0.0  # (the positions past 6 exist only in the padded input)
    alone = _model("mlm", vocabulary, dim=16, depth=2, heads=2)
    alone.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(model.encode(ids)[1], _encode_short(alone, ids[1, :6]))
    wv = model.word_vectors()
    np.testing.assert_array_equal(wv.vectors, model.embed.tokens.weight[3:].detach().numpy())
    assert tuple(wv.words) == tuple(WORDS)
    batch = _random_ids((32, 8), len(vocabulary), seed=6)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)

    def loss_at_fixed_seed():
        torch.manual_seed(123)
        with torch.no_grad():
            return float(masked_lm_objective(model, batch)[0])

    before = loss_at_fixed_seed()
    for step in range(15):
        torch.manual_seed(step)
        loss, _ = masked_lm_objective(model, batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss_at_fixed_seed() < before


def _encode_short(model, ids):
    """``encode`` of one sequence without padding (the model's positions cover longer ones too)."""
    hidden = model.embed(ids[None])
    for block in model.blocks:
        hidden = block(hidden)
    return model.norm(hidden).mean(1)[0]


# ----------------------------------------------------------------------------- runs


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    rng = np.random.default_rng(0)
    sentences = [f"the {a} {v} and the {b} {w}" for a, v, b, w in zip(
        rng.choice(["king", "queen", "man", "woman"], 600), rng.choice(["runs", "sleeps", "rules"], 600),
        rng.choice(["dog", "cat", "horse"], 600), rng.choice(["eats", "sees"], 600))]
    path = tmp_path_factory.mktemp("corpus") / "tiny.txt"
    path.write_text(". ".join(sentences), encoding="utf-8")
    return f"text:{path}"


@pytest.mark.parametrize("name, options", [("word2vec", {"dim": 8}), ("mlm", {"dim": 16, "depth": 1, "heads": 2})])
def test_a_trained_run_reloads_with_identical_outputs_and_the_same_seed_gives_the_same_weights(name, options, corpus, tmp_path):
    settings = dict(dataset=corpus, epochs=1, seed=3, progress=False, batch_size=32,
                    dataset_options={"sequence_length": 8, "min_count": 1}, **options)
    first = zoo.train(name, out=tmp_path / "a", **settings)
    primary = first.model.primary_metric
    assert primary in first.metrics and math.isfinite(first.metrics[primary])
    if name == "mlm":
        assert first.metrics["masked_accuracy"] >= 0 and "unigram_accuracy" in first.metrics
    test_set = zoo.load_dataset(corpus, split="test", sequence_length=8, min_count=1)
    ids = test_set.ids[:5]
    loaded = zoo.load(tmp_path / "a")
    assert loaded.config == first.model.config
    first.model.eval()
    with torch.no_grad():
        assert torch.equal(loaded(ids), first.model(ids)) and torch.equal(loaded.encode(ids), first.model.encode(ids))
    assert loaded.evaluate(None, test_set) == first.model.evaluate(None, test_set)
    second = zoo.train(name, out=tmp_path / "b", **settings)
    for key, value in first.model.state_dict().items():
        assert torch.equal(value, second.model.state_dict()[key]), key


def test_mask_ratio_sweep_scores_every_model_at_its_own_ratio_and_at_15_percent_and_reuses_runs(corpus, tmp_path):
    from probe.study._language_experiments import masked_lm_ratio_sweep

    options = dict(dataset=corpus, epochs=1, out=tmp_path, seed=0, device="cpu", progress=False, batch_size=32,
                   dataset_options={"sequence_length": 8, "min_count": 1}, dim=16, depth=1, heads=2)
    frame = masked_lm_ratio_sweep((0.15, 0.4), **options).to_frame()
    assert list(frame["mask_ratio"]) == [0.15, 0.4] and (frame["train_seconds"] > 0).all()
    # at 15 % both models see the same masks, so the unigram baseline is the same number
    assert frame["unigram_accuracy_at_15"].nunique() == 1
    first = frame.iloc[0]
    assert first["masked_accuracy"] == first["masked_accuracy_at_15"]
    test_set = zoo.load_dataset(corpus, split="test", sequence_length=8, min_count=1)
    second = zoo.load(frame["run_dir"][1])
    assert frame["masked_accuracy_at_15"][1] == second.masked_accuracy(test_set, 0.15)["masked_accuracy"]
    assert frame["masked_accuracy"][1] == second.masked_accuracy(test_set)["masked_accuracy"]
    written = {path: path.stat().st_mtime_ns for path in tmp_path.rglob("model.safetensors")}
    again = masked_lm_ratio_sweep((0.15, 0.4), **options).to_frame()
    assert again.drop(columns="run_dir").equals(frame.drop(columns="run_dir"))
    assert {path: path.stat().st_mtime_ns for path in tmp_path.rglob("model.safetensors")} == written
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        masked_lm_ratio_sweep((0.0,), **options)


def test_a_corpus_numbered_by_another_vocabulary_is_refused():
    words = ["<pad>", "<unk>", "<mask>", "in", "the", "beginning"]
    model = zoo.create_model("word2vec", input_shape=[4], vocabulary=words, word_counts=[0, 0, 0, 3, 5, 2], dim=4)
    same = zoo.TokenDataset.from_tokens("x", ["in", "the", "beginning", "the"] * 3,
                                        zoo.Vocabulary(tuple(words), (0, 0, 0, 1, 1, 1)), 4)
    other = zoo.TokenDataset.from_tokens("y", ["the", "in", "the", "end"] * 3,
                                         zoo.Vocabulary.build(["the", "in", "the", "end"], min_count=1), 4)
    zoo.check_input_shape(model, same, subject="x", advice="fix")  # same words, same ids: accepted
    with pytest.raises(ValueError, match=r"y numbers its words by another vocabulary \(6 words\)"):
        zoo.check_input_shape(model, other, subject="y", advice="fix")
