/* pool: the allocation policy. It follows PyTorch's CUDACachingAllocator
 * (documented behaviour, our own code): sizes rounded to 512 bytes (or to
 * power-of-two divisions), requests up to 1 MiB served from a small pool of
 * 2 MiB segments, 1-10 MiB requests from 20 MiB segments, larger ones from
 * segments of their own size rounded to 2 MiB; best fit by (stream, size,
 * address); a block is split when the rest is at least 512 bytes (small
 * pool, expandable segments) or over 1 MiB (large pool, below
 * max_split_size); freed blocks coalesce with free neighbours; blocks above
 * max_split_size are never split nor handed to much smaller requests.
 *
 * headroom's default differs in one place: segments are expandable (one
 * address reservation per stream and pool, mapped in 2 MiB granules, up to
 * 16 of them per backend call, growing by 20 to 40 MiB at least) and
 * compact: before reserved memory would pass the most memory ever
 * allocated (plus one growth step) the pool unmaps free extents elsewhere
 * (expand.c).
 *
 * On a miss the order is: the GC (by age, above garbage_collection_threshold),
 * a new segment, releasing oversize cached blocks, releasing every cached
 * block, then the reclaimers (outside the lock), then HR_ENOMEM with a
 * diagnosis. */
#include "pool/pool_internal.h"

#include <stdlib.h>
#include <string.h>

/* ---- sizes --------------------------------------------------------------- */

static unsigned roundup_divisions(const hr_pool_config_t *c, uint64_t size) {
  int log = 63 - __builtin_clzll(size);
  int idx = log > 20 ? log - 20 : 0;
  if (idx >= HR_ROUNDUP_INTERVALS) idx = HR_ROUNDUP_INTERVALS - 1;
  return c->roundup_divisions[idx];
}

uint64_t hr__round_size(const hr_pool_config_t *c, uint64_t size) {
  if (size < HR__MIN_BLOCK) return HR__MIN_BLOCK;
  unsigned div = roundup_divisions(c, size);
  if (div > 1 && size > HR__MIN_BLOCK * div) {
    if ((size & (size - 1)) == 0) return size;
    uint64_t floor2 = 1ull << (63 - __builtin_clzll(size));
    uint64_t step = floor2 >> (31 - __builtin_clz(div));
    if (!step) return floor2 << 1;
    uint64_t down = size & ~(step - 1);
    return down == size ? size : down + step;
  }
  return (size + HR__MIN_BLOCK - 1) / HR__MIN_BLOCK * HR__MIN_BLOCK;
}

/* The segment a request of `size` (rounded) gets when nothing is cached. */
static uint64_t segment_size(uint64_t size) {
  if (size <= HR__SMALL_SIZE) return HR__SMALL_SEG;
  if (size < HR__MIN_LARGE) return HR__LARGE_SEG;
  return (size + HR__ROUND_LARGE - 1) / HR__ROUND_LARGE * HR__ROUND_LARGE;
}

/* ---- events -------------------------------------------------------------- */

static void free_block_locked(hr_pool_t *p, hr__block_t *b);

/* Frees the blocks whose events have all completed. */
static void process_events_locked(hr_pool_t *p) {
  hr_backend_t *be = p->backend;
  for (size_t i = 0; i < p->npending;) {
    hr__pending_t *e = &p->pending[i];
    if (be->ops->event_query(be, e->ev) == HR_EBUSY) {
      i++;
      continue;
    }
    hr__block_t *b = e->block;
    be->ops->event_destroy(be, e->ev);
    *e = p->pending[--p->npending];
    if (--b->event_count == 0) free_block_locked(p, b);
  }
}

/* ---- blocks -------------------------------------------------------------- */

/* Returns a block no longer in use to its index, merged with free
 * neighbours. */
static void free_block_locked(hr_pool_t *p, hr__block_t *b) {
  free(b->uses);
  b->uses = NULL;
  b->nuses = b->cap_uses = 0;
  hr__stat_add(&p->st.active_bytes, -(int64_t)b->size);
  hr__stat_add(&p->st.active, -1);
  hr__free_merge_locked(p, b);
}

