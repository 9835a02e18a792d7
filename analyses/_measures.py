"""The registry of representational similarity measures: one name per measure, with its convention.

Every measure compares two representations of the same stimuli, arrays of shape (n_stimuli, n_units),
and is either a **similarity** (larger: more alike) or a **distance** (smaller: more alike), with a
stated range. ``list_measures()`` lists them; ``MEASURES[name]`` tells the convention;
``compare_representations(X, Y, measure)`` computes one. All computations run in float64 on X's device
(float16 and float32 input is converted; NaN and inf are refused), except the RSA measures' comparison of two
RDMs, which runs on the CPU once each RDM is computed on the device.

Each measure is split into a per-layer ``prepare`` (centring, decompositions, Gram matrices, neighbour
sets) and a cheap pair step ``compare``, so that all-pairs maps (``measure_matrices``), the layer
identification check and the seed ceiling prepare each layer once.

==================  ==========  =========  ====================================================================
name                kind        range      definition
==================  ==========  =========  ====================================================================
linear-cka          similarity  [0, 1]     ``analyses.cka`` (Kornblith et al. 2019), linear kernel
debiased-cka        similarity  [-1, 1]    ``analyses.cka(debiased=True)``: linear CKA with the unbiased HSIC
                                           estimator, for layers much wider than the stimulus count
rbf-cka             similarity  [0, 1]     ``analyses.cka``, RBF kernel, bandwidth 0.5 x median distance
cca                 similarity  [0, 1]     ``analyses.cca_similarity``: mean squared canonical correlation
svcca               similarity  [0, 1]     ``analyses.svcca`` (Raghu et al. 2017), 99 % of the variance kept
pwcca               similarity  [0, 1]     ``analyses.pwcca`` (Morcos et al. 2018); X sets the weights
procrustes          distance    [0, √2]    ``analyses.procrustes_distance`` (Williams et al. 2021), unit-norm
shape               distance    [0, pi/2]  ``analyses.shape_distance`` with alpha = 0.5 (half whitened), each
                                           centred layer first scaled to unit Frobenius norm: between the
                                           ends netrep's value depends on each layer's scale, here it does not
mutual-knn          similarity  [0, 1]     ``analyses.mutual_knn`` (Huh et al. 2024), k = 10
cknna               similarity  unbounded  ``analyses.cknna`` (Huh et al. 2024), k = 10; about 1 when alike
regression          similarity  [0, 1]     ``analyses.regression_r2``: R^2 of predicting Y from X
rsa                 similarity  [-1, 1]    Spearman correlation of the correlation-distance RDMs
rsa-whitened        similarity  [-1, 1]    whitened Pearson (``corr_cov``) of the correlation-distance RDMs
==================  ==========  =========  ====================================================================

Asymmetric measures (``pwcca``, ``regression``, and ``cknna`` slightly) compare ``X`` (the row of a map) with ``Y`` (its column).
``rbf_cka_measure(fraction)`` gives RBF CKA at another bandwidth, which every function that takes measure
names also takes, by itself or by its name ``rbf-cka-<fraction>`` (e.g. ``rbf-cka-0.4``).
A measure that is undefined for the given data raises ``ValueError`` saying why (for example CCA with
fewer stimuli than the two layers' dimensions together); none returns NaN.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from analyses._cca import compare_cca, compare_pwcca, compare_svcca, prepare_cca
from analyses._cka import check_pair, debiased_inner, flatten_units
from analyses._compare import _ranks, corr_cov_summary, whitened_cosine_of
from analyses._neighbour_alignment import compare_cknna, compare_mutual_knn, prepare_knn
from analyses._rdm import rdm
from analyses._shape_metrics import (
    compare_procrustes,
    compare_regression,
    compare_shape,
    prepare_procrustes,
    prepare_regression,
    prepare_shape,
)
from analyses._similarity_maps import _inner, _summarise
from zoo._names import unknown_name_error

__all__ = ["DEFAULT_MEASURES", "MEASURES", "Measure", "compare_representations", "get_measure", "list_measures",
           "rbf_cka_measure"]


@dataclass(frozen=True)
class Measure:
    """One similarity measure and its convention.

    Attributes
    ----------
    name
        Its key in ``MEASURES``.
    label
        How reports name it.
    kind
        ``"similarity"`` (larger: more alike) or ``"distance"`` (smaller: more alike).
    low, high
        The range of its values.
    symmetric
        Whether ``compare(X, Y) == compare(Y, X)``.
    reference
        The paper (and the function) that defines it.
    prepare
        Per-layer summary from a float64 (n_stimuli, n_units) tensor.
    compare
        The measure from two summaries.
    duplicates_ok
        Whether a bootstrap resample may repeat stimuli (neighbour and RDM measures see a repeated
        stimulus as a zero-distance pair, so their bootstrap keeps each drawn stimulus once).
    """

    name: str
    label: str
    kind: str
    low: float
    high: float
    symmetric: bool
    reference: str
    prepare: Callable[[torch.Tensor], Any] = field(repr=False)
    compare: Callable[[Any, Any], float] = field(repr=False)
    duplicates_ok: bool = True

    @property
    def larger_is_closer(self) -> bool:
        """True for similarities, False for distances."""
        return self.kind == "similarity"

    def closeness(self, values: np.ndarray) -> np.ndarray:
        """Values oriented so that larger means more alike (distances negated)."""
        values = np.asarray(values, dtype=float)
        return values if self.larger_is_closer else -values


@dataclass
class _CKASummary:
    summary: dict[str, Any]
    norm: float


def _prepare_cka(kernel: str, median_fraction: float = 0.5) -> Callable[[torch.Tensor], _CKASummary]:
    def prepare(X: torch.Tensor) -> _CKASummary:
        summary = _summarise(X, kernel, None, median_fraction, False, "X")
        norm = float(_inner(summary, summary).clamp_min(0).sqrt())
        if not norm > 0:
            raise ValueError("a representation is the same for every stimulus (its centred Gram matrix is zero), "
                             "so CKA with it is undefined; drop that layer")
        return _CKASummary(summary, norm)

    return prepare


def _compare_cka(a: _CKASummary, b: _CKASummary) -> float:
    return float(_inner(a.summary, b.summary)) / (a.norm * b.norm)


def _debiased_inner(a: dict[str, Any], b: dict[str, Any]) -> torch.Tensor:
    n = a["rows"].shape[0]
    rows_b = b["rows"].to(a["rows"].device)
    return debiased_inner(_inner(a, b), a["rows"], rows_b, a["total"], b["total"].to(a["rows"].device), n)


def _prepare_debiased_cka(X: torch.Tensor) -> _CKASummary:
    if X.shape[0] < 4:
        raise ValueError(f"debiased CKA needs at least 4 stimuli, got {X.shape[0]}")
    summary = _summarise(X, "linear", None, 0.5, True, "X")
    norm = float(_debiased_inner(summary, summary).clamp_min(0).sqrt())
    if not norm > 0:
        raise ValueError("a representation has no variance left once the bias is removed (the same for every "
                         "stimulus, or too few stimuli), so debiased CKA with it is undefined; drop that layer")
    return _CKASummary(summary, norm)


def _compare_debiased_cka(a: _CKASummary, b: _CKASummary) -> float:
    return float(np.clip(float(_debiased_inner(a.summary, b.summary)) / (a.norm * b.norm), -1.0, 1.0))


def _prepare_rdm_ranks(X: torch.Tensor) -> np.ndarray:
    """The correlation-distance RDM's ranks, centred and scaled to unit norm (Spearman as a dot product)."""
    ranks = _ranks(rdm(X, "correlation").condensed()[None])[0]
    ranks -= ranks.mean()
    norm = np.linalg.norm(ranks)
    if not norm > 0:
        raise ValueError("the RDM is constant (every pair of stimuli equally far apart), so its Spearman "
                         "correlation is undefined; drop that layer or use rho-a in compare_rdms")
    return ranks / norm


