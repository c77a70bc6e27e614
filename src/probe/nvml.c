/* GPUs through NVML, loaded with dlopen so that the build and the library
 * need no NVIDIA driver. The declarations below are written from NVML's
 * public documentation (the API reference of nvml.h), not copied from it.
 *
 * Each library (by the path asked for, or the default search) is opened and
 * initialised once and kept for the life of the process: nvmlInit costs tens
 * of milliseconds on a real driver, too much to pay on every sample. A load
 * that fails is not cached, so a driver installed later is found, but it is
 * remembered (nvml_memo.c): tried again at most once a minute.
 *
 * Newer entry points are tried first and older ones are the fallback:
 * nvmlDeviceGetMemoryInfo_v2 (which also gives reserved memory) then
 * nvmlDeviceGetMemoryInfo; nvmlDeviceGetComputeRunningProcesses_v3, _v2,
 * then the plain name. Some drivers fill _v3 with 32-byte records (an extra
 * 64-bit field) where the documented record is 24 bytes; the buffer is sized
 * for 32, filled with a sentinel byte, and the stride is read from how far
 * the driver wrote, checked against which layout gives sane records. */
#include "probe/probe_int.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* ---- declarations from the NVML API reference --------------------------- */

typedef int nvml_ret_t; /* nvmlReturn_t */
enum {
  NVML_SUCCESS = 0,
  NVML_ERROR_UNINITIALIZED = 1,
  NVML_ERROR_NOT_SUPPORTED = 3,
  NVML_ERROR_NO_PERMISSION = 4,
  NVML_ERROR_NOT_FOUND = 6,
  NVML_ERROR_INSUFFICIENT_SIZE = 7,
  NVML_ERROR_DRIVER_NOT_LOADED = 9,
  NVML_ERROR_LIBRARY_NOT_FOUND = 12,
  NVML_ERROR_FUNCTION_NOT_FOUND = 13,
  NVML_ERROR_GPU_IS_LOST = 15,
  NVML_ERROR_ARGUMENT_VERSION_MISMATCH = 25,
};
typedef struct nvml_device *nvml_device_t; /* nvmlDevice_t: an opaque handle */

typedef struct nvml_memory { /* nvmlMemory_t */
  unsigned long long total, free, used;
} nvml_memory_t;

typedef struct nvml_memory_v2 { /* nvmlMemory_v2_t */
  unsigned int version;
  unsigned long long total, reserved, free, used;
} nvml_memory_v2_t;
/* nvmlMemory_v2: the struct's size with the version 2 in the top byte. */
#define NVML_MEMORY_V2_VERSION 0x02000028u

typedef struct nvml_utilization { /* nvmlUtilization_t */
  unsigned int gpu, memory;
} nvml_utilization_t;

typedef struct nvml_pci_info { /* nvmlPciInfo_t, as nvmlDeviceGetPciInfo_v3 fills it */
  char bus_id_legacy[16];
  unsigned int domain, bus, device, pci_device_id, pci_subsystem_id;
  char bus_id[32];
} nvml_pci_info_t;

/* Process records (nvmlProcessInfo_v1_t: pid, usedGpuMemory = 16 bytes;
 * _v2_t and the v3 call's nvmlProcessInfo_t add gpuInstanceId and
 * computeInstanceId = 24 bytes). They are read by offset from a byte buffer
 * so that the stride can follow the driver. */
#define REC_PID                      0
#define REC_USED                     8
#define REC_GI                       16
#define REC_CI                       20
#define NVML_VALUE_NOT_AVAILABLE_ULL 0xFFFFFFFFFFFFFFFFull
#define NVML_TEMPERATURE_GPU         0
#define NVML_BUF_SIZE                96 /* name and UUID buffers: NVML_DEVICE_*_V2_BUFFER_SIZE */

typedef nvml_ret_t (*fn_void_t)(void);
typedef const char *(*fn_errstr_t)(nvml_ret_t);
typedef nvml_ret_t (*fn_str_t)(char *, unsigned int);
typedef nvml_ret_t (*fn_count_t)(unsigned int *);
typedef nvml_ret_t (*fn_handle_t)(unsigned int, nvml_device_t *);
typedef nvml_ret_t (*fn_dev_str_t)(nvml_device_t, char *, unsigned int);
typedef nvml_ret_t (*fn_dev_ptr_t)(nvml_device_t, void *);
typedef nvml_ret_t (*fn_temp_t)(nvml_device_t, int, unsigned int *);
typedef nvml_ret_t (*fn_procs_t)(nvml_device_t, unsigned int *, void *);

