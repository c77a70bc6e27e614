"""A stand-in for nvidia-smi that tells the same story as tests/fake_nvml
(libfake-nvml-*.so) from the same environment, for the tests of
bench/gpu/probe.py. It answers only the queries that step makes:

  --query-gpu=FIELDS --format=csv,noheader[,nounits]
      FIELDS from index, name, uuid, memory.total, memory.used,
      memory.reserved (MiB)
  --query-compute-apps=pid,gpu_uuid,used_memory --format=csv,noheader,nounits

Like the fake NVML: FAKE_NVML_GPUS devices (default 1) named "Fake GPU i"
with UUID GPU-fake-000i, 24 GiB each, 300 MiB reserved, 512 MiB used plus
the processes of FAKE_NVML_PROCS ("gpu:pid:MiB,..."). FAKE_SMI_BREAK makes it
disagree on purpose: "uuid", "name", "total", "used" (GPU 0's used + 64 MiB),
"proc" (GPU 0's first process not listed), "proc_used" (its memory + 8 MiB),
"reserved"."""

import os
import sys

GPUS = int(os.environ.get("FAKE_NVML_GPUS") or 1)
BREAK = os.environ.get("FAKE_SMI_BREAK", "")


def procs():
    out = []
    for item in filter(None, os.environ.get("FAKE_NVML_PROCS", "").split(",")):
        g, pid, mib = (int(x) for x in item.split(":"))
        out.append((g, pid, mib))
    return out


def uuid(i):
    return "GPU-fake-%04d" % i + ("x" if BREAK == "uuid" and i == 0 else "")


def gpu_value(i, field):
    used = 512 + sum(m for g, _, m in procs() if g == i) + (64 if BREAK == "used" and i == 0
                                                            else 0)
    return {"index": str(i),
            "name": "Fake GPU %d" % i + (" Ti" if BREAK == "name" and i == 0 else ""),
            "uuid": uuid(i),
            "memory.total": str(24 * 1024 + (1 if BREAK == "total" and i == 0 else 0)),
            "memory.used": str(used),
            "memory.reserved": str(300 + (2 if BREAK == "reserved" else 0))}[field]


def main(argv):
    q = [a for a in argv if a.startswith("--query-")]
    if len(q) != 1 or not any(a.startswith("--format=csv") for a in argv):
        sys.stderr.write("fake nvidia-smi: only --query-gpu / --query-compute-apps with "
                         "--format=csv are known\n")
        return 2
    what, fields = q[0].split("=", 1)
    fields = fields.split(",")
    if what == "--query-gpu":
        known = ("index", "name", "uuid", "memory.total", "memory.used", "memory.reserved")
        for f in fields:
            if f not in known:
                print('Field "%s" is not a valid field to query.' % f)
                return 2
        for i in range(GPUS):
            print(", ".join(gpu_value(i, f) for f in fields))
        return 0
    if what == "--query-compute-apps" and fields == ["pid", "gpu_uuid", "used_memory"]:
        listed = procs()
        first0 = next((p for p in listed if p[0] == 0), None)
        for p in listed:
            g, pid, mib = p
            if p is first0 and BREAK == "proc":
                continue
            if p is first0 and BREAK == "proc_used":
                mib += 8
            print("%d, %s, %d" % (pid, uuid(g), mib))
        return 0
    sys.stderr.write("fake nvidia-smi: unknown query %s\n" % q[0])
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
