import json
import pickle
import struct

import pytest
import torch
from safetensors.torch import save_file

from cainnflow.checkpoint import read_checkpoint, write_checkpoint
from cainnflow.errors import CheckpointError


def test_round_trip(tmp_path):
    tensors = {"a.weight": torch.randn(3, 4), "b": torch.arange(5)}
    path = write_checkpoint(tmp_path / "m.safetensors", tensors, {"model": {"x": 1}})
    got, doc = read_checkpoint(path)
    assert doc["model"] == {"x": 1} and doc["format"] == "cainnflow-checkpoint"
    for k, v in tensors.items():
        torch.testing.assert_close(got[k], v)
    got_bytes, _ = read_checkpoint(path.read_bytes())
    assert set(got_bytes) == set(tensors)
    with path.open("rb") as fh:
        assert set(read_checkpoint(fh)[0]) == set(tensors)


def test_refuses_pickle_without_unpickling(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    p = tmp_path / "evil.safetensors"
    p.write_bytes(pickle.dumps(Evil()))
    with pytest.raises(CheckpointError, match="pickle"):
        read_checkpoint(p)
    assert not marker.exists()
    q = tmp_path / "model.pt"
    torch.save({"w": torch.zeros(2)}, q)
    with pytest.raises(CheckpointError, match="pickle"):
        read_checkpoint(q)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "too short"),
        (b"garbage!", "not a valid safetensors"),
        (struct.pack("<Q", 10) + b"{not json}", "not a valid safetensors"),
    ],
)
def test_garbage_files(tmp_path, content, message):
    p = tmp_path / "x.safetensors"
    p.write_bytes(content)
    with pytest.raises(CheckpointError, match=message):
        read_checkpoint(p)


def test_truncated_and_foreign(tmp_path):
    path = write_checkpoint(tmp_path / "m.safetensors", {"w": torch.randn(100, 100)}, {})
    data = path.read_bytes()
    (tmp_path / "t.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"truncated|corrupt"):
        read_checkpoint(tmp_path / "t.safetensors")
    save_file({"w": torch.zeros(2)}, tmp_path / "foreign.safetensors", metadata={"other": "x"})
    with pytest.raises(CheckpointError, match="not a cainnflow checkpoint"):
        read_checkpoint(tmp_path / "foreign.safetensors")
    with pytest.raises(CheckpointError, match="does not exist"):
        read_checkpoint(tmp_path / "missing.safetensors")


def test_newer_format_version_is_refused(tmp_path):
    doc = {"format": "cainnflow-checkpoint", "format_version": 99}
    save_file({"w": torch.zeros(2)}, tmp_path / "new.safetensors", metadata={"cainnflow": json.dumps(doc)})
    with pytest.raises(CheckpointError, match="version 99"):
        read_checkpoint(tmp_path / "new.safetensors")


def test_atomic_write_keeps_previous_on_failure(tmp_path, monkeypatch):
    path = write_checkpoint(tmp_path / "m.safetensors", {"w": torch.ones(3)}, {"v": 1})
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("cainnflow.checkpoint.os.replace", boom)
    with pytest.raises(OSError):
        write_checkpoint(path, {"w": torch.zeros(3)}, {"v": 2})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]  # no temp file left


def test_any_header_length_reads_back(tmp_path):
    # Regression: a header length whose first byte is 0x80 once looked like a pickle opcode.
    seen_first_bytes = set()
    for pad in range(0, 300, 1):
        path = write_checkpoint(tmp_path / "m.safetensors", {"w": torch.ones(2)}, {"pad": "x" * pad})
        data = path.read_bytes()
        seen_first_bytes.add(data[0])
        read_checkpoint(data)
    assert 0x80 in seen_first_bytes
