"""Benchmark: every measured figure of docs/scale.md (ImageNet-1k x ResNet-50 x 20 layers on 8 GPUs).

Runs in one process on the CPU, on torchvision's ResNet-50 with random weights (eval mode):

1. **Layers**: the 20 recorded modules and their output shapes at 224 px.
2. **Plans**: ``probe.plan_recording`` on a stand-in dataset whose ``__len__`` is ImageNet's (1,281,167
   train or 50,000 val stimuli; items are random 3x224x224 tensors; the plan runs one forward pass on
   two of them), with ``world_size=8`` and batch 256: stored rows (auto = spatial mean for the maps,
   float32 and float16; flatten, plain and with ``project``), the reducers ``TopK(k=9)`` (pooled
   responses kept), ``MomentsReducer`` and ``StreamingCKA`` (exact), and a recording kept in memory.
   Bytes are per process (device, RAM) and for the whole recording (disk).
3. **Time per batch** (batch 32 at 224 px, 1 and 2 threads): the plain forward pass and
   ``probe.record`` of the 20 layers (auto reduction, on disk) over the same batches, alternating in
   rounds. Each batch's time is the interval between the starts of successive forward passes (a
   pre-hook on the model), in wall and in CPU seconds, so it includes fetching the batch, the layer
   hooks, the writes and the periodic flushes; the first batch of each pass (record follows it module
   call by module call) is a warm-up and is not counted.
4. **JPEG decode** with PIL on a generated 500x375 JPEG (quality 90), alone and with the usual
   evaluation transform (resize 256, centre crop 224, to tensor, normalise), on one thread.
5. **Disk write bandwidth** of the temporary folder: 256 MiB written in 2 MiB chunks, then fsync; and the
   SHA-256 rate of one core (rank 0 checksums every file when the recording completes).

The load average (``/proc/loadavg``) is printed before and after, and the peak RSS at the end. The
default run (2 rounds of 3 timed batches per variant) takes about 4-5 minutes on 2 cores.

Usage::

    python benchmarks/scale_resnet50.py [--batches 3] [--rounds 2] [--threads 1 2] [--skip-timing]
"""

from __future__ import annotations

import argparse
import functools
import io
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import probe
from analyses import StreamingCKA
from probe._plan import RecordingPlan, format_bytes, plan_recording

IMAGENET_TRAIN = 1_281_167
IMAGENET_VAL = 50_000
WORLD_SIZE = 8
GPU_BATCH = 256  # the batch the plans assume (probe record's default)
CPU_BATCH = 32
IMAGE_SIZE = 224
BLOCKS = [f"layer{stage}.{block}" for stage, n_blocks in ((1, 3), (2, 4), (3, 6), (4, 3)) for block in range(n_blocks)]
#: The stem (convolution, after BN+ReLU, after max-pooling), the 16 bottleneck blocks' outputs, the logits.
#: ``avgpool`` is left out: it is exactly the spatial mean of ``layer4.2``, which is recorded already.
LAYERS = ["conv1", "relu", "maxpool", *BLOCKS, "fc"]
DISK_PROBE_BYTES = 256 * 2**20
#: Cited, not measured here: ResNet-50 v1.5 inference images/s on one A100 80GB (DGX A100) at batch 256, from
#: NVIDIA's DeepLearningExamples, PaddlePaddle/Classification/RN50v1.5/README.md, section "Inference performance:
#: NVIDIA DGX A100 (1x A100 80GB)" (framework evaluation) and "Paddle-TRT performance" (TensorRT, synthetic input).
PUBLISHED_A100_IMAGES_PER_S = {
    "A100 TF32 (framework)": 3283.94,
    "A100 mixed precision (framework)": 5742.03,
    "A100 FP16 TensorRT (no preprocessing)": 17054.80,
}
DISK_CHUNK = 2 * 2**20


class StandInImageNet(Dataset):
    """As many stimuli as ImageNet's split; item ``i`` is a random 3x224x224 tensor seeded by ``i``, label ``i % 1000``.

    Only ``plan_recording`` reads it (two items), so the length costs nothing.
    """

    def __init__(self, n_stimuli: int):
        self.n_stimuli = n_stimuli

    def __len__(self) -> int:
        return self.n_stimuli

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        generator = torch.Generator().manual_seed(index)
        return torch.randn(3, IMAGE_SIZE, IMAGE_SIZE, generator=generator), index % 1000


