"""headroom.agent: this process as a client of the memory broker.

The broker runs in ``headroom watch`` and listens on a Unix socket
($XDG_RUNTIME_DIR/headroom/broker.sock; docs/broker.md). Its protocol is
JSON lines, spoken here in pure Python: the agent needs no C library.

- ``connect(priority=0, registry=None)`` starts a daemon thread that
  registers the process, reports what it could give back (caches added
  with ``add_cache``, PyTorch's cached CUDA blocks when CUDA is
  initialised, and every registry's ``releasable_bytes()``), and answers
  the broker's release requests by emptying its caches, then the
  process's caches (headroom.free's release_caches(), the caches step of
  every cleanup mode, when PyTorch holds cached blocks on that device),
  then calling ``registry.release(nbytes)``, replying with the bytes that
  came back. A callback that raises is logged (logger "headroom.agent"),
  the others are still asked, and the answer carries the error, which the
  broker shows for this client (``headroom broker``).
- ``with reserve(8 << 30, device=0, timeout=60):`` asks the broker for room
  before a big load; the lease ends when the block ends (or the process
  exits). A refusal raises ``Refused`` naming who holds what. Sizes are
  whole bytes: an int (a float is a TypeError).

A cache is ``add_cache(name, size_fn, release_fn, device)``: ``size_fn()``
returns the bytes it holds now (an int); ``release_fn(nbytes)`` drops what
it can, at least nbytes if it can (``release_fn()`` when it takes no
argument). Its return value is not used: what came back is size_fn()
before less after.

A registry is any object with ``releasable_bytes() -> int`` and
``release(nbytes) -> int`` (headroom.Registry has both; it returns the
bytes that came back, measured). One that also has ``offer_items()`` (a
list of offer items, each with its device) and ``release_device(device,
nbytes)`` is offered item by item and asked per device: ComfyUI's loaded
models (headroom.comfy.broker_client.ComfyModels). Optional: ``busy()``,
true while it is at work (the broker then asks idle clients first), and
``withdraw()``, called when a release asked earlier is no longer wanted
(its reservation was granted or refused), to take back what it set up and
has not done yet.
"""

import contextlib
import inspect
import json
import logging
import os
import socket
import sys
import threading
import time

from . import free as _free

PROTOCOL = 1
_log = logging.getLogger("headroom.agent")

__all__ = ["Agent", "BrokerError", "Refused", "connect", "reserve", "socket_path", "status"]


class BrokerError(RuntimeError):
    """The broker could not be reached, or answered with an error."""


class Refused(BrokerError):
    """A reservation the broker refused; ``reply`` is its answer (reason,
    holders, leases, fits_bytes)."""

    def __init__(self, reply):
        self.reply = reply
        self.holders = reply.get("holders", [])
        self.fits_bytes = reply.get("fits_bytes", 0)
        names = ", ".join("%s (pid %s, priority %s, %s)" % (h.get("name"), h.get("pid"),
                                                             h.get("priority"), h.get("why"))
                          for h in self.holders) or "nobody registered"
        super().__init__("refused on %s: %s; %d bytes asked, %d fit; held by %s" % (
            reply.get("device"), reply.get("reason"), reply.get("bytes", 0), self.fits_bytes,
            names))


def socket_path(path=None):
    """The broker's socket: `path`, HEADROOM_BROKER_SOCKET, then
    $XDG_RUNTIME_DIR/headroom/broker.sock, then /run/headroom/broker.sock for
    root (as the broker chooses it)."""
    path = path or os.environ.get("HEADROOM_BROKER_SOCKET")
    if path and path != "none":
        return path
    run = os.environ.get("XDG_RUNTIME_DIR")
    if run:
        return os.path.join(run, "headroom", "broker.sock")
    if os.geteuid() == 0:
        return "/run/headroom/broker.sock"
    raise BrokerError("no broker socket: set HEADROOM_BROKER_SOCKET or XDG_RUNTIME_DIR")


def _device_name(device):
    if device is None or device == "host":
        return "host"
    if isinstance(device, int):
        return "gpu%d" % device
    if isinstance(device, str) and device.startswith("cuda"):
        return "gpu%s" % (device.split(":")[1] if ":" in device else "0")
    return str(device)


def _whole_bytes(name, v, minimum=0):
    """v as a whole byte count: an int (not a bool, not a float)."""
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError("%s must be a whole number of bytes (an int); got %r" % (name, v))
    if v < minimum or v >= 1 << 63:
        raise ValueError("%s must be in [%d, 2**63); got %d" % (name, minimum, v))
    return v


def _takes_argument(fn):
    """True when fn can be called with one positional argument."""
    try:
        inspect.signature(fn).bind(0)
        return True
    except TypeError:
        return False
    except ValueError:  # a builtin without a signature: try with one
        return True


def _open(path):
    p = socket_path(path)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(p)
    except OSError as e:
        s.close()
        raise BrokerError("cannot reach the broker at %s: %s (is 'headroom watch' running?)"
                          % (p, e.strerror or e)) from e
    return s


