"""The "Words" report section, built from word-vector results on small synthetic tables."""

import base64
import io
import re

import numpy as np
import pytest
from markupsafe import Markup
from PIL import Image

from analyses._word_vectors import (
    analogy_accuracy,
    nearest_neighbours,
    solve_analogy,
    word_category_geometry,
)
from reports import Report
from reports._words_section import words_section
from zoo._word_vectors import WordVectors

CATEGORIES = {"fruit": ("apple", "pear", "plum", "fig"), "tools": ("saw", "drill", "hammer"), "birds": ("owl", "crow", "wren")}


def _tables():
    rng = np.random.default_rng(0)
    words = [w for members in CATEGORIES.values() for w in members] + [f"filler{i}" for i in range(30)]
    centres = {c: 3 * rng.normal(size=10) for c in CATEGORIES}
    owner = {w: c for c, members in CATEGORIES.items() for w in members}
    vectors = np.stack([centres[owner[w]] + rng.normal(size=10) if w in owner else rng.normal(size=10) for w in words])
    trained = WordVectors(tuple(words), vectors, "trained")
    random = WordVectors(tuple(words), rng.normal(size=(len(words), 10)), "random")
    return trained, random


def _questions(tmp_path):
    path = tmp_path / "questions.txt"
    path.write_text(": fruit-tools\napple saw pear drill\nplum hammer fig saw\n: gram-birds\nowl crow wren apple\n"
                    "owl crow unknown apple\n")
    return path


def _images(html):
    return [Image.open(io.BytesIO(base64.b64decode(uri))) for uri in re.findall(r"data:image/png;base64,([^\"]+)", html)]


def test_words_section_renders_tables_and_figures(tmp_path):
    trained, random = _tables()
    path = _questions(tmp_path)
    section = words_section(
        neighbours=[nearest_neighbours(trained, ["apple", "owl"], k=5), nearest_neighbours(random, ["apple"], k=5)],
        analogies=[solve_analogy(trained, "apple", "saw", "pear"), solve_analogy(random, "apple", "saw", "pear", method="3cosmul")],
        accuracy={"trained": analogy_accuracy(trained, path), "random": analogy_accuracy(random, path)},
        geometry=word_category_geometry({"trained": trained, "random": random}, CATEGORIES, n_permutations=50),
        intro="<b>escaped</b>",
    )
    assert isinstance(section.body, Markup) and section.title == "Words"
    html = Report("test").add(section).render()
    images = _images(html)
    assert len(images) == 4  # accuracy bars, the plane, the RDMs, the tables compared
    for image in images:
        image.load()
        assert image.width > 200 and image.height > 150
    assert max(image.width for image in images) <= 1500  # legible at 1280 px without scrolling far
    assert "&lt;b&gt;escaped&lt;/b&gt;" in html and "<script" not in html.lower()
    for title in ["Nearest words: trained", "Nearest words: random", "Analogies", "Analogy accuracy by section",
                  "Word groups in two dimensions", "RDMs over word categories", "Tables compared"]:
        assert title in html
    first_neighbour = nearest_neighbours(trained, "apple", k=1).of("apple")[0]
    assert f"{first_neighbour} (" in html  # the neighbour table's cells: word (cosine)
    assert "apple : saw :: pear : ?" in html
    assert "fruit-tools" in html and "gram-birds" in html and "all questions" in html


def test_words_section_with_one_part_and_without_any():
    trained, _ = _tables()
    section = words_section(neighbours=nearest_neighbours(trained, "owl", k=3))
    html = Report("test").add(section).render()
    assert "Nearest words: trained" in html and "data:image/png" not in html
    geometry = word_category_geometry({"trained": trained}, CATEGORIES, n_permutations=0)
    html = Report("test").add(words_section(geometry=geometry)).render()
    assert len(_images(html)) == 2 and "Tables compared" not in html  # one table: nothing to compare
    with pytest.raises(ValueError, match="at least one result"):
        words_section()
