"""Benchmark: what recording costs compared with the bare forward pass (and with other tools).

Runs in one process on torchvision's ResNet-18 (random weights, eval mode) over N images of
64x64, recording five layers (layer1..layer4 and avgpool). Each variant is timed as the median
of a few repeats after a warm-up, and printed as a ratio to the bare forward pass measured in the
same run (the variants are interleaved round by round, median and best time both shown), so
figures stay comparable on a busy machine:

    bare forward | probe.record spatial mean (RAM) | probe.record flatten to disk |
    torchvision create_feature_extractor (+ spatial mean) | torchlens (if importable)

``--peak-ram`` instead streams 50,000 stimuli of a 512-unit layer to an on-disk recording and
reports the growth of the peak resident memory (``resource.getrusage``).

Usage::

    python benchmarks/bench_record.py [--device cuda] [--n-images 256] [--batch-size 64]
    python benchmarks/bench_record.py --peak-ram [--n-stimuli 50000]
"""

from __future__ import annotations

import argparse
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import probe  # noqa: E402
from zoo import resolve_device  # noqa: E402

LAYERS = ["layer1", "layer2", "layer3", "layer4", "avgpool"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_variants(variants: dict[str, Callable[[], object]], device: torch.device, repeats: dict[str, int]) -> dict:
    """Wall times of each variant: one warm-up each, then rounds that run every variant in turn.

    Interleaving the variants spreads a busy machine's slow spells over all of them, so that
    the ratios stay meaningful; both the median and the best (min) time are kept.
    """
    times: dict[str, list[float]] = {name: [] for name in variants}
    failed: dict[str, str] = {}
    for name, run in variants.items():
        try:
            run()
            _sync(device)
        except Exception as err:  # a third-party tool failing must not hide our figures
            failed[name] = f"{type(err).__name__}: {err}"
    for round_index in range(max(repeats.values())):
        for name, run in variants.items():
            if name in failed or round_index >= repeats[name]:
                continue
            started = time.perf_counter()
            run()
            _sync(device)
            times[name].append(time.perf_counter() - started)
    for name, reason in failed.items():
        print(f"{name}: failed ({reason})")
    return {name: (statistics.median(t), min(t)) for name, t in times.items() if t}


def speed(args: argparse.Namespace) -> None:
    import torchvision
    from torchvision.models.feature_extraction import create_feature_extractor

    device = resolve_device(args.device)
    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval().to(device)
    images = torch.randn(args.n_images, 3, args.size, args.size).to(device)  # every variant starts from the same tensor
    batches = list(images.split(args.batch_size))
    store = Path(tempfile.mkdtemp(prefix="bench_record_"))

    def bare() -> None:
        with torch.no_grad():
            for x in batches:
                model(x)

    def record_mean() -> None:
        probe.record(model, images, LAYERS, reduce="mean", batch_size=args.batch_size, device=device, progress=False)

    def record_flatten_disk() -> None:
        probe.record(model, images, LAYERS, reduce="flatten", batch_size=args.batch_size, device=device,
                     out=store / "rec", overwrite=True, progress=False)

    extractor = create_feature_extractor(model, return_nodes=LAYERS)

    def feature_extractor() -> None:
        kept = {name: [] for name in LAYERS}
        with torch.no_grad():
            for x in images.split(args.batch_size):
                for name, value in extractor(x).items():
                    kept[name].append((value.mean(dim=(2, 3)) if value.dim() == 4 else value.flatten(1)).cpu())
        {name: torch.cat(values) for name, values in kept.items()}

    variants: dict[str, Callable[[], None]] = {
        "bare forward": bare,
        "probe.record spatial-mean (RAM)": record_mean,
        "probe.record flatten -> disk": record_flatten_disk,
        "torchvision create_feature_extractor": feature_extractor,
    }
    try:
        import torchlens as tl

        def torchlens_run() -> None:
            if hasattr(tl, "extract_dataset"):
                tl.extract_dataset(model, images, LAYERS, batch_size=args.batch_size, device=device, progress=False)
            else:  # older torchlens: one traced forward per batch
                for x in batches:
                    tl.log_forward_pass(model, x, layers_to_save=LAYERS)

        variants["torchlens"] = torchlens_run
    except ImportError:
        print("torchlens not importable: skipped (pip install torchlens)")

    print(f"ResNet-18 (random weights), {args.n_images} images of {args.size}x{args.size}, batch {args.batch_size}, "
          f"device {device}, layers {LAYERS}, median of {args.repeats} after a warm-up")
    repeats = {name: args.torchlens_repeats if name == "torchlens" else args.repeats for name in variants}
    results = time_variants(variants, device, repeats)
    bare_median, bare_min = results["bare forward"]
    print(f"{'variant':40s} {'median s':>9s} {'x bare':>7s} {'best s':>8s} {'x bare':>7s}")
    for name, (median, best) in results.items():
        print(f"{name:40s} {median:9.3f} {median / bare_median:7.2f} {best:8.3f} {best / bare_min:7.2f}")
    if "torchlens" in results:
        ours_median, ours_min = results["probe.record spatial-mean (RAM)"]
        print(f"torchlens / probe.record spatial-mean: {results['torchlens'][0] / ours_median:.1f}x (median), "
              f"{results['torchlens'][1] / ours_min:.1f}x (best)")
    shutil.rmtree(store)


class _RandomStimuli(torch.utils.data.Dataset):
    """Stimuli made on demand (no O(N) host buffer): item i is a seeded random vector."""

    def __init__(self, n: int, dim: int):
        self.n, self.dim = n, dim

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        generator = torch.Generator().manual_seed(index)
        return torch.randn(self.dim, generator=generator), index % 10


def _status_mb(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 2**10
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (Linux: write 5 to /proc/self/clear_refs); False if unsupported."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak_rss_mb() -> float:
    """Peak resident memory in MiB: VmHWM on Linux (resettable), else getrusage's ru_maxrss."""
    peak = _status_mb("VmHWM")
    if peak is not None:
        return peak
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def peak_ram(args: argparse.Namespace) -> None:
    device = resolve_device(args.device)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 512), nn.ReLU()).eval()
    data = _RandomStimuli(args.n_stimuli, 64)
    folder = Path(tempfile.mkdtemp(prefix="bench_peak_"))
    # warm-up on a few stimuli (imports, allocator), so that the growth measured is the pass's own
    probe.record(model, _RandomStimuli(4096, 64), "1", batch_size=1024, device=device, out=folder / "warm", progress=False)
    reset = _reset_peak_rss()
    before = _peak_rss_mb()
    resident = _status_mb("VmRSS")
    out = folder / "rec"
    started = time.perf_counter()
    rec = probe.record(model, data, "1", batch_size=1024, device=device, out=out, progress=False)
    seconds = time.perf_counter() - started
    after = _peak_rss_mb()
    stored_mb = rec["1"].nbytes / 2**20
    print(f"streamed {args.n_stimuli} x 512 float32 ({stored_mb:.0f} MiB) to {out} in {seconds:.1f} s")
    print(f"resident before the pass {resident or float('nan'):.0f} MiB; peak RSS before {before:.0f} MiB "
          f"({'reset to the current RSS' if reset else 'process high-water mark, not resettable here'}), "
          f"after {after:.0f} MiB: growth {after - before:.1f} MiB ({(after - before) / stored_mb:.1%} of the "
          "recording's size)")
    del rec
    shutil.rmtree(folder)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--n-images", type=int, default=256)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--torchlens-repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--peak-ram", action="store_true", help="measure peak RSS while streaming to disk")
    parser.add_argument("--n-stimuli", type=int, default=50_000)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    peak_ram(args) if args.peak_ram else speed(args)


if __name__ == "__main__":
    main()
