"""Benchmark: our RDMs, RDM comparison and all-pairs CKA against rsatoolbox and a matrix-product floor.

Every figure is a ratio measured in this run, so it can be re-run on a quiet machine:

    .venv/bin/python benchmarks/bench_rsa.py                 # N=2,000, D=4,096 (the bars)
    .venv/bin/python benchmarks/bench_rsa.py --n 500 --d 512 # a quick look

Timings are the best of ``--repeats`` runs (rsatoolbox's slow correlation RDM runs once).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from analyses import cka_matrix, compare_rdms, rdm


def best_time(function, repeats: int) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeats):
        started = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - started)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2000, help="stimuli")
    parser.add_argument("--d", type=int, default=4096, help="units")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cka-n", type=int, default=5000, help="stimuli for the all-pairs CKA timing")
    parser.add_argument("--cka-layers", type=int, default=10)
    parser.add_argument("--skip-rsatoolbox", action="store_true")
    parser.add_argument("--device", default="cpu", help="device for our functions (cpu, cuda)")
    parser.add_argument("--large", type=int, default=0, help="also time a chunked, condensed on-disk RDM of this many stimuli")
    parser.add_argument("--large-d", type=int, default=256, help="units of the --large RDM")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    X = rng.normal(size=(args.n, args.d))
    device = torch.device(args.device)
    data = torch.from_numpy(X).to(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    print(f"N={args.n} stimuli, D={args.d} units, float64, torch threads={torch.get_num_threads()}, device={device}")

    floor, _ = best_time(lambda: X @ X.T, args.repeats)
    print(f"NumPy matrix-product floor X @ X.T: {floor:.3f} s")

    def ours(metric, **kw):
        def run():
            result = rdm(data, metric, **kw)
            sync()
            return result

        return run

    t_corr, ours_corr = best_time(ours("correlation"), args.repeats)
    t_eucl, ours_eucl = best_time(ours("sqeuclidean", per_unit=True), args.repeats)
    print(f"ours correlation RDM: {t_corr:.3f} s = {t_corr / floor:.2f}x the floor")
    print(f"ours euclidean RDM:   {t_eucl:.3f} s = {t_eucl / floor:.2f}x the floor")

    if not args.skip_rsatoolbox:
        import rsatoolbox

        dataset = rsatoolbox.data.Dataset(X)
        t_rsa_corr, rsa_corr = best_time(lambda: rsatoolbox.rdm.calc_rdm(dataset, method="correlation"), 1)
        t_rsa_eucl, rsa_eucl = best_time(lambda: rsatoolbox.rdm.calc_rdm(dataset, method="euclidean"), args.repeats)
        error_corr = np.abs(ours_corr.condensed() - rsa_corr.get_vectors()[0]).max()
        error_eucl = np.abs(ours_eucl.condensed() - rsa_eucl.get_vectors()[0]).max()
        print(f"rsatoolbox correlation RDM: {t_rsa_corr:.3f} s -> ours is {t_rsa_corr / t_corr:.1f}x faster "
              f"(max |difference| {error_corr:.1e})")
        print(f"rsatoolbox euclidean RDM:   {t_rsa_eucl:.3f} s -> ours is {t_rsa_eucl / t_eucl:.1f}x faster "
              f"(max |difference| {error_eucl:.1e})")

        # comparing 10 model RDMs with 10 data RDMs over the same N stimuli
        vectors = [ours_corr.condensed() + rng.normal(scale=0.05, size=ours_corr.condensed().size) for _ in range(20)]
        models, measured = np.stack(vectors[:10]), np.stack(vectors[10:])
        rsa_models, rsa_measured = rsatoolbox.rdm.RDMs(models), rsatoolbox.rdm.RDMs(measured)
        for ours_method, their_method in [("pearson", "corr"), ("spearman", "spearman")]:
            t_ours, ours_values = best_time(lambda: compare_rdms(models, measured, ours_method), 1)
            t_theirs, their_values = best_time(
                lambda: rsatoolbox.rdm.compare(rsa_models, rsa_measured, method=their_method), 1
            )
            error = np.abs(ours_values - their_values).max()
            print(f"compare 10x10 RDMs ({ours_method}): ours {t_ours:.3f} s, rsatoolbox {t_theirs:.3f} s -> "
                  f"{t_theirs / t_ours:.1f}x (max |difference| {error:.1e})")

    widths = [64 * 2 ** (i % 6) for i in range(args.cka_layers)]  # 64 ... 2048 units
    layers = {f"layer{i}": torch.from_numpy(rng.normal(size=(args.cka_n, w))).to(device) for i, w in enumerate(widths)}

    def all_pairs():
        result = cka_matrix(layers, progress=False)
        sync()
        return result

    t_cka, _ = best_time(all_pairs, 1)
    print(f"all-pairs linear CKA, {args.cka_layers} layers ({min(widths)}-{max(widths)} units), "
          f"{args.cka_n} stimuli: {t_cka:.2f} s ({args.cka_layers * (args.cka_layers + 1) // 2} pairs)")


    if args.large:
        time_large_rdm(args.large, args.large_d, device)


def time_large_rdm(n: int, d: int, device: torch.device) -> None:
    """A correlation RDM of n stimuli in blocks within 256 MB, written condensed to disk."""
    import resource
    import tempfile
    from pathlib import Path

    from analyses import rdm_chunked

    data = torch.from_numpy(np.random.default_rng(1).normal(size=(n, d))).to(device)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    with tempfile.TemporaryDirectory(dir=".") as folder:
        path = Path(folder) / "rdm.npy"
        started = time.perf_counter()
        rdm_chunked(data, "correlation", path=path, condensed=True, memory_budget="256MB", progress=False)
        elapsed = time.perf_counter() - started
        size = path.stat().st_size / 2**30
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"chunked correlation RDM, {n} stimuli x {d} units, condensed on disk ({size:.2f} GiB): {elapsed:.1f} s; "
          f"peak RSS {rss_before:.2f} -> {rss_after:.2f} GiB")


if __name__ == "__main__":
    main()