def build_resnet50() -> nn.Module:
    """torchvision's ResNet-50 with random weights (seeded), in eval mode."""
    import torchvision

    torch.manual_seed(0)
    return torchvision.models.resnet50(weights=None).eval()


def load_average() -> str:
    """The 1, 5 and 15 minute load averages of this machine."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def section(title: str) -> None:
    print(f"\n== {title} ==", flush=True)


# -- 1 and 2: layers and plans ------------------------------------------------------------------
def plan(model: nn.Module, n_stimuli: int, **options) -> RecordingPlan:
    """``plan_recording`` of the 20 layers over a stand-in ImageNet split, for 8 processes, on disk by default."""
    options.setdefault("out", "/planned/imagenet-resnet50")  # only read to tell disk from memory
    return plan_recording(model, StandInImageNet(n_stimuli), LAYERS, batch_size=GPU_BATCH, world_size=WORLD_SIZE,
                          device="cpu", **options)


def layer_table(stored: RecordingPlan) -> pd.DataFrame:
    """Each layer's output shape per stimulus, its units after the auto reduction and when flattened."""
    return pd.DataFrame({
        "layer": list(stored.shapes),
        "output shape": ["x".join(map(str, shape)) for shape in stored.shapes.values()],
        "units (auto)": [stored.n_units[name] for name in stored.shapes],
        "units (flatten)": [int(np.prod(shape)) for shape in stored.shapes.values()],
    })


def stored_bytes(plan_: RecordingPlan, column: str) -> dict[str, int]:
    """Layer -> bytes of its stored rows in ``column`` (``device_bytes``, ``ram_bytes``, ``disk_bytes``)."""
    frame = plan_.to_frame()
    frame = frame[frame["item"] == "stored rows"]
    return dict(zip(frame["layer"], frame[column].astype("int64")))


def reducer_bytes(plan_: RecordingPlan, item: str, column: str) -> dict[str, int | None]:
    """Layer -> bytes of one reducer's row in ``column`` (None when unknown)."""
    frame = plan_.to_frame()
    frame = frame[frame["item"] == item]
    return {layer: None if pd.isna(value) else int(value) for layer, value in zip(frame["layer"], frame[column])}


def per_layer_table(plans: dict[str, RecordingPlan]) -> pd.DataFrame:
    """Bytes per layer: disk of the stored rows (f32, f16, flatten, projected) and the reducers' device/RAM/disk."""
    reducers = plans["reducers"]
    table = {
        "layer": list(plans["f32"].shapes),
        "disk f32": stored_bytes(plans["f32"], "disk_bytes"),
        "disk f16": stored_bytes(plans["f16"], "disk_bytes"),
        "disk flatten f32": stored_bytes(plans["flatten"], "disk_bytes"),
        "disk project 1024": stored_bytes(plans["project1024"], "disk_bytes"),
        "device project 1024": stored_bytes(plans["project1024"], "device_bytes"),
        "device project 4096": stored_bytes(plans["project4096"], "device_bytes"),
        "TopK device": reducer_bytes(reducers, "topk", "device_bytes"),
        "Moments device": reducer_bytes(reducers, "moments", "device_bytes"),
        "Moments disk": reducer_bytes(reducers, "moments", "disk_bytes"),
        "CKA device": reducer_bytes(reducers, "cka", "device_bytes"),
    }
    frame = pd.DataFrame({"layer": table.pop("layer")})
    for column, values in table.items():
        frame[column] = [format_bytes(values[layer]) for layer in frame["layer"]]
    return frame


def totals_table(plans: dict[str, RecordingPlan]) -> pd.DataFrame:
    """Per scenario: the plan's total device and RAM per process and disk in all, and what the rows alone need."""
    rows = []
    for name, plan_ in plans.items():
        totals = plan_.totals
        stored_ram = sum(stored_bytes(plan_, "ram_bytes").values())
        rows.append({
            "scenario": name,
            "n_stimuli": plan_.n_stimuli,
            "device/process": format_bytes(totals["device_bytes"]),
            "RAM/process (CPU run)": format_bytes(totals["ram_bytes"]),
            # on CUDA the host keeps two pinned buffers of a batch's rows instead of one (double buffering)
            "RAM/process (CUDA run)": format_bytes(totals["ram_bytes"] + (stored_ram if plan_.out else 0)),
            "disk (all ranks)": format_bytes(totals["disk_bytes"]),
            "disk bytes": totals["disk_bytes"],
        })
    return pd.DataFrame(rows)