static bool should_split(const hr_pool_t *p, const hr__block_t *b, uint64_t size) {
  uint64_t rest = b->size - size;
  if (b->seg->small || b->seg->expandable) return rest >= HR__MIN_BLOCK;
  return size < p->cfg.max_split_size && rest > HR__SMALL_SIZE;
}

/* The size a free block of an expandable segment can grow to: itself and
 * the unmapped block after it. */
static uint64_t growable_size(const hr__block_t *b) {
  return b->size + (b->next && b->next->unmapped ? b->next->size : 0);
}

/* PyTorch's best fit in expandable segments counts a block by the size it
 * can grow to, so it passes over a block that borders unmapped space for a
 * larger one that does not, keeping the end of a segment for growth. */
static hr__block_t *skip_growable(const hr__bins_t *x, hr__block_t *b) {
  for (hr__block_t *n = hr__index_next(x, b); n && growable_size(n) < growable_size(b);
       n = hr__index_next(x, n))
    b = n;
  return b;
}

/* The best cached block for (stream, size) under PyTorch's rules, or NULL. */
static hr__block_t *get_free_block_locked(hr_pool_t *p, uint64_t size, void *stream, bool small) {
  p->tick++;
  hr__bins_t *x = hr__index_find(p, stream, small);
  hr__block_t *b = x ? hr__index_best(x, size) : NULL;
  if (!b) return NULL;
  if (b->seg->expandable && p->cfg.pytorch_compat) b = skip_growable(x, b);
  /* PyTorch applies this to expandable segments too; headroom's default,
   * whose segments hold no oversize blocks of their own, does not. */
  if (!b->seg->expandable || p->cfg.pytorch_compat) {
    uint64_t msz = p->cfg.max_split_size;
    /* An oversize block serves neither small requests nor much smaller
     * large ones: splitting it is what fragments memory. */
    if (size < msz && b->size >= msz) return NULL;
    if (size >= msz && b->size >= size + HR__LARGE_SEG) return NULL;
  }
  return b;
}

/* Turns the free block b into an allocated one of `size` bytes. */
static int take_block_locked(hr_pool_t *p, hr__block_t *b, uint64_t size, uint64_t requested) {
  hr__block_t *rest = NULL;
  hr__free_remove_locked(p, b);
  if (should_split(p, b, size)) {
    rest = hr__block_new_locked(p);
    if (!rest) goto fail;
    rest->addr = b->addr + size;
    rest->size = b->size - size;
    hr__block_link_after(b, rest);
    b->size = size;
  }
  hr__table_insert_locked(p, b); /* room was made by alloc_locked */
  if (rest) hr__free_insert_locked(p, rest);
  b->allocated = true;
  b->requested = requested;
  b->tag = hr__tag_current();
  p->tag_live[b->tag] += b->size;
  hr__stat_add(&p->st.allocated_bytes, (int64_t)b->size);
  if (p->st.allocated_bytes.current > p->alloc_hwm) p->alloc_hwm = p->st.allocated_bytes.current;
  hr__stat_add(&p->st.requested_bytes, (int64_t)requested);
  hr__stat_add(&p->st.allocation, 1);
  hr__stat_add(&p->st.active_bytes, (int64_t)b->size);
  hr__stat_add(&p->st.active, 1);
  return 0;
fail:
  hr__free_insert_locked(p, b);
  return HR_ENOMEM;
}

/* ---- releasing cache ----------------------------------------------------- */

/* A segment's only block, free (expandable: unmapped, nothing mapped). */
static bool whole_free_segment(const hr__block_t *b) {
  return (b->seg->expandable ? b->unmapped : b->in_tree) && !b->prev && !b->next;
}

/* Frees cached oversize blocks (above max_split_size) of `stream`: the
 * smallest one that covers `size`, else the largest ones until `size`. */
static bool release_oversize_locked(hr_pool_t *p, uint64_t size, void *stream) {
  uint64_t msz = p->cfg.max_split_size;
  if (msz == UINT64_MAX) return false;
  uint64_t want = size > msz ? size : msz;
  hr__bins_t *x = hr__index_find(p, stream, false);
  if (!x) return false;
  hr__block_t *b = hr__index_best(x, want);
  while (b && !(whole_free_segment(b) && !b->seg->expandable)) b = hr__index_next(x, b);
  if (b) {
    hr__segment_free_locked(p, b->seg);
    return true;
  }
  uint64_t freed = 0;
  while (freed < size) {
    hr__block_t *best = NULL;
    for (b = hr__index_best(x, msz); b; b = hr__index_next(x, b))
      if (whole_free_segment(b) && !b->seg->expandable) best = b;
    if (!best) break;
    freed += best->size;
    hr__segment_free_locked(p, best->seg);
  }
  return freed > 0;
}