def _compare_unit_vectors(a: np.ndarray, b: np.ndarray) -> float:
    if a.shape != b.shape:
        raise ValueError(f"the RDMs cover {a.size} and {b.size} stimulus pairs; pass the same stimuli")
    return float(np.clip(a @ b, -1.0, 1.0))


def _prepare_whitened_rdm(X: torch.Tensor) -> tuple:
    """The correlation-distance RDM with what corr_cov's whitening needs of it (``compare_rdms``)."""
    return corr_cov_summary(rdm(X, "correlation").condensed()[None])


def _compare_whitened(a: tuple, b: tuple) -> float:
    if a[0].shape != b[0].shape:
        raise ValueError(f"the RDMs cover {a[0].size} and {b[0].size} stimulus pairs; pass the same stimuli")
    return float(whitened_cosine_of(a, b)[0, 0])


def _prepare_ten_neighbours(X: torch.Tensor) -> Any:
    return prepare_knn(X, 10)


def _prepare_unit_norm_shape(X: torch.Tensor) -> Any:
    centred = X - X.mean(dim=0)
    norm = torch.linalg.matrix_norm(centred)
    return prepare_shape(centred / norm if norm > 0 else centred, 0.5)  # a constant layer is refused there


def _measure(name, label, kind, low, high, symmetric, reference, prepare, compare, duplicates_ok=True) -> Measure:
    return Measure(name, label, kind, low, high, symmetric, reference, prepare, compare, duplicates_ok)


