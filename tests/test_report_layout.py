"""Every figure and table of a report stays legible: nothing overflows its card at 1,280 or 1,920 px,
big matrices keep their drawn size in a scroll view, MDS labels do not collide, one colour per model."""

import itertools
import os

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from analyses import SimilarityMatrix, compare_subspaces, label_efficiency, probe_layers, rdm_mds
from analyses._reference_rdm import LayerRanking
from probe import Recording
from reports import Report, Section, model_colors, render_fragment, table_html
from reports._layers_section import layers_section
from reports._similarity_section import _mds_figure, similarity_section
from reports._subspace_section import _set_k_axis, subspace_section
from reports._transfer_section import transfer_section
from reports._zoo_section import zoo_section
from _browser import find_chromium, find_overflows, loaded_page
from test_reports import _summary

CHROMIUM = find_chromium()


def needs_chromium(test):
    """Mark a test that opens the page in Chromium; it skips where there is none (CI installs it)."""
    skip = pytest.mark.skipif(CHROMIUM is None and not os.environ.get("CI"),
                              reason="needs Chromium (apt-get install chromium); CI installs it")
    return pytest.mark.browser(skip(test))

MODELS = ["cnn", "mlp", "simclr", "ae-linear", "ae-mlp", "ae-conv", "ae-denoising", "ae-sparse", "ae-contractive",
          "ae-vae", "mae"]
LAYERS = ["features.relu1", "features.relu2", "encoder.code_act"]


def _similarity(rng, measure):
    names = [f"{model}/{layer}" for model in MODELS for layer in LAYERS]
    values = rng.random((len(names), len(names)))
    values = (values + values.T) / 2
    np.fill_diagonal(values, 1.0)
    return SimilarityMatrix(values, names, [n.split("/")[0] for n in names], [n.split("/")[1] for n in names],
                            measure, 120)


def _ranking(similarity, rng):
    scores = rng.random(len(similarity.names)) * 0.25
    frame = pd.DataFrame({"name": similarity.names, "model": similarity.models, "layer": similarity.layers,
                          "depth": [i % len(LAYERS) for i in range(len(scores))], "score": scores})
    frame["rank"] = frame["score"].rank(ascending=False).astype(int)
    frame["rank_in_model"] = frame.groupby("model")["score"].rank(ascending=False).astype(int)
    return LayerRanking(frame.assign(ci_low=scores - 0.02, ci_high=scores + 0.02), "rho-a", "category")


def _recordings(rng, n=40):
    return {
        model: Recording({layer: np.maximum(rng.standard_normal((n, 8 + 4 * i)), 0) for i, layer in enumerate(LAYERS)},
                         labels=np.arange(n) % 4)
        for model in MODELS
    }


def _transfer(rng):
    labels = rng.integers(0, 3, 90)
    layers = {layer: rng.standard_normal((90, 4)) + np.eye(3, 4)[labels] * i for i, layer in enumerate(LAYERS)}
    train = Recording({k: v[:60] for k, v in layers.items()}, labels=labels[:60])
    test = Recording({k: v[60:] for k, v in layers.items()}, labels=labels[60:])
    transfer = probe_layers({model: (train, test) for model in MODELS[:3]}, C=1.0, progress=False, device="cpu")
    efficiency = label_efficiency({"raw pixels": ((train, LAYERS[0]), (test, LAYERS[0])),
                                   "simclr encoder": ((train, LAYERS[2]), (test, LAYERS[2]))},
                                  labels_per_class=(1, 5), seeds=(0,), C=1.0, progress=False, device="cpu")
    return transfer, efficiency


def _wide_table(rng):
    columns = [f"singular_vector_alignment_error_{i}" for i in range(14)]
    return table_html(pd.DataFrame(rng.random((4, len(columns))), columns=columns))


@pytest.fixture(scope="module")
def wide_report(tmp_path_factory):
    """A report with every kind of wide content: 33 × 33 maps, 33 bars, 11-model tables, a 14-column table."""
    rng = np.random.default_rng(0)
    cka, correlation = _similarity(rng, "linear CKA"), _similarity(rng, "pearson of correlation RDMs")
    X = rng.standard_normal((60, 6)) * np.arange(6, 0, -1)
    comparison = compare_subspaces(X, ks=(5,), source="pixels", max_iter=200, device="cpu", progress=False)
    transfer, efficiency = _transfer(rng)
    report = Report("Layout")
    for section in zoo_section([_summary(name) for name in MODELS[:4]]):
        report.add(section)
    for section in layers_section(_recordings(rng)):
        report.add(section)
    report.add(similarity_section(cka=cka, rdm_similarity=correlation, mds=rdm_mds(correlation),
                                  ranking=_ranking(correlation, rng), models=MODELS))
    report.add(subspace_section(comparison))
    report.add(transfer_section(transfer, efficiency, models=MODELS))
    body = render_fragment("sections/figures.html.j2", intro="", items=[{"title": "Wide", "table": _wide_table(rng)}])
    report.add(Section("Wide table", body))
    return report.write(tmp_path_factory.mktemp("layout") / "report.html")


@needs_chromium
@pytest.mark.parametrize("width", [1280, 1920])
def test_nothing_overflows_its_container(wide_report, width):
    assert find_overflows(wide_report, CHROMIUM, width) == []


