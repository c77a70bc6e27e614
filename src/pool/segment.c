/* Segments, granules and block records: where the pool's memory comes from
 * and how its bookkeeping is stored without calling malloc on the hot path.
 *
 * Block records come from slabs of 512 and go back to a free list; the
 * address table of allocated blocks is open addressing with linear probing
 * and backward-shift deletion, doubled (amortised, rarely) past half full.
 * Expandable segments count, per granule, the allocated blocks that touch
 * it; a granule whose count drops to zero while mapped is queued, so that
 * the pool can unmap it later without searching. */
#include "pool/pool_internal.h"

#include <stdlib.h>
#include <string.h>

#define SLAB_BLOCKS 512

/* ---- block records ------------------------------------------------------- */

hr__block_t *hr__block_new_locked(hr_pool_t *p) {
  if (!p->free_records) {
    hr__slab_t *s = malloc(sizeof *s + SLAB_BLOCKS * sizeof(hr__block_t));
    if (!s) return NULL;
    s->next = p->slabs;
    p->slabs = s;
    for (int i = SLAB_BLOCKS - 1; i >= 0; i--) {
      s->blocks[i].left = p->free_records;
      p->free_records = &s->blocks[i];
    }
  }
  hr__block_t *b = p->free_records;
  p->free_records = b->left;
  memset(b, 0, sizeof *b);
  /* xorshift32 priorities keep the treap balanced. */
  uint64_t x = p->rng;
  x ^= x << 13, x ^= x >> 7, x ^= x << 17;
  p->rng = x;
  b->prio = (uint32_t)(x >> 32);
  return b;
}

void hr__block_put_locked(hr_pool_t *p, hr__block_t *b) {
  free(b->uses);
  b->uses = NULL;
  b->left = p->free_records;
  p->free_records = b;
}

void hr__slabs_free(hr_pool_t *p) {
  while (p->slabs) {
    hr__slab_t *n = p->slabs->next;
    free(p->slabs);
    p->slabs = n;
  }
  p->free_records = NULL;
}

/* ---- the address table --------------------------------------------------- */

static inline uint64_t table_hash(uint64_t addr, uint64_t cap) {
  return ((addr >> 9) * 0x9E3779B97F4A7C15ull >> 17) & (cap - 1);
}

static int table_grow(hr_pool_t *p) {
  uint64_t cap = p->table_cap ? p->table_cap * 2 : 1024;
  hr__block_t **t = calloc(cap, sizeof *t);
  if (!t) return HR_ENOMEM;
  for (uint64_t i = 0; i < p->table_cap; i++) {
    hr__block_t *b = p->table[i];
    if (!b) continue;
    uint64_t h = table_hash(b->addr, cap);
    while (t[h]) h = (h + 1) & (cap - 1);
    t[h] = b;
  }
  free(p->table);
  p->table = t;
  p->table_cap = cap;
  return 0;
}

int hr__table_reserve_locked(hr_pool_t *p) {
  return (p->table_count + 1) * 2 > p->table_cap ? table_grow(p) : 0;
}

void hr__table_insert_locked(hr_pool_t *p, hr__block_t *b) {
  HR_ASSERT((p->table_count + 1) * 2 <= p->table_cap);
  uint64_t h = table_hash(b->addr, p->table_cap);
  while (p->table[h]) h = (h + 1) & (p->table_cap - 1);
  p->table[h] = b;
  p->table_count++;
}

hr__block_t *hr__table_find_locked(hr_pool_t *p, uint64_t addr) {
  if (!p->table_cap) return NULL;
  uint64_t h = table_hash(addr, p->table_cap);
  for (hr__block_t *b; (b = p->table[h]); h = (h + 1) & (p->table_cap - 1))
    if (b->addr == addr) return b;
  return NULL;
}

void hr__table_remove_locked(hr_pool_t *p, hr__block_t *b) {
  uint64_t mask = p->table_cap - 1, h = table_hash(b->addr, p->table_cap);
  while (p->table[h] != b) h = (h + 1) & mask;
  /* Backward shift: move later entries of the run into the hole when their
   * home slot is not between the hole and them. */
  uint64_t hole = h;
  for (uint64_t j = (h + 1) & mask; p->table[j]; j = (j + 1) & mask) {
    uint64_t home = table_hash(p->table[j]->addr, p->table_cap);
    if (((j - home) & mask) >= ((j - hole) & mask)) {
      p->table[hole] = p->table[j];
      hole = j;
    }
  }
  p->table[hole] = NULL;
  p->table_count--;
}

