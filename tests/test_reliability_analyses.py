"""Analyses whose memory grows with n_stimuli² refuse before allocating, above a configurable limit.

An RDM of 50,000 stimuli is 20 GB. Every analysis that builds (n_stimuli, n_stimuli) matrices or
vectors of all stimulus pairs estimates its peak first and raises ``MemoryLimitError`` (a
``MemoryError`` and a ``ValueError``) naming the estimate, the limit, what to use instead and how to
raise the limit; below the limit its results are those it always gave.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import analyses
from analyses import MemoryLimitError, get_memory_limit, set_memory_limit
from analyses._memory import MEMORY_LIMIT_ENV, check_memory, parse_bytes

REPO = Path(__file__).resolve().parents[1]
TINY_LIMIT = 1024  # bytes: below the (n, n) work of every case here
ROOMY_LIMIT = "64MB"  # far above it


@pytest.fixture(autouse=True)
def default_limit(monkeypatch):
    """Each test starts from the default limit, whatever the environment or an earlier test set."""
    monkeypatch.delenv(MEMORY_LIMIT_ENV, raising=False)
    with set_memory_limit(None):
        yield


# --- the 50,000-stimulus request, in a fresh interpreter --------------------------------------------
_BIG_REQUESTS = textwrap.dedent(
    """
    import json, resource, sys
    import numpy as np, torch
    import analyses

    def peak_bytes():
        # VmHWM, the peak RSS of this process's own memory: ru_maxrss would carry over the parent's
        # peak (Linux keeps it across fork and exec), so a large test process would inflate it
        line = [line for line in open("/proc/self/status") if line.startswith("VmHWM")][0]
        return int(line.split()[1]) * 1024  # kilobytes

    n = 50_000
    X = np.random.default_rng(0).standard_normal((n, 64), dtype=np.float32)
    runs = np.random.default_rng(1).standard_normal((2, n, 16), dtype=np.float32)
    after_setup = peak_bytes()
    # a safety net: should a guard fail, allocation fails here instead of exhausting the machine
    vm = int([line for line in open("/proc/self/status") if line.startswith("VmSize")][0].split()[1]) * 1024
    resource.setrlimit(resource.RLIMIT_AS, (vm + 3 * 2**30, resource.RLIM_INFINITY))

    requests = {
        "rdm": lambda: analyses.rdm(X),
        "rdm euclidean, torch": lambda: analyses.rdm(torch.from_numpy(X), "euclidean"),
        "rdm crossnobis": lambda: analyses.rdm(runs, "crossnobis"),
        "rdm_chunked in memory": lambda: analyses.rdm_chunked(X, progress=False),
        "cka rbf": lambda: analyses.cka(X, X[:, :32], "rbf"),
        "cka_matrix rbf": lambda: analyses.cka_matrix({"a": X, "b": X[:, :32]}, "rbf", progress=False),
        "layer_rdms": lambda: analyses.layer_rdms({"a": X, "b": X[:, :32]}, progress=False),
        "rdm_similarity_matrix": lambda: analyses.rdm_similarity_matrix({"a": X, "b": X[:, :32]}, progress=False),
        "linear cka (feature space)": lambda: analyses.cka(X, X[:, :32]),
    }
    outcomes = {}
    for name, request in requests.items():
        try:
            value = request()
            outcomes[name] = {"type": "result", "value": float(value) if isinstance(value, float) else None}
        except Exception as error:
            outcomes[name] = {"type": type(error).__name__, "message": str(error),
                              "needed": getattr(error, "needed", None), "limit": getattr(error, "limit", None)}
        outcomes[name]["peak"] = peak_bytes()
    print(json.dumps({"outcomes": outcomes, "after_setup": after_setup}))
    """
)


def test_requests_for_50000_stimuli_are_refused_with_peak_rss_under_1gb():
    env = {key: value for key, value in os.environ.items() if key != MEMORY_LIMIT_ENV}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, "-c", _BIG_REQUESTS], capture_output=True, text=True, timeout=600, cwd=REPO, env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    outcomes = report["outcomes"]
    advice = {
        "rdm": "rdm_chunked",
        "rdm euclidean, torch": "rdm_chunked",
        "rdm crossnobis": "subset",
        "rdm_chunked in memory": "path=",
        "cka rbf": "StreamingCKA",
        "cka_matrix rbf": "StreamingCKA",
        "layer_rdms": "rdm_chunked",
        "rdm_similarity_matrix": "subset",
    }
    for name, alternative in advice.items():
        outcome = outcomes[name]
        assert outcome["type"] == "MemoryLimitError", (name, outcome)
        message = outcome["message"]
        assert "50,000 stimuli" in message or name == "rdm_similarity_matrix", message
        assert outcome["needed"] > 18 * 2**30 and outcome["limit"] == analyses.DEFAULT_MEMORY_LIMIT
        assert "GiB of memory" in message and "limit of 4.0 GiB" in message and alternative in message
        assert "analyses.set_memory_limit(" in message and f"{MEMORY_LIMIT_ENV}=" in message
    # linear CKA in feature space does not grow with n_stimuli², so it is computed
    assert outcomes["linear cka (feature space)"]["type"] == "result"
    assert 0 < outcomes["linear cka (feature space)"]["value"] <= 1
    # the peak over the whole interpreter (torch's import included) while refusing every request
    refused_peak = outcomes["rdm_similarity_matrix"]["peak"]
    assert refused_peak < 10**9, f"peak RSS {refused_peak / 2**20:.0f} MiB"
    assert refused_peak - report["after_setup"] < 100 * 2**20


# --- every guarded function: refused above a small limit, unchanged below ---------------------------
def _data(n=30, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "X": rng.standard_normal((n, 12)),
        "Y": rng.standard_normal((n, 7)),
        "wide": rng.standard_normal((n, 3 * n)),  # wider than the stimulus count: CKA through Gram matrices
        "runs": rng.standard_normal((3, n, 6)),
    }


def _rdms(d):
    return analyses.rdm(d["X"], name="x"), analyses.rdm(d["Y"], "euclidean", name="y")


def _representations(d):
    return {"m1": {"early": d["X"], "late": d["Y"]}, "m2": {"early": d["wide"]}}


def _npy(tmp_path, d):
    path = tmp_path / "reference.npy"
    np.save(path, np.asarray(_rdms(d)[0]).astype(np.float32))
    return path


def _inputs(d, tmp_path):
    """Everything the cases take, built once under no limit (so that only the call itself is limited)."""
    x, y = _rdms(d)
    return {
        **d,
        "x": x, "y": y,
        "x condensed": analyses.RDM.from_condensed(x.condensed()),
        "y condensed": analyses.RDM.from_condensed(y.condensed()),
        "x square": analyses.RDM(np.asarray(x)),
        "x labelled": analyses.rdm(d["X"], descriptors={"i": np.arange(len(d["X"]))}),
        "representations": _representations(d),
        "npy": _npy(tmp_path, d),
    }


# name -> (call(inputs), words the refusal must contain)
CASES = {
    "rdm correlation": (lambda i: analyses.rdm(i["X"]), "rdm_chunked"),
    "rdm euclidean per unit": (lambda i: analyses.rdm(i["X"], "sqeuclidean", per_unit=True), "rdm_chunked"),
    "rdm float32": (lambda i: analyses.rdm(i["X"], "cosine", dtype=torch.float32), "rdm_chunked"),
    "rdm crossnobis": (lambda i: analyses.rdm(i["runs"], "crossnobis"), "subset"),
    "rdm_chunked in memory": (lambda i: analyses.rdm_chunked(i["X"], progress=False), "path="),
    "rdm_chunked condensed in memory": (
        lambda i: analyses.rdm_chunked(i["X"], "euclidean", condensed=True, progress=False), "path="),
    "RDM.matrix of a condensed RDM": (
        lambda i: analyses.RDM.from_condensed(i["x condensed"].condensed()).matrix, "condensed()"),
    "RDM.condensed": (lambda i: i["x square"].condensed(), "condensed=True"),
    "RDM.to_frame": (lambda i: i["x labelled"].to_frame(), "condensed()"),
    "RDM.subset": (lambda i: i["x square"].subset(np.arange(29, -1, -1)), "fewer"),
    "compare_rdms spearman": (lambda i: analyses.compare_rdms(i["x condensed"], i["y condensed"]), "subset"),
    "compare_rdms pearson, squares": (
        lambda i: analyses.compare_rdms(np.asarray(i["x"]), np.asarray(i["y"]), "pearson"), "subset"),
    "compare_rdms tau-a, stacks": (
        lambda i: analyses.compare_rdms(np.stack([np.asarray(i["x"]), np.asarray(i["y"])]), i["x condensed"], "tau-a"),
        "subset"),
    "bootstrap_rdm_comparison": (
        lambda i: analyses.bootstrap_rdm_comparison(i["x"], {"y": i["y"]}, n_bootstrap=20, progress=False), "subset"),
    "permutation_test_rdms": (
        lambda i: analyses.permutation_test_rdms(i["x"], i["y"], n_permutations=20, progress=False), "subset"),
    "cka linear through Gram matrices": (lambda i: analyses.cka(i["wide"], i["wide"][:, ::2]), "StreamingCKA"),
    "cka rbf": (lambda i: analyses.cka(i["X"], i["Y"], "rbf"), "StreamingCKA"),
    "cka debiased rbf": (lambda i: analyses.cka(i["X"], i["Y"], "rbf", debiased=True), "StreamingCKA"),
    "cka_matrix linear": (lambda i: analyses.cka_matrix(i["representations"], progress=False), "StreamingCKA"),
    "cka_matrix rbf": (lambda i: analyses.cka_matrix(i["representations"], "rbf", progress=False), "StreamingCKA"),
    "layer_rdms": (lambda i: analyses.layer_rdms(i["representations"], progress=False), "rdm_chunked"),
    "rdm_similarity_matrix of representations": (
        lambda i: analyses.rdm_similarity_matrix(i["representations"], progress=False), "subset"),
    "rdm_similarity_matrix of RDMs": (
        lambda i: analyses.rdm_similarity_matrix({"a": i["x"], "b": i["y"]}, "spearman", progress=False), "subset"),
    "rdm_mds": (lambda i: analyses.rdm_mds(i["representations"]), "subset"),
    "rank_layers": (lambda i: analyses.rank_layers(i["x"], i["representations"], progress=False), "subset"),
    "rank_layers with bootstrap": (
        lambda i: analyses.rank_layers(i["x"], i["representations"], n_bootstrap=10, progress=False), "subset"),
    "load_rdm": (lambda i: analyses.load_rdm(i["npy"]), "mmap_mode"),
}


def _assert_same(a, b):
    """Results equal exactly: floats, arrays, RDMs, result objects (by their frames or fields)."""
    if isinstance(a, analyses.RDM):
        assert np.array_equal(np.asarray(a), np.asarray(b)) and a.metric == b.metric
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            _assert_same(a[key], b[key])
    elif isinstance(a, pd.DataFrame):
        pd.testing.assert_frame_equal(a, b)
    elif hasattr(a, "to_frame"):
        pd.testing.assert_frame_equal(a.to_frame(), b.to_frame())
    else:
        assert np.array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("case", sorted(CASES))
def test_guarded_function_refuses_above_a_small_limit_and_is_unchanged_below(case, tmp_path):
    call, alternative = CASES[case]
    with set_memory_limit("unlimited"):
        inputs = _inputs(_data(), tmp_path)
        expected = call(inputs)
    with set_memory_limit(TINY_LIMIT), pytest.raises(MemoryLimitError) as refused:
        call(inputs)
    error = refused.value
    assert isinstance(error, MemoryError) and isinstance(error, ValueError)
    assert error.limit == TINY_LIMIT and error.needed > TINY_LIMIT
    message = str(error)
    assert "would need about" in message and "above the memory limit of 1.0 KiB" in message
    assert alternative in message
    assert "analyses.set_memory_limit(" in message and f"{MEMORY_LIMIT_ENV}=" in message
    with set_memory_limit(ROOMY_LIMIT):
        _assert_same(call(inputs), expected)


def test_paths_that_do_not_grow_with_n_squared_work_under_a_tiny_limit(tmp_path):
    d = _data()
    with set_memory_limit(TINY_LIMIT):
        on_disk = analyses.rdm_chunked(d["X"], path=tmp_path / "rdm.npy", condensed=True, progress=False)
        narrow = analyses.cka(d["X"], d["Y"])  # feature space: (n_units, n_units) matrices only
        matrix = analyses.cka_matrix({"a": d["X"], "b": d["Y"]}, progress=False)
    reference = analyses.rdm(d["X"])
    np.testing.assert_allclose(on_disk.condensed(), reference.condensed(), rtol=1e-12, atol=1e-12)
    assert narrow == analyses.cka(d["X"], d["Y"])
    np.testing.assert_array_equal(matrix.values, analyses.cka_matrix({"a": d["X"], "b": d["Y"]}, progress=False).values)


@pytest.mark.parametrize("method", ["spearman", "pearson"])
def test_estimates_are_not_below_the_measured_peak(method):
    rng = np.random.default_rng(5)
    a, b = (analyses.RDM.from_condensed(analyses.rdm(rng.standard_normal((400, 9))).condensed()) for _ in range(2))
    with set_memory_limit(0), pytest.raises(MemoryLimitError) as refused:
        analyses.compare_rdms(a, b, method)
    tracemalloc.start()
    try:
        analyses.compare_rdms(a, b, method)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak <= refused.value.needed <= 4 * peak


# --- the limit's configuration ----------------------------------------------------------------------
def test_limit_defaults_to_4_gib_and_follows_the_environment_and_set_memory_limit(monkeypatch):
    assert get_memory_limit() == analyses.DEFAULT_MEMORY_LIMIT == 4 * 2**30
    monkeypatch.setenv(MEMORY_LIMIT_ENV, "2MB")
    assert get_memory_limit() == 2 * 2**20
    with set_memory_limit(10_000):
        assert get_memory_limit() == 10_000  # the call wins over the environment
        with set_memory_limit("unlimited"):
            assert get_memory_limit() == math.inf
            analyses.rdm(np.random.default_rng(0).standard_normal((500, 3)))
        assert get_memory_limit() == 10_000  # the with block restored it
    assert get_memory_limit() == 2 * 2**20
    monkeypatch.setenv(MEMORY_LIMIT_ENV, "lots")
    with pytest.raises(ValueError, match=MEMORY_LIMIT_ENV):
        get_memory_limit()
    monkeypatch.setenv(MEMORY_LIMIT_ENV, str(200 * 1000))
    with pytest.raises(MemoryLimitError, match=r"limit of 195\.3 KiB"):
        analyses.rdm(np.random.default_rng(0).standard_normal((500, 3)))


def test_set_memory_limit_as_a_plain_call_lasts_until_reset():
    set_memory_limit("1KB")
    try:
        with pytest.raises(MemoryLimitError):
            analyses.rdm(np.eye(40))
    finally:
        set_memory_limit(None)
    assert get_memory_limit() == analyses.DEFAULT_MEMORY_LIMIT
    analyses.rdm(np.eye(40) + 0.1)


@pytest.mark.parametrize(
    "text, expected",
    [("512MB", 512 * 2**20), ("4GB", 4 * 2**30), ("4GiB", 4 * 2**30), ("1.5 gb", 1.5 * 2**30), ("100", 100),
     ("10B", 10), ("2K", 2048), ("1e9", 10**9), ("unlimited", math.inf), (123, 123)],
)
def test_sizes_are_parsed(text, expected):
    assert parse_bytes(text) == expected


@pytest.mark.parametrize("bad", ["-1", "4 gigabytes", "", True, -5])
def test_bad_sizes_are_refused(bad):
    with pytest.raises(ValueError):
        set_memory_limit(bad)
    assert get_memory_limit() == analyses.DEFAULT_MEMORY_LIMIT


def test_the_check_costs_microseconds():
    started = time.perf_counter()
    for _ in range(10_000):
        check_memory(1000, "a small request", "nothing")
    assert time.perf_counter() - started < 1.0


def test_public_names():
    for name in ("MemoryLimitError", "set_memory_limit", "get_memory_limit", "DEFAULT_MEMORY_LIMIT"):
        assert name in analyses.__all__ and hasattr(analyses, name)
    assert "NEUROPROBE_MAX_BYTES" in analyses.__doc__ and "set_memory_limit" in analyses.__doc__
