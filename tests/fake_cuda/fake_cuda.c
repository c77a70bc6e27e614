/* A stand-in for libcuda.so.1, loaded through HEADROOM_LIBCUDA as the real
 * driver is, so the cuda backend and tests/unit/test_pool_cuda.c run their
 * logic on a machine without a GPU. "Device" memory is host memory (device
 * pointers are process addresses); cuMemAlloc uses mmap, the
 * virtual memory calls reserve PROT_NONE address space and make a mapping
 * readable only after cuMemSetAccess, so a kernel that strays outside
 * mapped memory faults. The two kernels of tests/gpu/pattern.cu run on the
 * host, synchronously, when launched. Streams and events complete at once.
 *
 * It checks the rules the real driver enforces or documents, and counts
 * each breach as a violation (fake_cuda_report names the last): calls made
 * without the primary context current, cuMemCreate sizes that are not a
 * multiple of the granularity, unaligned or overlapping maps, unmapping a
 * range other than one whole mapping, freeing address space that is still
 * mapped, double frees, and everything still live at the end.
 * Environment: FAKE_CUDA_TOTAL (bytes, default 1 GiB), FAKE_CUDA_NO_VMM=1
 * (the device cannot map), FAKE_CUDA_NO_DEVICE=1 (cuInit fails). */
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define API  __attribute__((visibility("default")))
#define GRAN (2ull << 20)
#define MAXR 4096

typedef unsigned int res_t;
enum {
  OK = 0,
  E_INVALID_VALUE = 1,
  E_OOM = 2,
  E_NOT_INIT = 3,
  E_NO_DEVICE = 100,
  E_INVALID_DEVICE = 101,
  E_INVALID_CONTEXT = 201,
  E_INVALID_HANDLE = 400,
  E_NOT_FOUND = 500
};

typedef struct range {
  uint64_t addr, size;
  int kind; /* 1 alloc, 2 reservation, 3 mapping, 4 handle, 5 event, 6 stream, 7 module */
  uint64_t handle;
} range_t;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static range_t live[MAXR];
static int nlive;
static uint64_t used, total;
static int inited, primary_refs, violations, launches;
static char last[256];
static int primary_ctx; /* its address is the primary context */
static __thread void *current;

static void violate(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(last, sizeof last, fmt, ap);
  va_end(ap);
  violations++;
}

static int need_ctx(const char *call) {
  if (!inited) return E_NOT_INIT;
  if (current != &primary_ctx) {
    violate("%s without the primary context current", call);
    return E_INVALID_CONTEXT;
  }
  return OK;
}

static int add(int kind, uint64_t addr, uint64_t size, uint64_t handle) {
  if (nlive == MAXR) return -1;
  live[nlive++] = (range_t){addr, size, kind, handle};
  return 0;
}

static range_t *find(int kind, uint64_t addr) {
  for (int i = 0; i < nlive; i++)
    if (live[i].kind == kind && live[i].addr == addr) return &live[i];
  return NULL;
}

static void drop(range_t *r) {
  *r = live[--nlive];
}

/* ---- inspection, for tests ----------------------------------------------- */

API int fake_cuda_live(int kind) {
  int n = 0;
  pthread_mutex_lock(&lock);
  for (int i = 0; i < nlive; i++) n += kind == 0 || live[i].kind == kind;
  pthread_mutex_unlock(&lock);
  return n;
}
API int fake_cuda_violations(void) {
  return violations;
}
API const char *fake_cuda_last_violation(void) {
  return last;
}
API uint64_t fake_cuda_used(void) {
  return used;
}
API int fake_cuda_launches(void) {
  return launches;
}
API void *fake_cuda_primary(void) {
  return &primary_ctx;
}

/* ---- initialisation and contexts ----------------------------------------- */

API res_t cuInit(unsigned flags) {
  if (getenv("FAKE_CUDA_NO_DEVICE")) return E_NO_DEVICE;
  const char *t = getenv("FAKE_CUDA_TOTAL");
  pthread_mutex_lock(&lock);
  if (!inited) total = t ? strtoull(t, NULL, 0) : (1ull << 30);
  inited = 1;
  pthread_mutex_unlock(&lock);
  return OK;
}
API res_t cuDeviceGet(int *dev, int ordinal) {
  if (!inited) return E_NOT_INIT;
  if (ordinal != 0) return E_INVALID_DEVICE;
  *dev = 0;
  return OK;
}
API res_t cuDeviceGetAttribute(int *v, unsigned attr, int dev) {
  if (!inited) return E_NOT_INIT;
  *v = attr == 102 ? !getenv("FAKE_CUDA_NO_VMM") : 0;
  return OK;
}
API res_t cuDevicePrimaryCtxRetain(void **ctx, int dev) {
  if (!inited) return E_NOT_INIT;
  pthread_mutex_lock(&lock);
  primary_refs++;
  pthread_mutex_unlock(&lock);
  *ctx = &primary_ctx;
  return OK;
}
API res_t cuDevicePrimaryCtxRelease_v2(int dev) {
  pthread_mutex_lock(&lock);
  if (primary_refs-- <= 0) violate("primary context released more often than retained");
  pthread_mutex_unlock(&lock);
  return OK;
}
API res_t cuCtxGetCurrent(void **ctx) {
  *ctx = current;
  return OK;
}
API res_t cuCtxSetCurrent(void *ctx) {
  current = ctx;
  return OK;
}
API res_t cuCtxSynchronize(void) {
  return need_ctx("cuCtxSynchronize");
}

