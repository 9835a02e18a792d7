"""Language models of words: word2vec (skip-gram with negative sampling) and a small masked language model.

Both train on a text corpus (a ``TokenDataset``: batches of token ids of shape (batch, L)) through the
zoo's one training loop, which builds them for the corpus's vocabulary (``vocabulary`` and
``word_counts``). Every random draw (subsampling, windows, noise words, masks) comes from torch's
global random number generator, which the loop seeds per epoch; evaluation draws from
``EVAL_MASK_SEED``, so that every evaluation sees the same pairs and masks.

Word2vec (Mikolov et al. 2013) learns two tables: input vectors (``embed``) and output, or context,
vectors (``context``); a word is pulled towards the words seen around it and pushed from ``negatives``
noise words drawn from the unigram distribution raised to 3/4. The masked language model (Devlin et
al. 2019, BERT) hides ``mask_ratio`` of the tokens (80 % become ``<mask>``, 10 % a random word, 10 %
stay) and predicts them with a transformer encoder.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from zoo._evaluate import EVAL_MASK_SEED
from zoo._registry import TrainDefaults, register_model
from zoo._text import MASK, PAD, SPECIAL_TOKENS, subsample_keep_probability
from zoo.models._base import ZooModel

__all__ = [
    "Word2Vec",
    "MaskedLanguageModel",
    "SkipgramSample",
    "sample_skipgram",
    "skipgram_pairs",
    "noise_distribution",
    "draw_noise_words",
    "sgns_loss",
    "word2vec_objective",
    "bert_masking",
    "masked_lm_objective",
]

_N_SPECIAL = len(SPECIAL_TOKENS)
_PAD_ID, _MASK_ID = SPECIAL_TOKENS.index(PAD), SPECIAL_TOKENS.index(MASK)
_EVAL_BATCH = 512
#: Noise words drawn per word2vec batch, from which each pair draws its own (see ``sample_skipgram``).
NOISE_POOL = 512


# ----------------------------------------------------------------------------- shared pieces


def _check_sequence_shape(input_shape: Sequence[int]) -> list[int]:
    shape = [int(v) for v in input_shape]
    if len(shape) != 1 or shape[0] < 2:
        raise ValueError(f"input_shape of a language model is [sequence_length] with sequence_length >= 2, got {list(input_shape)}")
    return shape


def _checked_vocabulary(model: str, vocabulary: Sequence[str] | None, word_counts: Sequence[int] | None) -> tuple[list[str], list[int]]:
    """The vocabulary (special tokens first) and its counts (every word 1 when none are given)."""
    if vocabulary is None:
        raise ValueError(
            f"{model} needs vocabulary= (the corpus's words, special tokens first); train it on a text dataset, "
            f"e.g. zoo.train({model!r}, dataset='bible-kjv'), which passes the vocabulary"
        )
    words = [str(w) for w in vocabulary]
    if tuple(words[:_N_SPECIAL]) != SPECIAL_TOKENS or len(words) <= _N_SPECIAL:
        raise ValueError(f"vocabulary must start with {SPECIAL_TOKENS} and hold at least one word, got {words[:4]}...")
    counts = [0] * _N_SPECIAL + [1] * (len(words) - _N_SPECIAL) if word_counts is None else [int(c) for c in word_counts]
    if len(counts) != len(words):
        raise ValueError(f"word_counts has {len(counts)} entries for {len(words)} words; give one count per word")
    if min(counts) < 0:
        raise ValueError("word_counts must be >= 0")
    return words, counts


def _word_vectors(model: ZooModel, table: torch.Tensor):
    """The rows of ``table`` of the real words (special tokens left out) as ``zoo.WordVectors``."""
    from zoo._word_vectors import WordVectors

    words = tuple(model.config["vocabulary"][_N_SPECIAL:])
    vectors = table.detach()[_N_SPECIAL:].float().cpu().numpy().astype(np.float32, copy=True)
    return WordVectors(words, vectors, model.config.get("name", model.family))


@contextmanager
def _fixed_randomness(device: torch.device) -> Iterator[None]:
    """Draw from ``EVAL_MASK_SEED`` inside, leaving the caller's random state untouched."""
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(EVAL_MASK_SEED)
        yield