static uint64_t release_cached_locked(hr_pool_t *p) {
  hr_backend_t *be = p->backend;
  uint64_t before = (uint64_t)p->st.reserved_bytes.current;
  if (p->npending) {
    be->ops->synchronize(be);
    process_events_locked(p);
  }
  hr__expand_release_locked(p);
  for (hr__segment_t *s = p->segs, *n; s; s = n) {
    n = s->next;
    if (whole_free_segment(s->first)) hr__segment_free_locked(p, s);
  }
  return before - (uint64_t)p->st.reserved_bytes.current;
}

/* The GC: above garbage_collection_threshold of the allowed memory, frees
 * whole cached segments that have waited at least the average age, oldest
 * first in effect, until under the threshold. Like PyTorch's, the
 * PyTorch-like configuration collects only with a memory fraction set;
 * headroom's own collects whenever a threshold is set. */
static void garbage_collect_locked(hr_pool_t *p) {
  double limit = p->cfg.gc_threshold * (double)p->allowed;
  if (p->cfg.gc_threshold <= 0 || (double)p->st.reserved_bytes.current <= limit) return;
  /* PyTorch collects only once a memory fraction has been set. */
  if (p->cfg.pytorch_compat && p->cfg.memory_fraction >= 1.0) return;
  uint64_t target = (uint64_t)((double)p->st.reserved_bytes.current - limit), freed = 0;
  while (freed < target) {
    uint64_t n = 0, age_sum = 0;
    for (hr__segment_t *s = p->segs; s; s = s->next)
      if (!s->expandable && whole_free_segment(s->first))
        n++, age_sum += p->tick - s->first->free_tick;
    if (!n) break;
    uint64_t avg = age_sum / n;
    for (hr__segment_t *s = p->segs, *nx; s && freed < target; s = nx) {
      nx = s->next;
      if (s->expandable || !whole_free_segment(s->first)) continue;
      if (p->tick - s->first->free_tick < avg) continue;
      freed += s->size;
      hr__segment_free_locked(p, s);
    }
  }
  /* Expandable segments keep no ages per extent: unmap free ones (PyTorch's
   * collector leaves expandable segments alone). */
  if (freed < target && !p->cfg.pytorch_compat) hr__expand_release_locked(p);
}

/* ---- allocation ---------------------------------------------------------- */

/* One try: cache, then a new segment. HR_ENOMEM when the device said no. */
static int try_alloc_locked(hr_pool_t *p, uint64_t size, uint64_t requested, void *stream, bool gc,
                            hr__block_t **out) {
  bool small = size <= HR__SMALL_SIZE;
  hr__block_t *b = get_free_block_locked(p, size, stream, small);
  int rc;
  if (!b) {
    hr__segment_t *s;
    if (gc) garbage_collect_locked(p);
    if (p->cfg.expandable_segments) {
      rc = hr__expand_grow_locked(p, size, stream, small, &b);
      if (rc) return rc;
    } else {
      rc = hr__segment_new_locked(p, segment_size(size), stream, small, &s);
      if (rc) return rc;
      b = get_free_block_locked(p, size, stream, small);
      if (!b) return HR_ENOMEM;
    }
  }
  rc = take_block_locked(p, b, size, requested);
  if (!rc) *out = b;
  return rc;
}

/* try, release oversize blocks and try, release all cache and try. */
static int alloc_locked(hr_pool_t *p, uint64_t requested, void *stream, hr__block_t **out) {
  uint64_t size = hr__round_size(&p->cfg, requested);
  if (hr__table_reserve_locked(p)) return HR_ENOMEM;
  process_events_locked(p);
  int rc = try_alloc_locked(p, size, requested, stream, true, out);
  if (rc != HR_ENOMEM) return rc;
  if (release_oversize_locked(p, size, stream)) {
    rc = try_alloc_locked(p, size, requested, stream, false, out);
    if (rc != HR_ENOMEM) return rc;
  }
  if (release_cached_locked(p)) rc = try_alloc_locked(p, size, requested, stream, false, out);
  return rc;
}

