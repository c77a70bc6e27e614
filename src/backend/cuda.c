/* cuda backend: the CUDA driver API loaded at run time with dlopen of
 * libcuda.so.1, so the library builds and runs without a GPU. It works in
 * the device's primary context (the one the CUDA runtime and PyTorch use),
 * allocates segments with cuMemAlloc_v2, maps granules with the virtual
 * memory calls for expandable segments, and orders streams with events.
 * Without a driver, create returns HR_ENODRIVER and logs "CUDA driver not
 * found".
 *
 * Each hook makes the primary context current for its driver calls and
 * gives the calling thread back the context it had: a thread that works in
 * a context of its own must not find ours current after an allocation.
 * A capacity given at creation is a hard limit on the bytes this backend
 * holds (segments plus mapped granules), counted atomically as several
 * pools may share one backend; mem_info then reports that capacity as the
 * total. A failed driver call is logged with its name and CUresult, at
 * debug level for out-of-memory (a normal answer the pool handles) and at
 * error level otherwise. */
#include "backend/backend.h"
#include "backend/cuda_api.h"

#include <dlfcn.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

typedef struct cuda {
  void *lib;
  hr_cu_device dev;
  hr_cu_context ctx;
  hr_cu_mem_prop prop;
  bool capped;           /* a capacity was given: enforce it */
  _Atomic uint64_t used; /* bytes of segments and mapped granules */
#define HR_CUDA_FIELD_(sym, type, params) type sym;
  HR_CUDA_FUNCS(HR_CUDA_FIELD_)
#undef HR_CUDA_FIELD_
} cuda_t;

static int cu_err(hr_cu_result r) {
  if (r == HR_CUDA_SUCCESS) return 0;
  if (r == HR_CUDA_ERROR_OUT_OF_MEMORY) return HR_ENOMEM;
  if (r == HR_CUDA_ERROR_NOT_READY) return HR_EBUSY;
  return HR_EDEVICE;
}

/* Maps a driver result to an HR_E* code and logs a failure with the call's
 * name, so a report from a real device says which call refused. */
static int cu_check(hr_cu_result r, const char *call) {
  int rc = cu_err(r);
  if (rc && rc != HR_EBUSY)
    hr__log(rc == HR_ENOMEM ? HR_LOG_DEBUG : HR_LOG_ERROR, "cuda: %s failed: CUresult %u", call, r);
  return rc;
}
#define CU_(call) cu_check(c->call, #call)

/* Makes the primary context current; *prev gets what cu_leave restores.
 * The usual caller (PyTorch's thread) has it current already: one read. */
static int cu_enter(cuda_t *c, hr_cu_context *prev) {
  *prev = c->ctx;
  if (c->cuCtxGetCurrent(prev)) *prev = NULL;
  if (*prev == c->ctx) return 0;
  return cu_check(c->cuCtxSetCurrent(c->ctx), "cuCtxSetCurrent");
}

static void cu_leave(cuda_t *c, hr_cu_context prev) {
  if (prev != c->ctx) c->cuCtxSetCurrent(prev);
}

/* Counts `size` more bytes against the capacity; HR_ENOMEM past it. */
static int cu_take(hr_backend_t *b, uint64_t size) {
  cuda_t *c = b->priv;
  return hr__backend_take(b, &c->used, c->capped, size);
}

static void cu_give(hr_backend_t *b, uint64_t size) {
  hr__backend_give(&((cuda_t *)b->priv)->used, size);
}

static int cuda_seg_alloc(hr_backend_t *b, uint64_t size, void *stream, uint64_t *addr) {
  cuda_t *c = b->priv;
  hr_cu_deviceptr p = 0;
  hr_cu_context prev;
  int rc = cu_take(b, size);
  if (rc) return rc;
  rc = cu_enter(c, &prev);
  if (!rc) {
    rc = CU_(cuMemAlloc_v2(&p, size));
    cu_leave(c, prev);
  }
  if (rc) {
    cu_give(b, size);
    return rc;
  }
  *addr = p;
  return 0;
}

/* cuMemFree waits for the device's queued work before it frees (it
 * synchronizes implicitly), which is what lets the pool free a cached
 * segment whose last kernels may still be running on its own stream. */
static int cuda_seg_free(hr_backend_t *b, uint64_t addr, uint64_t size) {
  cuda_t *c = b->priv;
  hr_cu_context prev;
  int rc = cu_enter(c, &prev);
  if (rc) return rc;
  rc = CU_(cuMemFree_v2(addr));
  cu_leave(c, prev);
  if (!rc) cu_give(b, size);
  return rc;
}

static int cuda_mem_info(hr_backend_t *b, uint64_t *free_bytes, uint64_t *total_bytes) {
  cuda_t *c = b->priv;
  size_t f = 0, t = 0;
  hr_cu_context prev;
  int rc = cu_enter(c, &prev);
  if (rc) return rc;
  rc = CU_(cuMemGetInfo_v2(&f, &t));
  cu_leave(c, prev);
  if (rc) return rc;
  if (c->capped) {
    /* The capacity is the total; free is what is left of it, and never
     * more than the device itself has free. */
    uint64_t used = atomic_load(&c->used), cap = b->capacity;
    uint64_t left = used < cap ? cap - used : 0;
    t = cap;
    f = f < left ? f : left;
  }
  *free_bytes = f;
  *total_bytes = t;
  return 0;
}

