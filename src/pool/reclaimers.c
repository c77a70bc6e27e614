/* The pool's reclaimers: callbacks an allocation that would fail asks to free
 * memory (the residency registry offloads models there), added and taken
 * back at any time.
 *
 * A reclaimer runs without the pool lock (it frees through hr_pool_free), so
 * taking one back has to wait for a call of it that is under way on another
 * thread: until then its argument may still be in use. Each entry counts the
 * calls under way (busy); hr_pool_remove_reclaimer() marks the entry dead,
 * so no new call starts, waits on the pool's condition variable until busy
 * is 0, and only then takes the entry out. An allocation walks the live
 * entries by id, which grow in the order they were added: entries may be
 * added or taken out while it runs without it calling one twice or missing
 * one it should call. */
#include "pool/pool_internal.h"

#include <string.h>

/* The id of the reclaimer this thread is calling (0: none), so that a
 * reclaimer that takes itself back does not wait for its own call. */
static _Thread_local uint64_t calling;

static hr__reclaimer_t *find_id_locked(hr_pool_t *p, uint64_t id) {
  for (size_t i = 0; i < p->nreclaimers; i++)
    if (p->reclaimers[i].id == id) return &p->reclaimers[i];
  return NULL;
}

int hr_pool_add_reclaimer(hr_pool_t *p, hr_reclaim_fn fn, void *arg) {
  if (!p || !fn) return HR_EINVAL;
  int rc = 0;
  pthread_mutex_lock(&p->lock);
  if (p->nreclaimers == HR_ARRAY_LEN(p->reclaimers))
    rc = HR_ENOSPC;
  else
    p->reclaimers[p->nreclaimers++] =
        (hr__reclaimer_t){.fn = fn, .arg = arg, .id = ++p->reclaimer_ids, .live = true};
  pthread_mutex_unlock(&p->lock);
  return rc;
}

int hr_pool_remove_reclaimer(hr_pool_t *p, hr_reclaim_fn fn, void *arg) {
  if (!p || !fn) return HR_EINVAL;
  pthread_mutex_lock(&p->lock);
  hr__reclaimer_t *r = NULL;
  for (size_t i = p->nreclaimers; i-- > 0 && !r;)
    if (p->reclaimers[i].live && p->reclaimers[i].fn == fn && p->reclaimers[i].arg == arg)
      r = &p->reclaimers[i];
  if (!r) {
    pthread_mutex_unlock(&p->lock);
    return HR_ENOENT;
  }
  r->live = false;
  uint64_t id = r->id;
  unsigned own = calling == id; /* this thread's call is the one under way */
  while ((r = find_id_locked(p, id))->busy > own) pthread_cond_wait(&p->reclaim_done, &p->lock);
  size_t i = (size_t)(r - p->reclaimers);
  memmove(r, r + 1, (p->nreclaimers - i - 1) * sizeof *r);
  p->nreclaimers--;
  pthread_mutex_unlock(&p->lock);
  return 0;
}

bool hr__reclaimer_next_locked(hr_pool_t *p, uint64_t after, hr__reclaimer_t *out) {
  for (size_t i = 0; i < p->nreclaimers; i++) {
    hr__reclaimer_t *r = &p->reclaimers[i];
    if (r->id <= after || !r->live) continue;
    r->busy++;
    *out = *r;
    return true;
  }
  return false;
}

void hr__reclaimer_call(hr_pool_t *p, const hr__reclaimer_t *r, uint64_t needed) {
  uint64_t freed = 0, outer = calling;
  calling = r->id;
  r->fn(p, needed, &freed, r->arg);
  calling = outer;
}

void hr__reclaimer_done_locked(hr_pool_t *p, uint64_t id) {
  /* Gone: it took itself back during its own call. */
  hr__reclaimer_t *r = find_id_locked(p, id);
  if (r && --r->busy == 0 && !r->live) pthread_cond_broadcast(&p->reclaim_done);
}