MEASURES: dict[str, Measure] = {
    m.name: m
    for m in (
        _measure("linear-cka", "linear CKA", "similarity", 0.0, 1.0, True, "Kornblith et al. 2019; analyses.cka",
                 _prepare_cka("linear"), _compare_cka),
        _measure("debiased-cka", "debiased linear CKA", "similarity", -1.0, 1.0, True,
                 "Song et al. 2012 unbiased HSIC; analyses.cka(debiased=True)", _prepare_debiased_cka,
                 _compare_debiased_cka),
        _measure("rbf-cka", "RBF CKA", "similarity", 0.0, 1.0, True,
                 "Kornblith et al. 2019; analyses.cka(kernel='rbf')", _prepare_cka("rbf"), _compare_cka),
        _measure("cca", "mean squared CCA", "similarity", 0.0, 1.0, True, "R^2_CCA; analyses.cca_similarity",
                 prepare_cca, compare_cca),
        _measure("svcca", "SVCCA", "similarity", 0.0, 1.0, True, "Raghu et al. 2017; analyses.svcca",
                 lambda X: prepare_cca(X, 0.99), compare_svcca),
        _measure("pwcca", "PWCCA", "similarity", 0.0, 1.0, False, "Morcos et al. 2018; analyses.pwcca",
                 prepare_cca, compare_pwcca),
        _measure("procrustes", "Procrustes distance", "distance", 0.0, float(np.sqrt(2)), True,
                 "Williams et al. 2021; analyses.procrustes_distance", prepare_procrustes,
                 compare_procrustes),
        _measure("shape", "angular shape distance (alpha 0.5)", "distance", 0.0, float(np.pi / 2), True,
                 "Williams et al. 2021; analyses.shape_distance, each layer scaled to unit norm first",
                 _prepare_unit_norm_shape, compare_shape),
        _measure("mutual-knn", "mutual kNN (k = 10)", "similarity", 0.0, 1.0, True,
                 "Huh et al. 2024; analyses.mutual_knn", _prepare_ten_neighbours, compare_mutual_knn, False),
        _measure("cknna", "CKNNA (k = 10)", "similarity", -np.inf, np.inf, False, "Huh et al. 2024; analyses.cknna",
                 _prepare_ten_neighbours, compare_cknna, False),
        _measure("regression", "linear regression R^2", "similarity", 0.0, 1.0, False,
                 "least squares with intercept; analyses.regression_r2", prepare_regression, compare_regression),
        _measure("rsa", "RSA (Spearman of correlation RDMs)", "similarity", -1.0, 1.0, True,
                 "Kriegeskorte et al. 2008; analyses.compare_rdms(method='spearman')", _prepare_rdm_ranks,
                 _compare_unit_vectors, False),
        _measure("rsa-whitened", "whitened RSA (corr_cov)", "similarity", -1.0, 1.0, True,
                 "Diedrichsen et al. 2020; analyses.compare_rdms(method='corr_cov')", _prepare_whitened_rdm,
                 _compare_whitened, False),
    )
}