typedef struct nvml_lib {
  char key[256]; /* the path asked for; "" for the default search */
  void *dl;
  bool inited;
  fn_void_t init;
  fn_errstr_t error_string;
  fn_str_t driver_version;
  fn_count_t count;
  fn_handle_t handle;
  fn_dev_str_t name, uuid;
  fn_dev_ptr_t pci, mem_v2, mem_v1, util, power;
  fn_temp_t temp;
  fn_procs_t procs[3]; /* _v3, _v2, plain */
} nvml_lib_t;

static const size_t proc_stride[3] = {24, 24, 16};
static const char *const proc_fn_names[3] = {"nvmlDeviceGetComputeRunningProcesses_v3",
                                             "nvmlDeviceGetComputeRunningProcesses_v2",
                                             "nvmlDeviceGetComputeRunningProcesses"};

static pthread_mutex_t libs_mu = PTHREAD_MUTEX_INITIALIZER;
static nvml_lib_t libs[8];
static size_t n_libs;

static const char *errstr(const nvml_lib_t *l, nvml_ret_t r) {
  if (l && l->error_string) {
    const char *s = l->error_string(r);
    if (s) return s;
  }
  return "NVML error";
}

/* Resolves `name`, or `alt` when the first is missing. */
static void *sym2(void *dl, const char *name, const char *alt) {
  void *p = dlsym(dl, name);
  if (!p && alt) p = dlsym(dl, alt);
  return p;
}

/* dlsym gives an object pointer; ISO C has no cast from it to a function
 * pointer, POSIX guarantees the bytes are the same, so they are copied. */
#define LOAD(field, name, alt)                                                                     \
  do {                                                                                             \
    void *p_ = sym2(dl, name, alt);                                                                \
    memcpy(&(field), &p_, sizeof p_);                                                              \
  } while (0)

/* Opens, resolves and initialises a library. Needs libs_mu. On failure fills
 * s->gpu_state and s->gpu_message and returns NULL. */
/* Says in the snapshot why NVML cannot be read ("nvml: WHAT", then ": ARG"
 * when ARG is not NULL); returns NULL. */
static nvml_lib_t *no_lib(hr_snapshot_t *s, hr_probe_state_t state, const char *what,
                          const char *arg) {
  s->gpu_state = state;
  snprintf(s->gpu_message, sizeof s->gpu_message, "nvml: %s%s%s", what, arg ? ": " : "",
           arg ? arg : "");
  return NULL;
}

/* Opens `path`, or the system's NVML when NULL; NULL when not found. */
static void *open_lib(const char *path) {
  if (path) return dlopen(path, RTLD_NOW | RTLD_LOCAL);
  void *dl = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
  return dl ? dl : dlopen("libnvidia-ml.so", RTLD_NOW | RTLD_LOCAL);
}

/* Looks up the functions of the library in nl->dl: the name of a missing
 * one that every use needs, or NULL (the others may be missing). */
static const char *load_symbols(nvml_lib_t *nl) {
  void *dl = nl->dl;
  LOAD(nl->init, "nvmlInit_v2", "nvmlInit");
  LOAD(nl->count, "nvmlDeviceGetCount_v2", "nvmlDeviceGetCount");
  LOAD(nl->handle, "nvmlDeviceGetHandleByIndex_v2", "nvmlDeviceGetHandleByIndex");
  const char *missing = !nl->init     ? "nvmlInit_v2"
                        : !nl->count  ? "nvmlDeviceGetCount_v2"
                        : !nl->handle ? "nvmlDeviceGetHandleByIndex_v2"
                                      : NULL;
  if (missing) return missing;
  LOAD(nl->error_string, "nvmlErrorString", NULL);
  LOAD(nl->driver_version, "nvmlSystemGetDriverVersion", NULL);
  LOAD(nl->name, "nvmlDeviceGetName", NULL);
  LOAD(nl->uuid, "nvmlDeviceGetUUID", NULL);
  LOAD(nl->pci, "nvmlDeviceGetPciInfo_v3", NULL);
  LOAD(nl->mem_v2, "nvmlDeviceGetMemoryInfo_v2", NULL);
  LOAD(nl->mem_v1, "nvmlDeviceGetMemoryInfo", NULL);
  LOAD(nl->util, "nvmlDeviceGetUtilizationRates", NULL);
  LOAD(nl->power, "nvmlDeviceGetPowerUsage", NULL);
  LOAD(nl->temp, "nvmlDeviceGetTemperature", NULL);
  for (int i = 0; i < 3; i++) LOAD(nl->procs[i], proc_fn_names[i], NULL);
  return NULL;
}

