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
