"""Benchmark: recording real networks at 224 px, against their bare forward pass in the same run.

Records five layers of EfficientNet-Lite0 (the pretrained weights when installed, else random) and
of ResNet-50 (random weights) over N images of 224x224, with spatial means kept in memory and
streamed to an on-disk recording. Each variant is timed in one process, interleaved round by
round with the bare forward pass (see ``bench_record.time_variants``), and printed as a ratio to
it. Then the disk variant runs again in fresh processes over N/4 and N images, and their peak
resident memory is printed: streaming to disk keeps it flat in the number of images.

The images are seeded random tensors made on access (``bench_patches.SyntheticStimuli``), so the
dataset itself holds no memory and the figures measure the recording alone.

Usage::

    python benchmarks/bench_real_networks.py [--n-images 2000] [--batch-size 32] [--device auto]
    python benchmarks/bench_real_networks.py --models resnet50 --n-images 256
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import probe  # noqa: E402
import zoo  # noqa: E402
from bench_patches import SyntheticStimuli  # noqa: E402
from bench_record import time_variants  # noqa: E402

LAYERS = {
    "efficientnet-lite0": ["bn1", "blocks.1", "blocks.3", "blocks.5", "conv_head"],
    "resnet50": ["layer1", "layer2", "layer3", "layer4", "avgpool"],
}


def build(name: str) -> tuple[torch.nn.Module, str]:
    """The network and a word on its weights."""
    if name == "efficientnet-lite0":
        try:
            return zoo.load_pretrained("efficientnet-lite0"), "pretrained ImageNet weights"
        except (ImportError, ModuleNotFoundError, AttributeError):
            import timm

            return timm.create_model("tf_efficientnet_lite0", pretrained=False).eval(), "random weights"
    import torchvision

    return torchvision.models.get_model(name, weights=None).eval(), "random weights"


def speed(name: str, args: argparse.Namespace) -> None:
    device = zoo.resolve_device(args.device)
    model, weights = build(name)
    model = model.to(device)
    data = SyntheticStimuli(args.n_images, (3, args.size, args.size))
    layers = LAYERS[name]
    scratch = Path(tempfile.mkdtemp(prefix="bench-real-"))
    counter = iter(range(10**6))

    def bare() -> None:
        with torch.inference_mode():
            for start in range(0, args.n_images, args.batch_size):
                indices = torch.arange(start, min(start + args.batch_size, args.n_images))
                model(data.get_batch(indices)[0].to(device))

    def to_memory() -> None:
        probe.record(model, data, layers, reduce="spatial-mean", batch_size=args.batch_size, device=device,
                     progress=False)

    def to_disk() -> None:
        probe.record(model, data, layers, reduce="spatial-mean", batch_size=args.batch_size, device=device,
                     out=scratch / f"rec-{next(counter)}", progress=False)

    repeats = {"bare forward": args.repeats, "record, spatial mean (RAM)": args.repeats,
               "record, spatial mean (disk)": args.repeats}
    times = time_variants(dict(zip(repeats, (bare, to_memory, to_disk))), device, repeats)
    base = times["bare forward"][0]
    print(f"\n{name} ({weights}), {args.n_images} images of {args.size} px, batch {args.batch_size}, "
          f"{device}, {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.2f}")
    for variant, (median, best) in times.items():
        print(f"  {variant:<30} median {median:8.2f} s  best {best:8.2f} s  ratio {median / base:5.2f}x")


def _peak_rss_mib() -> float:
    """This process's own peak resident memory (VmHWM). ``ru_maxrss`` would not do: Linux carries the
    parent's peak over into a child process."""
    line = next(line for line in open("/proc/self/status") if line.startswith("VmHWM"))
    return int(line.split()[1]) / 1024


def peak_rss_child(name: str, n_images: int, args: argparse.Namespace) -> None:
    """Run in a fresh process: one disk recording; prints its peak RSS as JSON."""
    model, _ = build(name)
    data = SyntheticStimuli(n_images, (3, args.size, args.size))
    with torch.inference_mode():  # one batch first, so that the peak before recording includes the forward pass
        model(data.get_batch(torch.arange(min(args.batch_size, n_images)))[0])
    before = _peak_rss_mib()
    with tempfile.TemporaryDirectory() as folder:
        probe.record(model, data, LAYERS[name], reduce="spatial-mean", batch_size=args.batch_size, device="cpu",
                     out=Path(folder) / "rec", progress=False)
    print(json.dumps({"n_images": n_images, "rss_before_mib": before, "peak_rss_mib": _peak_rss_mib()}))


def peak_rss(name: str, args: argparse.Namespace) -> None:
    print(f"  peak RSS of a disk recording in a fresh process ({name}):")
    for n_images in (max(args.n_images // 4, args.batch_size), args.n_images):
        command = [sys.executable, __file__, "--child", name, str(n_images), "--size", str(args.size),
                   "--batch-size", str(args.batch_size)]
        result = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
        print(f"    {result['n_images']:>6} images: peak {result['peak_rss_mib']:7.0f} MiB "
              f"(after building the model and one bare batch {result['rss_before_mib']:7.0f} MiB)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(LAYERS), choices=list(LAYERS))
    parser.add_argument("--n-images", type=int, default=2000)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--no-rss", action="store_true", help="skip the peak-RSS processes")
    parser.add_argument("--child", nargs=2, metavar=("MODEL", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        peak_rss_child(args.child[0], int(args.child[1]), args)
        return
    for name in args.models:
        speed(name, args)
        if not args.no_rss:
            peak_rss(name, args)


if __name__ == "__main__":
    main()
