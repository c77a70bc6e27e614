/* The planner: whom to ask for what, as a pure function of what it is
 * handed (broker_int.h: hr__plan). The engine builds the candidates from
 * its state (each client's offer, busy or idle, its priority and user, what
 * was asked already, what is in flight; each adapter) and hands the asks
 * the planner returns to the actor. No I/O and no clock here, so the rules
 * are tested on plain arrays:
 *
 * - idle before busy: a client or adapter that says it is at work (ComfyUI
 *   mid prompt), or whose last answer was none or 0, is asked only when the
 *   idle ones do not cover the need;
 * - within each, known sizes before unknown ones, caches (free to give
 *   back) before models, lower priority first, least recently used first;
 * - never a client above the asker's priority, nor another user's (unless
 *   the asker is root); pressure may ask anyone, but never something that
 *   sleeps (nothing would wake it);
 * - each client once, for its share of what is still needed, so no more
 *   than the need plus the rest of the one item that crosses the line is
 *   given back; an unknown size covers what is left;
 * - a reservation that everything allowed could not satisfy disturbs nobody. */
#include "broker/broker_int.h"

#include <stdlib.h>

static int cand_cmp(const void *x, const void *y) {
  const hr__pcand_t *a = x, *b = y;
  if (a->busy != b->busy) return a->busy ? 1 : -1;
  if (a->unknown != b->unknown) return a->unknown ? 1 : -1;
  if (a->cache != b->cache) return a->cache ? -1 : 1;
  if (a->priority != b->priority) return a->priority < b->priority ? -1 : 1;
  if (a->idle_s != b->idle_s) return a->idle_s > b->idle_s ? -1 : 1;
  if (a->bytes != b->bytes) return a->bytes > b->bytes ? -1 : 1;
  if (a->adapter != b->adapter) return a->adapter ? 1 : -1;
  return a->who < b->who ? -1 : a->who > b->who;
}

static bool allowed(const hr__pcand_t *c, const hr__pwant_t *w) {
  if (c->asked || c->pending || (!c->unknown && c->bytes == 0)) return false;
  if (w->caches_only && !c->cache) return false;
  if (w->pressure) return !c->sleeps;
  if (c->priority > w->priority) return false;
  return w->uid == 0 || c->uid == w->uid;
}

size_t hr__plan(hr__pcand_t *c, size_t n, const hr__pwant_t *w, hr__pask_t *out, size_t max,
                bool *short_all) {
  size_t k = 0;
  *short_all = false;
  for (size_t i = 0; i < n; i++)
    if (allowed(&c[i], w)) c[k++] = c[i];
  n = k;
  qsort(c, n, sizeof *c, cand_cmp);
  uint64_t all = 0;
  bool unknown = false;
  for (size_t i = 0; i < n; i++) all += c[i].bytes, unknown |= c[i].unknown;
  if (!unknown && all < w->need) {
    *short_all = true;
    if (!w->pressure) return 0; /* pressure takes what relief there is */
  }
  /* Each chosen item gives its share of what is left; a client's shares are
   * summed into one ask, placed where its first item stands. */
  uint64_t left = w->need;
  size_t asks = 0;
  for (size_t i = 0; i < n && left > 0; i++) {
    uint64_t take = c[i].unknown ? left : HR_MIN(c[i].bytes, left);
    left -= take;
    size_t a = 0;
    while (a < asks && !(out[a].who == c[i].who && out[a].adapter == c[i].adapter)) a++;
    if (a == asks) {
      if (asks == max) break;
      out[asks++] = (hr__pask_t){.who = c[i].who, .adapter = c[i].adapter, .unknown = false};
    }
    out[a].bytes += take;
    out[a].unknown |= c[i].unknown;
  }
  return asks;
}
