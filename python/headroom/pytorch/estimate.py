"""Sizes before loading: estimate_bytes() of a safetensors file or a module.

A safetensors file starts with an 8-byte little-endian header length N, then
N bytes of JSON: {"tensor name": {"dtype": "F16", "shape": [..],
"data_offsets": [begin, end]}, ..., "__metadata__": {...}}. Only that header
is read, never the tensor data, and it is treated as hostile input: the
length is bounded (100 MiB, the format's own limit) and must lie within the
file, every entry must have a known dtype, a shape of non-negative integers
and offsets that agree with dtype times shape, lie within the data section
and do not overlap. A bad file raises ValueError naming the file and the
entry.

A module is measured by its parameters and buffers, each storage counted
once (tied weights and views share one). A module built on the ``meta``
device has no storages to look at, so there each tensor counts as its own
elements times element size, once per distinct tensor (tied parameters are
one object).
"""

import json
import os
import struct

#: The safetensors format's own bound on the header.
MAX_HEADER_BYTES = 100 << 20

#: Bytes per element of each safetensors dtype.
DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4,
    "I64": 8, "U64": 8, "F64": 8,
}
# Sub-byte types pack several elements per byte: (elements, bytes).
_PACKED = {"F4": (2, 1), "F6_E2M3": (4, 3), "F6_E3M2": (4, 3)}


def _bad(path, what):
    return ValueError("safetensors file %s: %s" % (path, what))


def safetensors_header(path):
    """The parsed JSON header of a safetensors file (a dict), checked as
    described in the module docstring, with the size of the data section
    as "__data_bytes__". Reads 8 + N bytes."""
    if not isinstance(path, (str, bytes, os.PathLike)):
        raise TypeError("path must be a file path; got %s" % type(path).__name__)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(8)
        if len(head) < 8:
            raise _bad(path, "shorter than the 8-byte header length (%d bytes)" % len(head))
        (n,) = struct.unpack("<Q", head)
        if n < 2 or n > MAX_HEADER_BYTES:
            raise _bad(path, "header length %d is outside [2, %d]" % (n, MAX_HEADER_BYTES))
        if 8 + n > size:
            raise _bad(path, "header length %d runs past the end of the file (%d bytes)"
                       % (n, size))
        raw = f.read(n)
    try:
        hdr = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise _bad(path, "header is not JSON: %s" % e) from None
    if not isinstance(hdr, dict):
        raise _bad(path, "header is not a JSON object")
    data = size - 8 - n
    spans = []
    for name, t in hdr.items():
        if name == "__metadata__":
            if not isinstance(t, dict):
                raise _bad(path, "__metadata__ is not an object")
            continue
        _check_entry(path, name, t, data)
        spans.append((t["data_offsets"][0], t["data_offsets"][1], name))
    spans.sort()
    for (b0, e0, n0), (b1, _e1, n1) in zip(spans, spans[1:]):
        if b1 < e0:
            raise _bad(path, "tensors %r and %r overlap" % (n0, n1))
    hdr["__data_bytes__"] = data
    return hdr


def _is_count(v):
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _check_entry(path, name, t, data):
    if not isinstance(t, dict):
        raise _bad(path, "entry %r is not an object" % (name,))
    dtype, shape, offs = t.get("dtype"), t.get("shape"), t.get("data_offsets")
    if dtype not in DTYPE_BYTES and dtype not in _PACKED:
        raise _bad(path, "entry %r: unknown dtype %r" % (name, dtype))
    if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
        raise _bad(path, "entry %r: shape %r is not a list of non-negative integers"
                   % (name, shape))
    if (not isinstance(offs, list) or len(offs) != 2 or not all(_is_count(o) for o in offs)
            or offs[0] > offs[1]):
        raise _bad(path, "entry %r: data_offsets %r is not [begin, end] with begin <= end"
                   % (name, offs))
    if offs[1] > data:
        raise _bad(path, "entry %r: data_offsets end %d is past the data section (%d bytes)"
                   % (name, offs[1], data))
    n = 1
    for d in shape:
        n *= d
    if dtype in _PACKED:
        per, nb = _PACKED[dtype]
        want = -(-n // per) * nb
    else:
        want = n * DTYPE_BYTES[dtype]
    if offs[1] - offs[0] != want:
        raise _bad(path, "entry %r: %s %r needs %d bytes but data_offsets span %d"
                   % (name, dtype, shape, want, offs[1] - offs[0]))


def _storage_key_and_bytes(t):
    if t.device.type == "meta":
        return None, t.numel() * t.element_size()
    st = t.untyped_storage() if hasattr(t, "untyped_storage") else t.storage()
    nbytes = st.nbytes()
    return (t.device.type, t.device.index, st.data_ptr()), nbytes


def tensors_bytes(tensors):
    """Bytes of `tensors`, each storage once; meta tensors by their own size,
    each distinct tensor object once."""
    seen, total = set(), 0
    for t in tensors:
        key, nbytes = _storage_key_and_bytes(t)
        if key is None:
            key = ("meta", id(t))
        elif key[-1] == 0 and nbytes == 0:
            continue
        if key in seen:
            continue
        seen.add(key)
        total += nbytes
    return total


def module_tensors(module, recurse=True):
    """The module's parameters and buffers (each object once)."""
    out, seen = [], set()
    for t in list(module.parameters(recurse=recurse)) + list(module.buffers(recurse=recurse)):
        if t is None or id(t) in seen:
            continue
        seen.add(id(t))
        out.append(t)
    return out


def module_bytes(module):
    """Bytes of a module's parameters and buffers, each storage counted once
    (tied weights and views share one); works on the meta device too."""
    return tensors_bytes(module_tensors(module))


def estimate_bytes(x):
    """Bytes `x` needs on a device: a safetensors file (path: the sum of its
    tensors' sizes, from the header alone) or a torch.nn.Module (parameters
    and buffers, shared storages once; a meta-device module included).
    Raises TypeError for anything else, ValueError for a malformed file."""
    if isinstance(x, (str, bytes, os.PathLike)):
        hdr = safetensors_header(x)
        return sum(t["data_offsets"][1] - t["data_offsets"][0]
                   for k, t in hdr.items() if not k.startswith("__"))
    if hasattr(x, "parameters") and hasattr(x, "buffers"):
        return module_bytes(x)
    raise TypeError("estimate_bytes needs a safetensors file path or a torch.nn.Module; got %s"
                    % type(x).__name__)
