"""Principal angles, subspace distance and axis alignment against scipy and known geometry."""

import numpy as np
import pytest
import scipy.linalg
import torch

from analyses import axis_alignment_error, principal_angles, subspace_distance


@pytest.mark.parametrize("shape_a, shape_b", [((20, 3), (20, 3)), ((30, 2), (30, 5)), ((15, 6), (15, 4))])
def test_principal_angles_match_scipy(shape_a, shape_b):
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(shape_a), rng.standard_normal(shape_b)
    expected = np.sort(scipy.linalg.subspace_angles(a, b))
    np.testing.assert_allclose(principal_angles(a, b), expected, atol=1e-10)


def test_principal_angles_accept_torch_and_are_ascending():
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((10, 4)), rng.standard_normal((10, 4))
    angles = principal_angles(torch.as_tensor(a), torch.as_tensor(b, dtype=torch.float32))
    assert np.all(np.diff(angles) >= 0)
    np.testing.assert_allclose(angles, np.sort(scipy.linalg.subspace_angles(a, b)), atol=1e-6)


def test_small_angles_are_accurate():
    # Two planes in R^3 tilted by 1e-6 rad: arccos of the cosine alone would lose this angle.
    tilt = 1e-6
    a = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    b = np.array([[1.0, 0.0], [0.0, np.cos(tilt)], [0.0, np.sin(tilt)]])
    np.testing.assert_allclose(principal_angles(a, b), [0.0, tilt], atol=1e-14, rtol=1e-8)


def test_subspace_distance_properties():
    rng = np.random.default_rng(2)
    a = rng.standard_normal((12, 3))
    mixing = rng.standard_normal((3, 3))
    assert subspace_distance(a, a @ mixing) == pytest.approx(0.0, abs=1e-20)
    identity = np.eye(6)
    assert subspace_distance(identity[:, :3], identity[:, 3:]) == pytest.approx(1.0)
    # Equals ||P_A - P_B||_F^2 / (2k) for k-dimensional subspaces.
    b = rng.standard_normal((12, 3))
    qa, qb = np.linalg.qr(a)[0], np.linalg.qr(b)[0]
    projector_gap = np.linalg.norm(qa @ qa.T - qb @ qb.T) ** 2 / 6
    assert subspace_distance(a, b) == pytest.approx(projector_gap, rel=1e-10)


def test_axis_alignment_ignores_order_and_sign_but_not_rotation():
    reference = np.eye(5)[:3]
    permuted = -reference[[2, 0, 1]] * 3.0
    assert axis_alignment_error(permuted, reference) == pytest.approx(0.0, abs=1e-15)
    angle = np.pi / 4  # rotate the first two axes by 45 degrees: |cos| = 1/sqrt(2) for both
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    expected = (2 * (1 - np.sqrt(0.5)) + 0) / 3
    assert axis_alignment_error(rotation @ reference, reference) == pytest.approx(expected)


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="same space"):
        principal_angles(np.ones((4, 2)), np.ones((5, 2)))
    with pytest.raises(ValueError, match="NaN"):
        principal_angles(np.full((4, 2), np.nan), np.ones((4, 2)))
    with pytest.raises(ValueError, match="same shape"):
        axis_alignment_error(np.ones((2, 4)), np.ones((3, 4)))