# Per image in a full-size view: drawn (natural) width, shown width, and the width of its scroll view.
_FULL_SIZE_JS = """
Array.from(document.querySelectorAll('.full-size img')).map(img => ({
  alt: img.alt, natural: img.naturalWidth, shown: img.getBoundingClientRect().width,
  view: img.parentElement.getBoundingClientRect().width}))
"""


@needs_chromium
def test_big_maps_keep_their_size_and_fit_to_width_on_request(wide_report):
    with loaded_page(wide_report, CHROMIUM, 1280) as page:
        shown = {image["alt"]: image for image in page.evaluate(_FULL_SIZE_JS)}
        assert {"CKA across layers", "RDM correlation across layers"} <= set(shown)
        assert all(image["shown"] == image["natural"] for image in shown.values())  # never shrunk
        page.evaluate("document.querySelectorAll('.fit-toggle input').forEach(box => box.click())")
        fitted = page.evaluate(_FULL_SIZE_JS)
        assert all(image["shown"] <= image["view"] + 0.5 for image in fitted)
        assert page.evaluate("document.scripts.length") == 0  # pure HTML and CSS
    with loaded_page(wide_report, CHROMIUM, 1920) as page:  # a wide screen gives the cards more room
        assert page.evaluate("document.body.clientWidth") > 1700


def test_big_maps_have_legible_labels():
    rng = np.random.default_rng(1)
    html = str(similarity_section(cka=_similarity(rng, "linear CKA")).body)
    assert 'class="scroll-x full-size"' in html
    from test_reports import decode_data_uri

    uri = html.split('src="')[1].split('"')[0]
    # at least 7-pt rows at 96 dpi: 33 rows need 33 * 7 / 72 * 96 pixels
    assert decode_data_uri(uri).shape[0] > 33 * 7 / 72 * 96


def _bbox_overlaps(a, b):
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


@pytest.mark.parametrize("n_points,spread", [(33, 1.0), (40, 0.01), (12, 0.0)])
def test_mds_labels_do_not_overlap(n_points, spread):
    from matplotlib.text import Text

    from analyses import MDSResult

    rng = np.random.default_rng(n_points)
    coordinates = rng.normal(size=(n_points, 2)) * spread
    coordinates[: n_points // 3] *= 0.02  # a tight cluster
    models = [MODELS[i % len(MODELS)] for i in range(n_points)]
    layers = [LAYERS[i % len(LAYERS)] for i in range(n_points)]
    mds = MDSResult(coordinates, [f"{m}/{layer}" for m, layer in zip(models, layers)], models, layers, 0.1, "test")
    fig = _mds_figure(mds, model_colors(MODELS))
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    labels = [text for text in ax.texts if text.get_text() in LAYERS]
    assert len(labels) == n_points
    boxes = [Text.get_window_extent(label, renderer) for label in labels]  # the text alone, not its leader line
    overlapping = [(i, j) for i, j in itertools.combinations(range(n_points), 2) if _bbox_overlaps(boxes[i], boxes[j])]
    assert overlapping == []
    legend = ax.get_legend().get_window_extent(renderer)
    assert not any(_bbox_overlaps(box, legend) for box in boxes)
    # every marker is drawn in its model's colour
    colors = model_colors(MODELS)
    for collection in ax.collections:
        model = collection.get_label()
        assert np.allclose(collection.get_facecolor()[0][:3], plt.matplotlib.colors.to_rgb(colors[model]))
    plt.close(fig)


def test_model_colors_are_distinct_and_stable():
    names = [f"model-{i}" for i in range(24)]
    colors = model_colors(names)
    assert len(set(colors.values())) == 24  # distinct, also past the 20 of the palette
    assert len(set(list(colors.values())[:20])) == 20
    assert model_colors(names + names[:3]) == colors  # repeats change nothing
    assert list(model_colors(["b", "a"])) == ["b", "a"]  # assigned in the given order, not sorted
    assert model_colors(["b", "a"])["b"] == colors["model-0"]


def test_feature_sets_take_their_models_colour():
    from reports._colors import BASELINE_COLOR, model_of
    from reports._transfer_section import _feature_colors

    colors = model_colors(MODELS)
    shown = _feature_colors(["raw pixels", "simclr encoder", "ae-conv · encoder.code"], colors)
    assert shown == {"raw pixels": BASELINE_COLOR, "simclr encoder": colors["simclr"],
                     "ae-conv · encoder.code": colors["ae-conv"]}
    networks = ["net", "net · photos"]
    assert model_of("net · photos · conv_stem", networks) == "net · photos"  # the longest model name wins
    assert model_of("net · conv_stem", networks) == "net"
    assert model_of("network · conv_stem", networks) is None


@pytest.mark.parametrize("ks", [[5], [1, 3, 8], [2, 4]])
def test_k_axis_ticks_are_the_ks_with_margins(ks):
    fig, ax = plt.subplots()
    ax.plot(ks, np.ones(len(ks)), marker="o")
    _set_k_axis(ax, ks)
    assert list(ax.get_xticks()) == ks
    low, high = ax.get_xlim()
    assert low <= min(ks) - 0.5 and high >= max(ks) + 0.5
    plt.close(fig)
