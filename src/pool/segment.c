/* Plain segments and block records: where the pool's memory comes from
 * and how its bookkeeping is stored without calling malloc on the hot path.
 *
 * Block records come from slabs of 512 and go back to a free list; the
 * address table of allocated blocks is open addressing with linear probing
 * and backward-shift deletion, doubled (amortised, rarely) past half full.
 * Free blocks are indexed (index.c) and merged with free neighbours here;
 * expandable segments are expand.c's. */
#include "pool/pool_internal.h"

#include <stdlib.h>
#include <string.h>

#define SLAB_BLOCKS 512

/* ---- block records ------------------------------------------------------- */

/* Adds a slab of SLAB_BLOCKS records to the free list. */
static int slab_add(hr_pool_t *p) {
  hr__slab_t *s = malloc(sizeof *s + SLAB_BLOCKS * sizeof(hr__block_t));
  if (!s) return HR_ENOMEM;
  s->next = p->slabs;
  p->slabs = s;
  for (int i = SLAB_BLOCKS - 1; i >= 0; i--) {
    s->blocks[i].left = p->free_records;
    p->free_records = &s->blocks[i];
  }
  return 0;
}

hr__block_t *hr__block_new_locked(hr_pool_t *p) {
  if (!p->free_records && slab_add(p)) return NULL;
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

int hr__block_reserve_locked(hr_pool_t *p, size_t n) {
  size_t have = 0;
  for (hr__block_t *b = p->free_records; b && have < n; b = b->left) have++;
  for (; have < n; have += SLAB_BLOCKS)
    if (slab_add(p)) return HR_ENOMEM;
  return 0;
}

void hr__block_link_after(hr__block_t *b, hr__block_t *n) {
  n->seg = b->seg;
  n->stream = b->stream;
  n->prev = b;
  n->next = b->next;
  if (b->next) b->next->prev = n;
  b->next = n;
}

void hr__block_absorb_next_locked(hr_pool_t *p, hr__block_t *b) {
  hr__block_t *n = b->next;
  b->size += n->size;
  b->next = n->next;
  if (n->next) n->next->prev = b;
  hr__block_put_locked(p, n);
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

hr__block_t *hr__free_merge_locked(hr_pool_t *p, hr__block_t *b) {
  hr__block_t *n = b->prev;
  if (n && n->in_tree) {
    hr__free_remove_locked(p, n);
    hr__block_absorb_next_locked(p, n);
    b = n;
  }
  n = b->next;
  if (n && n->in_tree) {
    hr__free_remove_locked(p, n);
    hr__block_absorb_next_locked(p, b);
  }
  hr__free_insert_locked(p, b);
  return b;
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

void hr__segment_link(hr_pool_t *p, hr__segment_t *s) {
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
  hr__segment_link(p, s);
  p->st.num_device_alloc++;
  hr__stat_add(&p->st.reserved_bytes, (int64_t)size);
  hr__stat_add(&p->st.segment, 1);
  *out = s;
  return 0;
}

void hr__segment_free_locked(hr_pool_t *p, hr__segment_t *s) {
  hr_backend_t *be = p->backend;
  hr__block_t *b = s->first;
  HR_ASSERT(b && !b->next && (s->expandable ? b->unmapped : b->in_tree));
  if (b->in_tree) hr__free_remove_locked(p, b);
  hr__block_put_locked(p, b);
  if (s->expandable) {
    hr__expand_destroy_locked(p, s);
  } else {
    be->ops->seg_free(be, s->base, s->size);
    p->st.num_device_free++;
    hr__stat_add(&p->st.reserved_bytes, -(int64_t)s->size);
  }
  hr__stat_add(&p->st.segment, -1);
  seg_unlink(p, s);
  free(s);
}
