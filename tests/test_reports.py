"""The report core: escaping, images that round-trip, grids, tables, sections, atomic writing."""

import base64
import io

import numpy as np
import pandas as pd
import pytest
from markupsafe import Markup
from PIL import Image

import matplotlib.pyplot as plt

from reports import Report, Section, figure_to_data_uri, image_grid, image_to_data_uri, render_fragment, table_html
from reports._zoo_section import ModelSummary, Reconstructions, zoo_section


def decode_data_uri(uri: str) -> np.ndarray:
    assert uri.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))))


def test_render_fragment_escapes_strings_but_not_markup():
    html = render_fragment("sections/text.html.j2", text="<script>x</script>")
    assert "<script>" not in html and "&lt;script&gt;x&lt;/script&gt;" in html
    assert isinstance(html, Markup)


def test_section_refuses_plain_strings():
    with pytest.raises(TypeError, match="Markup"):
        Section("Bad", "<b>not escaped</b>")


def test_report_makes_anchors_unique_and_escapes_title(tmp_path):
    report = Report("<script>alert(1)</script>")
    for _ in range(3):
        report.add(Section("Same title", Markup("<p>x</p>")))
    assert [s.anchor for s in report.sections] == ["same-title", "same-title-2", "same-title-3"]
    path = report.write(tmp_path / "r.html")
    text = path.read_text()
    assert "<script>" not in text and "&lt;script&gt;" in text
    assert not list(tmp_path.glob(".*tmp"))  # no temporary file left behind


def test_image_to_data_uri_round_trips_uint8_and_float():
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    assert np.array_equal(decode_data_uri(image_to_data_uri(pixels)), pixels)
    gray = rng.random((4, 6))
    decoded = decode_data_uri(image_to_data_uri(gray, scale=3))
    expected = np.round(gray * 255).astype(np.uint8).repeat(3, 0).repeat(3, 1)
    assert np.array_equal(decoded, expected)
    channels_first = np.moveaxis(pixels, -1, 0)
    assert np.array_equal(decode_data_uri(image_to_data_uri(channels_first)), pixels)


def test_image_grid_matches_a_brute_force_layout():
    images = np.arange(5 * 2 * 3, dtype=float).reshape(5, 2, 3)
    grid = image_grid(images, n_columns=2, padding=1, fill=-1)
    assert grid.shape == (3 * 3 - 1, 2 * 4 - 1)
    for i, image in enumerate(images):
        row, col = divmod(i, 2)
        assert np.array_equal(grid[row * 3 : row * 3 + 2, col * 4 : col * 4 + 3], image)
    assert np.all(grid[2, :] == -1) and np.all(grid[:, 3] == -1)
    assert np.all(grid[6:8, 4:7] == -1)  # the unused last cell stays padding


def test_figure_to_data_uri_closes_the_figure_and_decodes():
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    n_open = len(plt.get_fignums())
    image = decode_data_uri(figure_to_data_uri(fig))
    assert image.ndim == 3 and image.shape[0] > 10
    assert len(plt.get_fignums()) == n_open - 1


def test_table_html_escapes_cells():
    html = table_html(pd.DataFrame({"model": ["<b>x</b>"], "value": [0.123456]}))
    assert "&lt;b&gt;x&lt;/b&gt;" in html and "0.1235" in html


def _summary(name="ae", with_mask=False):
    rng = np.random.default_rng(0)
    inputs = rng.random((4, 8, 8))
    return ModelSummary(
        name=name,
        family="autoencoder",
        dataset="digits",
        architecture="Linear(64, 10)",
        n_parameters=650,
        history=pd.DataFrame({"epoch": [1, 2, 3], "train_loss": [1.0, 0.5, 0.3], "lr": [1e-3] * 3}),
        metrics={"reconstruction_mse": 0.3, "note": "text is not tabulated"},
        train_seconds=1.5,
        reconstructions=Reconstructions(inputs, inputs * 0.9, (rng.random((4, 8, 8)) > 0.5) if with_mask else None),
    )


def test_zoo_section_shows_every_model_with_curves_and_reconstructions():
    (section,) = zoo_section([_summary("ae"), _summary("mae", with_mask=True)])
    html = str(section.body)
    assert section.title == "Zoo"
    assert html.count("<div class=\"card\">") == 2
    # per model: a training curve and a reconstruction grid, both decodable PNGs
    uris = [part.split('"')[0] for part in html.split('src="')[1:]]
    assert len(uris) == 4
    shapes = [decode_data_uri(uri).shape for uri in uris]
    assert shapes[1][0] < shapes[3][0]  # the MAE's grid has an extra row: the masked input
    assert "reconstruction_mse" in html and "text is not tabulated" not in html


def test_zoo_section_draws_no_curve_for_a_single_epoch():
    summary = _summary("ae")
    summary.history = summary.history.iloc[:1]
    (section,) = zoo_section([summary])
    html = str(section.body)
    assert "training curve of" not in html  # one point is not a curve
    assert html.count("<img") == 1  # the reconstruction grid only
    assert "reconstruction_mse" in html  # the final values stay in the metrics table
