/* Rollout for the lookahead policy. Furthest-next-use is optimal when any
 * byte may move alone, but whole assets of different sizes break it: taking
 * the furthest asset can cost a large reload to win a few bytes. When there
 * are few candidates, every minimal set of victims (none of which could be
 * kept) is played out over the next steps of the lookahead, each step
 * loading what it needs and making room by furthest-next-use, and the set
 * whose future moves the fewest bytes wins. The set the base heuristic
 * chose is played out too and kept on a tie, so the rollout never does worse
 * than it over the window it sees. */
#include "residency/residency_internal.h"

#include <stdlib.h>
#include <string.h>

#define RO_MAX_CANDIDATES 12

typedef struct ro {
  hr_residency_t *r;
  size_t n;       /* slots */
  size_t steps;   /* future steps seen */
  bool *need;     /* steps x n */
  uint64_t *work; /* per step */
  uint64_t cap;
  uint64_t *res;  /* scratch: resident bytes per slot */
  size_t *order;  /* scratch: eviction order */
  uint64_t *next; /* scratch: next use per slot */
} ro_t;

static void ro_free(ro_t *o) {
  free(o->need), free(o->work), free(o->res), free(o->order), free(o->next);
}

static int ro_build(ro_t *o, hr_residency_t *r, const hr_lookahead_t *la, uint64_t working,
                    uint64_t cap) {
  size_t n = r->n, steps = 0;
  memset(o, 0, sizeof *o);
  o->r = r, o->n = n, o->cap = cap;
  for (size_t e = 0; e < la->n && steps < HR_LOOKAHEAD_ROLLOUT; e++)
    if (e == 0 || (la->steps ? la->steps[e] != la->steps[e - 1] : true)) steps++;
  o->need = calloc(steps * n + 1, sizeof *o->need);
  o->work = calloc(steps + 1, sizeof *o->work);
  o->res = calloc(n + 1, sizeof *o->res);
  o->order = calloc(n + 1, sizeof *o->order);
  o->next = calloc(n + 1, sizeof *o->next);
  hr_asset_id_t *root = calloc(n + 1, sizeof *root);
  if (!o->need || !o->work || !o->res || !o->order || !o->next || !root) {
    free(root);
    ro_free(o);
    return HR_ENOMEM;
  }
  for (size_t i = 0; i < n; i++)
    root[i] = r->a[i].live ? hr__group_root_locked(r, (hr_asset_id_t)(i + 1)) : HR_ASSET_NONE;
  size_t s = 0;
  for (size_t e = 0; e < la->n; e++) {
    if (e > 0 && (la->steps ? la->steps[e] != la->steps[e - 1] : true)) s++;
    if (s >= steps) break;
    o->work[s] = la->working ? la->working[e] : working;
    if (!hr__asset_get_locked(r, la->ids[e])) continue;
    hr_asset_id_t g = hr__group_root_locked(r, la->ids[e]);
    for (size_t i = 0; i < n; i++)
      if (root[i] == g) o->need[s * n + i] = true;
  }
  o->steps = steps;
  free(root);
  return 0;
}

/* Bytes loaded over the window starting from resident bytes `start`. */
/* The assets that may leave after step s (resident, not needed by it, not
 * pinned) in o->order: furthest next use first, the larger first on a
 * tie. Returns how many. */
static size_t ro_candidates(ro_t *o, size_t s) {
  hr__asset_t *a = o->r->a;
  size_t n = o->n, m = 0;
  const bool *nd = &o->need[s * n];
  for (size_t i = 0; i < n; i++) {
    if (nd[i] || a[i].pinned || o->res[i] == 0) continue;
    o->next[i] = UINT64_MAX;
    for (size_t j = s + 1; j < o->steps; j++)
      if (o->need[j * n + i]) {
        o->next[i] = j;
        break;
      }
    size_t p = m++;
    while (p > 0 &&
           (o->next[o->order[p - 1]] < o->next[i] ||
            (o->next[o->order[p - 1]] == o->next[i] && o->res[o->order[p - 1]] < o->res[i])))
      o->order[p] = o->order[p - 1], p--;
    o->order[p] = i;
  }
  return m;
}

/* Cuts `over` bytes from the first of the m candidates (partial ones only
 * as far as needed), then puts back every cut the others make unneeded. */