def _test_batches(dataset, device: torch.device):
    for start in range(0, len(dataset), _EVAL_BATCH):
        ids, _ = dataset.get_batch(torch.arange(start, min(start + _EVAL_BATCH, len(dataset))))
        yield ids.to(device)


# ----------------------------------------------------------------------------- word2vec


@dataclass(frozen=True)
class SkipgramSample:
    """The (centre, context) pairs and noise words of one batch, as ``sample_skipgram`` draws them.

    Attributes
    ----------
    centre_words
        Long tensor of shape (n_centres,): the kept words that have at least one context word.
    pair_centre
        Long tensor of shape (n_pairs,): each pair's index into ``centre_words``.
    contexts
        Long tensor of shape (n_pairs,): each pair's context word.
    noise_pool
        Long tensor of shape (pool size,): words drawn independently from the noise distribution.
    noise_choice
        Long tensor of shape (n_pairs, negatives): each pair's noise words, as indices into ``noise_pool``.
    """

    centre_words: torch.Tensor
    pair_centre: torch.Tensor
    contexts: torch.Tensor
    noise_pool: torch.Tensor
    noise_choice: torch.Tensor

    @property
    def centres(self) -> torch.Tensor:
        """Each pair's centre word, shape (n_pairs,)."""
        return self.centre_words[self.pair_centre]

    @property
    def negatives(self) -> torch.Tensor:
        """Each pair's noise words, shape (n_pairs, negatives)."""
        return self.noise_pool[self.noise_choice]


