"""pinet_runtime.files: the one atomic writer every module uses."""

import json
import os
import stat
import threading

import pytest

from pinet_runtime.files import (
    atomic_path,
    is_temporary_file,
    temporary_path,
    write_bytes_atomic,
    write_json_atomic,
    write_text_atomic,
)


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_text_bytes_and_json_are_written_whole(tmp_path):
    write_text_atomic(tmp_path / "a" / "b.txt", "line 1\nline 2\n")   # missing folders are created
    assert (tmp_path / "a" / "b.txt").read_bytes() == b"line 1\nline 2\n"
    write_bytes_atomic(tmp_path / "c.bin", b"\x00\xff")
    assert (tmp_path / "c.bin").read_bytes() == b"\x00\xff"
    write_json_atomic(tmp_path / "d.json", {"b": float("nan"), "a": [1.5, float("inf")]})
    assert (tmp_path / "d.json").read_text() == '{\n  "a": [\n    1.5,\n    null\n  ],\n  "b": null\n}\n'
    write_json_atomic(tmp_path / "e.json", {"b": 1, "a": 2}, sort_keys=False)
    assert list(json.loads((tmp_path / "e.json").read_text())) == ["b", "a"]
    assert _leftovers(tmp_path) == []


def test_surrogate_escaped_text_goes_out_as_its_original_bytes(tmp_path):
    name = os.fsdecode(b"caf\xe9.jpg")   # a Latin-1 file name on a UTF-8 system
    write_text_atomic(tmp_path / "names.csv", name + "\n", errors="surrogateescape")
    assert (tmp_path / "names.csv").read_bytes() == b"caf\xe9.jpg\n"
    with pytest.raises(UnicodeEncodeError):
        write_text_atomic(tmp_path / "strict.csv", name)
    assert not (tmp_path / "strict.csv").exists() and _leftovers(tmp_path) == []


def test_a_failure_while_writing_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "model.onnx"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="writer died"):
        with atomic_path(target) as temporary:
            temporary.write_bytes(b"half of the new")
            raise RuntimeError("writer died")
    assert target.read_bytes() == b"old"
    assert _leftovers(tmp_path) == []


def test_a_failed_rename_leaves_no_temporary(tmp_path):
    (tmp_path / "taken").mkdir()   # a folder cannot be replaced by a file
    with pytest.raises(OSError):
        write_text_atomic(tmp_path / "taken", "text")
    assert (tmp_path / "taken").is_dir() and _leftovers(tmp_path) == []


def test_a_path_writer_publishes_on_success(tmp_path):
    target = tmp_path / "weights.bin"
    with atomic_path(target, durable=True) as temporary:
        assert temporary.parent == tmp_path and is_temporary_file(temporary) and not target.exists()
        temporary.write_bytes(b"new")
    assert target.read_bytes() == b"new" and _leftovers(tmp_path) == []


def test_a_replaced_file_keeps_its_mode_and_a_new_one_follows_the_umask(tmp_path):
    kept = tmp_path / "kept.txt"
    kept.write_text("old")
    kept.chmod(0o600)
    write_text_atomic(kept, "new")
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600 and kept.read_text() == "new"
    previous = os.umask(0o027)
    try:
        write_text_atomic(tmp_path / "fresh.txt", "new")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "fresh.txt").stat().st_mode) == 0o640   # not mkstemp's 0600


def test_a_pipe_is_written_in_place(tmp_path):
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    received = []
    reader = threading.Thread(target=lambda: received.append(pipe.read_bytes()))
    reader.start()
    write_text_atomic(pipe, "through the pipe\n")
    reader.join(timeout=10)
    assert received == [b"through the pipe\n"]
    assert stat.S_ISFIFO(pipe.stat().st_mode) and _leftovers(tmp_path) == []


def test_temporary_names_are_hidden_next_to_the_target(tmp_path):
    first, second = temporary_path(tmp_path / "x.json"), temporary_path(tmp_path / "x.json")
    assert first != second and first.parent == tmp_path
    assert first.name.startswith(".x.json.") and is_temporary_file(first)
    assert not is_temporary_file(tmp_path / "x.json") and not is_temporary_file(tmp_path / ".hidden")
