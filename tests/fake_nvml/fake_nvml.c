/* A stand-in for libnvidia-ml that the probe tests load through dlopen, so
 * the NVML layer (symbol lookup, version fallbacks, the process-list retry
 * loop, the wide v3 records) runs for real on a machine without a GPU.
 *
 * One source, built several times (CMakeLists.txt, last section) with
 * FAKE_API choosing which entry points exist:
 *   3   every entry point; v3 process records of 24 bytes (the documented size)
 *   33  as 3, but v3 records of 32 bytes, as some drivers write them
 *   2   no nvmlDeviceGetComputeRunningProcesses_v3
 *   1   only the plain process call, no nvmlDeviceGetMemoryInfo_v2, no power
 *   0   no nvmlDeviceGetCount at all (a broken library)
 *
 * What it reports comes from the environment, read at each call:
 *   FAKE_NVML_GPUS   number of devices (default 1)
 *   FAKE_NVML_PROCS  "gpu:pid:MiB,..." compute processes
 *   FAKE_NVML_GROW   processes that appear on GPU 0 between calls (tests the
 *                    query-size-then-fetch loop); fake_nvml_reset() restarts
 *   FAKE_NVML_LOST   index of a device whose memory query says "GPU is lost"
 *   FAKE_NVML_INIT   the code nvmlInit_v2 returns (default 0)
 * and fake_nvml_init_calls() says how often nvmlInit_v2 was called. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef FAKE_API
#define FAKE_API 3
#endif

#define EXPORT __attribute__((visibility("default")))
#define GIB    (1024ull * 1024 * 1024)
#define MIB    (1024ull * 1024)

typedef int ret_t;
typedef struct fake_dev {
  unsigned index;
} fake_dev_t;

static fake_dev_t devs[16];
static int grow_calls;

static unsigned env_uint(const char *name, unsigned deflt) {
  const char *v = getenv(name);
  return v && *v ? (unsigned)strtoul(v, NULL, 10) : deflt;
}

static unsigned n_devs(void) {
  unsigned n = env_uint("FAKE_NVML_GPUS", 1);
  return n > 16 ? 16 : n;
}

EXPORT void fake_nvml_reset(void) {
  grow_calls = 0;
}

typedef struct fproc {
  unsigned pid;
  unsigned long long bytes;
} fproc_t;

/* The processes of device `gpu`, from FAKE_NVML_PROCS, plus the grown ones. */
static unsigned list_procs(unsigned gpu, fproc_t *out, unsigned cap, int count_call) {
  unsigned n = 0;
  const char *s = getenv("FAKE_NVML_PROCS");
  while (s && *s && n < cap) {
    unsigned g, pid, mib;
    if (sscanf(s, "%u:%u:%u", &g, &pid, &mib) == 3 && g == gpu)
      out[n].pid = pid, out[n++].bytes = mib == 99999 ? ~0ull : (unsigned long long)mib * MIB;
    s = strchr(s, ',');
    if (s) s++;
  }
  if (gpu == 0) {
    unsigned grow = env_uint("FAKE_NVML_GROW", 0);
    if (count_call && (unsigned)grow_calls < grow) grow_calls++;
    for (int i = 0; i < grow_calls && n < cap; i++) out[n].pid = 90000 + i, out[n++].bytes = MIB;
  }
  return n;
}

static unsigned long long used_of(unsigned gpu) {
  fproc_t p[64];
  unsigned n = list_procs(gpu, p, 64, 0);
  unsigned long long sum = GIB / 2;
  for (unsigned i = 0; i < n; i++)
    if (p[i].bytes != ~0ull) sum += p[i].bytes;
  return sum;
}

/* How often nvmlInit_v2 was called, so a test can tell a retried load from
 * a remembered failure. */
static int init_calls;
EXPORT int fake_nvml_init_calls(void) {
  return init_calls;
}

EXPORT ret_t nvmlInit_v2(void) {
  /* Handles are set up here, once, so that threads asking for them later
   * only read. */
  for (unsigned i = 0; i < 16; i++) devs[i].index = i;
  init_calls++;
  return (ret_t)env_uint("FAKE_NVML_INIT", 0);
}
EXPORT ret_t nvmlShutdown(void) {
  return 0;
}
EXPORT const char *nvmlErrorString(ret_t r) {
  return r == 15 ? "GPU is lost" : r == 9 ? "Driver Not Loaded" : "fake error";
}
EXPORT ret_t nvmlSystemGetDriverVersion(char *buf, unsigned len) {
  snprintf(buf, len, "999.%d.fake", FAKE_API);
  return 0;
}

#if FAKE_API >= 1
EXPORT ret_t nvmlDeviceGetCount_v2(unsigned *n) {
  *n = n_devs();
  return 0;
}
#endif

