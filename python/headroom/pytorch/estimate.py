"""Sizes before loading: estimate_bytes() of a safetensors file or a module.

A safetensors file starts with an 8-byte little-endian header length N, then
N bytes of JSON: {"tensor name": {"dtype": "F16", "shape": [..],
"data_offsets": [begin, end]}, ..., "__metadata__": {...}}. Only that header
is read, never the tensor data, and it is treated as hostile input: the path
must be a regular file (a FIFO or a device is refused before anything is
read), the length is bounded (100 MiB, the format's own limit) and must lie
within the file, the JSON may nest at most MAX_DEPTH deep (checked before it
is parsed), every entry must have a known dtype, a shape of non-negative
integers and offsets that agree with dtype times shape, lie within the data
section and do not overlap. Only the key "__metadata__" is not a tensor. A
bad file raises ValueError naming the file and the entry; values from the
file are shown shortened.

The work is linear in the header's size: the nesting is measured in one pass
over the text, and a shape's element count stops being multiplied as soon as
it passes what the entry's bytes could hold (a shape of thousands of
2**64 - 1 would otherwise grow a product of millions of bits).

A module is measured by its parameters and buffers, each storage counted
once (tied weights and views share one). A module built on the ``meta``
device has no storages to look at, so there each tensor counts as its own
elements times element size, once per distinct tensor (tied parameters are
one object).
"""

import itertools
import json
import os
import re
import reprlib
import struct

from .._files import NotRegularFile, open_regular

#: The safetensors format's own bound on the header.
MAX_HEADER_BYTES = 100 << 20
#: How deep the header's JSON may nest; a tensor's shape sits at depth 3.
MAX_DEPTH = 64
#: The key that is not a tensor.
METADATA = "__metadata__"
#: Bytes per element of each safetensors dtype.
DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4,
    "I64": 8, "U64": 8, "F64": 8,
}
# Sub-byte types pack several elements per byte: (elements, bytes).
_PACKED = {"F4": (2, 1), "F6_E2M3": (4, 3), "F6_E3M2": (4, 3)}


# Values from the file, shortened in messages.
_short = reprlib.Repr()
_short.maxstring, _short.maxother, _short.maxlist, _short.maxlong = 60, 60, 6, 40

# What json_depth() keeps of the text, and how it counts it.
_NOT_STRUCTURE = bytes(sorted(set(range(256)) - set(b'"[]{}')))
_STRING = re.compile(rb'"[^"]*"')
_SIGNS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")


def _bad(path, what):
    return ValueError("safetensors file %s: %s" % (path, what))


def json_depth(raw, limit):
    """How deep the JSON text `raw` (bytes) nests its arrays and objects,
    brackets inside strings left out, or limit + 1 once it is known to be
    deeper than `limit`. No recursion, and a few passes over the text at C
    speed: escaped backslashes and quotes go first, so that every quote left
    opens or closes a string; then everything but quotes and brackets; then
    the strings (an adjacent pair of quotes at once, those with brackets
    inside by a regular expression). A run of more than `limit` opening
    brackets answers at once; else the running sum of +1 per opening and -1
    per closing bracket peaks at the depth."""
    t = raw.replace(b"\\\\", b"").replace(b'\\"', b"").translate(None, _NOT_STRUCTURE)
    t = t.replace(b'""', b"")
    if b'"' in t:
        t = _STRING.sub(b"", t)
    t = t.translate(_SIGNS)
    if b"\x01" * (limit + 1) in t:
        return limit + 1
    return min(max(itertools.accumulate(memoryview(t).cast("b"), initial=0)), limit + 1)


def safetensors_header(path):
    """(header, data_bytes): the parsed JSON header of a safetensors file
    (a dict, "__metadata__" included when the file has it), checked as the
    module docstring says, and the size of the data section. Reads 8 + N
    bytes."""
    if not isinstance(path, (str, bytes, os.PathLike)):
        raise TypeError("path must be a file path; got %s" % type(path).__name__)
    try:
        f = open_regular(path, "rb")
    except NotRegularFile as e:
        raise _bad(path, e) from None
    with f:
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
    if len(raw) < n:
        raise _bad(path, "header length %d runs past the end of the file (it ended after "
                   "%d bytes)" % (n, 8 + len(raw)))
    hdr = _parse(path, raw)
    data = size - 8 - n
    spans = []
    for name, t in hdr.items():
        if name == METADATA:
            if not isinstance(t, dict):
                raise _bad(path, "%s is not an object" % METADATA)
            continue
        _check_entry(path, name, t, data)
        spans.append((t["data_offsets"][0], t["data_offsets"][1], name))
    spans.sort()
    for (b0, e0, n0), (b1, _e1, n1) in zip(spans, spans[1:]):
        if b1 < e0:
            raise _bad(path, "tensors %s and %s overlap" % (_short.repr(n0), _short.repr(n1)))
    return hdr, data