/* ---- the free index ------------------------------------------------------ */

void hr__free_insert_locked(hr_pool_t *p, hr__block_t *b) {
  HR_ASSERT(!b->allocated && !b->in_tree && b->event_count == 0);
  b->in_tree = true;
  b->free_tick = p->tick;
  b->split_counted = !b->seg->expandable && (b->prev || b->next);
  if (b->split_counted) {
    hr__stat_add(&p->st.inactive_split_bytes, (int64_t)b->size);
    hr__stat_add(&p->st.inactive_split, 1);
  }
  hr__tree_insert(&p->tree[!b->seg->small], b);
}

void hr__free_remove_locked(hr_pool_t *p, hr__block_t *b) {
  HR_ASSERT(b->in_tree);
  hr__tree_remove(&p->tree[!b->seg->small], b);
  b->in_tree = false;
  if (b->split_counted) {
    hr__stat_add(&p->st.inactive_split_bytes, -(int64_t)b->size);
    hr__stat_add(&p->st.inactive_split, -1);
    b->split_counted = false;
  }
}

/* ---- segments ------------------------------------------------------------ */

static void seg_link(hr_pool_t *p, hr__segment_t *s) {
  s->next = p->segs;
  if (p->segs) p->segs->prev = s;
  p->segs = s;
}

static void seg_unlink(hr_pool_t *p, hr__segment_t *s) {
  if (s->prev)
    s->prev->next = s->next;
  else
    p->segs = s->next;
  if (s->next) s->next->prev = s->prev;
}

static int seg_first_block(hr_pool_t *p, hr__segment_t *s) {
  hr__block_t *b = hr__block_new_locked(p);
  if (!b) return HR_ENOMEM;
  b->addr = s->base;
  b->size = s->size;
  b->seg = s;
  b->stream = s->stream;
  s->first = b;
  hr__free_insert_locked(p, b);
  return 0;
}

int hr__segment_new_locked(hr_pool_t *p, uint64_t size, void *stream, bool small,
                           hr__segment_t **out) {
  hr_backend_t *be = p->backend;
  uint64_t addr;
  if (p->st.reserved_bytes.current + (int64_t)size > (int64_t)p->allowed) return HR_ENOMEM;
  hr__segment_t *s = calloc(1, sizeof *s);
  if (!s) return HR_ENOMEM;
  int rc = be->ops->seg_alloc(be, size, stream, &addr);
  if (rc) {
    free(s);
    return rc;
  }
  s->base = addr;
  s->size = size;
  s->stream = stream;
  s->small = small;
  rc = seg_first_block(p, s);
  if (rc) {
    be->ops->seg_free(be, addr, size);
    free(s);
    return rc;
  }
  seg_link(p, s);
  p->st.num_device_alloc++;
  hr__stat_add(&p->st.reserved_bytes, (int64_t)size);
  hr__stat_add(&p->st.segment, 1);
  *out = s;
  return 0;
}

int hr__segment_new_expandable_locked(hr_pool_t *p, void *stream, bool small, hr__segment_t **out) {
  hr_backend_t *be = p->backend;
  uint64_t g = be->granularity, addr;
  /* The reservation spans what the pool may ever hold, so the segment never
   * has to move. */
  uint64_t size = (p->allowed + g - 1) / g * g;
  if (!be->ops->va_reserve || !g || !size) return HR_ENOTSUP;
  hr__segment_t *s = calloc(1, sizeof *s);
  int rc = HR_ENOMEM;
  if (!s) return HR_ENOMEM;
  s->gran = g;
  s->ngran = size / g;
  /* PyTorch maps the large pool's expandable segments 20 MiB at a time. */
  s->page = (p->cfg.pytorch_compat && !small) ? (HR__LARGE_SEG + g - 1) / g * g : g;
  s->used = calloc(s->ngran, sizeof *s->used);
  s->gstate = calloc(s->ngran, sizeof *s->gstate);
  s->handle = calloc(s->ngran, sizeof *s->handle);
  if (!s->used || !s->gstate || !s->handle) goto fail;
  rc = be->ops->va_reserve(be, size, &addr);
  if (rc) goto fail;
  s->base = addr;
  s->size = size;
  s->stream = stream;
  s->small = small;
  s->expandable = true;
  rc = seg_first_block(p, s);
  if (rc) {
    be->ops->va_release(be, addr, size);
    goto fail;
  }
  seg_link(p, s);
  hr__stat_add(&p->st.segment, 1);
  *out = s;
  return 0;
fail:
  free(s->used);
  free(s->gstate);
  free(s->handle);
  free(s);
  return rc;
}