/* Loads the library named by key (path, or "" for the system's) into the
 * next cache entry; NULL, with the reason in s, when it cannot. */
static nvml_lib_t *lib_load_locked(const char *path, const char *key, hr_snapshot_t *s) {
  if (n_libs == HR_ARRAY_LEN(libs) || strlen(key) >= sizeof libs[0].key)
    return no_lib(s, HR_PROBE_ERROR, "too many libraries", NULL);
  /* A file named by a path is read only when it is a regular file: dlopen
   * of a FIFO waits for a writer for ever. (A missing one is "not found".) */
  char why[sizeof s->gpu_message - sizeof "nvml: library refused: "];
  if (hr__check_library(path, why, sizeof why) != 0)
    return no_lib(s, HR_PROBE_ERROR, "library refused", why);
  void *dl = open_lib(path);
  if (!dl) return no_lib(s, HR_PROBE_ABSENT, "library not found", path);
  nvml_lib_t nl = {.dl = dl};
  hr__strlcpy(nl.key, key, sizeof nl.key);
  const char *missing = load_symbols(&nl);
  if (missing) {
    /* Not cached: the handle is closed so a fixed library can be loaded. */
    dlclose(dl);
    s->gpu_state = HR_PROBE_ERROR;
    snprintf(s->gpu_message, sizeof s->gpu_message, "nvml: symbol %s missing", missing);
    return NULL;
  }
  libs[n_libs] = nl;
  return &libs[n_libs++];
}

static nvml_lib_t *lib_get_locked(const char *path, hr_snapshot_t *s) {
  const char *key = path ? path : "";
  nvml_lib_t *l = NULL;
  for (size_t i = 0; i < n_libs; i++)
    if (strcmp(libs[i].key, key) == 0) l = &libs[i];
  if (!l && !(l = lib_load_locked(path, key, s))) return NULL;
  if (!l->inited) {
    nvml_ret_t r = l->init();
    if (r != NVML_SUCCESS) {
      s->gpu_state = r == NVML_ERROR_NO_PERMISSION ? HR_PROBE_DENIED
                     : (r == NVML_ERROR_DRIVER_NOT_LOADED || r == NVML_ERROR_LIBRARY_NOT_FOUND)
                         ? HR_PROBE_ABSENT
                         : HR_PROBE_ERROR;
      snprintf(s->gpu_message, sizeof s->gpu_message, "nvml: init failed: %s", errstr(l, r));
      return NULL;
    }
    l->inited = true;
  }
  return l;
}

/* True when the record at p looks like one a driver wrote: a pid, a size
 * below 1 PiB or "not available", instance ids unset (all ones) or small. */
static bool record_sane(const unsigned char *p) {
  unsigned int pid, gi, ci;
  unsigned long long used;
  memcpy(&pid, p + REC_PID, sizeof pid);
  memcpy(&used, p + REC_USED, sizeof used);
  memcpy(&gi, p + REC_GI, sizeof gi);
  memcpy(&ci, p + REC_CI, sizeof ci);
  return pid != 0 && (used == NVML_VALUE_NOT_AVAILABLE_ULL || used < (1ull << 50)) &&
         (gi == 0xFFFFFFFFu || gi < 1024) && (ci == 0xFFFFFFFFu || ci < 1024);
}

#define SENTINEL 0xA5 /* the buffer's bytes before the call */

/* True when the n records at `stride` are all sane. */
static bool records_sane(const unsigned char *buf, unsigned n, size_t stride) {
  for (unsigned i = 0; i < n; i++)
    if (!record_sane(buf + i * stride)) return false;
  return true;
}

/* Picks the stride of n v3 records in buf (of `bytes`, filled with SENTINEL
 * before the call). First guess: how far the driver wrote. A 32-byte record
 * ends in a 64-bit field that is written (usually 0), so a driver that wrote
 * past 24 * n bytes uses 32. The guess is kept when its records are sane,
 * else the other stride is taken when its records are. */
