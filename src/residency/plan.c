/* Planning and carrying out a require, the estimate, and the reclaimer.
 *
 * A require is planned in full before any callback runs: the set and its
 * groups get their targets (device size, or less for partial assets when
 * the whole set cannot fit), the policy orders the other unpinned assets,
 * and enough of them are marked to be offloaded. If even offloading every
 * candidate cannot make room, nothing has happened yet, so the refusal
 * changes nothing; it says what would fit instead. Otherwise the plan runs:
 * offloads, a wait until the device shows the freed memory (patience), then
 * loads. */
#include "residency/residency_internal.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Messages are cut at the end of their buffer by design. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wformat-truncation"
#endif

const char *hr_action_kind_name(hr_action_kind_t kind) {
  static const char *const names[] = {[HR_ACTION_LOAD] = "load",
                                      [HR_ACTION_LOAD_PARTIAL] = "load-partial",
                                      [HR_ACTION_OFFLOAD] = "offload",
                                      [HR_ACTION_OFFLOAD_PARTIAL] = "offload-partial"};
  return hr__enum_name(names, HR_ARRAY_LEN(names), (int)kind, "?");
}

void hr_plan_free(hr_plan_t *plan) {
  if (!plan) return;
  free(plan->actions);
  memset(plan, 0, sizeof *plan);
}

/* Counts one move of `bytes` in the totals of its direction. */
static void tally(uint64_t *bytes_moved, uint32_t *moves, uint32_t *partial_moves, uint64_t bytes,
                  bool partial) {
  *bytes_moved += bytes;
  (*moves)++;
  *partial_moves += partial;
}

static int plan_push(hr_plan_t *p, hr_action_kind_t kind, hr_asset_id_t id, uint64_t bytes,
                     uint64_t after) {
  if (hr__grow(&p->actions, &p->cap_actions, p->n_actions, sizeof *p->actions, 8)) return HR_ENOMEM;
  p->actions[p->n_actions++] = (hr_action_t){kind, id, bytes, after};
  bool partial = kind == HR_ACTION_LOAD_PARTIAL || kind == HR_ACTION_OFFLOAD_PARTIAL;
  if (kind == HR_ACTION_LOAD || kind == HR_ACTION_LOAD_PARTIAL)
    tally(&p->bytes_loaded, &p->loads, &p->partial_loads, bytes, partial);
  else
    tally(&p->bytes_offloaded, &p->offloads, &p->partial_offloads, bytes, partial);
  return 0;
}

/* "'name' variant" or "'name'" for messages. */
static const char *asset_label(const hr__asset_t *a, char *buf, size_t n) {
  if (a->variant[0])
    snprintf(buf, n, "'%s' %s", a->name, a->variant);
  else
    snprintf(buf, n, "'%s'", a->name);
  return buf;
}

/* Marks the set and its groups (req, target = device size) and resets the
 * scratch of every other asset. HR_ENOENT with a message for an unknown id. */
static int mark_required_locked(hr_residency_t *r, const hr_asset_id_t *ids, size_t n,
                                hr_plan_t *p) {
  for (size_t i = 0; i < r->n; i++) {
    r->a[i].req = false;
    r->a[i].target = r->a[i].resident;
    r->a[i].evict = 0;
  }
  for (size_t k = 0; k < n; k++) {
    if (!hr__asset_get_locked(r, ids[k])) {
      snprintf(p->message, sizeof p->message, "unknown asset id %u", (unsigned)ids[k]);
      return HR_ENOENT;
    }
    hr_asset_id_t root = hr__group_root_locked(r, ids[k]);
    for (size_t i = 0; i < r->n; i++) {
      if (!r->a[i].live || r->a[i].req) continue;
      if (hr__group_root_locked(r, (hr_asset_id_t)(i + 1)) != root) continue;
      r->a[i].req = true;
      r->a[i].target = r->a[i].device_bytes;
    }
  }
  return 0;
}