def reducer_totals(reducers: RecordingPlan) -> pd.DataFrame:
    """Each reducer summed over the 20 layers: device and RAM per process, disk in all."""
    frame = reducers.to_frame()
    frame = frame[~frame["item"].isin(["stored rows", "labels"])]
    summed = frame.groupby("item", sort=False)[["device_bytes", "ram_bytes", "disk_bytes"]].sum()
    return summed.map(format_bytes).reset_index()


def all_plans(model: nn.Module) -> dict[str, RecordingPlan]:
    """Every scenario of the page, planned (each plan is one forward pass on two stimuli)."""
    return {
        "f32": plan(model, IMAGENET_TRAIN),
        "f16": plan(model, IMAGENET_TRAIN, dtype="float16"),
        "val f32": plan(model, IMAGENET_VAL),
        "in memory f32": plan(model, IMAGENET_TRAIN, out=None),
        "flatten": plan(model, IMAGENET_TRAIN, reduce="flatten"),
        "project1024": plan(model, IMAGENET_TRAIN, reduce="flatten", project=1024),
        "project4096": plan(model, IMAGENET_TRAIN, reduce="flatten", project=4096),
        "reducers": plan(model, IMAGENET_TRAIN, reducers={
            "topk": lambda: probe.TopK(k=9, keep_pooled=True),
            "topk-no-pooled": lambda: probe.TopK(k=9, keep_pooled=False),
            "moments": lambda: probe.MomentsReducer(),
            "cka": lambda: StreamingCKA(estimator="exact"),
        }),
    }


# -- 3: time per batch ---------------------------------------------------------------------------
def batch_intervals(model: nn.Module, run: Callable[[], object], n_timed: int) -> tuple[list[float], list[float]]:
    """Wall and CPU seconds between the starts of the last ``n_timed + 1`` forward passes that ``run`` makes.

    The CPU seconds (``time.process_time``: every thread of this process) are the work done, which
    other tenants of a shared machine do not inflate as they do the wall time.
    """
    starts: list[tuple[float, float]] = []
    handle = model.register_forward_pre_hook(
        lambda module, args: starts.append((time.perf_counter(), time.process_time()))
    )
    try:
        run()
    finally:
        handle.remove()
    wall, cpu = np.asarray(starts[-(n_timed + 1):]).T
    return list(np.diff(wall)), list(np.diff(cpu))


def plain_pass(model: nn.Module, data: Dataset) -> None:
    """The bare forward pass over ``data`` in batches of 32 (no hooks, nothing kept)."""
    with torch.no_grad():
        for x, _ in DataLoader(data, batch_size=CPU_BATCH):
            model(x)


def record_pass(model: nn.Module, data: Dataset, out: Path) -> None:
    """``probe.record`` of the 20 layers (auto reduction, float32) into a new on-disk store at ``out``."""
    try:
        probe.record(model, data, LAYERS, batch_size=CPU_BATCH, device="cpu", out=out, progress=False)
    finally:
        shutil.rmtree(out, ignore_errors=True)


def time_batches(model: nn.Module, n_timed: int, rounds: int, threads: list[int], folder: Path) -> pd.DataFrame:
    """Seconds per batch of 32 (wall and CPU), plain and recorded, at each thread count.

    The two variants alternate for ``rounds`` rounds of ``n_timed`` timed batches each (each pass
    adds a warm-up batch and one that closes the last interval), so that a busy spell of the
    machine falls on both rather than on one.
    """
    n_stimuli = (n_timed + 2) * CPU_BATCH
    generator = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(n_stimuli, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator),
                         torch.arange(n_stimuli) % 1000)
    variants = {
        "forward": functools.partial(plain_pass, model, data),
        "record": functools.partial(record_pass, model, data, folder / "timed-recording"),
    }
    rows = []
    for n_threads in threads:
        torch.set_num_threads(n_threads)
        before = load_average()
        wall: dict[str, list[float]] = {name: [] for name in variants}
        cpu: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(rounds):
            for name, run in variants.items():
                seconds, cpu_seconds = batch_intervals(model, run, n_timed)
                wall[name] += seconds
                cpu[name] += cpu_seconds
        after = load_average()
        for name in variants:
            rows.append({
                "threads": n_threads, "variant": name, "median wall s/batch": statistics.median(wall[name]),
                "min": min(wall[name]), "max": max(wall[name]), "median CPU s/batch": statistics.median(cpu[name]),
                "n": len(wall[name]), "load before": before, "load after": after,
            })
        print(pd.DataFrame(rows[-2:]).to_string(index=False), flush=True)
    return pd.DataFrame(rows)


