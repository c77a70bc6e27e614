/* Residency internals shared by the registry (residency.c), the planner
 * (plan.c), the policies (policy.c) and the device budget (device.c).
 * Asset ids are slot indexes plus one; slots of unregistered assets stay
 * empty rather than being reused, so a stale id is an error, not another
 * asset. */
#ifndef HR_RESIDENCY_INTERNAL_H
#define HR_RESIDENCY_INTERNAL_H

#include "util/util.h"

#include <pthread.h>

typedef struct hr__asset {
  bool live;
  char name[128], variant[32];
  uint64_t device_bytes, host_bytes, resident;
  hr_asset_id_t parent;
  bool pinned, partial;
  bool busy; /* in use by the caller (hr_asset_set_busy): stays like a pinned one */
  int priority;
  uint64_t uses, last_use, loaded_at;
  hr_asset_load_fn load;
  hr_asset_offload_fn offload;
  hr_asset_drop_fn drop;
  void *arg;
  /* Scratch of the planner, valid during one plan under the lock. */
  bool req;          /* in the set being required */
  bool active;       /* in the set of the last require: in use, not idle */
  uint64_t target;   /* device bytes wanted after the plan */
  uint64_t next_use; /* lookahead: steps to the group's next use; UINT64_MAX: none */
  uint64_t evict;    /* bytes the plan offloads */
} hr__asset_t;

struct hr_residency {
  pthread_mutex_t mu; /* recursive: see residency.h */
  hr_residency_options_t o;
  hr__asset_t *a;
  size_t n, cap;
  uint64_t clock;
  int in_require; /* > 0 while a require runs its callbacks */
  hr_residency_stats_t st;
};

/* The slot accessors below are inline so that every file of the room can use
 * them without calling into the registry (residency.c), which calls the
 * planner and the device budget in turn: the room's files form layers, not
 * a circle (residency.c -> plan.c -> device.c, policy.c, rollout.c). */

/* The slot of `id`, or NULL when it is not a live asset. Needs the lock. */
static inline hr__asset_t *hr__asset_get_locked(hr_residency_t *r, hr_asset_id_t id) {
  if (id == HR_ASSET_NONE || id > r->n) return NULL;
  hr__asset_t *a = &r->a[id - 1];
  return a->live ? a : NULL;
}

/* The root of the group `id` belongs to. Needs the lock. Parents exist when
 * a child registers and unregistering clears the children's link, so the
 * chain ends; the bound guards the invariant. */
static inline hr_asset_id_t hr__group_root_locked(hr_residency_t *r, hr_asset_id_t id) {
  for (size_t hops = 0; hops <= r->n; hops++) {
    hr__asset_t *a = hr__asset_get_locked(r, id);
    if (!a || a->parent == HR_ASSET_NONE) return id;
    id = a->parent;
  }
  HR_ASSERT(!"cycle in asset groups");
  return id;
}

/* Sum of every asset's resident bytes. Needs the lock. */
static inline uint64_t hr__resident_total_locked(hr_residency_t *r) {
  uint64_t sum = 0;
  for (size_t i = 0; i < r->n; i++)
    if (r->a[i].live) sum += r->a[i].resident;
  return sum;
}

/* Reads the device's free bytes plus the attached pool's idle cached bytes.
 * HR_ENOTSUP when there is no source. */
HR_INTERNAL int hr__device_available(hr_residency_t *r, uint64_t *avail);
/* The budget for assets and working memory now, reserve taken off. Needs the
 * lock. */
HR_INTERNAL int hr__capacity_locked(hr_residency_t *r, uint64_t *cap);

/* Sorts idx[0..n) (slot indexes of offload candidates) so that the first to
 * offload comes first under `policy`. next_use must be filled for lookahead. */
HR_INTERNAL void hr__policy_order_locked(hr_residency_t *r, hr_policy_t policy, size_t *idx,
                                         size_t n);
/* Whether the policy offloads part of an asset before the whole of it. */
HR_INTERNAL bool hr__policy_partial(hr_policy_t policy);
/* Fills next_use of every slot from `la` (UINT64_MAX when absent). */
HR_INTERNAL void hr__policy_next_use_locked(hr_residency_t *r, const hr_lookahead_t *la);
/* The policy that runs: AUTO resolved by whether a lookahead is given. */
HR_INTERNAL hr_policy_t hr__policy_resolve(hr_policy_t policy, const hr_lookahead_t *la);

/* Lookahead only: with at most 12 candidates (idx[0..n)) and a lookahead,
 * replaces the marked victims (evict) by the minimal victim set that moves
 * the fewest bytes over the next steps when they are played out with
 * furthest-next-use, if one moves fewer than the marked set. `working` is
 * this step's working memory, `cap` the budget. Needs the lock. */
HR_INTERNAL void hr__rollout_locked(hr_residency_t *r, const hr_lookahead_t *la, const size_t *idx,
                                    size_t n, uint64_t deficit, uint64_t working, uint64_t cap);

#endif /* HR_RESIDENCY_INTERNAL_H */