def _parse(path, raw):
    """The header's JSON object; ValueError for text that is not UTF-8, not
    JSON, nested deeper than MAX_DEPTH or not an object."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _bad(path, "header is not JSON: %s" % e) from None
    if json_depth(raw, MAX_DEPTH) > MAX_DEPTH:
        raise _bad(path, "header nests more than %d deep (a tensor's entry needs 3)"
                   % MAX_DEPTH)
    try:
        hdr = json.loads(text)
    except ValueError as e:  # json's errors, and numbers of more digits than int() takes
        raise _bad(path, "header is not JSON: %s" % e) from None
    except RecursionError:  # a caller already deep in its own stack
        raise _bad(path, "header nests too deep to parse here") from None
    if not isinstance(hdr, dict):
        raise _bad(path, "header is not a JSON object")
    return hdr


def _is_count(v):
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _is_counts(values):
    """True when `values` is a list of non-negative ints (no bools), checked
    at C speed: the one Python step is per distinct type."""
    return isinstance(values, list) and (not values or (
        all(t is int for t in set(map(type, values))) and min(values) >= 0))


def _elements(shape, limit):
    """The product of `shape` (non-negative ints), or None once it passes
    `limit`. Every partial product stays under limit times one dimension,
    and the dimensions of 1 are skipped at C speed, so at most
    log2(limit) + 1 products are taken, whatever the shape's length."""
    if 0 in shape:
        return 0
    n = 1
    for d in filter((1).__ne__, shape):
        n *= d
        if n > limit:
            return None
    return n


def _check_entry(path, name, t, data):
    r = _short.repr
    what = "entry %s" % r(name)
    if not isinstance(t, dict):
        raise _bad(path, "%s is not an object" % what)
    dtype, shape, offs = t.get("dtype"), t.get("shape"), t.get("data_offsets")
    if not isinstance(dtype, str) or (dtype not in DTYPE_BYTES and dtype not in _PACKED):
        raise _bad(path, "%s: unknown dtype %s" % (what, r(dtype)))
    if not _is_counts(shape):
        raise _bad(path, "%s: shape %s is not a list of non-negative integers" % (what, r(shape)))
    if (not isinstance(offs, list) or len(offs) != 2 or not all(_is_count(o) for o in offs)
            or offs[0] > offs[1]):
        raise _bad(path, "%s: data_offsets %s is not [begin, end] with begin <= end"
                   % (what, r(offs)))
    if offs[1] > data:
        raise _bad(path, "%s: data_offsets end %s is past the data section (%d bytes)"
                   % (what, r(offs[1]), data))
    span = offs[1] - offs[0]
    # No dtype packs more than 2 elements in a byte.
    n = _elements(shape, 2 * span)
    if n is None:
        raise _bad(path, "%s: %s shape %s (%d dimensions) holds more elements than the %d "
                   "bytes data_offsets span" % (what, dtype, r(shape), len(shape), span))
    if dtype in _PACKED:
        per, nb = _PACKED[dtype]
        want = -(-n // per) * nb
    else:
        want = n * DTYPE_BYTES[dtype]
    if span != want:
        raise _bad(path, "%s: %s %s needs %d bytes but data_offsets span %d"
                   % (what, dtype, r(shape), want, span))


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
    Raises TypeError for anything else, ValueError for a malformed file or a
    path that is not a regular file (a FIFO, a device, a directory), OSError
    for one that cannot be opened."""
    if isinstance(x, (str, bytes, os.PathLike)):
        hdr, _data = safetensors_header(x)
        return sum(t["data_offsets"][1] - t["data_offsets"][0]
                   for k, t in hdr.items() if k != METADATA)
    if hasattr(x, "parameters") and hasattr(x, "buffers"):
        return module_bytes(x)
    raise TypeError("estimate_bytes needs a safetensors file path or a torch.nn.Module; got %s"
                    % type(x).__name__)
