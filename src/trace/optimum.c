/* The reference a residency policy is measured against: the fewest bytes
 * any plan could move for a workflow.
 *
 * Exact, for small workflows whose assets move whole (and at most
 * HR_OPTIMUM_MAX_WORK states and subsets looked at): a search over every
 * resident set after every step. Each step must hold its required set R
 * (groups included) within capacity C = budget - reserve - working; what
 * else stays is any subset of what was resident before (loading an asset
 * before it is needed never saves bytes, so only required assets are
 * loaded), pinned assets stay once loaded, and the cost of a step is the
 * size of R minus what was already resident. Dynamic programming over the
 * 2^n sets keeps the cheapest way to reach each; a step enumerates the
 * subsets of each reachable set, 3^n per step in all.
 *
 * Lower bound, for everything else: relax the problem so that any byte of
 * any asset may be offloaded alone (and ignore pins, which only constrain).
 * Each byte is then a page of a uniform-size paging problem whose requests
 * are the steps that require its asset, and offloading the byte whose next
 * request is furthest away (Belady) is optimal for it: the exchange argument
 * holds with several pages requested at once and with a capacity that varies
 * per step. No plan of the real problem moves fewer bytes, since every such
 * plan is a plan of the relaxed one. */
#include "trace/workflow_internal.h"

#include <stdlib.h>
#include <string.h>

/* What every step requires of every asset (groups included): its size, or
 * 0 when not required. A partial asset of a set that cannot fit whole is
 * required only as far as it fits, largest first, as require() loads it. */
typedef struct steps_view {
  size_t n_assets, n_steps;
  uint64_t *req; /* n_steps x n_assets */
  uint64_t *cap; /* per step: capacity for assets */
} steps_view_t;

static int root_of(const hr_workflow_t *w, size_t i) {
  while (w->assets[i].parent >= 0) i = (size_t)w->assets[i].parent;
  return (int)i;
}

static int build_view(const hr_workflow_t *w, uint64_t budget, steps_view_t *v) {
  size_t n = w->n_assets;
  v->n_assets = n;
  v->n_steps = w->n_seq;
  v->req = calloc(n * w->n_seq + 1, sizeof *v->req);
  v->cap = calloc(w->n_seq + 1, sizeof *v->cap);
  int *root = calloc(n + 1, sizeof *root);
  if (!v->req || !v->cap || !root) {
    free(root);
    return HR_ENOMEM;
  }
  for (size_t i = 0; i < n; i++) root[i] = root_of(w, i);
  uint64_t total = budget > w->reserve_bytes ? budget - w->reserve_bytes : 0;
  int rc = 0;
  for (size_t k = 0; k < w->n_seq; k++) {
    const wf_step_t *t = &w->tmpl[w->seq[k]];
    uint64_t *rq = &v->req[k * n];
    for (size_t j = 0; j < t->n_use; j++)
      for (size_t i = 0; i < n; i++)
        if (root[i] == root[t->use[j]]) rq[i] = w->assets[i].bytes;
    uint64_t need = 0;
    for (size_t i = 0; i < n; i++) need += rq[i];
    v->cap[k] = total > t->working ? total - t->working : 0;
    while (need > v->cap[k]) {
      size_t big = n;
      for (size_t i = 0; i < n; i++)
        if (w->assets[i].partial && rq[i] > 0 && (big == n || rq[i] > rq[big])) big = i;
      if (big == n) {
        rc = HR_ENOSPC;
        break;
      }
      uint64_t cut = HR_MIN(rq[big], need - v->cap[k]);
      rq[big] -= cut;
      need -= cut;
    }
  }
  free(root);
  return rc;
}

static void free_view(steps_view_t *v) {
  free(v->req);
  free(v->cap);
}

/* Asset i's resident bytes `held` above what step k requires: the next
 * step after k that requires all of them (T + 1 when none), and in *floor
 * the most any step requires until then (step k's included). */
static size_t next_full_use(const steps_view_t *v, size_t i, size_t k, uint64_t held,
                            uint64_t *floor) {
  size_t n = v->n_assets;
  *floor = v->req[k * n + i];
  for (size_t j = k + 1; j < v->n_steps; j++) {
    uint64_t amt = v->req[j * n + i];
    if (amt >= held) return j;
    *floor = HR_MAX(*floor, amt);
  }
  return v->n_steps + 1;
}

/* Cuts `excess` resident bytes after step k. An asset's resident bytes are
 * a prefix (loads fill it, offloads cut its top), and step j requests the
 * prefix of its required amount. The top segment of asset i, above every
 * amount requested before its next full-height request nu, is next
 * requested at nu: cut the segment with the furthest nu, and repeat. */
static void evict_furthest(const steps_view_t *v, size_t k, uint64_t *res, uint64_t excess) {
  size_t n = v->n_assets;
  const uint64_t *rq = &v->req[k * n];
  while (excess > 0) {
    size_t best = n, best_nu = 0;
    uint64_t best_floor = 0;
    for (size_t i = 0; i < n; i++) {
      if (res[i] <= rq[i]) continue;
      uint64_t floor_b;
      size_t nu = next_full_use(v, i, k, res[i], &floor_b);
      if (best == n || nu > best_nu) best = i, best_nu = nu, best_floor = floor_b;
    }
    HR_ASSERT(best < n);
    if (best == n) break;
    uint64_t cut = HR_MIN(res[best] - best_floor, excess);
    res[best] -= cut;
    excess -= cut;
  }
  HR_ASSERT(excess == 0);
}