/* Totals of one plan: what must stay (the set at its targets, pinned
 * others, working memory) and what could go. */
typedef struct totals {
  uint64_t cap, fixed, evictable, partial_room;
} totals_t;

static void totals_locked(hr_residency_t *r, uint64_t working, totals_t *t) {
  t->fixed = working;
  t->evictable = t->partial_room = 0;
  for (size_t i = 0; i < r->n; i++) {
    hr__asset_t *a = &r->a[i];
    if (!a->live) continue;
    if (a->req) {
      t->fixed += a->target;
      if (a->partial) t->partial_room += a->target;
    } else if (a->pinned || a->busy) {
      t->fixed += a->resident;
    } else {
      t->evictable += a->resident;
    }
  }
}

static void add_suggestion(hr_plan_t *p, hr_suggestion_kind_t kind, hr_asset_id_t id,
                           hr_asset_id_t alt, uint64_t bytes, const char *fmt, ...) HR_PRINTF(6, 7);
static void add_suggestion(hr_plan_t *p, hr_suggestion_kind_t kind, hr_asset_id_t id,
                           hr_asset_id_t alt, uint64_t bytes, const char *fmt, ...) {
  if (p->n_suggestions == HR_PLAN_MAX_SUGGESTIONS) return;
  hr_suggestion_t *s = &p->suggestions[p->n_suggestions++];
  s->kind = kind;
  s->id = id;
  s->alt = alt;
  s->bytes = bytes;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(s->text, sizeof s->text, fmt, ap);
  va_end(ap);
}

/* Suggestions for one required asset that is not partial: a smaller variant
 * that fits, a partial load, or the CPU. `s` is what is missing once every
 * partial asset of the set is as small as it can be. */
static void suggest_for_asset_locked(hr_residency_t *r, hr__asset_t *a, uint64_t s,
                                     uint64_t partial_room, hr_plan_t *p) {
  char la[200], lb[200], n1[32], n2[32], n3[32];
  hr_asset_id_t id = (hr_asset_id_t)(a - r->a + 1);
  hr__asset_t *best = NULL;
  for (size_t i = 0; i < r->n; i++) {
    hr__asset_t *b = &r->a[i];
    if (!b->live || b == a || strcmp(b->name, a->name) != 0) continue;
    /* Swapping a for b frees a's bytes and needs b's; a pinned b already
     * counted as staying. */
    uint64_t held = ((b->pinned || b->busy) && !b->req) ? b->resident : 0;
    if (b->device_bytes - held + s <= a->device_bytes &&
        (!best || b->device_bytes > best->device_bytes))
      best = b;
  }
  (void)partial_room;
  if (best) {
    uint64_t spare = a->device_bytes - best->device_bytes - s;
    add_suggestion(p, HR_SUGGEST_VARIANT, id, (hr_asset_id_t)(best - r->a + 1), best->device_bytes,
                   "use %s (%s) instead of %s (%s): it fits with %s to spare",
                   asset_label(best, lb, sizeof lb),
                   hr__size_text(n1, sizeof n1, best->device_bytes), asset_label(a, la, sizeof la),
                   hr__size_text(n2, sizeof n2, a->device_bytes),
                   hr__size_text(n3, sizeof n3, spare));
  }
  if (a->device_bytes > s) {
    uint64_t on = a->device_bytes - s;
    add_suggestion(p, HR_SUGGEST_PARTIAL, id, HR_ASSET_NONE, on,
                   "load %s partially: %s of its %s on the device, %s from host memory",
                   asset_label(a, la, sizeof la), hr__size_text(n1, sizeof n1, on),
                   hr__size_text(n2, sizeof n2, a->device_bytes), hr__size_text(n3, sizeof n3, s));
  }
  if (a->device_bytes >= s) {
    add_suggestion(p, HR_SUGGEST_CPU, id, HR_ASSET_NONE, a->device_bytes,
                   "run %s on the CPU: frees %s of device memory, %s missing",
                   asset_label(a, la, sizeof la), hr__size_text(n1, sizeof n1, a->device_bytes),
                   hr__size_text(n2, sizeof n2, s));
  }
}