EXPORT ret_t nvmlDeviceGetHandleByIndex_v2(unsigned i, void **dev) {
  if (i >= n_devs()) return 2; /* NVML_ERROR_INVALID_ARGUMENT */
  *dev = &devs[i];
  return 0;
}

EXPORT ret_t nvmlDeviceGetName(fake_dev_t *d, char *buf, unsigned len) {
  snprintf(buf, len, "Fake GPU %u", d->index);
  return 0;
}
EXPORT ret_t nvmlDeviceGetUUID(fake_dev_t *d, char *buf, unsigned len) {
  snprintf(buf, len, "GPU-fake-%04u", d->index);
  return 0;
}

typedef struct pci {
  char legacy[16];
  unsigned domain, bus, device, pci_device_id, pci_subsystem_id;
  char bus_id[32];
} pci_t;
EXPORT ret_t nvmlDeviceGetPciInfo_v3(fake_dev_t *d, pci_t *p) {
  memset(p, 0, sizeof *p);
  p->bus = 0x10 + d->index;
  snprintf(p->bus_id, sizeof p->bus_id, "00000000:%02X:00.0", p->bus);
  return 0;
}

typedef struct mem1 {
  unsigned long long total, free, used;
} mem1_t;
typedef struct mem2 {
  unsigned version;
  unsigned long long total, reserved, free, used;
} mem2_t;

static int lost(const fake_dev_t *d) {
  const char *v = getenv("FAKE_NVML_LOST");
  return v && *v && (unsigned)atoi(v) == d->index;
}

#if FAKE_API >= 2
EXPORT ret_t nvmlDeviceGetMemoryInfo_v2(fake_dev_t *d, mem2_t *m) {
  if (m->version != 0x02000028u) return 25; /* NVML_ERROR_ARGUMENT_VERSION_MISMATCH */
  if (lost(d)) return 15;
  m->total = 24 * GIB;
  m->reserved = 300 * MIB;
  m->used = used_of(d->index);
  m->free = m->total - m->reserved - m->used;
  return 0;
}
#endif
EXPORT ret_t nvmlDeviceGetMemoryInfo(fake_dev_t *d, mem1_t *m) {
  if (lost(d)) return 15;
  m->total = 24 * GIB;
  m->used = used_of(d->index) + 300 * MIB; /* v1 counts the reserved memory as used */
  m->free = m->total - m->used;
  return 0;
}

typedef struct util {
  unsigned gpu, memory;
} util_t;
EXPORT ret_t nvmlDeviceGetUtilizationRates(fake_dev_t *d, util_t *u) {
  u->gpu = 40 + d->index, u->memory = 20 + d->index;
  return 0;
}
EXPORT ret_t nvmlDeviceGetTemperature(fake_dev_t *d, int sensor, unsigned *t) {
  if (sensor != 0) return 2;
  *t = 50 + d->index;
  return 0;
}
#if FAKE_API >= 2
EXPORT ret_t nvmlDeviceGetPowerUsage(fake_dev_t *d, unsigned *mw) {
  *mw = 100000 + d->index * 1000;
  return 0;
}
#endif

/* Writes the list in records of `stride` bytes, as the real calls do: the
 * size query (count too small, or no buffer) answers INSUFFICIENT_SIZE. */
static ret_t procs_impl(fake_dev_t *d, unsigned *count, void *infos, size_t stride) {
  fproc_t p[64];
  if (!count) return 2;
  unsigned n = list_procs(d->index, p, 64, 1);
  if (n == 0) return *count = 0, 0;
  if (!infos || *count < n) return *count = n, 7; /* NVML_ERROR_INSUFFICIENT_SIZE */
  unsigned char *b = infos;
  memset(b, 0, n * stride);
  for (unsigned i = 0; i < n; i++) {
    unsigned char *r = b + i * stride;
    unsigned none = 0xFFFFFFFFu;
    memcpy(r, &p[i].pid, 4);
    memcpy(r + 8, &p[i].bytes, 8);
    if (stride >= 24) memcpy(r + 16, &none, 4), memcpy(r + 20, &none, 4);
  }
  *count = n;
  return 0;
}

#if FAKE_API >= 3
EXPORT ret_t nvmlDeviceGetComputeRunningProcesses_v3(fake_dev_t *d, unsigned *c, void *infos) {
  return procs_impl(d, c, infos, FAKE_API == 33 ? 32 : 24);
}
#endif
#if FAKE_API >= 2
EXPORT ret_t nvmlDeviceGetComputeRunningProcesses_v2(fake_dev_t *d, unsigned *c, void *infos) {
  return procs_impl(d, c, infos, 24);
}
#endif
EXPORT ret_t nvmlDeviceGetComputeRunningProcesses(fake_dev_t *d, unsigned *c, void *infos) {
  return procs_impl(d, c, infos, 16);
}