/* Furthest-next-use per byte on the relaxed problem. */
static int lower_bound(const hr_workflow_t *w, const steps_view_t *v, uint64_t *bytes) {
  size_t n = v->n_assets;
  uint64_t *res = calloc(n + 1, sizeof *res);
  uint64_t cost = 0;
  if (!res) return HR_ENOMEM;
  for (size_t k = 0; k < v->n_steps; k++) {
    const uint64_t *rq = &v->req[k * n];
    uint64_t used = 0;
    for (size_t i = 0; i < n; i++) {
      if (rq[i] > res[i]) {
        cost += rq[i] - res[i];
        res[i] = rq[i];
      }
      used += res[i];
    }
    if (used > v->cap[k]) evict_furthest(v, k, res, used - v->cap[k]);
  }
  free(res);
  *bytes = cost;
  return 0;
}

/* One step of the search: from every reachable set in dp to the sets that
 * hold step k's required set within its capacity, in nx. Adds the states
 * and subsets looked at to *work. */
static void exact_step(const steps_view_t *v, size_t k, const uint64_t *size, uint64_t pinned,
                       const uint64_t *dp, uint64_t *nx, uint64_t *work) {
  size_t n = v->n_assets, S = (size_t)1 << n;
  uint64_t R = 0;
  for (size_t i = 0; i < n; i++)
    if (v->req[k * n + i]) R |= 1ull << i;
  for (size_t m = 0; m < S; m++) nx[m] = UINT64_MAX;
  for (size_t s = 0; s < S; s++) {
    if (dp[s] == UINT64_MAX) continue;
    uint64_t must = R | (s & pinned);
    if (size[must] > v->cap[k]) continue;
    uint64_t c = dp[s] + size[R & ~(uint64_t)s];
    uint64_t opt = s & ~must;
    /* Every subset of the optional assets, including none. */
    for (uint64_t sub = opt;; sub = (sub - 1) & opt) {
      uint64_t t = must | sub;
      if (size[t] <= v->cap[k] && c < nx[t]) nx[t] = c;
      (*work)++;
      if (sub == 0) break;
    }
  }
}

/* Dynamic programming over resident sets for whole assets. The work (a
 * state looked at, a subset tried) is counted and bounded by
 * HR_OPTIMUM_MAX_WORK: 12 assets are up to 3^12 subsets a step, and a small
 * file can name 10^6 steps. Past the bound, HR_ERANGE: the caller falls
 * back to the lower bound. */
static int exact(const hr_workflow_t *w, const steps_view_t *v, uint64_t *bytes) {
  if (v->n_assets > HR_OPTIMUM_MAX_ASSETS) return HR_ERANGE;
  size_t n = v->n_assets, S = (size_t)1 << n;
  if (v->n_steps > HR_OPTIMUM_MAX_WORK / S) return HR_ERANGE;
  uint64_t work = (uint64_t)v->n_steps * S;
  uint64_t *size = malloc(S * sizeof *size), *dp = malloc(S * sizeof *dp),
           *nx = malloc(S * sizeof *nx);
  uint64_t pinned = 0, best = UINT64_MAX;
  int rc = size && dp && nx ? 0 : HR_ENOMEM;
  for (size_t m = 0; rc == 0 && m < S; m++) {
    /* The bytes of each set, from the set without its lowest asset. */
    size[m] = m ? size[m & (m - 1)] + w->assets[__builtin_ctzll(m)].bytes : 0;
    dp[m] = m ? UINT64_MAX : 0;
  }
  for (size_t i = 0; i < n; i++)
    if (w->assets[i].pinned) pinned |= 1ull << i;
  for (size_t k = 0; rc == 0 && k < v->n_steps; k++) {
    exact_step(v, k, size, pinned, dp, nx, &work);
    if (work > HR_OPTIMUM_MAX_WORK) rc = HR_ERANGE;
    uint64_t *tmp = dp;
    dp = nx, nx = tmp;
  }
  for (size_t m = 0; rc == 0 && m < S; m++) best = HR_MIN(best, dp[m]);
  if (rc == 0 && best == UINT64_MAX) rc = HR_ENOSPC; /* pinned assets left no room */
  if (rc == 0) *bytes = best;
  free(size), free(dp), free(nx);
  return rc;
}

int hr__workflow_bound(const hr_workflow_t *w, uint64_t budget, bool want_exact, uint64_t *bytes) {
  steps_view_t v = {0};
  int rc = build_view(w, budget ? budget : w->budget_bytes, &v);
  if (rc == 0) rc = want_exact ? exact(w, &v, bytes) : lower_bound(w, &v, bytes);
  free_view(&v);
  return rc;
}

int hr_workflow_reference(const hr_workflow_t *w, uint64_t budget_bytes, uint64_t *bytes,
                          bool *exact_out) {
  steps_view_t v = {0};
  int rc;
  if (!w || !bytes || !exact_out) return HR_EINVAL;
  uint64_t budget = budget_bytes ? budget_bytes : w->budget_bytes;
  if (budget == 0) return HR_EINVAL;
  if ((rc = build_view(w, budget, &v)) != 0) goto out;
  bool any_partial = false;
  for (size_t i = 0; i < w->n_assets; i++) any_partial = any_partial || w->assets[i].partial;
  *exact_out = !any_partial && w->n_assets <= HR_OPTIMUM_MAX_ASSETS;
  rc = *exact_out ? exact(w, &v, bytes) : HR_ERANGE;
  if (rc == HR_ERANGE) { /* partial assets, or too much work for the exact search */
    *exact_out = false;
    rc = lower_bound(w, &v, bytes);
  }
out:
  free_view(&v);
  return rc;
}