/* Fills the refusal: the message and the suggestions. Changes no asset. */
static void refuse_locked(hr_residency_t *r, uint64_t working, const totals_t *t, hr_plan_t *p) {
  char n1[32], n2[32], n3[32], n4[32], n5[32], label[200];
  uint64_t short_full = t->fixed - t->cap;
  /* What is missing even with every partial asset of the set at zero. */
  uint64_t s = short_full - t->partial_room;
  size_t members = 0;
  hr__asset_t *first = NULL;
  for (size_t i = 0; i < r->n; i++) {
    if (!r->a[i].live || !r->a[i].req) continue;
    if (!first) first = &r->a[i];
    members++;
  }
  p->short_bytes = s;
  snprintf(p->message, sizeof p->message,
           "cannot make room for %s%s with %s of working memory: it needs %s, the budget is %s "
           "after the reserve, %s short even after offloading every unpinned asset (%s)%s",
           first ? asset_label(first, label, sizeof label) : "nothing",
           members > 1 ? " and its group" : "", hr__size_text(n1, sizeof n1, working),
           hr__size_text(n2, sizeof n2, t->fixed), hr__size_text(n3, sizeof n3, t->cap),
           hr__size_text(n4, sizeof n4, s), hr__size_text(n5, sizeof n5, t->evictable),
           t->partial_room ? " and loading its partial assets in part" : "");
  for (size_t i = 0; i < r->n; i++) {
    hr__asset_t *a = &r->a[i];
    if (a->live && a->req && !a->partial) suggest_for_asset_locked(r, a, s, t->partial_room, p);
  }
  if (working >= s) {
    add_suggestion(p, HR_SUGGEST_WORKING, HR_ASSET_NONE, HR_ASSET_NONE, working - s,
                   "lower working memory from %s to %s (smaller batch or resolution)",
                   hr__size_text(n1, sizeof n1, working),
                   hr__size_text(n2, sizeof n2, working - s));
  }
  for (size_t i = 0; i < r->n; i++) {
    hr__asset_t *a = &r->a[i];
    if (!a->live || a->req || !a->pinned || a->busy || a->resident == 0) continue;
    add_suggestion(p, HR_SUGGEST_UNPIN, (hr_asset_id_t)(i + 1), HR_ASSET_NONE, a->resident,
                   "unpin %s: offloading it frees %s of the %s missing",
                   asset_label(a, label, sizeof label), hr__size_text(n1, sizeof n1, a->resident),
                   hr__size_text(n2, sizeof n2, s));
  }
}

/* Lowers the targets of the set's partial assets, largest first, until the
 * set fits with every candidate offloaded. Returns false when it cannot. */
static bool shrink_partial_locked(hr_residency_t *r, totals_t *t) {
  uint64_t excess = t->fixed - t->cap;
  if (excess > t->partial_room) return false;
  while (excess > 0) {
    hr__asset_t *big = NULL;
    for (size_t i = 0; i < r->n; i++) {
      hr__asset_t *a = &r->a[i];
      if (a->live && a->req && a->partial && a->target > 0 && (!big || a->target > big->target))
        big = a;
    }
    HR_ASSERT(big);
    if (!big) return false;
    uint64_t cut = HR_MIN(big->target, excess);
    big->target -= cut;
    excess -= cut;
    t->fixed -= cut;
    t->partial_room -= cut;
  }
  return true;
}

/* Furthest-next-use with whole assets can offload a large asset to win a
 * few bytes, and reload all of it soon after. Compares what the marked
 * victims will cost to reload (bytes of assets used again) with the best
 * single fit: every asset never used again, then the one asset that covers
 * the rest at the least reload cost (the later used on a tie). Keeps the
 * cheaper of the two. idx[0..n) holds the candidates. */