static size_t v3_stride(const unsigned char *buf, size_t bytes, unsigned n) {
  size_t end = bytes;
  while (end > 0 && buf[end - 1] == SENTINEL) end--;
  size_t guess = end > (size_t)n * 24 ? 32 : 24, other = guess == 24 ? 32 : 24;
  if (records_sane(buf, n, guess) || !records_sane(buf, n, other)) return guess;
  return other;
}

/* Appends one GPU process to s. */
static int add_gpu_proc(hr_snapshot_t *s, size_t *cap, unsigned gpu, unsigned pid, uint64_t used) {
  if (hr__grow(&s->gpu_procs, cap, s->n_gpu_procs, sizeof *s->gpu_procs, 16)) return HR_ENOMEM;
  s->gpu_procs[s->n_gpu_procs++] =
      (hr_gpu_proc_t){.gpu = gpu, .pid = (int)pid, .local_pid = 0, .used_bytes = used};
  return 0;
}

/* Reads the compute processes of one device: the newest entry point that
 * answers, with the query-size-then-fetch loop (the list can grow between
 * the two calls, then the driver says INSUFFICIENT_SIZE again). */
/* Adds the `got` records of call v in buf to the snapshot's GPU processes. */
static int add_records(const unsigned char *buf, size_t bytes, unsigned got, int v, unsigned gpu,
                       hr_snapshot_t *s, size_t *cap) {
  size_t stride = v == 0 ? v3_stride(buf, bytes, got) : proc_stride[v];
  int rc = 0;
  for (unsigned i = 0; i < got && rc == 0; i++) {
    unsigned int pid;
    unsigned long long used;
    memcpy(&pid, buf + i * stride + REC_PID, sizeof pid);
    memcpy(&used, buf + i * stride + REC_USED, sizeof used);
    rc = add_gpu_proc(s, cap, gpu, pid, used == NVML_VALUE_NOT_AVAILABLE_ULL ? HR_UNKNOWN : used);
  }
  return rc;
}

/* Reads the processes with call v, which said `count` of them; the list may
 * grow between the calls, so the room grows and the call is tried again.
 * Gives up quietly (a debug message) when the driver keeps refusing. */
static int read_procs_with(const nvml_lib_t *l, int v, nvml_device_t dev, unsigned count,
                           unsigned gpu, hr_snapshot_t *s, size_t *cap) {
  nvml_ret_t r = NVML_ERROR_INSUFFICIENT_SIZE;
  for (int tries = 0; tries < 8 && r == NVML_ERROR_INSUFFICIENT_SIZE; tries++) {
    /* Room for 32-byte records whatever the call, for the wide-v3 drivers. */
    size_t bytes = (size_t)(count ? count : 1) * 32;
    unsigned char *buf = malloc(bytes);
    if (!buf) return HR_ENOMEM;
    memset(buf, SENTINEL, bytes);
    unsigned got = count;
    r = l->procs[v](dev, &got, buf);
    int rc = r == NVML_SUCCESS ? add_records(buf, bytes, HR_MIN(got, count), v, gpu, s, cap) : 0;
    free(buf);
    if (r == NVML_SUCCESS) return rc;
    count = got > count ? got : count + 1;
  }
  hr__log(HR_LOG_DEBUG, "nvml: %s: %s", proc_fn_names[v], errstr(l, r));
  return 0;
}

static int read_procs(const nvml_lib_t *l, nvml_device_t dev, unsigned gpu, hr_snapshot_t *s,
                      size_t *cap) {
  for (int v = 0; v < 3; v++) {
    if (!l->procs[v]) continue;
    unsigned count = 0;
    nvml_ret_t r = l->procs[v](dev, &count, NULL);
    if (r == NVML_SUCCESS) return 0; /* no processes */
    if (r == NVML_ERROR_FUNCTION_NOT_FOUND || r == NVML_ERROR_NOT_SUPPORTED) continue;
    if (r != NVML_ERROR_INSUFFICIENT_SIZE) {
      hr__log(HR_LOG_DEBUG, "nvml: %s: %s", proc_fn_names[v], errstr(l, r));
      return 0;
    }
    return read_procs_with(l, v, dev, count, gpu, s, cap);
  }
  return 0;
}

/* Sets a GPU's state from a failed call; a lost GPU stays in the list. */
static void gpu_fail(const nvml_lib_t *l, hr_gpu_t *g, const char *what, nvml_ret_t r) {
  g->state = r == NVML_ERROR_NO_PERMISSION ? HR_PROBE_DENIED : HR_PROBE_ERROR;
  snprintf(g->message, sizeof g->message, "%s: %s", what,
           r == NVML_ERROR_GPU_IS_LOST ? "GPU is lost" : errstr(l, r));
}