/* ---- memory -------------------------------------------------------------- */

API res_t cuMemGetInfo_v2(size_t *f, size_t *t) {
  int rc = need_ctx("cuMemGetInfo");
  if (rc) return rc;
  *t = total;
  *f = total - used;
  return OK;
}
API res_t cuMemAlloc_v2(uint64_t *p, size_t size) {
  int rc = need_ctx("cuMemAlloc");
  if (rc) return rc;
  if (!size) return E_INVALID_VALUE;
  pthread_mutex_lock(&lock);
  /* mmap, not malloc: a ballast of gigabytes costs no memory untouched,
   * and no sanitizer shadow either. */
  void *m = size > total - used ? MAP_FAILED
                                : mmap(NULL, size, PROT_READ | PROT_WRITE,
                                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (m == MAP_FAILED || add(1, (uint64_t)(uintptr_t)m, size, 0)) {
    if (m != MAP_FAILED) munmap(m, size);
    pthread_mutex_unlock(&lock);
    return E_OOM;
  }
  used += size;
  *p = (uint64_t)(uintptr_t)m;
  pthread_mutex_unlock(&lock);
  return OK;
}
API res_t cuMemFree_v2(uint64_t p) {
  int rc = need_ctx("cuMemFree");
  if (rc) return rc;
  pthread_mutex_lock(&lock);
  range_t *r = find(1, p);
  if (!r) {
    violate("cuMemFree of %#llx, not allocated", (unsigned long long)p);
    pthread_mutex_unlock(&lock);
    return E_INVALID_VALUE;
  }
  used -= r->size;
  munmap((void *)(uintptr_t)p, r->size);
  drop(r);
  pthread_mutex_unlock(&lock);
  return OK;
}
API res_t cuMemGetAllocationGranularity(size_t *g, const void *prop, unsigned opt) {
  *g = GRAN;
  return OK;
}
API res_t cuMemAddressReserve(uint64_t *p, size_t size, size_t align, uint64_t addr,
                              unsigned long long flags) {
  int rc = need_ctx("cuMemAddressReserve");
  if (rc) return rc;
  if (!size || size % GRAN || (align && (align & (align - 1))) || (align && align % GRAN)) {
    violate("cuMemAddressReserve(%zu, align %zu): not granule multiples", size, align);
    return E_INVALID_VALUE;
  }
  uint64_t al = align ? align : GRAN;
  void *m = mmap(NULL, size + al, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (m == MAP_FAILED) return E_OOM;
  uint64_t a = (uint64_t)(uintptr_t)m, b = (a + al - 1) / al * al;
  if (b > a) munmap(m, b - a);
  if (a + size + al > b + size) munmap((void *)(uintptr_t)(b + size), a + size + al - b - size);
  pthread_mutex_lock(&lock);
  add(2, b, size, 0);
  pthread_mutex_unlock(&lock);
  *p = b;
  return OK;
}
API res_t cuMemAddressFree(uint64_t p, size_t size) {
  int rc = need_ctx("cuMemAddressFree");
  if (rc) return rc;
  pthread_mutex_lock(&lock);
  range_t *r = find(2, p);
  if (!r || r->size != size) {
    violate("cuMemAddressFree(%#llx, %zu): not a reservation", (unsigned long long)p, size);
    pthread_mutex_unlock(&lock);
    return E_INVALID_VALUE;
  }
  for (int i = 0; i < nlive; i++)
    if (live[i].kind == 3 && live[i].addr >= p && live[i].addr < p + size)
      violate("cuMemAddressFree with %#llx still mapped", (unsigned long long)live[i].addr);
  drop(r);
  munmap((void *)(uintptr_t)p, size);
  pthread_mutex_unlock(&lock);
  return OK;
}
API res_t cuMemCreate(uint64_t *h, size_t size, const void *prop, unsigned long long flags) {
  int rc = need_ctx("cuMemCreate");
  if (rc) return rc;
  if (!size || size % GRAN) {
    violate("cuMemCreate(%zu): not a multiple of the granularity", size);
    return E_INVALID_VALUE;
  }
  static uint64_t next_handle = 1;
  pthread_mutex_lock(&lock);
  if (size > total - used) {
    pthread_mutex_unlock(&lock);
    return E_OOM;
  }
  used += size;
  *h = next_handle++;
  add(4, *h, size, 0);
  pthread_mutex_unlock(&lock);
  return OK;
}
API res_t cuMemMap(uint64_t p, size_t size, size_t off, uint64_t h, unsigned long long flags) {
  int rc = need_ctx("cuMemMap"), inside = 0;
  if (rc) return rc;
  pthread_mutex_lock(&lock);
  range_t *hd = find(4, h);
  for (int i = 0; i < nlive; i++) {
    range_t *r = &live[i];
    if (r->kind == 2 && p >= r->addr && p + size <= r->addr + r->size) inside = 1;
    if (r->kind == 3 && p < r->addr + r->size && r->addr < p + size) inside = -1;
  }
  if (!hd || off || size != hd->size || p % GRAN || inside != 1) {
    violate("cuMemMap(%#llx, %zu): bad handle, size, alignment or range", (unsigned long long)p,
            size);
    pthread_mutex_unlock(&lock);
    return E_INVALID_VALUE;
  }
  add(3, p, size, h);
  pthread_mutex_unlock(&lock);
  return OK;
}
API res_t cuMemSetAccess(uint64_t p, size_t size, const void *desc, size_t count) {
  int rc = need_ctx("cuMemSetAccess");
  if (rc) return rc;
  pthread_mutex_lock(&lock);
  range_t *m = find(3, p);
  if (!m || m->size != size || count != 1) {
    violate("cuMemSetAccess(%#llx, %zu): not a mapping", (unsigned long long)p, size);
    pthread_mutex_unlock(&lock);
    return E_INVALID_VALUE;
  }
  mprotect((void *)(uintptr_t)p, size, PROT_READ | PROT_WRITE);
  pthread_mutex_unlock(&lock);
  return OK;
}
API res_t cuMemUnmap(uint64_t p, size_t size) {
  int rc = need_ctx("cuMemUnmap");
  if (rc) return rc;
  pthread_mutex_lock(&lock);
  range_t *m = find(3, p);
  if (!m || m->size != size) {
    violate("cuMemUnmap(%#llx, %zu): not one whole mapping", (unsigned long long)p, size);
    pthread_mutex_unlock(&lock);
    return E_INVALID_VALUE;
  }
  madvise((void *)(uintptr_t)p, size, MADV_DONTNEED);
  mprotect((void *)(uintptr_t)p, size, PROT_NONE);
  drop(m);
  pthread_mutex_unlock(&lock);
  return OK;
}
API res_t cuMemRelease(uint64_t h) {
  int rc = need_ctx("cuMemRelease");
  if (rc) return rc;
  pthread_mutex_lock(&lock);
  range_t *r = find(4, h);
  if (!r) {
    violate("cuMemRelease(%llu): no such handle", (unsigned long long)h);
    pthread_mutex_unlock(&lock);
    return E_INVALID_HANDLE;
  }
  /* The real driver frees the memory once the last mapping goes; the
   * backend always unmaps first, so a mapped handle here is a breach. */
  for (int i = 0; i < nlive; i++)
    if (live[i].kind == 3 && live[i].handle == h) violate("cuMemRelease of a mapped handle");
  used -= r->size;
  drop(r);
  pthread_mutex_unlock(&lock);
  return OK;
}
API res_t cuMemcpyDtoH_v2(void *dst, uint64_t src, size_t n) {
  int rc = need_ctx("cuMemcpyDtoH");
  if (!rc) memcpy(dst, (void *)(uintptr_t)src, n);
  return rc;
}
API res_t cuMemcpyHtoD_v2(uint64_t dst, const void *src, size_t n) {
  int rc = need_ctx("cuMemcpyHtoD");
  if (!rc) memcpy((void *)(uintptr_t)dst, src, n);
  return rc;
}

/* ---- events and streams -------------------------------------------------- */

static res_t new_obj(int kind, void **out) {
  void *o = malloc(1);
  if (!o) return E_OOM;
  pthread_mutex_lock(&lock);
  add(kind, (uint64_t)(uintptr_t)o, 1, 0);
  pthread_mutex_unlock(&lock);
  *out = o;
  return OK;
}
static res_t del_obj(int kind, void *o, const char *call) {
  pthread_mutex_lock(&lock);
  range_t *r = find(kind, (uint64_t)(uintptr_t)o);
  if (!r) {
    violate("%s of an unknown handle", call);
    pthread_mutex_unlock(&lock);
    return E_INVALID_HANDLE;
  }
  drop(r);
  pthread_mutex_unlock(&lock);
  free(o);
  return OK;
}
static int known(int kind, void *o) {
  pthread_mutex_lock(&lock);
  int k = o == NULL || find(kind, (uint64_t)(uintptr_t)o) != NULL;
  pthread_mutex_unlock(&lock);
  return k;
}

API res_t cuEventCreate(void **ev, unsigned flags) {
  int rc = need_ctx("cuEventCreate");
  return rc ? (res_t)rc : new_obj(5, ev);
}
API res_t cuEventRecord(void *ev, void *stream) {
  int rc = need_ctx("cuEventRecord");
  if (rc) return rc;
  if (!ev || !known(5, ev) || !known(6, stream)) {
    violate("cuEventRecord on an unknown event or stream");
    return E_INVALID_HANDLE;
  }
  return OK;
}
API res_t cuEventQuery(void *ev) {
  return known(5, ev) && ev ? OK : E_INVALID_HANDLE;
}
API res_t cuEventDestroy_v2(void *ev) {
  return del_obj(5, ev, "cuEventDestroy");
}
API res_t cuStreamCreate(void **s, unsigned flags) {
  int rc = need_ctx("cuStreamCreate");
  return rc ? (res_t)rc : new_obj(6, s);
}
API res_t cuStreamDestroy_v2(void *s) {
  return del_obj(6, s, "cuStreamDestroy");
}
API res_t cuStreamWaitEvent(void *s, void *ev, unsigned flags) {
  return known(6, s) && known(5, ev) && ev ? OK : E_INVALID_HANDLE;
}
API res_t cuStreamSynchronize(void *s) {
  return known(6, s) ? OK : E_INVALID_HANDLE;
}

/* ---- modules and the two kernels ------------------------------------------ */

API res_t cuModuleLoadData(void **m, const void *image) {
  int rc = need_ctx("cuModuleLoadData");
  if (rc) return rc;
  if (!strstr(image, ".entry hr_fill(") || !strstr(image, ".entry hr_verify(")) return 218;
  return new_obj(7, m);
}
API res_t cuModuleUnload(void *m) {
  return del_obj(7, m, "cuModuleUnload");
}

static char fill_fn, verify_fn;

API res_t cuModuleGetFunction(void **f, void *m, const char *name) {
  if (!known(7, m)) return E_INVALID_HANDLE;
  if (!strcmp(name, "hr_fill"))
    *f = &fill_fn;
  else if (!strcmp(name, "hr_verify"))
    *f = &verify_fn;
  else
    return E_NOT_FOUND;
  return OK;
}

static uint8_t pattern_byte(uint64_t stamp, uint64_t o) {
  return (uint8_t)((stamp ^ (o / 8)) >> (8 * (o % 8)));
}

API res_t cuLaunchKernel(void *f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                         unsigned bz, unsigned shmem, void *stream, void **params, void **extra) {
  int rc = need_ctx("cuLaunchKernel");
  if (rc) return rc;
  if ((f != &fill_fn && f != &verify_fn) || !gx || !bx || !params || !known(6, stream)) {
    violate("cuLaunchKernel: unknown function, empty grid or unknown stream");
    return E_INVALID_VALUE;
  }
  uint8_t *p = (uint8_t *)(uintptr_t) * (uint64_t *)params[0];
  uint64_t size = *(uint64_t *)params[1], stamp = *(uint64_t *)params[2];
  launches++;
  uint64_t n = size / 8,
           *bad = f == &verify_fn ? (uint64_t *)(uintptr_t) * (uint64_t *)params[3] : 0;
  for (uint64_t i = 0; i < n; i++) {
    uint64_t w = stamp ^ i, got;
    if (!bad) {
      memcpy(p + 8 * i, &w, 8);
      continue;
    }
    memcpy(&got, p + 8 * i, 8);
    if (got != w) {
      __atomic_fetch_add(&bad[0], 1, __ATOMIC_RELAXED);
      if (i < bad[1]) bad[1] = i;
    }
  }
  for (uint64_t o = n * 8; o < size; o++) {
    if (!bad)
      p[o] = pattern_byte(stamp, o);
    else if (p[o] != pattern_byte(stamp, o)) {
      __atomic_fetch_add(&bad[0], 1, __ATOMIC_RELAXED);
      if (n < bad[1]) bad[1] = n;
    }
  }
  return OK;
}