static void best_fit_locked(hr_residency_t *r, const size_t *idx, size_t n, uint64_t deficit) {
  uint64_t cost_marked = 0, free_bytes = 0;
  for (size_t k = 0; k < n; k++) {
    const hr__asset_t *a = &r->a[idx[k]];
    if (a->next_use == UINT64_MAX)
      free_bytes += a->resident;
    else
      cost_marked += a->evict;
  }
  if (free_bytes >= deficit || cost_marked == 0) return;
  uint64_t rest = deficit - free_bytes, best_cost = UINT64_MAX;
  const hr__asset_t *best = NULL;
  for (size_t k = 0; k < n; k++) {
    const hr__asset_t *a = &r->a[idx[k]];
    if (a->next_use == UINT64_MAX || a->resident < rest) continue;
    uint64_t cost = a->partial ? rest : a->resident;
    if (cost < best_cost || (cost == best_cost && a->next_use > best->next_use))
      best = a, best_cost = cost;
  }
  if (!best || best_cost >= cost_marked) return;
  for (size_t k = 0; k < n; k++) {
    hr__asset_t *a = &r->a[idx[k]];
    a->evict = a->next_use == UINT64_MAX ? a->resident : 0;
  }
  r->a[best - r->a].evict = best_cost;
}

/* Marks victims (evict > 0) to free `deficit` bytes under `policy`. */
static int choose_victims_locked(hr_residency_t *r, hr_policy_t policy, uint64_t deficit,
                                 bool skip_active, const hr_lookahead_t *la, uint64_t working,
                                 uint64_t cap) {
  size_t *idx = malloc((r->n ? r->n : 1) * sizeof *idx), n = 0;
  if (!idx) return HR_ENOMEM;
  for (size_t i = 0; i < r->n; i++) {
    hr__asset_t *a = &r->a[i];
    a->evict = 0;
    bool busy = skip_active ? a->active || (r->in_require && a->req) : a->req;
    if (a->live && !busy && !a->pinned && !a->busy && a->resident > 0) idx[n++] = i;
  }
  hr__policy_order_locked(r, policy, idx, n);
  uint64_t left = deficit, freed = 0;
  size_t chosen = 0;
  for (; chosen < n && left > 0; chosen++) {
    hr__asset_t *a = &r->a[idx[chosen]];
    a->evict = (hr__policy_partial(policy) && a->partial) ? HR_MIN(a->resident, left) : a->resident;
    freed += a->evict;
    left -= HR_MIN(a->evict, left);
  }
  /* Furthest-next-use picks in order and may take a large asset and then the
   * small one that alone would have been enough: give back whole victims
   * that are not needed, soonest-used first, since those cost a reload soonest. */
  if (policy == HR_POLICY_LOOKAHEAD) {
    for (size_t k = chosen; k-- > 0;) {
      hr__asset_t *a = &r->a[idx[k]];
      if (freed - a->evict >= deficit) {
        freed -= a->evict;
        a->evict = 0;
      }
    }
    best_fit_locked(r, idx, n, deficit);
    if (la) hr__rollout_locked(r, la, idx, n, deficit, working, cap);
  }
  free(idx);
  return 0;
}

static void sleep_s(double s) {
  struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
  nanosleep(&ts, NULL);
}

/* Waits until the device shows `needed` bytes available beyond the reserve.
 * HR_ETIMEDOUT after the patience, with a message naming what was offloaded. */