class _Lines:
    """Line reader over a socket, with a deadline per read."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def send(self, obj):
        obj = dict(obj, v=PROTOCOL)
        self.sock.sendall(json.dumps(obj, separators=(",", ":")).encode() + b"\n")

    def read(self, timeout=None):
        """The next line as a dict; None on timeout; BrokerError on EOF."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                return None
            if not chunk:
                raise BrokerError("the broker closed the connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        msg = json.loads(line)
        if msg.get("op") == "error":
            raise BrokerError("broker: %s" % msg.get("error"))
        return msg


def _torch_caches():
    """PyTorch's cached, unused CUDA blocks per device, when CUDA is up."""
    torch = sys.modules.get("torch")
    try:
        if torch is None or not torch.cuda.is_initialized():
            return []
    except AttributeError:  # torch is being imported by another thread
        return []
    out = []
    for i in range(torch.cuda.device_count()):
        cached = torch.cuda.memory_reserved(i) - torch.cuda.memory_allocated(i)
        out.append(("torch", "gpu%d" % i, max(0, cached)))
    return out


class Agent:
    """A registered client of the broker, answering on its own thread."""

    def __init__(self, priority=0, registry=None, name=None, path=None, interval=1.0,
                 device=None):
        self.priority = int(priority)
        self.name = name or os.path.basename(sys.argv[0] or "python") or "python"
        self.interval = interval
        self._caches = []  # (name, device, size_fn, release_fn)
        self._registries = []  # (registry, device)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.released_total = 0
        self.requests = 0
        self.last_error = None  # the last release callback that raised, in words
        if registry is not None:
            self.add_registry(registry, device)
        self._sock = _open(path)
        self._io = _Lines(self._sock)
        self._io.send({"op": "hello", "pid": os.getpid(), "name": self.name,
                       "priority": self.priority})
        welcome = self._io.read(timeout=10)
        if not welcome or welcome.get("op") != "welcome":
            self._sock.close()
            raise BrokerError("the broker did not welcome this process: %r" % (welcome,))
        self._send_offer()
        self._thread = threading.Thread(target=self._run, name="headroom-agent", daemon=True)
        self._thread.start()

    def add_cache(self, name, size_fn, release_fn, device="host"):
        """A cache the process can drop at no cost. size_fn() returns the
        bytes it holds now; release_fn(nbytes) drops what it can, at least
        nbytes if it can (release_fn() when it takes no argument); its
        return value is not used: what came back is size_fn() before less
        after. A release_fn that raises is logged and reported to the
        broker; the other caches and registries are still asked."""
        if not callable(size_fn) or not callable(release_fn):
            raise TypeError("add_cache needs size_fn() and release_fn(nbytes) callables")
        with self._lock:
            self._caches.append((name, _device_name(device), size_fn, release_fn))

    def add_registry(self, registry, device=None):
        """A registry of models (releasable_bytes(), release(nbytes))."""
        if not (callable(getattr(registry, "releasable_bytes", None))
                and callable(getattr(registry, "release", None))):
            raise TypeError("%s has no releasable_bytes() and release(nbytes): the agent "
                            "cannot offer it" % type(registry).__name__)
        with self._lock:
            self._registries.append((registry, _device_name(device or "host")))

    def _items(self):
        """The offer: every cache and registry item with bytes to give back
        (a size callback that raises is logged and left out)."""
        items = []
        with self._lock:
            caches, regs = list(self._caches), list(self._registries)
        for name, dev, size_fn, _ in caches:
            try:
                items.append({"name": name, "device": dev, "kind": "cache",
                              "bytes": int(size_fn())})
            except Exception:
                _log.error("size_fn of cache %s raised", name, exc_info=True)
        for name, dev, size in _torch_caches():
            items.append({"name": name, "device": dev, "kind": "cache", "bytes": int(size)})
        for i, (reg, dev) in enumerate(regs):
            try:
                if callable(getattr(reg, "offer_items", None)):
                    items.extend(reg.offer_items())
                    continue
                b = int(reg.releasable_bytes())
                items.append({"name": "%s%d" % (type(reg).__name__, i), "device": dev,
                              "kind": "model", "bytes": b, "reload_bytes": b,
                              "idle_s": float(getattr(reg, "idle_seconds", 0) or 0)})
            except Exception:
                _log.error("the offer of %s raised", type(reg).__name__, exc_info=True)
        return [x for x in items if x["bytes"] > 0][:64]  # the protocol's limit

    def _busy(self):
        """True while a registry says it is at work."""
        with self._lock:
            regs = [r for r, _ in self._registries]
        for reg in regs:
            try:
                if callable(getattr(reg, "busy", None)) and reg.busy():
                    return True
            except Exception:  # a registry that cannot tell is not busy
                _log.debug("busy() of %s raised", type(reg).__name__, exc_info=True)
        return False

    def _offer(self):
        msg = {"op": "offer", "items": self._items()}
        if self._busy():
            msg["busy"] = True
        return msg

    def _send_offer(self):
        self._io.send(self._offer())

    def _release(self, device, nbytes):
        """(bytes that came back, the errors of the callbacks that raised)."""
        freed, errors = 0, []

        def failed(what, e):
            _log.error("release on %s: %s raised", device, what, exc_info=True)
            errors.append("%s: %s: %s" % (what, type(e).__name__, e))

        with self._lock:
            caches, regs = list(self._caches), list(self._registries)
        for name, dev, size_fn, release_fn in caches:
            if dev != device or freed >= nbytes:
                continue
            try:
                before = int(size_fn())
                if _takes_argument(release_fn):
                    release_fn(nbytes - freed)
                else:
                    release_fn()
                freed += max(0, before - int(size_fn()))
            except Exception as e:
                failed("cache %s" % name, e)
        try:
            if freed < nbytes and any(dev == device and size for _, dev, size in _torch_caches()):
                # The process's caches, as every cleanup mode releases them;
                # what came back on this device, by PyTorch's (or the pools')
                # counters.
                back = _free.release_caches([])
                freed += back.get(int(device[3:]), 0)
        except Exception as e:
            failed("the process's caches", e)
        for reg, dev in regs:
            try:
                if callable(getattr(reg, "release_device", None)):
                    if freed < nbytes:
                        freed += int(reg.release_device(device, nbytes - freed) or 0)
                elif dev == device and freed < nbytes:
                    freed += int(reg.release(nbytes - freed) or 0)
            except Exception as e:
                failed("%s.release" % type(reg).__name__, e)
        return freed, errors

    def release(self, device, nbytes):
        """Gives back at least nbytes on device if it can: caches first, then
        registries. Returns the bytes that came back, measured (a callback
        that raised is logged and left out)."""
        return self._release(device, nbytes)[0]

    def _withdraw(self):
        """A release asked earlier is no longer wanted: registries take back
        what they set up for it and have not done yet."""
        with self._lock:
            regs = [r for r, _ in self._registries]
        for reg in regs:
            if callable(getattr(reg, "withdraw", None)):
                try:
                    reg.withdraw()
                except Exception:
                    _log.error("withdraw() of %s raised", type(reg).__name__, exc_info=True)

    def _answer(self, msg):
        self.requests += 1
        got, errors = self._release(msg.get("device", "host"), int(msg.get("bytes", 0)))
        self.released_total += got
        answer = {"op": "released", "id": msg["id"], "bytes": int(got)}
        if errors:
            self.last_error = "; ".join(errors)
            answer["error"] = self.last_error[:255]
        self._io.send(answer)

    def _run(self):
        last_offer = None
        while not self._stop.is_set():
            try:
                msg = self._io.read(timeout=self.interval)
                if msg and msg.get("op") == "release":
                    self._answer(msg)
                    last_offer = None
                elif msg and msg.get("op") == "cancel":
                    self._withdraw()
                offer = self._offer()
                if offer != last_offer:
                    self._io.send(offer)
                    last_offer = offer
            except (BrokerError, OSError, ValueError):
                break  # the broker went away or spoke nonsense: unregistered

    def close(self):
        """Unregisters: the broker sees the connection close."""
        self._stop.set()
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(timeout=5)
        self._sock.close()


def connect(priority=0, registry=None, name=None, path=None, interval=1.0, device=None):
    """Registers this process with the broker and answers its release requests
    on a daemon thread; returns the Agent (close() unregisters). `registry`
    (optional) is offered on `device` (host, or a GPU index)."""
    return Agent(priority=priority, registry=registry, name=name, path=path, interval=interval,
                 device=device)


@contextlib.contextmanager
def reserve(nbytes, device=0, timeout=60, priority=0, lease=0, path=None):
    """Holds a lease of nbytes (whole bytes: an int; a float is a
    TypeError) on device (a GPU index, or "host") for the block; waits up to
    timeout seconds while others release. Yields the broker's "granted"
    answer; raises Refused or BrokerError."""
    _whole_bytes("nbytes", nbytes, minimum=1)
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise TypeError("priority must be an int; got %r" % (priority,))
    s = _open(path)
    io = _Lines(s)
    try:
        io.send({"op": "reserve", "id": 1, "bytes": nbytes, "device": _device_name(device),
                 "timeout": float(timeout), "lease": float(lease), "priority": priority})
        reply = io.read(timeout=float(timeout) + 10)
        if reply is None:
            raise BrokerError("no answer from the broker within %gs" % (float(timeout) + 10))
        if reply.get("op") == "refused":
            raise Refused(reply)
        yield reply
        with contextlib.suppress(OSError, BrokerError):
            io.send({"op": "unreserve", "lease": reply["lease"]})
            io.read(timeout=5)
    finally:
        s.close()


def status(path=None):
    """The broker's status object (resources, clients, adapters, leases)."""
    s = _open(path)
    try:
        io = _Lines(s)
        io.send({"op": "status"})
        return io.read(timeout=10)
    finally:
        s.close()
