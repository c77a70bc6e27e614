"""estimate_bytes(): a safetensors file from its header alone (and every
malformed header refused with the file and the entry named), and a module,
a meta-device one included, with buffers and shared storages counted once."""

import json
import struct

import pytest

import headroom
from headroom.pytorch.estimate import MAX_HEADER_BYTES, safetensors_header

from conftest import torch_or_skip


def write(path, header, data_bytes=None, raw=None):
    """A safetensors file: the header as given (a dict, or raw bytes) and a
    data section of `data_bytes` zero bytes (by default, what it says)."""
    body = raw if raw is not None else json.dumps(header).encode()
    if data_bytes is None:
        data_bytes = max([t["data_offsets"][1] for k, t in header.items()
                          if k != "__metadata__"] or [0])
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(body)) + body + b"\0" * data_bytes)
    return str(path)


def good_header():
    return {"__metadata__": {"format": "pt"},
            "w": {"dtype": "F16", "shape": [1024, 512], "data_offsets": [0, 1048576]},
            "b": {"dtype": "F32", "shape": [512], "data_offsets": [1048576, 1050624]},
            "q": {"dtype": "F4", "shape": [3], "data_offsets": [1050624, 1050626]}}


def test_a_file_is_sized_from_its_header(tmp_path):
    p = write(tmp_path / "m.safetensors", good_header())
    assert headroom.estimate_bytes(p) == 1050626
    assert headroom.estimate_bytes(tmp_path / "m.safetensors") == 1050626  # a PathLike too


def test_only_the_header_is_read(tmp_path, monkeypatch):
    p = write(tmp_path / "m.safetensors", good_header())
    import builtins

    reads = []
    real_open = builtins.open

    class Spy:
        def __init__(self, f):
            self.f = f

        def read(self, n=-1):
            reads.append(n)
            return self.f.read(n)

        def __getattr__(self, k):
            return getattr(self.f, k)

        def __enter__(self):
            return self

        def __exit__(self, *e):
            self.f.close()

    monkeypatch.setattr(builtins, "open", lambda *a, **k: Spy(real_open(*a, **k)))
    safetensors_header(p)
    assert reads[0] == 8 and all(0 <= n < 4096 for n in reads), reads


@pytest.mark.parametrize("header,data,raw,message", [
    (None, 0, b"", "shorter than the 8-byte header length"),
    ({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, 0, None,
     "past the data section"),
    ({"w": {"dtype": "F99", "shape": [2], "data_offsets": [0, 8]}}, None, None,
     "unknown dtype 'F99'"),
    ({"w": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}}, 8, None,
     "not a list of non-negative integers"),
    ({"w": {"dtype": "F32", "shape": [True], "data_offsets": [0, 8]}}, 8, None,
     "not a list of non-negative integers"),
    ({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, None, None,
     "needs 12 bytes but data_offsets span 8"),
    ({"w": {"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}}, 8, None,
     "begin <= end"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
      "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, None, None, "overlap"),
    ({"w": [1, 2]}, 8, None, "entry 'w' is not an object"),
    ({"__metadata__": 5}, 0, None, "__metadata__ is not an object"),
    (None, 0, b"[1, 2]", "not a JSON object"),
    (None, 0, b"{\"w\": ", "not JSON"),
    (None, 0, b"\xff\xfe{}", "not JSON"),
])
def test_hostile_headers_are_refused_by_name(tmp_path, header, data, raw, message):
    p = tmp_path / "bad.safetensors"
    if header is None and raw == b"":
        p.write_bytes(b"\x05\0\0")
    else:
        write(p, header or {}, data_bytes=data, raw=raw)
    with pytest.raises(ValueError, match="safetensors file .*bad.safetensors: .*" + message):
        headroom.estimate_bytes(str(p))


def test_header_lengths_out_of_bounds(tmp_path):
    p = tmp_path / "huge.safetensors"
    p.write_bytes(struct.pack("<Q", MAX_HEADER_BYTES + 1) + b"{}")
    with pytest.raises(ValueError, match="header length .* outside"):
        headroom.estimate_bytes(str(p))
    p.write_bytes(struct.pack("<Q", 1 << 63) + b"{}")
    with pytest.raises(ValueError, match="outside"):
        headroom.estimate_bytes(str(p))
    p.write_bytes(struct.pack("<Q", 4096) + b"{}")
    with pytest.raises(ValueError, match="runs past the end of the file"):
        headroom.estimate_bytes(str(p))


def test_bad_arguments():
    with pytest.raises(TypeError, match="safetensors file path or a torch.nn.Module"):
        headroom.estimate_bytes(12)
    with pytest.raises(FileNotFoundError):
        headroom.estimate_bytes("/nonexistent/model.safetensors")


def test_modules_count_buffers_and_shared_storage_once():
    torch = torch_or_skip()
    m = torch.nn.Linear(1024, 2048, device="meta")
    assert headroom.estimate_bytes(m) == 8396800  # 1024*2048*4 + 2048*4
    real = torch.nn.Linear(1024, 2048)
    assert headroom.estimate_bytes(real) == 8396800
    for dev in ("meta", "cpu"):
        tied = torch.nn.Module()
        tied.a = torch.nn.Linear(64, 64, bias=False, device=dev)
        tied.b = torch.nn.Linear(64, 64, bias=False, device=dev)
        tied.b.weight = tied.a.weight
        tied.register_buffer("scale", torch.ones(16, device=dev))
        tied.register_buffer("nothing", None)
        assert headroom.estimate_bytes(tied) == 64 * 64 * 4 + 16 * 4, dev
    bn = torch.nn.BatchNorm1d(100)  # buffers: running mean, var, count
    assert headroom.estimate_bytes(bn) == 100 * 4 * 4 + 8