static int read_device(const nvml_lib_t *l, unsigned i, hr_snapshot_t *s, size_t *cap) {
  hr_gpu_t *g = &s->gpus[i];
  memset(g, 0, sizeof *g);
  g->index = i;
  g->total_bytes = g->reserved_bytes = g->free_bytes = g->used_bytes = HR_UNKNOWN;
  g->util_gpu = g->util_mem = g->temperature_c = g->power_mw = -1;
  nvml_device_t dev;
  nvml_ret_t r = l->handle(i, &dev);
  if (r != NVML_SUCCESS) return gpu_fail(l, g, "handle", r), 0;
  if (l->name && l->name(dev, g->name, sizeof g->name) != NVML_SUCCESS) g->name[0] = '\0';
  if (l->uuid && l->uuid(dev, g->uuid, sizeof g->uuid) != NVML_SUCCESS) g->uuid[0] = '\0';
  nvml_pci_info_t pci;
  if (l->pci && l->pci(dev, &pci) == NVML_SUCCESS) {
    pci.bus_id[sizeof pci.bus_id - 1] = '\0';
    hr__strlcpy(g->pci_bus_id, pci.bus_id, sizeof g->pci_bus_id);
  }
  r = NVML_ERROR_FUNCTION_NOT_FOUND;
  if (l->mem_v2) {
    nvml_memory_v2_t m = {.version = NVML_MEMORY_V2_VERSION};
    r = l->mem_v2(dev, &m);
    if (r == NVML_SUCCESS) {
      g->total_bytes = m.total, g->reserved_bytes = m.reserved;
      g->free_bytes = m.free, g->used_bytes = m.used;
    }
  }
  if (r != NVML_SUCCESS && r != NVML_ERROR_GPU_IS_LOST && l->mem_v1) {
    nvml_memory_t m;
    r = l->mem_v1(dev, &m);
    if (r == NVML_SUCCESS) g->total_bytes = m.total, g->free_bytes = m.free, g->used_bytes = m.used;
  }
  if (r != NVML_SUCCESS) return gpu_fail(l, g, "memory", r), 0;
  nvml_utilization_t u;
  if (l->util && l->util(dev, &u) == NVML_SUCCESS)
    g->util_gpu = (int)u.gpu, g->util_mem = (int)u.memory;
  unsigned int v;
  if (l->temp && l->temp(dev, NVML_TEMPERATURE_GPU, &v) == NVML_SUCCESS) g->temperature_c = (int)v;
  if (l->power && l->power(dev, &v) == NVML_SUCCESS && v <= INT32_MAX) g->power_mw = (int)v;
  return read_procs(l, dev, i, s, cap);
}

int hr__nvml_read(const char *path, hr_snapshot_t *s) {
  s->gpu_state = HR_PROBE_OK;
  s->gpu_message[0] = s->driver_version[0] = '\0';
  pthread_mutex_lock(&libs_mu);
  nvml_lib_t *l = NULL;
  if (!hr__nvml_memo_hit_locked(path, s)) {
    l = lib_get_locked(path, s);
    hr__nvml_memo_note_locked(path, s, l != NULL);
  }
  pthread_mutex_unlock(&libs_mu);
  if (!l) return 0;

  char ver[80];
  if (l->driver_version && l->driver_version(ver, sizeof ver) == NVML_SUCCESS)
    hr__strlcpy(s->driver_version, ver, sizeof s->driver_version);
  unsigned n = 0;
  nvml_ret_t r = l->count(&n);
  if (r != NVML_SUCCESS) {
    s->gpu_state = r == NVML_ERROR_NO_PERMISSION ? HR_PROBE_DENIED : HR_PROBE_ERROR;
    snprintf(s->gpu_message, sizeof s->gpu_message, "nvml: device count: %s", errstr(l, r));
    return 0;
  }
  if (n > 64) n = 64;
  if (n == 0) return 0;
  s->gpus = calloc(n, sizeof *s->gpus);
  if (!s->gpus) return HR_ENOMEM;
  s->n_gpus = n;
  size_t cap = 0;
  for (unsigned i = 0; i < n; i++) {
    int rc = read_device(l, i, s, &cap);
    if (rc) return rc;
  }
  return 0;
}
