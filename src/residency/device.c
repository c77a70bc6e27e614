/* The budget residency plans against. A fixed budget (simulation, tests)
 * is what it says. Otherwise the budget is read when needed: the device's
 * free bytes (a caller's source, or the backend), plus the idle cached bytes
 * of an attached pool (offloaded tensors go back to the pool's cache, not to
 * the device), plus what the registry's own assets hold (they can be moved),
 * minus the reserve. */
#include "residency/residency_internal.h"

int hr__device_available(hr_residency_t *r, uint64_t *avail) {
  uint64_t free_b = 0, total_b = 0, idle = 0;
  int rc;
  if (r->o.mem_info)
    rc = r->o.mem_info(r->o.mem_info_arg, &free_b, &total_b);
  else if (r->o.backend)
    rc = hr_backend_mem_info(r->o.backend, &free_b, &total_b);
  else
    rc = HR_ENOTSUP;
  if (rc) return rc;
  if (r->o.pool) {
    hr_pool_stats_t st = {.size = sizeof st};
    /* Reserved but not allocated: cached blocks the pool hands out again
     * before it asks the device for more. */
    if (hr_pool_stats(r->o.pool, &st) == 0 &&
        st.reserved_bytes.current > st.allocated_bytes.current)
      idle = (uint64_t)(st.reserved_bytes.current - st.allocated_bytes.current);
  }
  *avail = free_b + idle;
  return 0;
}

int hr__capacity_locked(hr_residency_t *r, uint64_t *cap) {
  uint64_t total;
  if (r->o.budget_bytes) {
    total = r->o.budget_bytes;
  } else {
    uint64_t avail;
    int rc = hr__device_available(r, &avail);
    if (rc) return rc;
    total = avail + hr__resident_total_locked(r);
  }
  *cap = total > r->o.reserve_bytes ? total - r->o.reserve_bytes : 0;
  return 0;
}
