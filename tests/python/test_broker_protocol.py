"""The broker's protocol against its schema (docs/broker-protocol.schema.json,
which `headroom broker --schema` writes from the table the broker encodes
and decodes with): every message a real broker, the Python agent and the
`headroom reserve` CLI send in a session that uses every op is checked
against it, by a small validator of the JSON Schema keywords the schema
uses (itself checked to refuse what it must)."""

import json
import os
import socket
import subprocess
import sys
import threading

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from broker_fixtures import MiB, REPO, Broker, cli_path, wait_for  # noqa: E402

from headroom import agent  # noqa: E402

SCHEMA_PATH = os.path.join(REPO, "docs", "broker-protocol.schema.json")

pytestmark = pytest.mark.skipif(not os.path.exists(cli_path()),
                                reason="headroom CLI not built (set HEADROOM_CLI)")


# ---- a validator of the keywords the schema uses -----------------------------------------

TYPES = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}


def _is(v, t):
    if t == "integer":
        return isinstance(v, int) and not isinstance(v, bool)
    if t == "number":
        return isinstance(v, (int, float)) and not isinstance(v, bool)
    return isinstance(v, TYPES[t])


def errors(schema, v, root, where="$"):
    """What is wrong with v under schema, as a list of strings."""
    if "$ref" in schema:
        name = schema["$ref"].split("/")[-1]
        return errors(root["$defs"][name], v, root, where)
    out = []
    if "oneOf" in schema:
        ok = [s for s in schema["oneOf"] if not errors(s, v, root, where)]
        if len(ok) != 1:
            out.append("%s: matches %d of oneOf" % (where, len(ok)))
    if "anyOf" in schema and not any(not errors(s, v, root, where) for s in schema["anyOf"]):
        out.append("%s: matches none of anyOf" % where)
    if "const" in schema and v != schema["const"]:
        out.append("%s: %r is not %r" % (where, v, schema["const"]))
    if "enum" in schema and v not in schema["enum"]:
        out.append("%s: %r is not one of %r" % (where, v, schema["enum"]))
    t = schema.get("type")
    if t is not None and not any(_is(v, x) for x in (t if isinstance(t, list) else [t])):
        return out + ["%s: %r is not %s" % (where, v, t)]
    if _is(v, "number"):
        if "minimum" in schema and v < schema["minimum"]:
            out.append("%s: %r < %r" % (where, v, schema["minimum"]))
        if "maximum" in schema and v > schema["maximum"]:
            out.append("%s: %r > %r" % (where, v, schema["maximum"]))
    if isinstance(v, str) and "maxLength" in schema and len(v) > schema["maxLength"]:
        out.append("%s: longer than %d" % (where, schema["maxLength"]))
    if isinstance(v, list):
        if "maxItems" in schema and len(v) > schema["maxItems"]:
            out.append("%s: more than %d items" % (where, schema["maxItems"]))
        for i, x in enumerate(v):
            out += errors(schema.get("items", {}), x, root, "%s[%d]" % (where, i))
    if isinstance(v, dict):
        for k in schema.get("required", []):
            if k not in v:
                out.append("%s: %s is missing" % (where, k))
        props = schema.get("properties", {})
        for k, x in v.items():
            if k in props:
                out += errors(props[k], x, root, "%s.%s" % (where, k))
            elif isinstance(schema.get("additionalProperties"), dict):
                out += errors(schema["additionalProperties"], x, root, "%s.%s" % (where, k))
    return out


@pytest.fixture(scope="module")
def schema():
    with open(SCHEMA_PATH) as f:
        return json.load(f)


def check(schema, side, msg):
    errs = errors({"$ref": "#/$defs/%s_message" % side}, msg, schema)
    assert not errs, (side, msg, errs)