static int wait_for_room_locked(hr_residency_t *r, uint64_t needed, hr_plan_t *p) {
  double t0 = hr__now_mono(), now = t0;
  uint64_t avail = 0;
  int rc;
  for (;;) {
    if ((rc = hr__device_available(r, &avail)) != 0) return rc;
    now = hr__now_mono();
    if (avail >= needed + r->o.reserve_bytes) break;
    if (now - t0 >= r->o.patience_s) {
      char names[300] = "", label[200], n1[32], n2[32], n3[32];
      size_t len = 0, count = 0;
      for (size_t k = 0; k < p->n_actions; k++) {
        const hr_action_t *act = &p->actions[k];
        if (act->kind != HR_ACTION_OFFLOAD && act->kind != HR_ACTION_OFFLOAD_PARTIAL) continue;
        asset_label(&r->a[act->id - 1], label, sizeof label);
        if (len < sizeof names)
          len += (size_t)snprintf(names + len, sizeof names - len, "%s%s (%s)", count ? ", " : "",
                                  label, hr__size_text(n1, sizeof n1, act->bytes));
        count++;
      }
      p->waited_s = now - t0;
      snprintf(p->message, sizeof p->message,
               "after offloading %s the device shows %s available, %s needed with the %s "
               "reserve, after %.1f s: %s did not give %s memory back",
               names, hr__size_text(n1, sizeof n1, avail),
               hr__size_text(n2, sizeof n2, needed + r->o.reserve_bytes),
               hr__size_text(n3, sizeof n3, r->o.reserve_bytes), p->waited_s, names,
               count > 1 ? "their" : "its");
      r->st.timeouts++;
      return HR_ETIMEDOUT;
    }
    sleep_s(r->o.poll_interval_s);
  }
  p->waited_s = now - t0;
  return 0;
}

/* Offloads `bytes` of slot a; records the action. */
static int offload_locked(hr_residency_t *r, hr__asset_t *a, uint64_t bytes, hr_plan_t *p) {
  char label[200];
  hr_asset_id_t id = (hr_asset_id_t)(a - r->a + 1);
  uint64_t freed = 0;
  int rc = a->offload(id, bytes, &freed, a->arg);
  freed = HR_MIN(freed, a->resident);
  a->resident -= freed;
  r->st.bytes_offloaded += freed;
  r->st.offloads += freed > 0;
  if (freed > 0) {
    int prc = plan_push(p, a->resident ? HR_ACTION_OFFLOAD_PARTIAL : HR_ACTION_OFFLOAD, id, freed,
                        a->resident);
    if (prc && !rc) rc = prc;
  }
  if (rc)
    snprintf(p->message, sizeof p->message, "offloading %s failed: %s",
             asset_label(a, label, sizeof label), hr_strerror(rc));
  return rc;
}

static int load_locked(hr_residency_t *r, hr__asset_t *a, hr_plan_t *p) {
  char label[200];
  hr_asset_id_t id = (hr_asset_id_t)(a - r->a + 1);
  uint64_t before = a->resident, loaded = 0;
  int rc = a->load(id, a->target, &loaded, a->arg);
  a->resident = HR_MIN(loaded, a->device_bytes);
  if (a->resident > before) {
    uint64_t moved = a->resident - before;
    r->st.bytes_loaded += moved;
    r->st.loads++;
    a->loaded_at = ++r->clock;
    int prc = plan_push(p, a->resident < a->device_bytes ? HR_ACTION_LOAD_PARTIAL : HR_ACTION_LOAD,
                        id, moved, a->resident);
    if (prc && !rc) rc = prc;
  }
  if (rc)
    snprintf(p->message, sizeof p->message, "loading %s failed: %s",
             asset_label(a, label, sizeof label), hr_strerror(rc));
  return rc;
}

/* Runs a plan whose victims and targets are marked. */
static int execute_locked(hr_residency_t *r, uint64_t working, hr_plan_t *p) {
  int rc = 0;
  uint64_t to_load = 0;
  for (size_t i = 0; i < r->n; i++) {
    hr__asset_t *a = &r->a[i];
    if (!a->live) continue;
    uint64_t ev = a->evict;
    a->evict = 0;
    if (ev > 0 && (rc = offload_locked(r, a, ev, p)) != 0) return rc;
    if (a->req && a->target < a->resident &&
        (rc = offload_locked(r, a, a->resident - a->target, p)) != 0)
      return rc;
    if (a->req && a->target > a->resident) to_load += a->target - a->resident;
  }
  if (!r->o.budget_bytes && p->n_actions > 0 && r->o.patience_s >= 0 &&
      (rc = wait_for_room_locked(r, to_load + working, p)) != 0)
    return rc;
  for (size_t i = 0; i < r->n; i++) {
    hr__asset_t *a = &r->a[i];
    if (a->live && a->req && a->target > a->resident && (rc = load_locked(r, a, p)) != 0) return rc;
  }
  return 0;
}