hr__segment_t *hr__segment_find_expandable_locked(hr_pool_t *p, void *stream, bool small) {
  for (hr__segment_t *s = p->segs; s; s = s->next)
    if (s->expandable && s->stream == stream && s->small == small) return s;
  return NULL;
}

void hr__segment_free_locked(hr_pool_t *p, hr__segment_t *s) {
  hr_backend_t *be = p->backend;
  hr__block_t *b = s->first;
  HR_ASSERT(b && !b->next && !b->allocated && b->event_count == 0);
  if (b->in_tree) hr__free_remove_locked(p, b);
  hr__block_put_locked(p, b);
  if (s->expandable) {
    hr__gran_release_all_locked(p, s);
    be->ops->va_release(be, s->base, s->size);
    free(s->used);
    free(s->gstate);
    free(s->handle);
  } else {
    be->ops->seg_free(be, s->base, s->size);
    p->st.num_device_free++;
    hr__stat_add(&p->st.reserved_bytes, -(int64_t)s->size);
  }
  hr__stat_add(&p->st.segment, -1);
  seg_unlink(p, s);
  free(s);
}

/* ---- granules ------------------------------------------------------------ */

void hr__gran_range(const hr__segment_t *s, uint64_t addr, uint64_t size, uint64_t *first,
                    uint64_t *last) {
  *first = (addr - s->base) / s->gran;
  *last = (addr + size - 1 - s->base) / s->gran;
}

static int gran_map(hr_pool_t *p, hr__segment_t *s, uint64_t g) {
  hr_backend_t *be = p->backend;
  if (p->st.reserved_bytes.current + (int64_t)s->gran > (int64_t)p->allowed) return HR_ENOMEM;
  int rc = be->ops->map(be, s->base + g * s->gran, &s->handle[g]);
  if (rc) return rc;
  s->gstate[g] |= HR__G_MAPPED;
  s->mapped += s->gran;
  p->st.num_device_alloc++;
  hr__stat_add(&p->st.reserved_bytes, (int64_t)s->gran);
  return 0;
}

static void gran_unmap(hr_pool_t *p, hr__segment_t *s, uint64_t g) {
  hr_backend_t *be = p->backend;
  be->ops->unmap(be, s->base + g * s->gran, s->handle[g]);
  s->gstate[g] &= (uint8_t)~HR__G_MAPPED;
  s->handle[g] = 0;
  s->mapped -= s->gran;
  p->st.num_device_free++;
  hr__stat_add(&p->st.reserved_bytes, -(int64_t)s->gran);
}

static void gran_queue(hr_pool_t *p, hr__segment_t *s, uint64_t g) {
  if (s->gstate[g] & HR__G_QUEUED) return;
  if (p->nfreeg == p->cap_freeg) {
    size_t cap = p->cap_freeg ? p->cap_freeg * 2 : 1024;
    hr__gref_t *n = realloc(p->freeg, cap * sizeof *n);
    if (!n) return; /* only a lost hint: release_all still finds it */
    p->freeg = n;
    p->cap_freeg = cap;
  }
  p->freeg[p->nfreeg++] = (hr__gref_t){s, g};
  s->gstate[g] |= HR__G_QUEUED;
}