# Measures a map computes by default (every one).
DEFAULT_MEASURES: tuple[str, ...] = tuple(MEASURES)


def rbf_cka_measure(median_fraction: float) -> Measure:
    """RBF CKA with its bandwidth at another fraction of the median distance, as a measure that every function
    taking measure names also takes (``measure_matrices``, ``layer_identification``, ``bootstrap_measure``, ...).

    The registry's ``rbf-cka`` uses 0.5 x the median distance; Kornblith et al. 2019 (Table 2) report 0.2, 0.4
    and 0.8. Smaller fractions weigh the distances between near stimuli more.

    Parameters
    ----------
    median_fraction
        The bandwidth as a fraction of the median distance between stimuli (``analyses.cka``'s
        ``median_fraction``), a positive finite number.

    Returns
    -------
    Measure
        Named ``rbf-cka-<fraction>`` (e.g. ``rbf-cka-0.4``): a similarity in [0, 1], symmetric.
    """
    fraction = float(median_fraction)
    if not (np.isfinite(fraction) and fraction > 0):
        raise ValueError(f"median_fraction must be a positive finite number, not {median_fraction!r}")
    return _measure(f"rbf-cka-{fraction:g}", f"RBF CKA ({fraction:g} x median)", "similarity", 0.0, 1.0, True,
                    f"Kornblith et al. 2019; analyses.cka(kernel='rbf', median_fraction={fraction:g})",
                    _prepare_cka("rbf", fraction), _compare_cka)


#: ``rbf-cka-<fraction>``: RBF CKA with its bandwidth at that fraction of the median distance (``get_measure``).
RBF_CKA_NAME = re.compile(r"rbf-cka-((?=[0.]*[1-9])(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?)")


def list_measures() -> list[str]:
    """The names of every registered measure."""
    return list(MEASURES)


def get_measure(name: str | Measure) -> Measure:
    """The ``Measure`` registered under ``name``, or RBF CKA at another bandwidth for ``rbf-cka-<fraction>``
    (``rbf_cka_measure``); an unknown name raises ``KeyError`` with the nearest ones."""
    if isinstance(name, Measure):
        return name
    if name in MEASURES:
        return MEASURES[name]
    fraction = RBF_CKA_NAME.fullmatch(str(name))
    if fraction is not None:
        try:
            return rbf_cka_measure(float(fraction.group(1)))
        except ValueError as error:
            raise ValueError(f"similarity measure {name!r}: {error}, e.g. 'rbf-cka-0.4'") from None
    raise unknown_name_error("similarity measure", name, list(MEASURES), listing="analyses.list_measures()",
                             hint="RBF CKA at another bandwidth is named 'rbf-cka-<fraction>', with a positive "
                             "fraction of the median distance, e.g. 'rbf-cka-0.4'.")


def prepare_pair(X: Any, Y: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Validated float64 tensors of two representations of the same stimuli, Y on X's device."""
    X = flatten_units(X, "X")
    Y = flatten_units(Y, "Y").to(X.device)
    check_pair(X, Y, debiased=False)
    return X, Y


def compare_representations(X: Any, Y: Any, measure: str | Measure = "linear-cka") -> float:
    """One measure between two representations of the same stimuli.

    Parameters
    ----------
    X, Y
        Arrays of shape (n_stimuli, units_x) and (n_stimuli, units_y) (NumPy or torch; higher-rank
        arrays are flattened per stimulus).
    measure
        A name from ``list_measures()`` (the table in this module's docstring gives each convention).

    Returns
    -------
    float
        A similarity or a distance, as ``get_measure(measure).kind`` says.
    """
    spec = get_measure(measure)
    X, Y = prepare_pair(X, Y)
    return spec.compare(spec.prepare(X), spec.prepare(Y))


def measure_options(measures: Any) -> list[Measure]:
    """Measures named by a list (None: every one), checked, without repeats."""
    names = DEFAULT_MEASURES if measures is None else ([measures] if isinstance(measures, (str, Measure)) else measures)
    if not names:
        raise ValueError(f"no measure given; choose from {', '.join(MEASURES)}")
    chosen = [get_measure(name) for name in names]
    return list({m.name: m for m in chosen}.values())

