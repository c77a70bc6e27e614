/* host backend: real memory from mmap, so tests can write into every block
 * and catch two blocks that overlap. Segments are anonymous mappings;
 * mapping granules reserves PROT_NONE address space and makes granules
 * readable and writable with mprotect, dropping their pages on unmap with
 * madvise. Host memory is coherent, so events complete at once. */
#include "backend/backend.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <sys/mman.h>

#define HOST_GRANULE (2ull << 20)

typedef struct host {
  _Atomic uint64_t used;
} host_t;

static int host_take(hr_backend_t *b, uint64_t size) {
  return hr__backend_take(b, &((host_t *)b->priv)->used, true, size);
}

static void host_give(hr_backend_t *b, uint64_t size) {
  hr__backend_give(&((host_t *)b->priv)->used, size);
}

static int host_seg_alloc(hr_backend_t *b, uint64_t size, void *stream, uint64_t *addr) {
  int rc = host_take(b, size);
  if (rc) return rc;
  void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) {
    host_give(b, size);
    return HR_ENOMEM;
  }
  *addr = (uint64_t)(uintptr_t)p;
  return 0;
}

static int host_seg_free(hr_backend_t *b, uint64_t addr, uint64_t size) {
  host_give(b, size);
  return munmap((void *)(uintptr_t)addr, size) ? HR_EDEVICE : 0;
}

static int host_mem_info(hr_backend_t *b, uint64_t *free_bytes, uint64_t *total_bytes) {
  hr__backend_counted_info(b, &((host_t *)b->priv)->used, free_bytes, total_bytes);
  return 0;
}

static int host_va_reserve(hr_backend_t *b, uint64_t size, uint64_t *addr) {
  /* Over-reserve by one granule to align the start. */
  void *p = mmap(NULL, size + HOST_GRANULE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                 -1, 0);
  if (p == MAP_FAILED) return HR_ENOMEM;
  uint64_t a = (uint64_t)(uintptr_t)p;
  uint64_t aligned = (a + HOST_GRANULE - 1) & ~(HOST_GRANULE - 1);
  if (aligned > a) munmap(p, aligned - a);
  uint64_t end = a + size + HOST_GRANULE;
  if (end > aligned + size) munmap((void *)(uintptr_t)(aligned + size), end - aligned - size);
  *addr = aligned;
  return 0;
}

static int host_va_release(hr_backend_t *b, uint64_t addr, uint64_t size) {
  return munmap((void *)(uintptr_t)addr, size) ? HR_EDEVICE : 0;
}

static int host_map(hr_backend_t *b, uint64_t addr, uint64_t size, uint64_t *handle) {
  int rc = host_take(b, size);
  if (rc) return rc;
  if (mprotect((void *)(uintptr_t)addr, size, PROT_READ | PROT_WRITE)) {
    host_give(b, size);
    return HR_EDEVICE;
  }
  *handle = addr;
  return 0;
}

static int host_unmap(hr_backend_t *b, uint64_t addr, uint64_t size, uint64_t handle) {
  void *p = (void *)(uintptr_t)addr;
  if (handle != addr) return HR_EINVAL; /* not the start of a mapping */
  host_give(b, size);
  /* Dropping the pages makes a later map see fresh memory, as on a device. */
  if (madvise(p, size, MADV_DONTNEED) || mprotect(p, size, PROT_NONE)) return HR_EDEVICE;
  return 0;
}

static int host_event_record(hr_backend_t *b, void *stream, uint64_t *ev) {
  *ev = 1;
  return 0;
}

static int host_event_query(hr_backend_t *b, uint64_t ev) {
  return 0;
}

static const hr_backend_ops_t host_ops = {
    .name = "host",
    .seg_alloc = host_seg_alloc,
    .seg_free = host_seg_free,
    .mem_info = host_mem_info,
    .va_reserve = host_va_reserve,
    .va_release = host_va_release,
    .map = host_map,
    .unmap = host_unmap,
    .event_record = host_event_record,
    .event_query = host_event_query,
    .event_destroy = hr__backend_event_nothing,
    .synchronize = hr__backend_synchronized,
    .destroy = hr__backend_free_priv,
};

int hr__backend_host_create(int device, uint64_t capacity, hr_backend_t **out) {
  hr_backend_t *b = calloc(1, sizeof *b);
  host_t *h = calloc(1, sizeof *h);
  if (!b || !h) {
    free(b);
    free(h);
    return HR_ENOMEM;
  }
  b->ops = &host_ops;
  b->device = device;
  b->capacity = capacity ? capacity : (1ull << 30);
  b->granularity = HOST_GRANULE;
  b->priv = h;
  *out = b;
  return 0;
}
