"""The nearest-stimuli galleries: each tile is its stimulus, framed by whether its class is the query's."""

import base64
import io

import numpy as np
import pytest
from PIL import Image

from analyses import nearest_stimuli
from reports import neighbour_mosaic, neighbours_section
from reports._neighbours_section import _FRAME, _GAP, _OTHER, _SAME, _TILE

STEP = _TILE + 2 * _FRAME + _GAP


def _hex(rgb):
    return "#" + "".join(f"{round(255 * value):02x}" for value in rgb)


@pytest.fixture
def two_layers():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], 10)
    features = np.eye(3)[labels] + rng.normal(0, 0.6, (30, 3))
    results = [nearest_stimuli(features + rng.normal(0, 0.3, features.shape), [0, 10], k=4, labels=labels,
                               model="m", layer=layer) for layer in ("early", "late")]
    images = rng.random((30, 8, 8))  # digit-sized: each pixel becomes a block of _TILE // 8
    return results, images, labels


def test_each_tile_is_its_stimulus_in_a_frame_of_the_class_colour(two_layers):
    results, images, labels = two_layers
    mosaic = neighbour_mosaic(results, 1, images)
    assert mosaic.shape == (2 * STEP - _GAP, 5 * STEP - _GAP, 3)
    block = _TILE // 8
    for row, result in enumerate(results):
        query = int(result.queries[1])
        for column, index in enumerate([query, *result.neighbours[1]]):
            top, left = row * STEP, column * STEP
            tile = mosaic[top + _FRAME : top + _FRAME + _TILE, left + _FRAME : left + _FRAME + _TILE]
            # nearest-neighbour upscaling: the top-left pixel of each block is the stimulus pixel (grey in RGB)
            expected = np.round(images[index] * 255) / 255
            np.testing.assert_allclose(tile[::block, ::block, 0], expected, atol=1e-12)
            np.testing.assert_array_equal(tile[..., 0], tile[..., 2])
            corner = _hex(mosaic[top, left])
            if column == 0:
                assert corner == "#ffffff"  # the query has no frame
            else:
                assert corner == (_SAME if labels[index] == labels[query] else _OTHER)


def test_large_colour_images_are_averaged_down_to_the_tile():
    labels = np.zeros(6, dtype=int)
    result = nearest_stimuli(np.arange(12.0).reshape(6, 2), [0], k=2, labels=labels)
    images = np.zeros((6, 4 * _TILE, 4 * _TILE, 3))
    images[:, :, : 2 * _TILE, 0] = 1.0  # left half red, right half black
    tile = neighbour_mosaic([result], 0, images)[_FRAME : _FRAME + _TILE, _FRAME : _FRAME + _TILE]
    np.testing.assert_array_equal(tile[:, : _TILE // 2, 0], 1.0)
    np.testing.assert_array_equal(tile[:, _TILE // 2 :], 0.0)


def test_the_section_has_one_decodable_gallery_per_query_and_the_agreement_table(two_layers):
    results, images, _ = two_layers
    section = neighbours_section(results, images, class_names=["a", "b", "c"])
    html = str(section.body)
    uris = [part.split('"')[0] for part in html.split('src="data:image/png;base64,')[1:]]
    assert len(uris) == 2
    for uri in uris:
        Image.open(io.BytesIO(base64.b64decode(uri))).verify()
    for result in results:
        assert f"<td>m · {result.layer}</td><td>{result.label_agreement():.2f}</td>" in html
    with pytest.raises(ValueError, match="same queries"):
        neighbours_section([results[0], nearest_stimuli(np.ones((30, 2)), [1, 2], k=4)], images)