static int cuda_va_reserve(hr_backend_t *b, uint64_t size, uint64_t *addr) {
  cuda_t *c = b->priv;
  hr_cu_deviceptr p = 0;
  hr_cu_context prev;
  int rc = cu_enter(c, &prev);
  if (rc) return rc;
  /* The granularity is a power of two (2 MiB and up): a valid alignment. */
  rc = CU_(cuMemAddressReserve(&p, size, b->granularity, 0, 0));
  cu_leave(c, prev);
  if (!rc) *addr = p;
  return rc;
}

static int cuda_va_release(hr_backend_t *b, uint64_t addr, uint64_t size) {
  cuda_t *c = b->priv;
  hr_cu_context prev;
  int rc = cu_enter(c, &prev);
  if (rc) return rc;
  rc = CU_(cuMemAddressFree(addr, size));
  cu_leave(c, prev);
  return rc;
}

static int cuda_map(hr_backend_t *b, uint64_t addr, uint64_t size, uint64_t *handle) {
  cuda_t *c = b->priv;
  hr_cu_mem_handle h = 0;
  hr_cu_mem_access acc = {{HR_CU_MEM_LOCATION_TYPE_DEVICE, c->dev},
                          HR_CU_MEM_ACCESS_FLAGS_PROT_READWRITE};
  hr_cu_context prev;
  int rc = cu_take(b, size);
  if (rc) return rc;
  rc = cu_enter(c, &prev);
  if (rc) goto out_give;
  rc = CU_(cuMemCreate(&h, size, &c->prop, 0));
  if (rc) goto out_leave;
  rc = CU_(cuMemMap(addr, size, 0, h, 0));
  if (rc) goto out_release;
  rc = CU_(cuMemSetAccess(addr, size, &acc, 1));
  if (rc) goto out_unmap;
  cu_leave(c, prev);
  *handle = h;
  return 0;
out_unmap:
  c->cuMemUnmap(addr, size);
out_release:
  c->cuMemRelease(h);
out_leave:
  cu_leave(c, prev);
out_give:
  cu_give(b, size);
  return rc;
}

/* Unmaps, then releases the handle. The memory goes back to the device
 * once both are done; the handle is released even when the unmap fails,
 * so a failure cannot leak it as well. */
static int cuda_unmap(hr_backend_t *b, uint64_t addr, uint64_t size, uint64_t handle) {
  cuda_t *c = b->priv;
  hr_cu_context prev;
  int rc = cu_enter(c, &prev);
  if (rc) return rc;
  rc = CU_(cuMemUnmap(addr, size));
  int rc2 = CU_(cuMemRelease(handle));
  cu_leave(c, prev);
  if (!rc) rc = rc2;
  if (!rc) cu_give(b, size);
  return rc;
}

/* Events are created in the primary context; recording one on a stream of
 * another context fails, and the pool then waits for the device instead. */
static int cuda_event_record(hr_backend_t *b, void *stream, uint64_t *ev) {
  cuda_t *c = b->priv;
  hr_cu_event e = NULL;
  hr_cu_context prev;
  int rc = cu_enter(c, &prev);
  if (rc) return rc;
  rc = CU_(cuEventCreate(&e, HR_CU_EVENT_DISABLE_TIMING));
  if (!rc) {
    rc = CU_(cuEventRecord(e, (hr_cu_stream)stream));
    if (rc) c->cuEventDestroy_v2(e);
  }
  cu_leave(c, prev);
  if (!rc) *ev = (uint64_t)(uintptr_t)e;
  return rc;
}

static int cuda_event_query(hr_backend_t *b, uint64_t ev) {
  cuda_t *c = b->priv;
  hr_cu_context prev;
  int rc = cu_enter(c, &prev);
  if (rc) return rc;
  rc = CU_(cuEventQuery((hr_cu_event)(uintptr_t)ev));
  cu_leave(c, prev);
  return rc;
}

static void cuda_event_destroy(hr_backend_t *b, uint64_t ev) {
  cuda_t *c = b->priv;
  c->cuEventDestroy_v2((hr_cu_event)(uintptr_t)ev);
}

static int cuda_synchronize(hr_backend_t *b) {
  cuda_t *c = b->priv;
  hr_cu_context prev;
  int rc = cu_enter(c, &prev);
  if (rc) return rc;
  rc = CU_(cuCtxSynchronize());
  cu_leave(c, prev);
  return rc;
}

static void cuda_destroy(hr_backend_t *b) {
  cuda_t *c = b->priv;
  if (!c) return;
  if (c->ctx) c->cuDevicePrimaryCtxRelease_v2(c->dev);
  if (c->lib) dlclose(c->lib);
  free(c);
}