/* Marks the assets of this require active, and counts a use of each when
 * it succeeded (rc 0); with `busy`, marks them busy too. */
static void note_uses_locked(hr_residency_t *r, int rc, bool busy) {
  uint64_t now = ++r->clock;
  for (size_t i = 0; i < r->n; i++) {
    hr__asset_t *a = &r->a[i];
    /* req marks the set and its groups (mark_required_locked). */
    a->active = a->live && a->req;
    if (a->active && rc == 0) {
      a->uses++;
      a->last_use = now;
      if (busy) a->busy = true;
    }
  }
}

/* Decides what must move for the marked assets and the working bytes to
 * fit, and moves it. HR_ENOSPC, with suggestions in p, when they cannot. */
static int require_locked(hr_residency_t *r, const hr_asset_id_t *ids, size_t n,
                          uint64_t working_bytes, const hr_lookahead_t *la, hr_plan_t *p,
                          bool busy) {
  totals_t t;
  int rc = hr__capacity_locked(r, &t.cap);
  if (rc) {
    snprintf(p->message, sizeof p->message, "cannot read the device's free memory: %s",
             hr_strerror(rc));
    return rc;
  }
  p->capacity_bytes = t.cap;
  totals_locked(r, working_bytes, &t);
  if (t.fixed > t.cap && !shrink_partial_locked(r, &t)) {
    /* Shrinking touched only targets: put them back for the suggestions. */
    mark_required_locked(r, ids, n, p);
    totals_locked(r, working_bytes, &t);
    refuse_locked(r, working_bytes, &t, p);
    r->st.refusals++;
    return HR_ENOSPC;
  }
  if (t.fixed + t.evictable > t.cap) {
    if (p->policy == HR_POLICY_LOOKAHEAD) hr__policy_next_use_locked(r, la);
    if ((rc = choose_victims_locked(r, p->policy, t.fixed + t.evictable - t.cap, false, la,
                                    working_bytes, t.cap)) != 0)
      return rc;
  }
  r->in_require++;
  rc = execute_locked(r, working_bytes, p);
  r->in_require--;
  note_uses_locked(r, rc, busy);
  p->used_bytes = hr__resident_total_locked(r) + working_bytes;
  return rc;
}

/* hr_residency_require, and with `busy` the set's groups marked busy on
 * success, in the same hold of the lock. */
static int require(hr_residency_t *r, const hr_asset_id_t *ids, size_t n, uint64_t working_bytes,
                   const hr_lookahead_t *la, hr_plan_t *plan, bool busy) {
  hr_plan_t local = {0};
  hr_plan_t *p = plan ? plan : &local;
  /* A plan holds the previous result or zeroes: reusing one is fine. */
  hr_plan_free(p);
  if (!r || (!ids && n)) return HR_EINVAL;
  pthread_mutex_lock(&r->mu);
  p->policy = hr__policy_resolve(r->o.policy, la);
  int rc = mark_required_locked(r, ids, n, p);
  if (rc == 0) rc = require_locked(r, ids, n, working_bytes, la, p, busy);
  pthread_mutex_unlock(&r->mu);
  if (p == &local) hr_plan_free(&local);
  return rc;
}

int hr_residency_require(hr_residency_t *r, const hr_asset_id_t *ids, size_t n,
                         uint64_t working_bytes, const hr_lookahead_t *la, hr_plan_t *plan) {
  return require(r, ids, n, working_bytes, la, plan, false);
}

