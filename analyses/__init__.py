"""Analyses: pure measures over recorded arrays, and fitted estimators.

Each analysis takes arrays of shape (n_stimuli, n_units) (NumPy or torch; heavy linear algebra
runs in torch on the array's own device) or a recording, and returns a small result object with
``to_frame()``. Analyses never record (that is ``probe.record``'s job), never train a zoo model and
never draw; ``reports`` draws their results.

- Representational similarity: RDMs, their comparison and inference, CKA, layer-by-layer maps.
- Units: receptive fields, top-activating patches (of a ``probe.TopK`` recording), class selectivity.
- Subspaces: the linear autoencoder estimator, principal angles, PCA against linear autoencoders.
- Transfer: linear probes and kNN read-outs per layer, label efficiency.

Memory: analyses whose memory grows with the square of the stimulus count (``rdm``, crossnobis,
``compare_rdms``, the bootstrap and permutation tests, ``cka`` through Gram matrices, ``cka_matrix``,
``layer_rdms``, ``rdm_similarity_matrix``, ``rank_layers``, ``load_rdm``, an RDM's square/condensed
forms and ``to_frame``) estimate their peak bytes before allocating anything of that size and,
above a limit, raise ``MemoryLimitError`` (a ``MemoryError`` and a ``ValueError``) with the
estimate, the limit, the variant to use instead (``rdm_chunked`` writes a large RDM to disk in row
blocks; ``StreamingCKA`` streams linear CKA during recording) and how to raise the limit. The limit
is 4 GiB (``DEFAULT_MEMORY_LIMIT``) unless the environment variable ``NEUROPROBE_MAX_BYTES`` says
otherwise ("16GB", "unlimited"), and ``set_memory_limit`` overrides both for the process, or for a
``with`` block::

    analyses.set_memory_limit("32GB")
    with analyses.set_memory_limit("unlimited"):
        big = analyses.rdm(X)

``get_memory_limit()`` tells the limit in force.
"""

from analyses._cka import cka
from analyses._compare import compare_rdms
from analyses._function_views import FunctionViews, function_views
from analyses._kmeans import KMeansCoder
from analyses._cca import canonical_correlations, cca_similarity, pwcca, svcca
from analyses._layer_identification import (
    LayerIdentification,
    SeedCeiling,
    layer_identification,
    layer_identification_from_maps,
    seed_ceiling,
)
from analyses._measure_inference import (
    MeasureBootstrap,
    MeasurePermutation,
    bootstrap_measure,
    permutation_test_measure,
)
from analyses._measure_maps import MeasureDisagreement, MeasureMaps, measure_disagreement, measure_matrices
from analyses._measures import (
    MEASURES,
    Measure,
    compare_representations,
    get_measure,
    list_measures,
    rbf_cka_measure,
)
from analyses._neighbour_alignment import cknna, mutual_knn
from analyses._noise_ceiling import NoiseCeiling, noise_ceiling, pool_rdms
from analyses._shape_metrics import procrustes_distance, regression_r2, shape_distance
from analyses._code_agreement import CodebookUsage, LayerCodes, codebook_usage, kmeans_codes
from analyses._linear_autoencoder import LinearAutoencoder
from analyses._linear_probe import DEFAULT_CS, ProbeResult, knn_accuracy, linear_probe
from analyses._memory import DEFAULT_MEMORY_LIMIT, MemoryLimitError, get_memory_limit, set_memory_limit
from analyses._rdm import RDM, rdm, rdm_chunked
from analyses._receptive_field import IrregularFieldError, ReceptiveField, receptive_field
from analyses._reference_rdm import LayerRanking, load_rdm, rank_layers
from analyses._rsa_inference import BootstrapResult, PermutationResult, bootstrap_rdm_comparison, permutation_test_rdms
from analyses._similarity_maps import MDSResult, SimilarityMatrix, cka_matrix, layer_rdms, rdm_mds, rdm_similarity_matrix
from analyses._stimulus_neighbours import NEIGHBOUR_METRICS, StimulusNeighbours, nearest_stimuli, pick_queries
from analyses._streaming_cka import StreamingCKA
from analyses._subspace import (
    SubspaceComparison,
    axis_alignment_error,
    compare_subspaces,
    principal_angles,
    subspace_distance,
)
from analyses._top_patches import (
    ClassSelectivity,
    TopPatches,
    class_selectivity,
    crop_boxes,
    select_units,
    top_patches,
    unit_selectivity,
)
from analyses._transfer import (
    LabelEfficiency,
    LayerTransfer,
    label_efficiency,
    probe_layers,
    resolve_features,
    sample_per_class,
)
from analyses._word_vectors import (
    ANALOGY_METHODS,
    WORD_CATEGORIES,
    Analogy,
    AnalogyAccuracy,
    Neighbours,
    WordCategoryGeometry,
    analogy_accuracy,
    find_analogy_questions,
    nearest_neighbours,
    read_analogy_questions,
    solve_analogy,
    word_category_geometry,
)