def test_the_schema_is_what_the_broker_writes(schema):
    r = subprocess.run([cli_path(), "broker", "--schema"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    with open(SCHEMA_PATH) as f:
        assert r.stdout == f.read(), "run `make packaging`"
    assert json.loads(r.stdout) == schema


def test_the_validator_refuses_what_it_must(schema):
    good = {"v": 1, "op": "reserve", "bytes": 4096}
    assert not errors({"$ref": "#/$defs/client_message"}, good, schema)
    for bad in ({"v": 1, "op": "reserve", "bytes": 1.5},          # whole bytes only
                {"v": 1, "op": "reserve", "bytes": True},
                {"v": 1, "op": "reserve"},                         # bytes is required
                {"v": 2, "op": "reserve", "bytes": 1},
                {"v": 1, "op": "offer", "items": [{"kind": "ram", "bytes": 1}]},
                {"v": 1, "op": "offer", "items": [{"kind": "cache", "bytes": 1}] * 65},
                {"v": 1, "op": "fly"}):
        assert errors({"$ref": "#/$defs/client_message"}, bad, schema), bad
    assert errors({"$ref": "#/$defs/broker_message"},
                  {"v": 1, "op": "granted", "id": 1, "lease": 2, "device": "host"}, schema)


# ---- a session that uses every op ------------------------------------------------------


class Recording:
    """Every line the Python agent writes and reads, as its JSON module sees
    them."""

    def __init__(self, monkeypatch):
        self.sent, self.read = [], []
        rec = self

        class Shim:
            @staticmethod
            def dumps(obj, **kw):
                rec.sent.append(obj)
                return json.dumps(obj, **kw)

            @staticmethod
            def loads(text):
                m = json.loads(text)
                rec.read.append(m)
                return m

        monkeypatch.setattr(agent, "json", Shim)


class Busy:
    """A registry that is at work, gives back nothing, and takes back what
    it set up when told."""

    def __init__(self):
        self.withdrawn = 0

    def releasable_bytes(self):
        return 64 * MiB

    def release(self, n):
        return 0

    def busy(self):
        return True

    def withdraw(self):
        self.withdrawn += 1


def test_every_message_of_a_session_fits_the_schema(schema, monkeypatch):
    rec = Recording(monkeypatch)
    with open("/proc/self/statm") as f:
        mine = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    b = Broker(budget="host=%dM" % (mine // MiB + 512))
    a = None
    try:
        cache = [bytearray(96 * MiB)]
        for i in range(0, len(cache[0]), 4096):
            cache[0][i] = 1

        def boom(n):
            raise RuntimeError("the cache is locked")

        busy = Busy()
        a = agent.connect(priority=0, name="session", path=b.path, interval=0.05)
        a.add_cache("cache", lambda: sum(len(c) for c in cache), lambda n: cache.clear())
        a.add_cache("locked", lambda: 8 * MiB, boom)
        a.add_registry(busy)
        assert wait_for(lambda: any(c["busy"] and c["releasable_bytes"]["host"] >= 96 * MiB
                                    for c in b.status()["clients"]))
        # Needs the cache: asked (release), answered (released), granted;
        # then unreserved at the block's end.
        free0 = b.status()["resources"][0]["free_bytes"]
        with agent.reserve(free0 + 32 * MiB, device="host", timeout=20, path=b.path) as g:
            assert g["op"] == "granted"
        assert a.last_error is None
        # Needs what only the locked cache and the busy registry offer: the
        # one raises, the other gives nothing; the answer is 0 with the
        # error, the reservation is refused, and the registry is told to
        # take back what it set up (cancel).
        assert wait_for(lambda: b.status()["clients"][0]["releasable_bytes"]["host"] == 72 * MiB)
        free1 = b.status()["resources"][0]["free_bytes"]
        with pytest.raises(agent.Refused) as e:
            with agent.reserve(free1 + 50 * MiB, device="host", timeout=5, path=b.path):
                pass
        assert e.value.reply["holders_total"] == 1
        assert wait_for(lambda: busy.withdrawn >= 1)
        assert "the cache is locked" in a.last_error
        st = agent.status(b.path)
        assert st["pending"] == 0
        assert "the cache is locked" in st["clients"][0]["last_error"]
        # A non-fatal error: a lease that is not there.
        s = agent._open(b.path)
        io = agent._Lines(s)
        io.send({"op": "unreserve", "lease": 987654})
        with pytest.raises(agent.BrokerError):
            io.read(timeout=5)
        s.close()
    finally:
        if a:
            a.close()
        b.stop()
    ops_sent = {m["op"] for m in rec.sent}
    ops_read = {m["op"] for m in rec.read}
    assert {"hello", "offer", "reserve", "released", "unreserve", "status"} <= ops_sent, ops_sent
    assert {"welcome", "release", "granted", "refused", "cancel", "unreserved", "error",
            "status"} <= ops_read, ops_read
    for m in rec.sent:
        check(schema, "client", m)
    for m in rec.read:
        check(schema, "broker", m)
    assert any(m["op"] == "offer" and m.get("busy") for m in rec.sent)
    assert any(m["op"] == "released" and "the cache is locked" in m.get("error", "")
               for m in rec.sent)


def test_the_cli_messages_fit_the_schema(schema, tmp_path):
    """`headroom reserve` against a recording stand-in of the broker: its
    reserve and running lines, and `headroom broker`'s status line."""
    path = str(tmp_path / "b.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(4)
    lines = []

    def serve():
        for _ in range(2):
            c, _ = srv.accept()
            f = c.makefile("rwb")
            for raw in f:
                m = json.loads(raw)
                lines.append(m)
                if m["op"] == "reserve":
                    f.write(b'{"v":1,"op":"granted","id":1,"lease":5,"device":"host",'
                            b'"bytes":4096,"released_bytes":0,"waited_s":0.0}\n')
                    f.flush()
                elif m["op"] == "status":
                    f.write(b'{"v":1,"op":"error","error":"stand-in"}\n')
                    f.flush()
            c.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    env = dict(os.environ, HEADROOM_BROKER_SOCKET=path, XDG_CONFIG_HOME=str(tmp_path))
    r = subprocess.run([cli_path(), "reserve", "4K", "--device", "host", "--", "sh", "-c",
                        "exit 0"], env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    subprocess.run([cli_path(), "broker"], env=env, capture_output=True, text=True, timeout=30)
    t.join(timeout=10)
    srv.close()
    assert [m["op"] for m in lines] == ["reserve", "running", "status"], lines
    assert lines[0]["bytes"] == 4096
    assert lines[1]["command"] == "sh -c exit 0" and lines[1]["lease"] == 5
    for m in lines:
        check(schema, "client", m)
