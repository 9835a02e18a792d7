"""zoo._files: checksums, verification, deleting only listed files, the writer lock."""

import hashlib
import os

import pytest
from _fakes import LockHolder

from zoo._files import (
    LOCK_FILE,
    CorruptFileError,
    FolderLockedError,
    file_entry,
    inside,
    remove_listed_files,
    verify_files,
    writer_lock,
)


def test_entry_is_size_and_sha256(tmp_path):
    data = os.urandom(3 * (1 << 20) + 5)  # several read chunks
    (tmp_path / "a.bin").write_bytes(data)
    assert file_entry(tmp_path / "a.bin") == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def test_verify_names_the_changed_file(tmp_path):
    (tmp_path / "sub").mkdir()
    for name in ("a.bin", "sub/b.bin"):
        (tmp_path / name).write_bytes(b"x" * 100)
    entries = {name: file_entry(tmp_path / name) for name in ("a.bin", "sub/b.bin")}
    verify_files(tmp_path, entries)
    flipped = bytearray(b"x" * 100)
    flipped[37] ^= 0x04  # one bit, same size
    (tmp_path / "sub/b.bin").write_bytes(bytes(flipped))
    with pytest.raises(CorruptFileError, match=r"sub/b.bin.*SHA-256"):
        verify_files(tmp_path, entries)
    (tmp_path / "a.bin").write_bytes(b"x" * 99)
    with pytest.raises(CorruptFileError, match=r"a.bin' has 99 bytes, but 100"):
        verify_files(tmp_path, entries)
    (tmp_path / "a.bin").unlink()
    with pytest.raises(CorruptFileError, match="missing"):
        verify_files(tmp_path, entries)
    with pytest.raises(CorruptFileError, match="outside"):
        verify_files(tmp_path, {"../elsewhere": entries["a.bin"]})


def test_inside_resolves_dots_and_links(tmp_path):
    (tmp_path / "run").mkdir()
    os.symlink(tmp_path, tmp_path / "run" / "out")
    assert inside(tmp_path / "run", "layers/a.npy")
    assert not inside(tmp_path / "run", "../thesis.tex")
    assert not inside(tmp_path / "run", "/etc/passwd")
    assert not inside(tmp_path / "run", "out/thesis.tex")  # through a link that leads out
    assert not inside(tmp_path / "run", ".")


def test_remove_deletes_only_listed_files_and_refuses_outside_paths(tmp_path):
    run = tmp_path / "run"
    (run / "state" / "epoch-1").mkdir(parents=True)
    (run / "data").mkdir()
    for name in ("config.json", "state/epoch-1/model.safetensors", "notes.tex", "data/raw.csv"):
        (run / name).write_text("x")
    (tmp_path / "thesis.tex").write_text("mine")
    with pytest.raises(ValueError, match="outside"):
        remove_listed_files(run, ["config.json", "../thesis.tex"])
    assert (run / "config.json").exists() and (tmp_path / "thesis.tex").exists()  # nothing was deleted
    remove_listed_files(run, ["config.json", "state/epoch-1/model.safetensors", "never-written.bin"])
    assert sorted(p.relative_to(run).as_posix() for p in run.rglob("*")) == ["data", "data/raw.csv", "notes.tex"]


def test_a_second_writer_fails_at_once_with_the_holders_pid(tmp_path):
    with LockHolder(tmp_path) as holder:
        with pytest.raises(FolderLockedError, match=f"process {holder.pid} on"):
            with writer_lock(tmp_path):
                pass
    with writer_lock(tmp_path):  # released by the holder
        assert (tmp_path / LOCK_FILE).exists()
    assert not (tmp_path / LOCK_FILE).exists()


def test_a_killed_writer_leaves_no_lock(tmp_path):
    with LockHolder(tmp_path) as holder:
        holder.kill()
    assert (tmp_path / LOCK_FILE).exists()  # the file stays, the lock does not
    with writer_lock(tmp_path):
        pass