def overhead_table(times: pd.DataFrame) -> pd.DataFrame:
    """Per thread count and clock: forward and record seconds per batch, the overhead (b - a) and its fraction of a."""
    rows = []
    for n_threads, group in times.groupby("threads"):
        for clock in ("wall", "CPU"):
            column = f"median {clock} s/batch"
            forward = float(group.loc[group["variant"] == "forward", column].iloc[0])
            recorded = float(group.loc[group["variant"] == "record", column].iloc[0])
            rows.append({
                "threads": n_threads, "clock": clock, "forward s/batch": forward, "record s/batch": recorded,
                "overhead s/batch": recorded - forward, "overhead fraction": (recorded - forward) / forward,
                "forward img/s": CPU_BATCH / forward, "record img/s": CPU_BATCH / recorded,
            })
    return pd.DataFrame(rows)


# -- 4 and 5: JPEG decode and disk bandwidth ------------------------------------------------------
def test_jpeg(width: int = 500, height: int = 375, quality: int = 90) -> bytes:
    """A JPEG of a real photograph (scikit-learn's china.jpg), resized to ``width`` x ``height``."""
    from PIL import Image
    from sklearn.datasets import load_sample_image

    image = Image.fromarray(load_sample_image("china.jpg")).resize((width, height), Image.BICUBIC)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def jpeg_rates(n_images: int = 200) -> pd.DataFrame:
    """Images per second on one core: PIL decode alone, and decode plus the evaluation transform."""
    from PIL import Image
    from torchvision import transforms

    torch.set_num_threads(1)
    encoded = test_jpeg()
    evaluation = transforms.Compose([
        transforms.Resize(256), transforms.CenterCrop(IMAGE_SIZE), transforms.ToTensor(),
        transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    ])
    steps = {
        "PIL decode": lambda: Image.open(io.BytesIO(encoded)).convert("RGB"),
        "PIL decode + resize/crop/tensor/normalise": lambda: evaluation(Image.open(io.BytesIO(encoded)).convert("RGB")),
    }
    rows = []
    for name, step in steps.items():
        step()
        start = time.perf_counter()
        for _ in range(n_images):
            step()
        elapsed = time.perf_counter() - start
        rows.append({"step (500x375 JPEG, q90, 1 core)": name, "images/s": n_images / elapsed,
                     "JPEG bytes": len(encoded)})
    return pd.DataFrame(rows)