def _close_up(ids: torch.Tensor, keep_probability: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each sequence's kept words moved to its front, in order, and how many there are (shape (batch, 1))."""
    keep = (ids >= _N_SPECIAL) & (torch.rand(ids.shape, device=ids.device) < keep_probability[ids])
    order = torch.sort((~keep).to(torch.uint8), dim=1, stable=True).indices  # kept first, in order
    return torch.gather(ids, 1, order), keep.sum(1, keepdim=True)


def sample_skipgram(ids: torch.Tensor, keep_probability: torch.Tensor, window: int, noise_cdf: torch.Tensor,
                    negatives: int, noise_pool: int = NOISE_POOL) -> SkipgramSample:
    """Word2vec's training pairs and noise words for a batch of sequences.

    The special tokens (``<pad>``, ``<unk>``, ``<mask>``) are dropped, and each other occurrence is kept
    with its word's ``keep_probability`` (subsampling of frequent words); the kept words of a sequence
    close up, and each centre draws a radius uniformly from 1..``window`` and pairs with every kept word
    at most that far on either side. Each pair gets ``negatives`` noise words, drawn uniformly from a
    pool of ``noise_pool`` words drawn from the noise distribution: every noise word is distributed as
    the noise distribution, and the scores of all centres against the pool are one matrix product.

    Parameters
    ----------
    ids
        Long tensor of shape (batch, L): token ids.
    keep_probability
        Float tensor of shape (vocabulary size,) (see ``zoo._text.subsample_keep_probability``).
    window
        The largest radius.
    noise_cdf
        Float tensor of shape (vocabulary size,): the cumulative noise distribution (``noise_distribution``).
    negatives
        Noise words per pair.
    noise_pool
        Size of the batch's pool of noise words.
    """
    if window < 1 or negatives < 1 or noise_pool < 1:
        raise ValueError(f"window, negatives and noise_pool must be >= 1, got {window}, {negatives}, {noise_pool}")
    words, n_kept = _close_up(ids, keep_probability)
    batch, length = ids.shape
    radius = torch.randint(1, window + 1, ids.shape, device=ids.device)
    position = torch.arange(length, device=ids.device)
    slot = torch.arange(batch * length, device=ids.device).reshape(batch, length)  # centre slot of each position
    centre_slots, contexts = [], []
    for offset in range(1, min(window, length - 1) + 1):
        in_range = position[None, offset:] < n_kept  # both words of the pair are kept ones
        forward = in_range & (radius[:, :-offset] >= offset)  # centre on the left, context on the right
        backward = in_range & (radius[:, offset:] >= offset)  # centre on the right, context on the left
        centre_slots += [slot[:, :-offset][forward], slot[:, offset:][backward]]
        contexts += [words[:, offset:][forward], words[:, :-offset][backward]]
    centre_slots = torch.cat(centre_slots)
    used, pair_centre = torch.unique(centre_slots, return_inverse=True)
    contexts = torch.cat(contexts)
    pool = draw_noise_words(noise_cdf, (noise_pool,))
    choice = torch.randint(0, noise_pool, (contexts.numel(), negatives), device=ids.device)
    return SkipgramSample(words.reshape(-1)[used], pair_centre, contexts, pool, choice)


def skipgram_pairs(ids: torch.Tensor, keep_probability: torch.Tensor, window: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The (centre, context) pairs of ``sample_skipgram``, without noise words.

    Returns
    -------
    centres, contexts
        Long tensors of shape (n_pairs,): word ids.
    """
    sample = sample_skipgram(ids, keep_probability, window, torch.ones(1, device=ids.device), 1, 1)
    return sample.centres, sample.contexts


def noise_distribution(word_counts: Sequence[int] | np.ndarray, power: float = 0.75) -> torch.Tensor:
    """Word2vec's noise distribution: counts raised to ``power``, normalised; the special tokens get 0.

    Returns
    -------
    Float64 tensor of shape (vocabulary size,) summing to 1.
    """
    counts = np.asarray(word_counts, dtype=np.float64).copy()
    counts[:_N_SPECIAL] = 0.0
    if counts.sum() <= 0:
        raise ValueError("word_counts must count at least one word besides the special tokens")
    weights = counts**power
    return torch.from_numpy(weights / weights.sum())


def draw_noise_words(noise_cdf: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Word ids of the given shape, drawn independently from the distribution whose cumulative sum is ``noise_cdf``."""
    uniform = torch.rand(tuple(shape), dtype=noise_cdf.dtype, device=noise_cdf.device) * noise_cdf[-1]
    return torch.searchsorted(noise_cdf, uniform, right=True).clamp_(max=noise_cdf.numel() - 1)


class _RowLookup(torch.autograd.Function):
    """``weight[ids]`` whose backward adds the rows' gradients with ``index_add_``: on the CPU several times
    faster than ``nn.Embedding``'s backward for the many lookups of a word2vec batch."""

    @staticmethod
    def forward(ctx, weight: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(ids)
        ctx.n_rows = weight.shape[0]
        return weight.index_select(0, ids.reshape(-1)).reshape(*ids.shape, weight.shape[1])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (ids,) = ctx.saved_tensors
        rows = grad.reshape(-1, grad.shape[-1])
        weight_grad = rows.new_zeros(ctx.n_rows, rows.shape[1]).index_add_(0, ids.reshape(-1), rows)
        return weight_grad, None


def sgns_loss(centre_vectors: torch.Tensor, context_vectors: torch.Tensor, noise_vectors: torch.Tensor) -> torch.Tensor:
    """Skip-gram negative-sampling loss, averaged over pairs.

    ``-log sigmoid(u . v) - sum_k log sigmoid(-u . v_k)`` for centre vectors u of shape (n, d), context
    vectors v of shape (n, d) and noise vectors v_k of shape (n, k, d).
    """
    positive = (centre_vectors * context_vectors).sum(-1)
    negative = torch.einsum("nd,nkd->nk", centre_vectors, noise_vectors)
    return -(F.logsigmoid(positive) + F.logsigmoid(-negative).sum(-1)).mean()


def word2vec_objective(model: "Word2Vec", ids: torch.Tensor, labels: torch.Tensor | None = None):
    """``sgns_loss`` of the pairs and noise words that ``sample_skipgram`` draws from a batch of shape (batch, L).

    Computed without gathering a vector per noise word: the centres' scores against the whole noise
    pool are one matrix product, from which each pair's noise words' scores are picked.

    Metrics: ``pair_accuracy``, the share of (pair, noise word) comparisons in which the true context
    word scores higher than the noise word.
    """
    config = model.config
    sample = sample_skipgram(ids, model.keep_probability, config["window"], model.noise_cdf, config["negatives"])
    if sample.contexts.numel() == 0:  # nothing survived subsampling: a zero loss that still reaches the weights
        zero = model.embed.weight.sum() * 0.0
        return zero, {"pair_accuracy": zero.detach()}
    centre_vectors = _RowLookup.apply(model.embed.weight, sample.centre_words)
    u = centre_vectors[sample.pair_centre]
    positive = (u * _RowLookup.apply(model.context.weight, sample.contexts)).sum(-1)
    pool_scores = centre_vectors @ _RowLookup.apply(model.context.weight, sample.noise_pool).T
    negative = pool_scores[sample.pair_centre[:, None], sample.noise_choice]
    loss = -(F.logsigmoid(positive) + F.logsigmoid(-negative).sum(-1)).mean()
    accuracy = (positive.detach()[:, None] > negative.detach()).float().mean()
    return loss, {"pair_accuracy": accuracy}


@register_model("word2vec", objective=word2vec_objective,
                defaults=TrainDefaults(epochs=5, lr=1e-2, batch_size=128, weight_decay=0.0, warmup_epochs=0.02))
class Word2Vec(ZooModel):
    """Skip-gram with negative sampling: an input-vector table and a context-vector table.

    Parameters
    ----------
    input_shape
        [sequence_length] of the corpus's items (only recorded; the tables take ids of any shape).
    vocabulary
        The corpus's words, special tokens first (``zoo.Vocabulary.words``).
    word_counts
        Their corpus counts (subsampling and the noise distribution); None: every word once.
    dim
        Size of the word vectors.
    window
        Largest distance between a centre word and its context words (each centre draws 1..window).
    negatives
        Noise words per (centre, context) pair.
    subsample
        Subsampling threshold t (word2vec's 1e-3); 0 keeps every word.

    Notes
    -----
    ``forward(ids)`` returns the input vectors of ids of any shape (shape (*ids.shape, dim)) and
    also looks the ids up in ``context``, so that recording the layer ``context`` gives their output
    vectors. ``word_vectors()`` returns the input vectors, the usual choice.
    """

    family = "word-embedding"
    primary_metric = "test_loss"

    def __init__(
        self,
        input_shape: Sequence[int] = (32,),
        vocabulary: Sequence[str] | None = None,
        word_counts: Sequence[int] | None = None,
        dim: int = 100,
        window: int = 5,
        negatives: int = 5,
        subsample: float = 1e-3,
    ):
        super().__init__()
        shape = _check_sequence_shape(input_shape)
        words, counts = _checked_vocabulary("word2vec", vocabulary, word_counts)
        if window < 1 or negatives < 1:
            raise ValueError(f"window and negatives must be >= 1, got window={window}, negatives={negatives}")
        self.config = {
            "input_shape": shape,
            "vocabulary": words,
            "word_counts": counts,
            "dim": dim,
            "window": int(window),
            "negatives": int(negatives),
            "subsample": float(subsample),
        }
        self.embed = nn.Embedding(len(words), dim)
        self.context = nn.Embedding(len(words), dim)
        # word2vec's start: small random input vectors, zero context vectors.
        nn.init.uniform_(self.embed.weight, -0.5 / dim, 0.5 / dim)
        nn.init.zeros_(self.context.weight)
        special = np.zeros(len(words), dtype=np.float64)
        special[_N_SPECIAL:] = counts[_N_SPECIAL:]
        keep = subsample_keep_probability(special, subsample)
        self.register_buffer("keep_probability", torch.tensor(keep, dtype=torch.float32), persistent=False)
        cdf = noise_distribution(counts).cumsum(0)
        self.register_buffer("noise_cdf", cdf.to(torch.float64), persistent=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        self.context(ids)  # looked up only so that recording `context` gives the output vectors
        return self.embed(ids)

    def encode(self, ids: torch.Tensor) -> torch.Tensor:
        """The input vectors of each item's words, concatenated: shape (batch, L * dim)."""
        return self.embed(ids).flatten(1)

    def recordable_layers(self) -> list[str]:
        return ["embed", "context"]

    def word_vectors(self):
        """The input vectors of the real words as ``zoo.WordVectors`` (special tokens left out)."""
        return _word_vectors(self, self.embed.weight)

    @torch.no_grad()
    def evaluate(self, train_set, test_set) -> dict[str, float]:
        """``test_loss``: the SGNS loss on the test split, with pairs and noise words from ``EVAL_MASK_SEED``."""
        device = self.embed.weight.device
        total, n_batches = 0.0, 0
        with _fixed_randomness(device):
            for ids in _test_batches(test_set, device):
                total += float(word2vec_objective(self, ids)[0])
                n_batches += 1
        return {"test_loss": total / max(1, n_batches)}


# ----------------------------------------------------------------------------- masked language model


def bert_masking(ids: torch.Tensor, mask_ratio: float, vocabulary_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Choose ``mask_ratio`` of the tokens (never ``<pad>``) and corrupt them by BERT's rule.

    Each non-pad token is chosen independently with probability ``mask_ratio``; of the chosen, 80 %
    become ``<mask>``, 10 % a word drawn uniformly from the real words (ids >= 3), 10 % stay.

    Returns
    -------
    corrupted
        Long tensor shaped like ``ids``: the model's input.
    chosen
        Bool tensor shaped like ``ids``: the positions to predict.
    """
    chosen = (ids != _PAD_ID) & (torch.rand(ids.shape, device=ids.device) < mask_ratio)
    rule = torch.rand(ids.shape, device=ids.device)
    random_words = torch.randint(_N_SPECIAL, vocabulary_size, ids.shape, device=ids.device)
    corrupted = torch.where(chosen & (rule < 0.8), torch.full_like(ids, _MASK_ID), ids)
    corrupted = torch.where(chosen & (rule >= 0.8) & (rule < 0.9), random_words, corrupted)
    return corrupted, chosen


def masked_lm_objective(model: "MaskedLanguageModel", ids: torch.Tensor, labels: torch.Tensor | None = None):
    """Cross-entropy of the chosen tokens (``bert_masking`` at the model's ratio); metric ``masked_accuracy``."""
    corrupted, chosen = bert_masking(ids, model.mask_ratio, model.vocabulary_size)
    logits = model.head(model.hidden_states(corrupted)[chosen])
    targets = ids[chosen]
    if targets.numel() == 0:  # no token chosen in this batch: a zero loss that still reaches the weights
        zero = logits.sum() * 0.0
        return zero, {"masked_accuracy": zero.detach()}
    loss = F.cross_entropy(logits.float(), targets)
    return loss, {"masked_accuracy": (logits.argmax(-1) == targets).float().mean().detach()}


class TokenAndPositionEmbedding(nn.Module):
    """The sum of a token embedding (``tokens``) and a learned position embedding (``positions``)."""

    def __init__(self, vocabulary_size: int, sequence_length: int, dim: int):
        super().__init__()
        self.tokens = nn.Embedding(vocabulary_size, dim)
        self.positions = nn.Embedding(sequence_length, dim)
        nn.init.normal_(self.tokens.weight, std=0.02)
        nn.init.normal_(self.positions.weight, std=0.02)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.tokens(ids) + self.positions(torch.arange(ids.shape[1], device=ids.device))


@register_model("mlm", objective=masked_lm_objective,
                defaults=TrainDefaults(epochs=8, lr=3e-3, batch_size=128, weight_decay=0.01, warmup_epochs=0.05))
class MaskedLanguageModel(ZooModel):
    """A small BERT: token and position embeddings, pre-norm transformer blocks, a final norm, a word head.

    Parameters
    ----------
    input_shape
        [sequence_length]: the longest sequence the position embedding covers.
    vocabulary
        The corpus's words, special tokens first (``zoo.Vocabulary.words``).
    word_counts
        Their corpus counts (the unigram baseline predicts the most counted); None: every word once.
    mask_ratio
        Share of the tokens hidden during training (BERT's 0.15).
    dim, depth, heads
        Width, number of transformer blocks and attention heads.
    """

    family = "masked-lm"
    primary_metric = "masked_accuracy"

    def __init__(
        self,
        input_shape: Sequence[int] = (32,),
        vocabulary: Sequence[str] | None = None,
        word_counts: Sequence[int] | None = None,
        mask_ratio: float = 0.15,
        dim: int = 64,
        depth: int = 2,
        heads: int = 4,
    ):
        super().__init__()
        shape = _check_sequence_shape(input_shape)
        words, counts = _checked_vocabulary("mlm", vocabulary, word_counts)
        if not 0 < mask_ratio < 1:
            raise ValueError(f"mask_ratio must lie strictly between 0 and 1, got {mask_ratio}")
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by {heads} attention heads")
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self.config = {
            "input_shape": shape,
            "vocabulary": words,
            "word_counts": counts,
            "mask_ratio": float(mask_ratio),
            "dim": dim,
            "depth": depth,
            "heads": heads,
        }
        self.mask_ratio, self.vocabulary_size = float(mask_ratio), len(words)
        # The unigram baseline's guess: the most counted token (ties: the smaller id).
        self.most_frequent_id = int(np.argmax(counts))
        self.embed = TokenAndPositionEmbedding(len(words), shape[0], dim)
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(dim, heads, 4 * dim, dropout=0.0, activation="gelu", batch_first=True, norm_first=True)
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, len(words))

    def hidden_states(self, ids: torch.Tensor) -> torch.Tensor:
        """The final (normalised) hidden states, shape (batch, L, dim); ``<pad>`` positions are not attended to."""
        if ids.dim() != 2 or ids.shape[1] > self.embed.positions.num_embeddings:
            raise ValueError(
                f"expected token ids of shape (batch, L) with L <= {self.embed.positions.num_embeddings} (the model's "
                f"input_shape), got {tuple(ids.shape)}; cut the text into sequences of at most that length"
            )
        padding = ids == _PAD_ID
        padding &= ~padding.all(1, keepdim=True)  # an all-pad row attends to itself rather than to nothing
        mask = padding if bool(padding.any()) else None
        x = self.embed(ids)
        for block in self.blocks:
            x = block(x, src_key_padding_mask=mask)
        return self.norm(x)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Logits over the vocabulary at every position: shape (batch, L, vocabulary size)."""
        return self.head(self.hidden_states(ids))

    def encode(self, ids: torch.Tensor) -> torch.Tensor:
        """Mean of the final hidden states over the non-pad tokens: shape (batch, dim)."""
        hidden = self.hidden_states(ids)
        real = (ids != _PAD_ID).unsqueeze(-1).to(hidden.dtype)
        return (hidden * real).sum(1) / real.sum(1).clamp(min=1.0)

    def recordable_layers(self) -> list[str]:
        return ["embed"] + [f"blocks.{i}" for i in range(len(self.blocks))] + ["norm"]

    def word_vectors(self):
        """The token embedding of the real words as ``zoo.WordVectors`` (special tokens left out)."""
        return _word_vectors(self, self.embed.tokens.weight)

    @torch.no_grad()
    def masked_accuracy(self, dataset, mask_ratio: float | None = None) -> dict[str, float]:
        """Accuracy on masked tokens of ``dataset``, with masks drawn from ``EVAL_MASK_SEED``.

        Parameters
        ----------
        dataset
            A ``TokenDataset``.
        mask_ratio
            The share of tokens masked (None: the model's own).

        Returns
        -------
        dict
            ``masked_accuracy`` (the model's), ``unigram_accuracy`` (always guessing the most counted
            training token, on the same positions) and ``n_masked``.
        """
        ratio = self.mask_ratio if mask_ratio is None else float(mask_ratio)
        device = self.head.weight.device
        correct = unigram = total = 0
        with _fixed_randomness(device):
            for ids in _test_batches(dataset, device):
                corrupted, chosen = bert_masking(ids, ratio, self.vocabulary_size)
                targets = ids[chosen]
                predicted = self.head(self.hidden_states(corrupted)[chosen]).argmax(-1)
                correct += int((predicted == targets).sum())
                unigram += int((targets == self.most_frequent_id).sum())
                total += targets.numel()
        if total == 0:
            raise ValueError(f"no token was masked in {len(dataset)} sequences at mask ratio {ratio}; use more data or a larger ratio")
        return {"masked_accuracy": correct / total, "unigram_accuracy": unigram / total, "n_masked": float(total)}

    def evaluate(self, train_set, test_set) -> dict[str, float]:
        """``masked_accuracy`` and ``unigram_accuracy`` on the test split at the model's own ratio."""
        result = self.masked_accuracy(test_set)
        return {"masked_accuracy": result["masked_accuracy"], "unigram_accuracy": result["unigram_accuracy"]}