static const hr_backend_ops_t cuda_ops = {
    .name = "cuda",
    .seg_alloc = cuda_seg_alloc,
    .seg_free = cuda_seg_free,
    .mem_info = cuda_mem_info,
    .va_reserve = cuda_va_reserve,
    .va_release = cuda_va_release,
    .map = cuda_map,
    .unmap = cuda_unmap,
    .event_record = cuda_event_record,
    .event_query = cuda_event_query,
    .event_destroy = cuda_event_destroy,
    .synchronize = cuda_synchronize,
    .destroy = cuda_destroy,
};

/* Loads every symbol; a driver too old to have one is as good as none. */
static int cuda_load(cuda_t *c) {
  void *sym_;
  const hr_options_t *o;
  (void)hr_options_process(&o, NULL, 0); /* a bad option elsewhere leaves this one's default */
  const char *lib = hr_options_get_str(o, HR_OPTION_libcuda);
  char why[256];
  if (hr__check_library(lib, why, sizeof why) != 0) {
    hr__log(HR_LOG_ERROR, "libcuda refused: %s", why);
    return HR_ENODRIVER;
  }
  c->lib = dlopen(lib && *lib ? lib : "libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  if (!c->lib) return HR_ENODRIVER;
    /* dlsym gives an object pointer; memcpy turns it into a function pointer
     * without the cast ISO C forbids. */
#define HR_CUDA_LOAD_(sym, type, params)                                                           \
  sym_ = dlsym(c->lib, #sym);                                                                      \
  memcpy(&c->sym, &sym_, sizeof sym_);                                                             \
  if (!sym_) {                                                                                     \
    hr__log(HR_LOG_ERROR, "CUDA driver lacks %s", #sym);                                           \
    return HR_ENODRIVER;                                                                           \
  }
  HR_CUDA_FUNCS(HR_CUDA_LOAD_)
#undef HR_CUDA_LOAD_
  return 0;
}

/* The mapping granule: the driver's minimum rounded up to 2 MiB, the
 * granule the pool's expandable segments are designed around; 0 (no
 * expandable segments, plain ones instead) when the device cannot map. */
static uint64_t cuda_granularity(cuda_t *c) {
  int vmm = 0;
  size_t gran = 0;
  hr_cu_context prev;
  if (c->cuDeviceGetAttribute(&vmm, HR_CU_DEVICE_ATTRIBUTE_VMM_SUPPORTED, c->dev) || !vmm) {
    hr__log(HR_LOG_INFO, "cuda: device %d cannot map memory; no expandable segments", c->dev);
    return 0;
  }
  if (cu_enter(c, &prev)) return 0;
  hr_cu_result r =
      c->cuMemGetAllocationGranularity(&gran, &c->prop, HR_CU_MEM_ALLOC_GRANULARITY_MINIMUM);
  cu_leave(c, prev);
  /* A power of two, or cuMemAddressReserve could not take it as alignment. */
  if (r || !gran || (gran & (gran - 1))) return 0;
  return gran < (2u << 20) ? (2u << 20) : gran;
}

/* Loads the driver and retains the primary context of `device`. */
static int cuda_open(cuda_t *c, int device) {
  int rc = cuda_load(c);
  if (rc) {
    hr__log(HR_LOG_ERROR, "CUDA driver not found (libcuda.so.1: %s)", dlerror());
    return rc;
  }
  rc = CU_(cuInit(0));
  if (!rc) rc = CU_(cuDeviceGet(&c->dev, device));
  if (!rc) rc = CU_(cuDevicePrimaryCtxRetain(&c->ctx, c->dev));
  if (rc) hr__log(HR_LOG_ERROR, "CUDA device %d cannot be opened (%s)", device, hr_strerror(rc));
  return rc;
}

int hr__backend_cuda_create(int device, uint64_t capacity, hr_backend_t **out) {
  hr_backend_t *b = calloc(1, sizeof *b);
  cuda_t *c = calloc(1, sizeof *c);
  int rc = HR_ENOMEM;
  if (!b || !c) goto out;
  b->ops = &cuda_ops;
  b->device = device;
  b->capacity = capacity;
  b->priv = c;
  if ((rc = cuda_open(c, device))) goto out;
  c->prop.type = HR_CU_MEM_ALLOCATION_TYPE_PINNED;
  c->prop.location.type = HR_CU_MEM_LOCATION_TYPE_DEVICE;
  c->prop.location.id = c->dev;
  b->granularity = cuda_granularity(c);
  c->capped = capacity != 0;
  uint64_t f = 0, t = 0;
  if (!c->capped && (rc = cuda_mem_info(b, &f, &t)) != 0) {
    hr__log(HR_LOG_ERROR, "CUDA device %d: no memory information (%s)", device, hr_strerror(rc));
    goto out;
  }
  if (!c->capped) b->capacity = t;
  *out = b;
  return 0;
out:
  if (b && c)
    cuda_destroy(b);
  else
    free(c);
  free(b);
  return rc;
}
