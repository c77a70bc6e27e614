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


# ---- headers built to attack the reader ----

U64_TOP = (1 << 64) - 1


class CountingDim(int):
    """A dimension that counts the products it takes part in."""
    products = 0

    def __rmul__(self, other):
        CountingDim.products += 1
        return int(other) * int(self)

    __mul__ = __rmul__


def test_a_long_shape_of_huge_dimensions_is_multiplied_a_bounded_number_of_times():
    from headroom.pytorch.estimate import _elements
    CountingDim.products = 0
    shape = [CountingDim(U64_TOP)] * 50000
    assert _elements(shape, 1 << 40) is None
    assert CountingDim.products == 1  # the first product already passes the bound
    CountingDim.products = 0
    shape = [1] * 50000 + [CountingDim(2)] * 200
    assert _elements(shape, 1 << 20) is None
    assert CountingDim.products == 21  # the 21st passes 2**20; the 1s are skipped
    assert _elements([1] * 1000 + [3, 0] + [U64_TOP] * 1000, 1) == 0
    assert _elements([1] * 1000 + [3, 5], 15) == 15


@pytest.mark.parametrize("dims", [52000, 209000])  # a 1.1 MB and a 4.4 MB header
def test_a_header_of_huge_dimensions_is_refused_with_a_short_message(tmp_path, dims):
    body = ('{"t":{"dtype":"F32","shape":[%s],"data_offsets":[0,4]}}'
            % ",".join([str(U64_TOP)] * dims)).encode()
    p = write(tmp_path / "bad.safetensors", None, data_bytes=4, raw=body)
    with pytest.raises(ValueError, match=r"entry 't': F32 shape \[18446744073709551615, .*\] "
                       r"\(%d dimensions\) holds more elements than the 4 bytes" % dims) as ei:
        headroom.estimate_bytes(p)
    assert len(str(ei.value)) < 400 + len(p)


def test_values_from_the_file_are_shortened_in_messages(tmp_path):
    name = "n" * 1_000_000
    p = write(tmp_path / "bad.safetensors",
              {name: {"dtype": "X" * 100000, "shape": [1], "data_offsets": [0, 4]}}, 4)
    with pytest.raises(ValueError, match="unknown dtype 'XXX") as ei:
        headroom.estimate_bytes(p)
    assert len(str(ei.value)) < 300 + len(p)


@pytest.mark.parametrize("depth", [65, 1000, 200000])
def test_deep_nesting_is_a_value_error_naming_the_depth(tmp_path, depth):
    meta = '{"a":' * depth + '1' + '}' * depth
    body = ('{"__metadata__":%s}' % meta[5:-1]).encode()  # __metadata__ nests `depth` deep
    p = write(tmp_path / "deep.safetensors", None, data_bytes=0, raw=body)
    with pytest.raises(ValueError, match="header nests more than 64 deep"):
        headroom.estimate_bytes(p)
    # A list nests too, and brackets inside strings are text.
    body = b'{"__metadata__":{"k":"' + b"[" * 100000 + b'"},"w":' + b"[" * depth + b"]" * depth
    p = write(tmp_path / "deep.safetensors", None, data_bytes=0, raw=body + b"}")
    with pytest.raises(ValueError, match="header nests more than 64 deep"):
        headroom.estimate_bytes(p)


def test_nesting_up_to_the_bound_is_parsed_and_strings_do_not_count(tmp_path):
    # __metadata__ nested 63 deep inside the header (64 in all) is read.
    meta = '{"a":' * 62 + '"[[[{{{\\"]]]"' + '}' * 62
    h = good_header()
    body = json.dumps(h)[:-1] + ', "__metadata__": %s}' % meta
    body = body.replace('"__metadata__": {"format": "pt"}, ', "")
    p = write(tmp_path / "m.safetensors", None, data_bytes=1050626, raw=body.encode())
    assert headroom.estimate_bytes(p) == 1050626


def test_json_depth_agrees_with_the_parser():
    import random

    from headroom.pytorch.estimate import json_depth

    def depth(o):
        if isinstance(o, (dict, list)):
            vals = o.values() if isinstance(o, dict) else o
            return 1 + max([depth(v) for v in vals] or [0])
        return 0

    alphabet = '[]{}"\\ab\n\u00e9'

    def text():
        return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 6)))

    def value(d):
        r = rng.random()
        if d > 6 or r < 0.3:
            return rng.choice([1, text(), None, 2.5])
        if r < 0.65:
            return [value(d + 1) for _ in range(rng.randint(0, 3))]
        return {text(): value(d + 1) for _ in range(rng.randint(0, 3))}

    rng = random.Random(7)
    for _ in range(3000):
        o = value(0)
        raw = json.dumps(o, ensure_ascii=rng.random() < 0.5).encode()
        assert json_depth(raw, 100) == depth(o), raw
        assert json_depth(raw, 2) == min(depth(o), 3), raw


def test_only_the_metadata_key_is_skipped(tmp_path):
    h = {"__metadata__": {"format": "pt"},
         "__w": {"dtype": "F32", "shape": [1000], "data_offsets": [0, 4000]},
         "__data_bytes__": {"dtype": "U8", "shape": [96], "data_offsets": [4000, 4096]},
         "x": {"dtype": "F32", "shape": [1], "data_offsets": [4096, 4100]}}
    p = write(tmp_path / "m.safetensors", h)
    assert headroom.estimate_bytes(p) == 4100
    hdr, data = safetensors_header(p)
    assert data == 4100 and hdr["__data_bytes__"]["shape"] == [96]
    h["__w"]["dtype"] = "F99"  # a tensor like any other: checked
    p = write(tmp_path / "m.safetensors", h)
    with pytest.raises(ValueError, match="entry '__w': unknown dtype"):
        headroom.estimate_bytes(p)


def test_what_is_not_a_regular_file_is_refused_before_reading(tmp_path):
    import os

    fifo = tmp_path / "m.safetensors"
    os.mkfifo(fifo)
    # A writer holds the FIFO open with a whole file inside: a reader that
    # opened it would find bytes to read instead of waiting.
    fd = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)
    try:
        content = struct.pack("<Q", 2) + b"{}"
        os.write(fd, content)
        with pytest.raises(ValueError, match=r"safetensors file .*m.safetensors: not a regular "
                           r"file \(a FIFO\)"):
            headroom.estimate_bytes(str(fifo))
        assert os.read(fd, 100) == content  # nothing was read
    finally:
        os.close(fd)
    for path, kind in ((tmp_path, "a directory"), ("/dev/zero", "a character device"),
                       ("/dev/null", "a character device")):
        with pytest.raises(ValueError, match=r"not a regular file \(%s\)" % kind):
            headroom.estimate_bytes(path)
    link = tmp_path / "link.safetensors"
    link.symlink_to(write(tmp_path / "real.safetensors", good_header()))
    assert headroom.estimate_bytes(str(link)) == 1050626  # a link to a file is that file
