/* Which asset leaves first. Every policy keeps higher-priority assets longer;
 * within a priority:
 *   comfy      what ComfyUI's free_memory() does: the most offloaded model
 *              first, then the least referenced (here: fewest uses), then the
 *              smallest, then the most recently loaded (ComfyUI keeps its
 *              list newest first and sorts on the index last);
 *   lru        the least recently used first;
 *   lookahead  the asset whose group is next used furthest away first
 *              (never used again counts as infinitely far); ties go to the
 *              larger asset, which frees the room with fewer moves. */
#include "residency/residency_internal.h"

#include <stdlib.h>

hr_policy_t hr__policy_resolve(hr_policy_t policy, const hr_lookahead_t *la) {
  if (policy == HR_POLICY_AUTO) return la ? HR_POLICY_LOOKAHEAD : HR_POLICY_LRU;
  return policy;
}

bool hr__policy_partial(hr_policy_t policy) {
  return policy == HR_POLICY_COMFY || policy == HR_POLICY_LOOKAHEAD;
}

void hr__policy_next_use_locked(hr_residency_t *r, const hr_lookahead_t *la) {
  for (size_t i = 0; i < r->n; i++) r->a[i].next_use = UINT64_MAX;
  if (!la) return;
  /* First pass: the soonest use of each group, kept on the group's root. */
  for (size_t k = 0; k < la->n; k++) {
    hr__asset_t *a = hr__asset_get_locked(r, la->ids[k]);
    if (!a) continue;
    hr_asset_id_t root = hr__group_root_locked(r, la->ids[k]);
    uint64_t when = la->steps ? la->steps[k] : k + 1;
    hr__asset_t *ra = &r->a[root - 1];
    if (when < ra->next_use) ra->next_use = when;
  }
  /* Second pass: every member takes its root's. Roots come first in slot
   * order only by accident, so read the root's value before overwriting. */
  uint64_t *root_next = malloc(r->n * sizeof *root_next);
  if (!root_next) return; /* without memory the order degrades to ties */
  for (size_t i = 0; i < r->n; i++) root_next[i] = r->a[i].next_use;
  for (size_t i = 0; i < r->n; i++) {
    if (!r->a[i].live) continue;
    hr_asset_id_t root = hr__group_root_locked(r, (hr_asset_id_t)(i + 1));
    r->a[i].next_use = root_next[root - 1];
  }
  free(root_next);
}

/* qsort has no context argument in C11, so the comparison reads these. They
 * are set and used under the registry lock; the registry lock of different
 * registries can be held at once by different threads, hence thread-local. */
static _Thread_local hr_residency_t *cmp_r;
static _Thread_local hr_policy_t cmp_policy;

static int cmp_u64(uint64_t a, uint64_t b) {
  return a < b ? -1 : a > b;
}

static int cmp_victims(const void *pa, const void *pb) {
  const hr__asset_t *a = &cmp_r->a[*(const size_t *)pa], *b = &cmp_r->a[*(const size_t *)pb];
  int c;
  if (a->priority != b->priority) return a->priority < b->priority ? -1 : 1;
  switch (cmp_policy) {
  case HR_POLICY_COMFY:
    /* More offloaded first: larger (device - resident). */
    if ((c = cmp_u64(b->device_bytes - b->resident, a->device_bytes - a->resident))) return c;
    if ((c = cmp_u64(a->uses, b->uses))) return c;
    if ((c = cmp_u64(a->device_bytes, b->device_bytes))) return c;
    if ((c = cmp_u64(b->loaded_at, a->loaded_at))) return c;
    break;
  case HR_POLICY_LOOKAHEAD:
    if ((c = cmp_u64(b->next_use, a->next_use))) return c;
    if ((c = cmp_u64(b->resident, a->resident))) return c;
    if ((c = cmp_u64(a->last_use, b->last_use))) return c;
    break;
  case HR_POLICY_AUTO:
  case HR_POLICY_LRU:
    if ((c = cmp_u64(a->last_use, b->last_use))) return c;
    if ((c = cmp_u64(a->loaded_at, b->loaded_at))) return c;
    break;
  }
  return cmp_u64(*(const size_t *)pa, *(const size_t *)pb);
}

void hr__policy_order_locked(hr_residency_t *r, hr_policy_t policy, size_t *idx, size_t n) {
  cmp_r = r;
  cmp_policy = policy;
  if (n > 1) qsort(idx, n, sizeof *idx, cmp_victims); /* idx may be NULL when n is 0 */
  cmp_r = NULL;
}