__all__ = [
    # k-means as a representation learner
    "KMeansCoder",
    "kmeans_codes",
    "LayerCodes",
    "codebook_usage",
    "CodebookUsage",
    # the input plane as each layer maps it
    "function_views",
    "FunctionViews",
    # nearest stimuli in a layer's space
    "nearest_stimuli",
    "StimulusNeighbours",
    "pick_queries",
    "NEIGHBOUR_METRICS",
    # word vectors
    "nearest_neighbours",
    "Neighbours",
    "solve_analogy",
    "Analogy",
    "ANALOGY_METHODS",
    "analogy_accuracy",
    "AnalogyAccuracy",
    "read_analogy_questions",
    "find_analogy_questions",
    "WORD_CATEGORIES",
    "word_category_geometry",
    "WordCategoryGeometry",
    # representational similarity
    "RDM",
    "rdm",
    "rdm_chunked",
    "compare_rdms",
    "cka",
    "StreamingCKA",
    # every similarity measure, one convention each
    "MEASURES",
    "Measure",
    "list_measures",
    "get_measure",
    "rbf_cka_measure",
    "compare_representations",
    "canonical_correlations",
    "cca_similarity",
    "svcca",
    "pwcca",
    "procrustes_distance",
    "shape_distance",
    "regression_r2",
    "mutual_knn",
    "cknna",
    "measure_matrices",
    "MeasureMaps",
    "measure_disagreement",
    "MeasureDisagreement",
    # inference for any measure, seeds and ceilings
    "bootstrap_measure",
    "MeasureBootstrap",
    "permutation_test_measure",
    "MeasurePermutation",
    "layer_identification",
    "layer_identification_from_maps",
    "LayerIdentification",
    "seed_ceiling",
    "SeedCeiling",
    "noise_ceiling",
    "NoiseCeiling",
    "pool_rdms",
    "SimilarityMatrix",
    "cka_matrix",
    "layer_rdms",
    "rdm_similarity_matrix",
    "MDSResult",
    "rdm_mds",
    "BootstrapResult",
    "bootstrap_rdm_comparison",
    "PermutationResult",
    "permutation_test_rdms",
    "load_rdm",
    "LayerRanking",
    "rank_layers",
    # units
    "ReceptiveField",
    "receptive_field",
    "IrregularFieldError",
    "TopPatches",
    "top_patches",
    "ClassSelectivity",
    "class_selectivity",
    "select_units",
    "unit_selectivity",
    "crop_boxes",
    # subspaces
    "LinearAutoencoder",
    "principal_angles",
    "subspace_distance",
    "axis_alignment_error",
    "compare_subspaces",
    "SubspaceComparison",
    # transfer
    "linear_probe",
    "knn_accuracy",
    "ProbeResult",
    "DEFAULT_CS",
    "probe_layers",
    "LayerTransfer",
    "label_efficiency",
    "sample_per_class",
    "LabelEfficiency",
    "resolve_features",
    # memory guard
    "MemoryLimitError",
    "set_memory_limit",
    "get_memory_limit",
    "DEFAULT_MEMORY_LIMIT",
]