def disk_write_rate(folder: Path) -> float:
    """Bytes per second of a 256 MiB sequential write in 2 MiB chunks, fsync included."""
    chunk = np.random.default_rng(0).integers(0, 255, DISK_CHUNK, dtype=np.uint8).tobytes()
    path = folder / "disk-probe.bin"
    start = time.perf_counter()
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        for _ in range(DISK_PROBE_BYTES // DISK_CHUNK):
            os.write(descriptor, chunk)
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    elapsed = time.perf_counter() - start
    path.unlink()
    return DISK_PROBE_BYTES / elapsed


def sha256_rate() -> float:
    """Bytes per second of SHA-256 over a 256 MiB buffer in memory (rank 0 checksums every file at completion)."""
    import hashlib

    buffer = np.random.default_rng(1).integers(0, 255, DISK_PROBE_BYTES, dtype=np.uint8).tobytes()
    start = time.perf_counter()
    hashlib.sha256(buffer).hexdigest()
    return DISK_PROBE_BYTES / (time.perf_counter() - start)


# -- 6: extrapolation to 8 GPUs ------------------------------------------------------------------
def extrapolation(plans: dict[str, RecordingPlan], overhead: float, decode_rate: float, disk_rate: float) -> pd.DataFrame:
    """Per cited GPU rate: an epoch's time on 8 GPUs (forward only, and with the measured recording
    overhead fraction), the write rate of the 8 ranks together, the cores to decode JPEGs as fast, and
    each GPU's device-to-host traffic of reduced rows."""
    f32 = plans["f32"].totals["disk_bytes"] / plans["f32"].n_stimuli  # rows of the 20 layers and the label
    f16 = plans["f16"].totals["disk_bytes"] / plans["f16"].n_stimuli
    rows = []
    for source, per_gpu in PUBLISHED_A100_IMAGES_PER_S.items():
        together = WORLD_SIZE * per_gpu
        rows.append({
            "cited per-GPU img/s": f"{source}: {per_gpu:,.0f}",
            "train epoch, forward only (s)": IMAGENET_TRAIN / together,
            "train epoch + overhead (s)": IMAGENET_TRAIN / together * (1 + overhead),
            "val epoch + overhead (s)": IMAGENET_VAL / together * (1 + overhead),
            "write f32 (GB/s, 8 ranks)": together * f32 / 1e9,
            "write f16 (GB/s, 8 ranks)": together * f16 / 1e9,
            "decode cores needed": together / decode_rate,
            "device->host per GPU (MB/s, f32)": per_gpu * f32 / 1e6,
        })
    frame = pd.DataFrame(rows)
    print(f"bytes per stimulus on disk: float32 {f32:,.0f}, float16 {f16:,.0f}; overhead fraction used "
          f"{overhead:.3f}; decode+transform {decode_rate:.0f} img/s per core; this disk {disk_rate / 1e9:.2f} GB/s, "
          f"so a float32 train recording takes {plans['f32'].totals['disk_bytes'] / disk_rate:.0f} s of writing here")
    return frame


# -- main -----------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=3, help="timed batches per variant and round (after one warm-up)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds in which forward and record alternate")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch thread counts to time")
    parser.add_argument("--skip-timing", action="store_true", help="only the layers, plans, JPEG and disk figures")
    args = parser.parse_args()
    pd.set_option("display.width", 250)
    pd.set_option("display.max_columns", 30)
    started = time.perf_counter()
    print(f"date {time.strftime('%Y-%m-%d %H:%M %Z')}; {os.cpu_count()} CPU cores; torch {torch.__version__}; "
          f"load average {load_average()}", flush=True)
    model = build_resnet50()
    torch.set_num_threads(min(2, os.cpu_count() or 1))

    plans = all_plans(model)
    section("1. the 20 layers (torchvision resnet50, 224 px)")
    print(layer_table(plans["f32"]).to_string(index=False))
    section(f"2a. bytes per layer: disk for all {IMAGENET_TRAIN:,} train stimuli; device per process "
            f"(world_size={WORLD_SIZE}, batch {GPU_BATCH})")
    print(per_layer_table(plans).to_string(index=False))
    section("2b. totals per scenario")
    print(totals_table(plans).to_string(index=False))
    section("2c. reducers summed over the 20 layers (device and RAM per process, disk in all)")
    print(reducer_totals(plans["reducers"]).to_string(index=False))

    with tempfile.TemporaryDirectory(prefix="scale-resnet50-") as folder:
        if not args.skip_timing:
            section(f"3. seconds per batch of {CPU_BATCH} at {IMAGE_SIZE} px ({args.rounds} rounds of {args.batches} "
                    "timed batches after 1 warm-up, forward and record alternating)")
            times = time_batches(model, args.batches, args.rounds, args.threads, Path(folder))
            print(times.to_string(index=False))
            overheads = overhead_table(times)
            print(overheads.to_string(index=False))
        section("4. JPEG decode on one core")
        decode = jpeg_rates()
        print(decode.to_string(index=False))
        section("5. disk write bandwidth of the temporary folder")
        disk_rate = disk_write_rate(Path(folder))
        print(f"{disk_rate / 1e9:.2f} GB/s ({DISK_PROBE_BYTES // 2**20} MiB in "
              f"{DISK_CHUNK // 2**20} MiB chunks, fsync included) in {folder}")
        checksum_rate = sha256_rate()
        print(f"SHA-256 {checksum_rate / 1e9:.2f} GB/s on one core: the completion checksums of a float32 train "
              f"recording take {plans['f32'].totals['disk_bytes'] / checksum_rate:.0f} s on rank 0 (reading aside)")

    section(f"6. extrapolation to {WORLD_SIZE} GPUs (cited GPU rates, not measured here; the largest measured "
            "overhead fraction, wall or CPU, 0 when negative)")
    overhead = 0.0 if args.skip_timing else max(0.0, float(overheads["overhead fraction"].max()))
    print(extrapolation(plans, overhead, float(decode["images/s"].iloc[-1]), disk_rate).to_string(index=False))

    section("run")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    print(f"peak RSS {format_bytes(peak)}; wall {time.perf_counter() - started:.0f} s; load average {load_average()}")


if __name__ == "__main__":
    main()
