/* cuda backend: the CUDA driver API loaded at run time with dlopen of
 * libcuda.so.1, so the library builds and runs without a GPU. It works in
 * the device's primary context (the one the CUDA runtime and PyTorch use),
 * allocates segments with cuMemAlloc_v2, maps granules with the virtual
 * memory calls for expandable segments, and orders streams with events.
 * Without a driver, create returns HR_ENODRIVER and logs "CUDA driver not
 * found". Its validation on a real device is separate work. */
#include "backend/backend.h"
#include "backend/cuda_api.h"

#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>

typedef struct cuda {
  void *lib;
  hr_cu_device dev;
  hr_cu_context ctx;
  hr_cu_mem_prop prop;
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

/* Every call runs in the device's primary context, whatever the calling
 * thread had current. */
static int cu_enter(cuda_t *c) {
  return cu_err(c->cuCtxSetCurrent(c->ctx));
}

static int cuda_seg_alloc(hr_backend_t *b, uint64_t size, void *stream, uint64_t *addr) {
  cuda_t *c = b->priv;
  hr_cu_deviceptr p = 0;
  int rc = cu_enter(c);
  if (!rc) rc = cu_err(c->cuMemAlloc_v2(&p, size));
  if (!rc) *addr = p;
  return rc;
}

static int cuda_seg_free(hr_backend_t *b, uint64_t addr, uint64_t size) {
  cuda_t *c = b->priv;
  int rc = cu_enter(c);
  return rc ? rc : cu_err(c->cuMemFree_v2(addr));
}

static int cuda_mem_info(hr_backend_t *b, uint64_t *free_bytes, uint64_t *total_bytes) {
  cuda_t *c = b->priv;
  size_t f = 0, t = 0;
  int rc = cu_enter(c);
  if (!rc) rc = cu_err(c->cuMemGetInfo_v2(&f, &t));
  if (rc) return rc;
  if (b->capacity && b->capacity < t) {
    uint64_t used = t - f;
    t = b->capacity;
    f = used < t ? t - used : 0;
  }
  *free_bytes = f;
  *total_bytes = t;
  return 0;
}

static int cuda_va_reserve(hr_backend_t *b, uint64_t size, uint64_t *addr) {
  cuda_t *c = b->priv;
  hr_cu_deviceptr p = 0;
  int rc = cu_enter(c);
  if (!rc) rc = cu_err(c->cuMemAddressReserve(&p, size, b->granularity, 0, 0));
  if (!rc) *addr = p;
  return rc;
}

static int cuda_va_release(hr_backend_t *b, uint64_t addr, uint64_t size) {
  cuda_t *c = b->priv;
  int rc = cu_enter(c);
  return rc ? rc : cu_err(c->cuMemAddressFree(addr, size));
}

static int cuda_map(hr_backend_t *b, uint64_t addr, uint64_t *handle) {
  cuda_t *c = b->priv;
  hr_cu_mem_handle h = 0;
  hr_cu_mem_access acc = {{HR_CU_MEM_LOCATION_TYPE_DEVICE, c->dev},
                          HR_CU_MEM_ACCESS_FLAGS_PROT_READWRITE};
  int rc = cu_enter(c);
  if (rc) return rc;
  rc = cu_err(c->cuMemCreate(&h, b->granularity, &c->prop, 0));
  if (rc) return rc;
  rc = cu_err(c->cuMemMap(addr, b->granularity, 0, h, 0));
  if (rc) goto out_release;
  rc = cu_err(c->cuMemSetAccess(addr, b->granularity, &acc, 1));
  if (rc) goto out_unmap;
  *handle = h;
  return 0;
out_unmap:
  c->cuMemUnmap(addr, b->granularity);
out_release:
  c->cuMemRelease(h);
  return rc;
}

static int cuda_unmap(hr_backend_t *b, uint64_t addr, uint64_t handle) {
  cuda_t *c = b->priv;
  int rc = cu_enter(c);
  if (!rc) rc = cu_err(c->cuMemUnmap(addr, b->granularity));
  if (!rc) rc = cu_err(c->cuMemRelease(handle));
  return rc;
}

static int cuda_event_record(hr_backend_t *b, void *stream, uint64_t *ev) {
  cuda_t *c = b->priv;
  hr_cu_event e = NULL;
  int rc = cu_enter(c);
  if (!rc) rc = cu_err(c->cuEventCreate(&e, HR_CU_EVENT_DISABLE_TIMING));
  if (rc) return rc;
  rc = cu_err(c->cuEventRecord(e, (hr_cu_stream)stream));
  if (rc) {
    c->cuEventDestroy_v2(e);
    return rc;
  }
  *ev = (uint64_t)(uintptr_t)e;
  return 0;
}

static int cuda_event_query(hr_backend_t *b, uint64_t ev) {
  cuda_t *c = b->priv;
  int rc = cu_enter(c);
  return rc ? rc : cu_err(c->cuEventQuery((hr_cu_event)(uintptr_t)ev));
}

static void cuda_event_destroy(hr_backend_t *b, uint64_t ev) {
  cuda_t *c = b->priv;
  c->cuEventDestroy_v2((hr_cu_event)(uintptr_t)ev);
}

static int cuda_synchronize(hr_backend_t *b) {
  cuda_t *c = b->priv;
  int rc = cu_enter(c);
  return rc ? rc : cu_err(c->cuCtxSynchronize());
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
  const char *lib = getenv("HEADROOM_LIBCUDA");
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

int hr__backend_cuda_create(int device, uint64_t capacity, hr_backend_t **out) {
  hr_backend_t *b = calloc(1, sizeof *b);
  cuda_t *c = calloc(1, sizeof *c);
  int rc = HR_ENOMEM;
  size_t gran = 0;
  if (!b || !c) goto out;
  b->ops = &cuda_ops;
  b->device = device;
  b->capacity = capacity;
  b->priv = c;
  rc = cuda_load(c);
  if (rc) {
    hr__log(HR_LOG_ERROR, "CUDA driver not found (libcuda.so.1: %s)", dlerror());
    goto out;
  }
  rc = cu_err(c->cuInit(0));
  if (!rc) rc = cu_err(c->cuDeviceGet(&c->dev, device));
  if (!rc) rc = cu_err(c->cuDevicePrimaryCtxRetain(&c->ctx, c->dev));
  if (rc) {
    hr__log(HR_LOG_ERROR, "CUDA device %d cannot be opened (%s)", device, hr_strerror(rc));
    goto out;
  }
  c->prop.type = HR_CU_MEM_ALLOCATION_TYPE_PINNED;
  c->prop.location.type = HR_CU_MEM_LOCATION_TYPE_DEVICE;
  c->prop.location.id = c->dev;
  /* Without virtual memory support the pool falls back to plain segments. */
  if (!cu_enter(c) &&
      !c->cuMemGetAllocationGranularity(&gran, &c->prop, HR_CU_MEM_ALLOC_GRANULARITY_MINIMUM) &&
      gran)
    b->granularity = gran < (2u << 20) ? (2u << 20) / gran * gran : gran;
  if (!b->capacity) {
    uint64_t f, t;
    if (!cuda_mem_info(b, &f, &t)) b->capacity = t;
  }
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
