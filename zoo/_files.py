"""The files the toolkit writes: checksums, an exclusive writer lock, and deleting only its own files.

Run directories and recordings list every file they write in a manifest, with its size and
SHA-256. ``file_entry`` makes such an entry, ``verify_files`` checks files against their entries
(and names the first that does not match), and ``remove_listed_files`` deletes exactly the listed
files, after checking that every one lies inside the folder. ``writer_lock`` keeps a second
process from writing into a folder that another one is writing.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import socket
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator, Mapping

__all__ = [
    "LOCK_FILE",
    "FolderLockedError",
    "CorruptFileError",
    "file_sha256",
    "file_entry",
    "verify_files",
    "inside",
    "remove_listed_files",
    "writer_lock",
]

#: Name of the lock file a writer holds inside the folder it writes.
LOCK_FILE = ".writer.lock"


class FolderLockedError(OSError):
    """Another process is writing the folder (an ``OSError``, like the failed lock underneath it)."""


class CorruptFileError(ValueError):
    """A file does not match the size or checksum its manifest recorded."""


def file_sha256(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """The SHA-256 of a file's bytes, as 64 hex digits, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_entry(path: str | os.PathLike) -> dict[str, int | str]:
    """``{"bytes": size, "sha256": hex digest}`` of a file, for a manifest."""
    return {"bytes": os.path.getsize(path), "sha256": file_sha256(path)}


def verify_files(folder: str | os.PathLike, entries: Mapping[str, Mapping], what: str = "") -> None:
    """Check files against their manifest entries: size first (cheap), then SHA-256.

    Parameters
    ----------
    folder
        The folder the relative paths of ``entries`` start from.
    entries
        ``{relative path: {"bytes": int, "sha256": str}}``.
    what
        How to name the folder in messages, e.g. ``"run folder"``.

    Raises
    ------
    CorruptFileError
        Naming the first file that is missing, has another size or another checksum.
    """
    folder = Path(folder)
    label = f"{what} {str(folder)!r}" if what else repr(str(folder))
    for relative, entry in entries.items():
        path = folder / relative
        if not inside(folder, relative):
            raise CorruptFileError(f"the manifest of {label} lists {relative!r}, which lies outside it; refusing to read it")
        if not path.is_file():
            raise CorruptFileError(f"{str(path)!r} is missing from {label}, whose manifest lists it")
        size = path.stat().st_size
        if size != entry["bytes"]:
            raise CorruptFileError(
                f"{str(path)!r} has {size} bytes, but {entry['bytes']} were written: the file was changed or damaged "
                "after the toolkit wrote it"
            )
        if file_sha256(path) != entry["sha256"]:
            raise CorruptFileError(
                f"{str(path)!r} does not match the SHA-256 recorded when it was written: the file was changed or "
                "damaged (a bit flip, an edit, a partial copy)"
            )


def inside(folder: str | os.PathLike, relative: str) -> bool:
    """True when ``folder / relative`` lies inside ``folder`` (after resolving ``..`` and links)."""
    root = Path(folder).resolve()
    target = (root / relative).resolve()
    return target != root and root in target.parents


def remove_listed_files(folder: str | os.PathLike, relatives: Iterable[str]) -> None:
    """Delete exactly the listed files of ``folder``, then the folders they leave empty.

    Every path is checked first: if any lies outside ``folder`` (``..``, an absolute path, a link
    that leads out), nothing is deleted. Folders are removed only when empty and only below
    ``folder``; ``folder`` itself stays.

    Raises
    ------
    ValueError
        If a listed path lies outside ``folder``.
    """
    folder = Path(folder)
    relatives = list(relatives)
    outside = [relative for relative in relatives if not inside(folder, relative)]
    if outside:
        raise ValueError(
            f"refusing to delete anything in {str(folder)!r}: its manifest lists paths outside it ({outside[:3]}); "
            "the manifest was edited or damaged. Delete the folder yourself if it is yours"
        )
    parents: set[Path] = set()
    for relative in relatives:
        path = folder / relative
        if path.is_file() or path.is_symlink():
            path.unlink()
        parents.update(parent for parent in path.parents if parent != folder and folder in parent.parents)
    for parent in sorted(parents, key=lambda p: len(p.parts), reverse=True):
        if parent.is_dir() and not parent.is_symlink() and not any(parent.iterdir()):
            parent.rmdir()


@contextmanager
def writer_lock(folder: str | os.PathLike, what: str = "folder") -> Iterator[Path]:
    """Hold an exclusive lock on ``folder`` while writing it; a second writer fails at once.

    The lock is an advisory ``flock`` on ``folder/.writer.lock``, which holds the writer's PID and
    host. The operating system releases it when the process dies, so a killed writer never leaves
    the folder locked; the file itself is removed on a clean exit.

    Raises
    ------
    FolderLockedError
        If another process holds the lock; the message gives its PID.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise FolderLockedError(
                f"{what} {str(folder)!r} is being written by {holder}; wait for it to finish (or stop it), "
                "or write to another folder"
            ) from None
        try:
            same_file = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:  # the previous holder removed it between our open and our lock
            same_file = False
        if same_file:
            break
        os.close(fd)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"process {os.getpid()} on {socket.gethostname()}".encode(), 0)
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)
        os.close(fd)
