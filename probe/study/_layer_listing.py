"""Each model's layer names, kept from the last time it was built, so that a study refuses an unknown
layer before torch is imported.

Building a model to learn its layer names takes seconds (importing torch and torchvision alone
does). After a study builds a model, ``remember_layers`` stores its module names in the user's
cache, under a key that changes whenever the model's structure may have changed (``listing_key``).
The next study that names the model is checked against that listing by ``precheck_layers``, in
milliseconds, with the same resolver and the same messages as ``probe.resolve_layers``; a model
without a listing is checked when it is built, as before. ``probe train`` stores the listing of the
run it writes (``remember_run_layers``), so a study of that run is checked before its first build.

For the first use of a torchvision classification architecture (``torchvision:NAME``) or of a
pretrained network (``pretrained:NAME``), the package ships their listings,
``layer_names_torchvision.json.gz`` beside this file (written by ``tools/generate_layer_listing.py``).
It is consulted only when the cache has no listing and the installed versions of the libraries
whose classes a model is made of equal those it was generated with.

The cache folder is ``$NEUROPROBE_CACHE``, else ``$XDG_CACHE_HOME/neuroprobe``, else
``~/.cache/neuroprobe`` (read at each call); a listing is ``layer-names/<sha256 of its key>.json``
there. Deleting the folder is always safe. This module imports only the standard library, the
study file's module and torch-free modules of the engine and the zoo (``remember_run_layers``, given
a model from outside the zoo, imports the study's own module).
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import importlib.util
import json
import os
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

from probe._layer_names import resolve_layer_names
from probe.study._spec import ModelEntrySpec, StudySpec, StudySpecError, _zoo_foundation

__all__ = [
    "listing_folder",
    "listing_key",
    "precheck_layers",
    "remember_layers",
    "remember_run_layers",
    "shipped_listing",
    "stored_listing",
]

#: Libraries whose version is part of every key: any of them may build a model (a factory may call any).
_LIBRARIES = ("torch", "torchvision", "timm", "transformers")
#: The listings shipped with the package, of torchvision's classification architectures and the pretrained networks.
SHIPPED_LISTINGS = Path(__file__).with_name("layer_names_torchvision.json.gz")


# ----------------------------------------------------------------------------------------------
# the check


def precheck_layers(spec: StudySpec) -> None:
    """Check the layer names of every model that has a stored or shipped listing, without importing torch.

    Parameters
    ----------
    spec
        A checked study. Models with ``layers = "auto"`` or without a listing are left to the
        check that follows their building.

    Raises
    ------
    StudySpecError
        One line per model whose layers do not resolve, worded as when the model is built:
        ``models[0].layers (model 'resnet'): unknown layer 'layer5'; did you mean 'layer4'...``.
    """
    problems = []
    for index, entry in enumerate(spec.models):
        if entry.layers == "auto":
            continue
        listing = stored_listing(entry)
        if listing is None:
            continue
        try:
            resolve_layer_names(listing["modules"], list(entry.layers), unknown_name_error=_unknown_name_error())
        except (KeyError, ValueError) as err:
            problems.append(f"models[{index}].layers (model {entry.name!r}): {err.args[0] if err.args else err}")
    if problems:
        raise StudySpecError("\n".join(problems))


def _unknown_name_error() -> Callable[..., Exception]:
    return _zoo_foundation("_names").unknown_name_error


# ----------------------------------------------------------------------------------------------
# the store


def listing_folder() -> Path:
    """Where listings are stored: ``layer-names/`` in ``$NEUROPROBE_CACHE``, else in
    ``$XDG_CACHE_HOME/neuroprobe``, else in ``~/.cache/neuroprobe``."""
    if os.environ.get("NEUROPROBE_CACHE"):
        cache = Path(os.environ["NEUROPROBE_CACHE"]).expanduser()
    elif os.environ.get("XDG_CACHE_HOME"):
        cache = Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "neuroprobe"
    else:
        cache = Path.home() / ".cache" / "neuroprobe"
    return cache / "layer-names"


def remember_layers(entry: ModelEntrySpec, model: Any, auto_layers: list[str] | None) -> None:
    """Store the module names of a model just built for ``entry``, for the next ``precheck_layers``.

    Nothing is stored when the model has no key (``listing_key``), and nothing is raised when the
    cache folder cannot be written: a read-only home must not stop a study.

    Parameters
    ----------
    entry
        The study's model entry the model was built from.
    model
        The ``torch.nn.Module`` built for it.
    auto_layers
        What ``layers = "auto"`` records for it (``probe.study.default_layers(model)``), or None when
        that raised.
    """
    key = listing_key(entry)
    if key is None:
        return
    listing = {"key": key, "modules": [name for name, _ in model.named_modules() if name],
               "auto": None if auto_layers is None else list(auto_layers)}
    if _read(key) == listing:
        return
    try:
        _zoo_foundation("_io").atomic_write_text(_listing_path(key), json.dumps(listing))
    except OSError:
        return  # the next run builds the model and checks its layers then, as without a cache


def remember_run_layers(run_dir: str | os.PathLike, model: Any) -> None:
    """Store the module names of the model a run folder holds, as a study naming ``run = run_dir`` would.

    Called by ``probe train`` once the run is written (its ``config.json``, which keys the listing, is
    then final), so that a study of the run refuses an unknown layer before the run is ever loaded.

    Parameters
    ----------
    run_dir
        The run folder written by ``zoo.train``.
    model
        The ``torch.nn.Module`` trained into it.
    """
    if hasattr(model, "recordable_layers"):  # every zoo model: what default_layers returns for it
        auto = list(model.recordable_layers())
    else:  # the study's module loads the analyses and reports (seconds): only when needed
        from probe.study._study import _auto_layers

        auto = _auto_layers(model)
    folder = Path(run_dir).resolve()
    remember_layers(ModelEntrySpec(name=folder.name, source="run", spec=str(folder)), model, auto)


def stored_listing(entry: ModelEntrySpec) -> dict[str, Any] | None:
    """The listing stored for ``entry``'s current key: ``{"key", "modules", "auto"}``, else the one
    shipped with the package (``shipped_listing``, with ``"key"`` None), or None."""
    key = listing_key(entry)
    stored = None if key is None else _read(key)
    if stored is not None:
        return stored
    shipped = shipped_listing(entry)
    return None if shipped is None else {"key": None, **shipped}


def shipped_listing(entry: ModelEntrySpec) -> dict[str, Any] | None:
    """The listing the package ships for ``entry``: ``{"modules", "auto"}``, or None.

    None unless ``entry`` is ``arch = "torchvision:NAME"`` or ``pretrained = "NAME"`` with a shipped
    listing, and the installed versions of the libraries whose classes the model is made of equal the
    versions it was generated with (a local build's tag such as ``+cu121`` aside: it shares the
    release's code).
    """
    if entry.train is not None or entry.source not in ("arch", "pretrained"):
        return None
    listings = _shipped_listings()
    model = listings.get("models", {}).get(entry.spec)
    if not isinstance(model, dict) or not isinstance(model.get("modules"), list):
        return None
    generated_with = listings["versions"]
    for library in model.get("libraries", ()):
        installed = _version(library)
        if installed is None or _release(installed) != _release(generated_with.get(library) or ""):
            return None
    return {"modules": list(model["modules"]), "auto": model.get("auto")}


@functools.lru_cache(maxsize=1)
def _shipped_listings() -> dict[str, Any]:
    """The shipped file, read once: ``{"versions": {library: version}, "models": {spelling: {"libraries",
    "modules", "auto"}}}``; {} when it is missing or damaged."""
    try:
        listings = json.loads(gzip.decompress(SHIPPED_LISTINGS.read_bytes()))
    except (OSError, ValueError, EOFError):
        return {}
    if not isinstance(listings, dict) or not all(isinstance(listings.get(k), dict) for k in ("versions", "models")):
        return {}
    return listings


def _release(version: str) -> str:
    return version.split("+", 1)[0]


def _listing_path(key: str) -> Path:
    return listing_folder() / f"{hashlib.sha256(key.encode()).hexdigest()}.json"


def _read(key: str) -> dict[str, Any] | None:
    """The listing stored under ``key``; None when absent, unreadable or not a listing of that key."""
    try:
        listing = json.loads(_listing_path(key).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(listing, dict) or listing.get("key") != key:
        return None
    modules = listing.get("modules")
    if not isinstance(modules, list) or not all(isinstance(name, str) for name in modules):
        return None
    return listing


# ----------------------------------------------------------------------------------------------
# keys


def listing_key(entry: ModelEntrySpec) -> str | None:
    """What identifies the module structure of the model ``entry`` builds, as JSON text.

    It holds what the source builds from (a run's ``config.json``, or the training the study asks for
    when it trains the run; an architecture's spelling; a pretrained network's name; a factory
    file's bytes and function, with the other ``.py`` files of its folder, which it may import), the
    versions of the libraries that build models and a fingerprint of the zoo's code. Weights (and
    ``init``, ``input_size``) are left out: they never change the modules.

    Returns
    -------
    str or None
        None when it cannot be formed cheaply (a missing file, a Hugging Face Hub id): the model is
        then checked when it is built.
    """
    try:
        own = _SOURCE_KEYS[entry.source](entry.spec) if entry.train is None else _trained_key(entry.train)
        zoo_code = _zoo_code()
    except (KeyError, OSError, ValueError):
        return None
    if own is None or zoo_code is None:
        return None
    libraries = {name: _version(name) for name in _LIBRARIES}
    return json.dumps({"source": entry.source, **own, "libraries": libraries, "zoo": zoo_code}, sort_keys=True)


def _run_key(folder: str) -> dict[str, str]:
    return {"config.json": _sha256(Path(folder) / "config.json")}


def _trained_key(train: dict[str, Any]) -> dict[str, str]:
    """A run the study trains: what it asks ``zoo.train`` for, which holds before the run exists and
    changes with it (its config.json may still be an earlier run's when the study is checked)."""
    return {"train": json.dumps(train, sort_keys=True, default=str)}


def _arch_key(spelling: str) -> dict[str, str] | None:
    scheme, _, rest = spelling.partition(":")
    if scheme != "hf":
        return {"spec": spelling}  # torchvision:, timm: or a zoo model, built by the versions in the key
    if not Path(rest).is_dir():
        return None  # a Hub id: what it names may change on the Hub
    return {"spec": spelling, "config.json": _sha256(Path(rest) / "config.json")}


def _pretrained_key(spelling: str) -> dict[str, str]:
    return {"spec": spelling}


def _factory_key(spelling: str) -> dict[str, str]:
    file, _, function = spelling.rpartition(":")
    path = Path(file)
    return {"file": _sha256(path), "function": function, "neighbours": _neighbours(path)}


_SOURCE_KEYS: dict[str, Callable[[str], dict[str, str] | None]] = {
    "run": _run_key,
    "arch": _arch_key,
    "pretrained": _pretrained_key,
    "factory": _factory_key,
}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _neighbours(file: Path) -> str:
    """A fingerprint (names, sizes, times) of the other ``.py`` files beside ``file``, which it may import."""
    others = sorted(p for p in file.parent.glob("*.py") if p.name != file.name)
    return _fingerprint(others, file.parent)


def _zoo_code() -> str | None:
    """neuroprobe's version and a fingerprint of the zoo's source files (an editable install keeps its
    version while its code changes); None when the zoo is not a folder of files."""
    found = importlib.util.find_spec("zoo")
    locations = list(found.submodule_search_locations or []) if found is not None else []
    if len(locations) != 1:
        return None
    folder = Path(locations[0])
    return f"{_version('neuroprobe')}:{_fingerprint(sorted(folder.rglob('*.py')), folder)}"


def _fingerprint(files: list[Path], folder: Path) -> str:
    stats = []
    for path in files:
        stat = path.stat()
        stats.append([path.relative_to(folder).as_posix(), stat.st_size, stat.st_mtime_ns])
    return hashlib.sha256(json.dumps(stats).encode()).hexdigest()