int hr_residency_use(hr_residency_t *r, const hr_asset_id_t *ids, size_t n, uint64_t working_bytes,
                     const hr_lookahead_t *la, hr_plan_t *plan) {
  return require(r, ids, n, working_bytes, la, plan, true);
}

int hr_residency_estimate(hr_residency_t *r, const hr_asset_id_t *ids, size_t n,
                          uint64_t working_bytes, uint64_t *need, uint64_t *can_free) {
  hr_plan_t p;
  int rc;
  if (!r || (!ids && n) || !need || !can_free) return HR_EINVAL;
  memset(&p, 0, sizeof p);
  pthread_mutex_lock(&r->mu);
  if ((rc = mark_required_locked(r, ids, n, &p)) != 0) goto out;
  uint64_t cap, load = 0, movable = 0;
  if ((rc = hr__capacity_locked(r, &cap)) != 0) goto out;
  for (size_t i = 0; i < r->n; i++) {
    hr__asset_t *a = &r->a[i];
    if (!a->live) continue;
    if (a->req)
      load += a->device_bytes - a->resident;
    else if (!a->pinned && !a->busy)
      movable += a->resident;
  }
  uint64_t used = hr__resident_total_locked(r);
  *need = load + working_bytes;
  *can_free = (cap > used ? cap - used : 0) + movable;
out:
  pthread_mutex_unlock(&r->mu);
  return rc;
}

int hr_asset_offload(hr_residency_t *r, hr_asset_id_t id, uint64_t bytes, uint64_t *freed) {
  hr_plan_t p;
  int rc = 0;
  if (freed) *freed = 0;
  if (!r) return HR_EINVAL;
  memset(&p, 0, sizeof p);
  pthread_mutex_lock(&r->mu);
  hr__asset_t *a = hr__asset_get_locked(r, id);
  if (!a) {
    rc = HR_ENOENT;
    goto out;
  }
  if (a->busy) {
    rc = HR_EBUSY;
    goto out;
  }
  uint64_t before = a->resident;
  if (before > 0) rc = offload_locked(r, a, HR_MIN(bytes, before), &p);
  a->active = false;
  if (freed) *freed = before - a->resident;
out:
  pthread_mutex_unlock(&r->mu);
  hr_plan_free(&p);
  return rc;
}

int hr_residency_reclaim(hr_pool_t *pool, uint64_t needed, uint64_t *freed, void *arg) {
  hr_residency_t *r = arg;
  hr_plan_t p;
  int rc = 0;
  (void)pool;
  if (!r || !freed) return HR_EINVAL;
  *freed = 0;
  memset(&p, 0, sizeof p);
  pthread_mutex_lock(&r->mu);
  /* Without upcoming uses, furthest-next-use has nothing to go by. */
  hr_policy_t policy = hr__policy_resolve(r->o.policy, NULL);
  if (policy == HR_POLICY_LOOKAHEAD) policy = HR_POLICY_LRU;
  /* The set of a require under way (req) and of the last one (active) are in
   * use by the computation that is allocating: only idle assets go. */
  if ((rc = choose_victims_locked(r, policy, needed, true, NULL, 0, 0)) != 0) goto out;
  for (size_t i = 0; i < r->n; i++) {
    hr__asset_t *a = &r->a[i];
    if (!a->live || a->evict == 0) continue;
    uint64_t before = a->resident, ev = a->evict;
    a->evict = 0;
    rc = offload_locked(r, a, ev, &p);
    *freed += before - a->resident;
    if (rc) break;
  }
  r->st.reclaims++;
  if (rc == 0 && *freed == 0) rc = HR_ENOSPC;
  if (*freed)
    hr__log(HR_LOG_INFO, "residency: reclaimed %llu bytes for the pool",
            (unsigned long long)*freed);
out:
  pthread_mutex_unlock(&r->mu);
  hr_plan_free(&p);
  return rc;
}