/* Unmaps up to `want` queued free granules; returns how many. */
static uint64_t gran_unmap_queued(hr_pool_t *p, uint64_t want) {
  uint64_t done = 0;
  bool synced = false;
  while (done < want && p->nfreeg) {
    hr__gref_t r = p->freeg[--p->nfreeg];
    r.seg->gstate[r.g] &= (uint8_t)~HR__G_QUEUED;
    if (r.seg->used[r.g] || !(r.seg->gstate[r.g] & HR__G_MAPPED)) continue;
    /* Work queued before the free may still touch the granule. */
    if (!synced && p->backend->ops->synchronize(p->backend)) break;
    synced = true;
    gran_unmap(p, r.seg, r.g);
    done++;
  }
  return done;
}

int hr__gran_take_locked(hr_pool_t *p, hr__block_t *b) {
  hr__segment_t *s = b->seg;
  uint64_t g0, g1, need = 0;
  hr__gran_range(s, b->addr, b->size, &g0, &g1);
  for (uint64_t g = g0; g <= g1; g++) {
    s->used[g]++;
    if (!(s->gstate[g] & HR__G_MAPPED)) need++;
  }
  if (!need) return 0;
  /* Map whole pages (PyTorch's 20 MiB for its large pool): widen the range. */
  uint64_t per = s->page / s->gran, m0 = g0 / per * per, m1 = (g1 / per + 1) * per - 1;
  if (m1 >= s->ngran) m1 = s->ngran - 1;
  if (per > 1) {
    need = 0;
    for (uint64_t g = m0; g <= m1; g++) need += !(s->gstate[g] & HR__G_MAPPED);
  }
  if (p->cfg.compact_mapping) {
    /* Unmap only what keeps reserved memory under the high-water mark of
     * allocated memory: compacting costs a synchronize and device calls,
     * and below the mark it cannot lower the peak. (A slack above the mark
     * saved few calls and cost ratio; bench/results/pool-ideas.md.) */
    uint64_t hwm = (uint64_t)p->alloc_hwm;
    uint64_t after = (uint64_t)p->st.reserved_bytes.current + need * s->gran;
    if (after > hwm) {
      uint64_t over = (after - hwm + s->gran - 1) / s->gran;
      gran_unmap_queued(p, over < need ? over : need);
    }
  }
  for (uint64_t g = m0; g <= m1; g++) {
    if (s->gstate[g] & HR__G_MAPPED) continue;
    int rc = gran_map(p, s, g);
    if (rc) {
      /* Undo: unmap what this call mapped, uncount the block. */
      for (uint64_t u = g0; u <= g1; u++) s->used[u]--;
      for (uint64_t u = m0; u < g; u++)
        if (!s->used[u] && (s->gstate[u] & HR__G_MAPPED)) gran_queue(p, s, u);
      return rc;
    }
  }
  for (uint64_t g = m0; g <= m1; g++)
    if (!s->used[g]) gran_queue(p, s, g);
  return 0;
}

void hr__gran_drop_locked(hr_pool_t *p, hr__block_t *b) {
  hr__segment_t *s = b->seg;
  uint64_t g0, g1;
  hr__gran_range(s, b->addr, b->size, &g0, &g1);
  for (uint64_t g = g0; g <= g1; g++)
    if (--s->used[g] == 0) gran_queue(p, s, g);
}

uint64_t hr__gran_release_all_locked(hr_pool_t *p, hr__segment_t *only) {
  uint64_t freed = 0;
  bool synced = false;
  for (hr__segment_t *s = only ? only : p->segs; s; s = only ? NULL : s->next) {
    if (!s->expandable || !s->mapped) continue;
    for (uint64_t g = 0; g < s->ngran && s->mapped; g++) {
      if (s->used[g] || !(s->gstate[g] & HR__G_MAPPED)) continue;
      if (!synced && p->backend->ops->synchronize(p->backend)) return freed;
      synced = true;
      gran_unmap(p, s, g);
      freed += s->gran;
    }
  }
  /* Drop queue entries for granules of a segment about to go away. */
  if (only) {
    size_t k = 0;
    for (size_t i = 0; i < p->nfreeg; i++)
      if (p->freeg[i].seg != only) p->freeg[k++] = p->freeg[i];
    p->nfreeg = k;
  }
  return freed;
}