static void ro_evict(ro_t *o, size_t m, uint64_t over) {
  hr__asset_t *a = o->r->a;
  uint64_t left = over, freed = 0;
  size_t chosen = 0;
  uint64_t cut[RO_MAX_CANDIDATES * 8];
  for (; chosen < m && left > 0 && chosen < HR_ARRAY_LEN(cut); chosen++) {
    size_t i = o->order[chosen];
    cut[chosen] = a[i].partial ? HR_MIN(o->res[i], left) : o->res[i];
    freed += cut[chosen];
    left -= HR_MIN(cut[chosen], left);
  }
  for (size_t k = chosen; k-- > 0;) {
    if (freed - cut[k] >= over) {
      freed -= cut[k];
      cut[k] = 0;
    }
  }
  for (size_t k = 0; k < chosen; k++) o->res[o->order[k]] -= cut[k];
}

static uint64_t ro_play(ro_t *o, const uint64_t *start) {
  hr__asset_t *a = o->r->a;
  size_t n = o->n;
  uint64_t cost = 0;
  memcpy(o->res, start, n * sizeof *o->res);
  for (size_t s = 0; s < o->steps; s++) {
    const bool *nd = &o->need[s * n];
    uint64_t used = o->work[s];
    for (size_t i = 0; i < n; i++) {
      if (nd[i] && o->res[i] < a[i].device_bytes) {
        cost += a[i].device_bytes - o->res[i];
        o->res[i] = a[i].device_bytes;
      }
      used += o->res[i];
    }
    if (used > o->cap) ro_evict(o, ro_candidates(o, s), used - o->cap);
  }
  return cost;
}

/* The resident bytes right after this require if the victims in `mask`
 * (bits over idx) go: whole ones entirely, partial ones as far as needed in
 * policy order. Without a mask, the marked evict amounts. */
static void start_state(hr_residency_t *r, const size_t *idx, size_t k, uint64_t mask,
                        bool use_mask, uint64_t deficit, uint64_t *out) {
  for (size_t i = 0; i < r->n; i++) {
    hr__asset_t *a = &r->a[i];
    out[i] = !a->live ? 0 : a->req ? a->target : a->resident - (use_mask ? 0 : a->evict);
  }
  if (!use_mask) return;
  uint64_t whole = 0;
  for (size_t j = 0; j < k; j++) {
    hr__asset_t *a = &r->a[idx[j]];
    if ((mask >> j & 1) && !a->partial) whole += a->resident, out[idx[j]] = 0;
  }
  uint64_t left = deficit > whole ? deficit - whole : 0;
  for (size_t j = 0; j < k; j++) {
    hr__asset_t *a = &r->a[idx[j]];
    if (!(mask >> j & 1) || !a->partial) continue;
    uint64_t c = HR_MIN(a->resident, left);
    out[idx[j]] -= c;
    left -= c;
  }
}

void hr__rollout_locked(hr_residency_t *r, const hr_lookahead_t *la, const size_t *idx, size_t k,
                        uint64_t deficit, uint64_t working, uint64_t cap) {
  ro_t o;
  if (k == 0 || k > RO_MAX_CANDIDATES || !la || la->n == 0) return;
  uint64_t *start = calloc(r->n + 1, sizeof *start);
  if (!start) return;
  if (ro_build(&o, r, la, working, cap) != 0) {
    free(start);
    return;
  }
  start_state(r, idx, k, 0, false, deficit, start);
  uint64_t best = ro_play(&o, start), best_mask = 0;
  for (uint64_t mask = 1; mask < (1ull << k); mask++) {
    uint64_t sum = 0;
    for (size_t j = 0; j < k; j++)
      if (mask >> j & 1) sum += r->a[idx[j]].resident;
    if (sum < deficit) continue;
    bool minimal = true;
    for (size_t j = 0; j < k && minimal; j++)
      if ((mask >> j & 1) && sum - r->a[idx[j]].resident >= deficit) minimal = false;
    if (!minimal) continue;
    start_state(r, idx, k, mask, true, deficit, start);
    uint64_t cost = ro_play(&o, start);
    if (cost < best) best = cost, best_mask = mask;
  }
  if (best_mask) {
    start_state(r, idx, k, best_mask, true, deficit, start);
    for (size_t j = 0; j < k; j++) {
      hr__asset_t *a = &r->a[idx[j]];
      a->evict = a->resident - start[idx[j]];
    }
  }
  ro_free(&o);
  free(start);
}
