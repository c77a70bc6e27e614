/* backend: the public constructor that picks a backend by name, and the
 * calls every backend shares. */
#include "backend/backend.h"

#include <stdlib.h>
#include <string.h>

int hr_backend_create(const char *kind, int device, uint64_t capacity, hr_backend_t **out) {
  if (!kind || !out || device < 0) return HR_EINVAL;
  *out = NULL;
  if (!strcmp(kind, "sim")) return hr__backend_sim_create(device, capacity, out);
  if (!strcmp(kind, "host")) return hr__backend_host_create(device, capacity, out);
  if (!strcmp(kind, "cuda")) return hr__backend_cuda_create(device, capacity, out);
  hr__log(HR_LOG_ERROR, "backend '%s' is not one of sim, host, cuda", kind);
  return HR_EINVAL;
}

void hr_backend_destroy(hr_backend_t *b) {
  if (!b) return;
  if (b->ops->destroy) b->ops->destroy(b);
  free(b);
}

int hr_backend_mem_info(hr_backend_t *b, uint64_t *free_bytes, uint64_t *total_bytes) {
  if (!b || !free_bytes || !total_bytes) return HR_EINVAL;
  return b->ops->mem_info(b, free_bytes, total_bytes);
}

int hr__backend_take(const hr_backend_t *b, _Atomic uint64_t *used, bool capped, uint64_t size) {
  uint64_t u = atomic_load(used);
  do {
    if (capped && (size > b->capacity || u > b->capacity - size)) return HR_ENOMEM;
  } while (!atomic_compare_exchange_weak(used, &u, u + size));
  return 0;
}

void hr__backend_give(_Atomic uint64_t *used, uint64_t size) {
  atomic_fetch_sub(used, size);
}

void hr__backend_counted_info(const hr_backend_t *b, _Atomic uint64_t *used, uint64_t *free_bytes,
                              uint64_t *total_bytes) {
  uint64_t u = atomic_load(used);
  *total_bytes = b->capacity;
  *free_bytes = u < b->capacity ? b->capacity - u : 0;
}

int hr__backend_synchronized(hr_backend_t *b) {
  return 0;
}

void hr__backend_event_nothing(hr_backend_t *b, uint64_t ev) {}

void hr__backend_free_priv(hr_backend_t *b) {
  free(b->priv);
}
