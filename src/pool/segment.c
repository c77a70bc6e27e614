/* Segments, granules and block records: where the pool's memory comes from
 * and how its bookkeeping is stored without calling malloc on the hot path.
 *
 * Block records come from slabs of 512 and go back to a free list; the
 * address table of allocated blocks is open addressing with linear probing
 * and backward-shift deletion, doubled (amortised, rarely) past half full.
 * Expandable segments count, per granule, the allocated blocks that touch
 * it, and which are mapped; the granules of a freed block are queued as
 * one range, so that the pool can find free mapped granules to unmap later
 * without searching every segment. */
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
  hr__index_insert(b->seg->bins, b);
}

void hr__free_remove_locked(hr_pool_t *p, hr__block_t *b) {
  HR_ASSERT(b->in_tree);
  hr__index_remove(b->seg->bins, b);
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
  hr__bins_t *bins;
  if (hr__index_get(p, stream, small, &bins)) return HR_ENOMEM;
  hr__segment_t *s = calloc(1, sizeof *s);
  if (!s) return HR_ENOMEM;
  s->bins = bins;
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
  /* The reservation spans four times what the pool may ever hold. Address
   * space costs nothing, and with only 1x a segment whose live blocks sit
   * far apart can run out of addresses while memory is still free (one
   * real trace failed a 4.9 GiB request that way with 5 GiB free). */
  uint64_t size = (p->allowed + g - 1) / g * g * HR__VA_FACTOR;
  if (!be->ops->va_reserve || !g || !size) return HR_ENOTSUP;
  hr__bins_t *bins;
  if (hr__index_get(p, stream, small, &bins)) return HR_ENOMEM;
  hr__segment_t *s = calloc(1, sizeof *s);
  int rc = HR_ENOMEM;
  if (!s) return HR_ENOMEM;
  s->bins = bins;
  s->gran = g;
  s->ngran = size / g;
  /* PyTorch maps the large pool's expandable segments 20 MiB at a time. */
  s->page = (p->cfg.pytorch_compat && !small) ? (HR__LARGE_SEG + g - 1) / g * g : g;
  s->used = calloc(s->ngran, sizeof *s->used);
  s->mapped_bm = calloc((s->ngran + 63) / 64, sizeof *s->mapped_bm);
  s->queued_bm = calloc((s->ngran + 63) / 64, sizeof *s->queued_bm);
  s->busy_bm = calloc((s->ngran + 63) / 64, sizeof *s->busy_bm);
  s->handle = calloc(s->ngran, sizeof *s->handle);
  s->ext_head = calloc(s->ngran, sizeof *s->ext_head);
  s->ext_len = calloc(s->ngran, sizeof *s->ext_len);
  if (!s->used || !s->mapped_bm || !s->queued_bm || !s->busy_bm || !s->handle || !s->ext_head ||
      !s->ext_len || s->ngran > UINT32_MAX)
    goto fail;
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
  free(s->ext_head);
  free(s->ext_len);
  free(s->used);
  free(s->mapped_bm);
  free(s->queued_bm);
  free(s->busy_bm);
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
    hr__seg_maps_free(s);
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

static inline void bm_set(uint64_t *bm, uint64_t g) {
  bm[g / 64] |= 1ull << (g % 64);
}

static inline void bm_clr(uint64_t *bm, uint64_t g) {
  bm[g / 64] &= ~(1ull << (g % 64));
}

/* Sets bits [a, b] of bm; returns whether any was clear before. */
static bool bm_set_range(uint64_t *bm, uint64_t a, uint64_t b) {
  bool any = false;
  for (uint64_t w = a / 64; w <= b / 64; w++) {
    uint64_t m = ~0ull;
    if (w == a / 64) m &= ~0ull << (a % 64);
    if (w == b / 64) m &= ~0ull >> (63 - b % 64);
    any |= (bm[w] & m) != m;
    bm[w] |= m;
  }
  return any;
}

/* Clears bits [a, b] of bm. */
static void bm_clr_range(uint64_t *bm, uint64_t a, uint64_t b) {
  for (uint64_t w = a / 64; w <= b / 64; w++) {
    uint64_t m = ~0ull;
    if (w == a / 64) m &= ~0ull << (a % 64);
    if (w == b / 64) m &= ~0ull >> (63 - b % 64);
    bm[w] &= ~m;
  }
}

/* Counts a block on its granules (d = 1) or uncounts it (d = -1). */
static void gran_count(hr__segment_t *s, uint64_t g0, uint64_t g1, int d) {
  s->used[g0] += (uint32_t)d;
  if (g1 != g0) s->used[g1] += (uint32_t)d;
  if (g1 > g0 + 1) {
    if (d > 0)
      bm_set_range(s->busy_bm, g0 + 1, g1 - 1);
    else
      bm_clr_range(s->busy_bm, g0 + 1, g1 - 1);
  }
}

/* Counts the clear bits of bm in [a, b]. */
static uint64_t bm_zeros(const uint64_t *bm, uint64_t a, uint64_t b) {
  uint64_t n = 0;
  for (uint64_t w = a / 64; w <= b / 64; w++) {
    uint64_t m = ~0ull;
    if (w == a / 64) m &= ~0ull << (a % 64);
    if (w == b / 64) m &= ~0ull >> (63 - b % 64);
    n += (uint64_t)__builtin_popcountll(~bm[w] & m);
  }
  return n;
}

/* Maps granules [g, g + n) as one extent: one backend call, one handle. */
static int gran_map(hr_pool_t *p, hr__segment_t *s, uint64_t g, uint64_t n) {
  hr_backend_t *be = p->backend;
  uint64_t bytes = n * s->gran;
  if (p->st.reserved_bytes.current + (int64_t)bytes > (int64_t)p->allowed) return HR_ENOMEM;
  int rc = be->ops->map(be, s->base + g * s->gran, bytes, &s->handle[g]);
  if (rc) return rc;
  bm_set_range(s->mapped_bm, g, g + n - 1);
  for (uint64_t i = g; i < g + n; i++) s->ext_head[i] = (uint32_t)g;
  s->ext_len[g] = (uint32_t)n;
  s->mapped += bytes;
  p->st.num_device_alloc++;
  hr__stat_add(&p->st.reserved_bytes, (int64_t)bytes);
  return 0;
}

/* Unmaps the extent that starts at granule h. */
static void gran_unmap(hr_pool_t *p, hr__segment_t *s, uint64_t h) {
  hr_backend_t *be = p->backend;
  uint64_t n = s->ext_len[h], bytes = n * s->gran;
  be->ops->unmap(be, s->base + h * s->gran, bytes, s->handle[h]);
  bm_clr_range(s->mapped_bm, h, h + n - 1);
  s->handle[h] = 0;
  s->ext_len[h] = 0;
  s->mapped -= bytes;
  p->st.num_device_free++;
  hr__stat_add(&p->st.reserved_bytes, -(int64_t)bytes);
}

/* Whether no allocated block touches the extent that starts at h. */
static bool ext_free(const hr__segment_t *s, uint64_t h) {
  uint64_t n = s->ext_len[h];
  if (bm_zeros(s->busy_bm, h, h + n - 1) != n) return false;
  for (uint64_t g = h; g < h + n; g++)
    if (s->used[g]) return false;
  return true;
}

/* Remembers that granules [a, b] may be free now. One entry per call, and
 * none when every granule is already named by an entry, so the queue stays
 * no longer than the number of granules. */
static void gran_queue(hr_pool_t *p, hr__segment_t *s, uint64_t a, uint64_t b) {
  if (!bm_set_range(s->queued_bm, a, b)) return;
  if (p->nfreeg == p->cap_freeg) {
    size_t cap = p->cap_freeg ? p->cap_freeg * 2 : 1024;
    hr__gref_t *n = realloc(p->freeg, cap * sizeof *n);
    if (!n) return; /* only a lost hint: release_all still finds them */
    p->freeg = n;
    p->cap_freeg = cap;
  }
  p->freeg[p->nfreeg++] = (hr__gref_t){s, a, b};
}

/* Unmaps extents with queued free granules until `want` granules are
 * unmapped; returns how many were. An extent some block still touches
 * stays: its queue bits are dropped, and the free of that block queues its
 * granules again. */
static uint64_t gran_unmap_queued(hr_pool_t *p, uint64_t want) {
  uint64_t done = 0;
  bool synced = false;
  while (done < want && p->nfreeg) {
    hr__gref_t *r = &p->freeg[p->nfreeg - 1];
    hr__segment_t *s = r->seg;
    uint64_t g = r->g;
    for (; g <= r->end && done < want; g++) {
      if (!((s->queued_bm[g / 64] >> (g % 64)) & 1)) continue; /* another entry took it */
      bm_clr(s->queued_bm, g);
      if (!hr__gran_is_free(s, g) || !hr__gran_is_mapped(s, g)) continue;
      uint64_t h = s->ext_head[g], n = s->ext_len[h];
      bm_clr_range(s->queued_bm, h, h + n - 1);
      if (!ext_free(s, h)) continue;
      /* Work queued before the free may still touch the granules. */
      if (!synced && p->backend->ops->synchronize(p->backend)) return done;
      synced = true;
      gran_unmap(p, s, h);
      done += n;
    }
    if (g > r->end)
      p->nfreeg--;
    else
      r->g = g;
  }
  return done;
}

int hr__gran_take_locked(hr_pool_t *p, hr__block_t *b) {
  hr__segment_t *s = b->seg;
  uint64_t g0, g1;
  hr__gran_range(s, b->addr, b->size, &g0, &g1);
  gran_count(s, g0, g1, 1);
  uint64_t need = bm_zeros(s->mapped_bm, g0, g1);
  if (!need) return 0;
  /* Map whole pages (PyTorch's 20 MiB for its large pool): widen the range. */
  uint64_t per = s->page / s->gran, m0 = g0 / per * per, m1 = (g1 / per + 1) * per - 1;
  if (m1 >= s->ngran) m1 = s->ngran - 1;
  if (per > 1) need = bm_zeros(s->mapped_bm, m0, m1);
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
  /* Each run of unmapped granules is mapped by one call: a page in the
   * PyTorch-like policy (PyTorch maps page by page), else up to
   * HR__MAX_EXTENT granules (a bigger extent is fewer calls, but frees its
   * memory only once all of it is free). */
  uint64_t cap = per > 1 ? per : HR__MAX_EXTENT;
  for (uint64_t g = m0; g <= m1;) {
    if (hr__gran_is_mapped(s, g)) {
      g++;
      continue;
    }
    uint64_t n = 1;
    while (g + n <= m1 && n < cap && !hr__gran_is_mapped(s, g + n)) n++;
    int rc = gran_map(p, s, g, n);
    if (rc) {
      /* Undo: uncount the block; what this call mapped is free again. */
      gran_count(s, g0, g1, -1);
      if (g > m0) gran_queue(p, s, m0, g - 1);
      return rc;
    }
    g += n;
  }
  /* The page's granules beyond the block are mapped but unused. */
  if (m0 < g0) gran_queue(p, s, m0, g0 - 1);
  if (m1 > g1) gran_queue(p, s, g1 + 1, m1);
  return 0;
}

void hr__gran_drop_locked(hr_pool_t *p, hr__block_t *b) {
  hr__segment_t *s = b->seg;
  uint64_t g0, g1;
  hr__gran_range(s, b->addr, b->size, &g0, &g1);
  gran_count(s, g0, g1, -1);
  gran_queue(p, s, g0, g1);
}

uint64_t hr__gran_release_all_locked(hr_pool_t *p, hr__segment_t *only) {
  uint64_t freed = 0;
  bool synced = false;
  for (hr__segment_t *s = only ? only : p->segs; s; s = only ? NULL : s->next) {
    if (!s->expandable || !s->mapped) continue;
    for (uint64_t g = 0; g < s->ngran && s->mapped; g++) {
      if (!hr__gran_is_mapped(s, g)) continue;
      uint64_t n = s->ext_len[g]; /* g starts an extent: earlier ones were skipped whole */
      if (ext_free(s, g)) {
        if (!synced && p->backend->ops->synchronize(p->backend)) return freed;
        synced = true;
        gran_unmap(p, s, g);
        freed += n * s->gran;
      }
      g += n - 1;
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

void hr__seg_maps_free(hr__segment_t *s) {
  free(s->ext_head);
  free(s->ext_len);
  free(s->used);
  free(s->mapped_bm);
  free(s->queued_bm);
  free(s->busy_bm);
  free(s->handle);
}