int hr_pool_alloc(hr_pool_t *p, uint64_t size, void *stream, void **ptr) {
  hr__block_t *b = NULL;
  hr__reclaimer_t rec[HR_ARRAY_LEN(p->reclaimers)];
  size_t nrec;
  if (!p || !ptr) return HR_EINVAL;
  *ptr = NULL;
  if (!size) return 0;
  if (size > (1ull << 62)) return HR_ENOMEM;
  pthread_mutex_lock(&p->lock);
  int rc = alloc_locked(p, size, stream, &b);
  nrec = p->nreclaimers;
  memcpy(rec, p->reclaimers, nrec * sizeof *rec);
  pthread_mutex_unlock(&p->lock);
  /* Reclaimers free through hr_pool_free, so they run without the lock. */
  for (size_t i = 0; rc == HR_ENOMEM && i < nrec; i++) {
    uint64_t freed = 0;
    rec[i].fn(p, size, &freed, rec[i].arg);
    pthread_mutex_lock(&p->lock);
    p->st.num_alloc_retries++;
    rc = alloc_locked(p, size, stream, &b);
    pthread_mutex_unlock(&p->lock);
  }
  if (rc == HR_ENOMEM) {
    pthread_mutex_lock(&p->lock);
    p->st.num_ooms++;
    hr__diagnose_locked(p, size, stream);
    hr__log(HR_LOG_WARN, "%s", p->diag);
    pthread_mutex_unlock(&p->lock);
  }
  if (!rc) *ptr = (void *)(uintptr_t)b->addr;
  return rc;
}

/* Adds `stream` to the block's users; false when out of memory. */
static bool add_use(hr__block_t *b, void *stream) {
  if (stream == b->stream) return true;
  for (uint32_t i = 0; i < b->nuses; i++)
    if (b->uses[i] == stream) return true;
  if (b->nuses == b->cap_uses) {
    uint32_t cap = b->cap_uses ? b->cap_uses * 2 : 4;
    void **n = realloc(b->uses, cap * sizeof *n);
    if (!n) return false;
    b->uses = n;
    b->cap_uses = cap;
  }
  b->uses[b->nuses++] = stream;
  return true;
}

int hr_pool_record_stream(hr_pool_t *p, void *ptr, void *stream) {
  if (!p || !ptr) return HR_EINVAL;
  pthread_mutex_lock(&p->lock);
  hr__block_t *b = hr__table_find_locked(p, (uint64_t)(uintptr_t)ptr);
  int rc = !b || !b->allocated ? HR_EINVAL : add_use(b, stream) ? 0 : HR_ENOMEM;
  pthread_mutex_unlock(&p->lock);
  return rc;
}

/* Records one event per stream that used the block; the block is free
 * once all have completed. Without events (a failing device), waits. */
static void defer_free_locked(hr_pool_t *p, hr__block_t *b) {
  hr_backend_t *be = p->backend;
  for (uint32_t i = 0; i < b->nuses; i++) {
    uint64_t ev;
    if (p->npending == p->cap_pending) {
      size_t cap = p->cap_pending ? p->cap_pending * 2 : 64;
      hr__pending_t *n = realloc(p->pending, cap * sizeof *n);
      if (!n) goto sync;
      p->pending = n;
      p->cap_pending = cap;
    }
    if (be->ops->event_record(be, b->uses[i], &ev)) goto sync;
    p->pending[p->npending++] = (hr__pending_t){ev, b};
    b->event_count++;
  }
  if (!b->event_count) free_block_locked(p, b);
  return;
sync:
  /* Cannot track the streams: wait for the device instead, then let the
   * recorded events (all complete now) free the block. */
  be->ops->synchronize(be);
  if (!b->event_count)
    free_block_locked(p, b);
  else
    process_events_locked(p);
}

int hr_pool_free(hr_pool_t *p, void *ptr, void *stream) {
  if (!p) return HR_EINVAL;
  if (!ptr) return 0;
  int rc = 0;
  pthread_mutex_lock(&p->lock);
  hr__block_t *b = hr__table_find_locked(p, (uint64_t)(uintptr_t)ptr);
  if (!b || !b->allocated) {
    rc = HR_EINVAL;
    goto out;
  }
  if (stream != b->stream) add_use(b, stream);
  hr__table_remove_locked(p, b);
  b->allocated = false;
  p->tag_live[b->tag] -= b->size;
  hr__stat_add(&p->st.allocated_bytes, -(int64_t)b->size);
  hr__stat_add(&p->st.requested_bytes, -(int64_t)b->requested);
  hr__stat_add(&p->st.allocation, -1);
  if (b->nuses)
    defer_free_locked(p, b);
  else
    free_block_locked(p, b);
out:
  pthread_mutex_unlock(&p->lock);
  if (rc) hr__log(HR_LOG_ERROR, "pool: free of %p, which the pool did not hand out", ptr);
  return rc;
}

int hr_pool_release_cached(hr_pool_t *p) {
  if (!p) return HR_EINVAL;
  pthread_mutex_lock(&p->lock);
  release_cached_locked(p);
  pthread_mutex_unlock(&p->lock);
  return 0;
}

int hr_pool_add_reclaimer(hr_pool_t *p, hr_reclaim_fn fn, void *arg) {
  if (!p || !fn) return HR_EINVAL;
  int rc = 0;
  pthread_mutex_lock(&p->lock);
  if (p->nreclaimers == HR_ARRAY_LEN(p->reclaimers))
    rc = HR_ENOSPC;
  else
    p->reclaimers[p->nreclaimers++] = (hr__reclaimer_t){fn, arg};
  pthread_mutex_unlock(&p->lock);
  return rc;
}

/* ---- life cycle ---------------------------------------------------------- */

int hr_pool_create(const hr_pool_config_t *config, hr_backend_t *backend, int device,
                   hr_pool_t **out) {
  uint64_t f, t;
  if (!backend || !out) return HR_EINVAL;
  *out = NULL;
  hr_pool_t *p = calloc(1, sizeof *p);
  if (!p) return HR_ENOMEM;
  if (config)
    p->cfg = *config;
  else
    hr_pool_config_default(&p->cfg);
  if (p->cfg.memory_fraction <= 0 || p->cfg.memory_fraction > 1 || p->cfg.gc_threshold < 0 ||
      p->cfg.gc_threshold >= 1) {
    free(p);
    return HR_EINVAL;
  }
  if (p->cfg.expandable_segments && !backend->granularity) p->cfg.expandable_segments = false;
  int rc = hr_backend_mem_info(backend, &f, &t);
  if (rc) {
    free(p);
    return rc;
  }
  p->backend = backend;
  p->device = device;
  p->total = t;
  p->allowed = (uint64_t)((double)t * p->cfg.memory_fraction);
  p->allowed = p->allowed > p->cfg.reserve_bytes ? p->allowed - p->cfg.reserve_bytes : 0;
  p->rng = 0x9E3779B97F4A7C15ull ^ (uint64_t)(uintptr_t)p;
  p->st.size = sizeof p->st;
  p->st.version = HR_POOL_STATS_VERSION;
  pthread_mutex_init(&p->lock, NULL);
  *out = p;
  return 0;
}

void hr_pool_destroy(hr_pool_t *p) {
  if (!p) return;
  hr_backend_t *be = p->backend;
  be->ops->synchronize(be);
  for (size_t i = 0; i < p->npending; i++) be->ops->event_destroy(be, p->pending[i].ev);
  while (p->segs) {
    hr__segment_t *s = p->segs;
    p->segs = s->next;
    for (hr__block_t *b = s->first, *n; b; b = n) {
      n = b->next;
      free(b->uses);
    }
    if (s->expandable)
      hr__expand_destroy_locked(p, s);
    else
      be->ops->seg_free(be, s->base, s->size);
    free(s);
  }
  hr__slabs_free(p);
  hr__index_free_all(p);
  free(p->table);
  free(p->pending);
  free(p->exts);
  pthread_mutex_destroy(&p->lock);
  free(p);
}
