/* Expandable segments, in the shape of PyTorch's (documented behaviour, our
 * own code): one reservation of address space per stream and pool (another
 * when one has no room left), backed by device memory only where blocks
 * need it. A segment's blocks are allocated, free and mapped (indexed and
 * served by best fit like any free block), or unmapped: free address space
 * aligned to the segment's page, none of it mapped, never indexed. When no
 * free mapped block fits a request, the pool grows a segment at the lowest
 * address where free and unmapped blocks in a row hold the request, mapping
 * only the unmapped part (rounded up to pages): mapped memory is reused
 * first, a free unmaps nothing, and growth keeps a segment dense.
 *
 * Memory is mapped in extents: one backend call (cuMemCreate + cuMemMap +
 * cuMemSetAccess) for a run of granules, unmapped by one call, whole, once
 * the run lies inside one free block. The PyTorch-like policy maps one page
 * per call (2 MiB in the small pool, 20 MiB in the large one) and unmaps
 * only when the cache is released, as PyTorch does. headroom's default maps
 * up to HR__MAX_EXTENT granules per call, grows by a step at least (1/64
 * of the most memory ever allocated, 20 to 40 MiB), and compacts: before
 * reserved memory would pass the mark (the most memory ever allocated,
 * plus one step) it unmaps free extents elsewhere,
 * so reserved memory follows the peak of live memory rather than its
 * history, at a device call per extent. Bigger extents would mean fewer
 * calls but strand more memory: an extent goes back only once no block
 * touches it (bench/results/pool-ideas.md measures the trade). */
#include "pool/pool_internal.h"

#include <stdlib.h>
#include <string.h>

#define PYTORCH_LARGE_PAGE (20ull << 20) /* PyTorch's page in the large pool */

/* ---- bitmaps ------------------------------------------------------------- */

static uint64_t word_mask(uint64_t w, uint64_t a, uint64_t b) {
  uint64_t m = ~0ull;
  if (w == a / 64) m &= ~0ull << (a % 64);
  if (w == b / 64) m &= ~0ull >> (63 - b % 64);
  return m;
}

/* Sets / clears bits [a, b] of bm. */
static void bm_set_range(uint64_t *bm, uint64_t a, uint64_t b) {
  for (uint64_t w = a / 64; w <= b / 64; w++) bm[w] |= word_mask(w, a, b);
}

static void bm_clr_range(uint64_t *bm, uint64_t a, uint64_t b) {
  for (uint64_t w = a / 64; w <= b / 64; w++) bm[w] &= ~word_mask(w, a, b);
}

/* The first bit of bm at or after g that equals `bit`, or n when none
 * before n. */
static uint64_t bm_next(const uint64_t *bm, uint64_t g, uint64_t n, bool bit) {
  while (g < n) {
    uint64_t w = (bit ? bm[g / 64] : ~bm[g / 64]) & (~0ull << (g % 64));
    if (w) {
      uint64_t r = g / 64 * 64 + (uint64_t)__builtin_ctzll(w);
      return r < n ? r : n;
    }
    g = (g / 64 + 1) * 64;
  }
  return n;
}

void hr__gran_range(const hr__segment_t *s, uint64_t addr, uint64_t size, uint64_t *first,
                    uint64_t *last) {
  *first = (addr - s->base) / s->gran;
  *last = (addr + size - 1 - s->base) / s->gran;
}

static inline uint64_t gran_of(const hr__segment_t *s, uint64_t addr) {
  return (addr - s->base) / s->gran;
}

/* ---- unmapped blocks ----------------------------------------------------- */

static void unmapped_mark(hr__segment_t *s, hr__block_t *b) {
  uint64_t g = gran_of(s, b->addr);
  b->unmapped = true;
  s->unmapped_at[g] = b;
  if (g < s->first_hole) s->first_hole = g;
}

static void unmapped_unmark(hr__segment_t *s, hr__block_t *b) {
  b->unmapped = false;
  s->unmapped_at[gran_of(s, b->addr)] = NULL;
}

/* Merges the unmapped block b with unmapped neighbours; returns the merged
 * block, the lowest of them (so a block at a lower address survives). */
static hr__block_t *unmapped_merge(hr_pool_t *p, hr__block_t *b) {
  hr__segment_t *s = b->seg;
  if (b->prev && b->prev->unmapped) {
    hr__block_t *n = b->prev;
    unmapped_unmark(s, b);
    hr__block_absorb_next_locked(p, n);
    b = n;
  }
  if (b->next && b->next->unmapped) {
    unmapped_unmark(s, b->next);
    hr__block_absorb_next_locked(p, b);
  }
  return b;
}

/* ---- segments ------------------------------------------------------------ */

/* The address space of one segment. PyTorch reserves 1 1/8 of the
 * device's memory, room to map pages again at the end after some were
 * unmapped early. headroom reserves four times what the pool may hold:
 * address space costs nothing, and with 1x a segment whose live blocks sat
 * far apart ran out of addresses with memory still free (a 4.9 GiB request
 * failed with 5 GiB free on one real trace). */
static uint64_t va_size(const hr_pool_t *p, uint64_t page) {
  uint64_t want = p->cfg.pytorch_compat ? p->total + p->total / 8 : p->allowed * HR__VA_FACTOR;
  return (want + page - 1) / page * page;
}

static void seg_arrays_free(hr__segment_t *s) {
  free(s->mapped_bm);
  free(s->ext_head);
  free(s->ext_len);
  free(s->handle);
  free(s->unmapped_at);
  s->mapped_bm = NULL, s->ext_head = NULL, s->ext_len = NULL, s->handle = NULL;
  s->unmapped_at = NULL;
}

static int seg_arrays_alloc(hr__segment_t *s) {
  s->mapped_bm = calloc((s->ngran + 63) / 64, sizeof *s->mapped_bm);
  s->ext_head = calloc(s->ngran, sizeof *s->ext_head);
  s->ext_len = calloc(s->ngran, sizeof *s->ext_len);
  s->handle = calloc(s->ngran, sizeof *s->handle);
  s->unmapped_at = calloc(s->ngran, sizeof *s->unmapped_at);
  if (s->mapped_bm && s->ext_head && s->ext_len && s->handle && s->unmapped_at) return 0;
  seg_arrays_free(s);
  return HR_ENOMEM;
}

/* A new expandable segment of (stream, small): one unmapped block. */
static int seg_new(hr_pool_t *p, void *stream, bool small, hr__segment_t **out) {
  hr_backend_t *be = p->backend;
  uint64_t g = be->granularity, addr;
  if (!be->ops->va_reserve || !g) return HR_ENOTSUP;
  uint64_t page = p->cfg.pytorch_compat && !small ? (PYTORCH_LARGE_PAGE + g - 1) / g * g : g;
  uint64_t size = va_size(p, page);
  hr__bins_t *bins;
  if (!size || size / g > UINT32_MAX) return HR_ENOMEM;
  if (hr__index_get(p, stream, small, &bins)) return HR_ENOMEM;
  hr__segment_t *s = calloc(1, sizeof *s);
  if (!s) return HR_ENOMEM;
  *s = (hr__segment_t){.size = size,
                       .stream = stream,
                       .small = small,
                       .expandable = true,
                       .bins = bins,
                       .gran = g,
                       .page = page,
                       .ngran = size / g};
  hr__block_t *b = NULL;
  int rc = seg_arrays_alloc(s);
  if (!rc && !(b = hr__block_new_locked(p))) rc = HR_ENOMEM;
  if (!rc) rc = be->ops->va_reserve(be, size, &addr);
  if (rc) {
    if (b) hr__block_put_locked(p, b);
    seg_arrays_free(s);
    free(s);
    return rc;
  }
  s->base = addr;
  *b = (hr__block_t){.addr = addr, .size = size, .seg = s, .stream = stream, .prio = b->prio};
  s->first = b;
  unmapped_mark(s, b);
  hr__segment_link(p, s);
  hr__stat_add(&p->st.segment, 1);
  *out = s;
  return 0;
}

/* Unmaps without counting: the segment is going away with its pool, or
 * holds nothing mapped any more. */
void hr__expand_destroy_locked(hr_pool_t *p, hr__segment_t *s) {
  hr_backend_t *be = p->backend;
  /* Stop at the last mapped extent: the reservation can be far larger than
   * what was ever mapped, and a walk over all of it took seconds. */
  uint64_t left = s->mapped;
  for (uint64_t g = 0; g < s->ngran && left; g++)
    if (hr__gran_is_mapped(s, g) && s->ext_head[g] == g) {
      be->ops->unmap(be, s->base + g * s->gran, s->ext_len[g] * s->gran, s->handle[g]);
      left -= s->ext_len[g] * s->gran;
      g += s->ext_len[g] - 1;
    }
  be->ops->va_release(be, s->base, s->size);
  seg_arrays_free(s);
}

/* ---- extents ------------------------------------------------------------- */

/* Maps granules [g, g + n) as one extent: one backend call, one handle. */
static int ext_map(hr_pool_t *p, hr__segment_t *s, uint64_t g, uint64_t n) {
  hr_backend_t *be = p->backend;
  uint64_t bytes = n * s->gran;
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
static void ext_unmap(hr_pool_t *p, hr__segment_t *s, uint64_t h) {
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

/* Granules the next map call covers, `left` of the run still to map: a
 * page in the PyTorch-like policy (PyTorch maps page by page); else up to
 * HR__MAX_EXTENT. In headroom's policy a block that needs HR__MAX_EXTENT
 * granules or more and ends inside its last one gets that granule as an
 * extent of its own: what follows the block shares it, and the block's
 * other extents then lie wholly inside it and go back whole once it is
 * freed. */
static uint64_t extent_len(const hr_pool_t *p, const hr__segment_t *s, uint64_t left, uint64_t n,
                           bool shared_end) {
  if (p->cfg.pytorch_compat) return HR_MIN(s->page / s->gran, left);
  uint64_t k = HR_MIN(left, HR__MAX_EXTENT);
  if (shared_end && n >= HR__MAX_EXTENT && k == left && k > 1) k--;
  return k;
}

/* Maps the first `bytes` of the unmapped block u, rounded up to pages, for
 * a block that ends at `end`. *out gets the free mapped block that holds
 * them, merged with free mapped neighbours. On a failure part way, what
 * was mapped stays (free, cached) and *out holds it. */
static int map_block(hr_pool_t *p, hr__block_t *u, uint64_t bytes, uint64_t end,
                     hr__block_t **out) {
  hr__segment_t *s = u->seg;
  uint64_t len = HR_MIN((bytes + s->page - 1) / s->page * s->page, u->size);
  if ((uint64_t)p->st.reserved_bytes.current + len > p->allowed) return HR_ENOMEM;
  if (len < u->size && hr__block_reserve_locked(p, 1)) return HR_ENOMEM;
  uint64_t g0 = gran_of(s, u->addr), n = len / s->gran, done = 0;
  /* Whether the last granule of this run is the block's last one, shared
   * with what will follow it. */
  bool shared_end = (end - s->base) % s->gran && gran_of(s, end - 1) == g0 + n - 1;
  int rc = 0;
  while (done < n && !rc) {
    uint64_t k = extent_len(p, s, n - done, n, shared_end);
    rc = ext_map(p, s, g0 + done, k);
    if (!rc) done += k;
  }
  if (!done) return rc;
  len = done * s->gran;
  if (len < u->size) {
    hr__block_t *rest = hr__block_new_locked(p); /* reserved above: cannot fail */
    rest->addr = u->addr + len;
    rest->size = u->size - len;
    hr__block_link_after(u, rest);
    u->size = len;
    unmapped_mark(s, rest);
  }
  unmapped_unmark(s, u);
  *out = hr__free_merge_locked(p, u);
  return rc;
}

/* ---- growth -------------------------------------------------------------- */

static inline bool takeable(const hr__block_t *b) {
  return b && (b->in_tree || b->unmapped);
}

/* Whether the free and unmapped blocks in a row from c hold `size` bytes;
 * *end gets the end of the last one needed. */
static bool room(const hr__block_t *c, uint64_t size, uint64_t *end) {
  uint64_t n = 0;
  for (; takeable(c); c = c->next) {
    n += c->size;
    if (n >= size) {
      *end = c->addr + c->size;
      return true;
    }
  }
  return false;
}

/* The lowest-addressed start of room for `size` in s: an unmapped block,
 * or the free mapped block just before it. NULL when none. */
static hr__block_t *seg_candidate(hr__segment_t *s, uint64_t size, uint64_t *end) {
  s->first_hole = bm_next(s->mapped_bm, s->first_hole, s->ngran, false);
  for (uint64_t g = s->first_hole; g < s->ngran;) {
    hr__block_t *u = s->unmapped_at[g];
    if (!u) return NULL; /* cannot happen: every unmapped granule starts or lies in one */
    hr__block_t *c = u->prev && u->prev->in_tree ? u->prev : u;
    if (room(c, size, end)) return c;
    g = bm_next(s->mapped_bm, gran_of(s, u->addr + u->size), s->ngran, false);
  }
  return NULL;
}

/* Over every expandable segment of (stream, small): the lowest start. */
static hr__block_t *find_candidate(hr_pool_t *p, void *stream, bool small, uint64_t size,
                                   uint64_t *end) {
  hr__block_t *best = NULL;
  for (hr__segment_t *s = p->segs; s; s = s->next) {
    if (!s->expandable || s->stream != stream || s->small != small) continue;
    uint64_t e;
    hr__block_t *c = seg_candidate(s, size, &e);
    if (c && (!best || c->addr < best->addr)) best = c, *end = e;
  }
  return best;
}

/* The bytes map_chain will map to make `size` bytes from c. */
static uint64_t chain_need(const hr__block_t *c, uint64_t size) {
  uint64_t have = 0, need = 0;
  for (; have < size; c = c->next) {
    uint64_t take = c->size;
    if (c->unmapped) {
      uint64_t pg = c->seg->page;
      take = HR_MIN((HR_MIN(size - have, c->size) + pg - 1) / pg * pg, c->size);
      need += take;
    }
    have += take;
  }
  return need;
}

/* Maps the unmapped blocks of the row from c until it holds `size` bytes
 * and `extra` more where the last one has room, as PyTorch does: c first,
 * then each next one. */
static int map_chain(hr_pool_t *p, hr__block_t *c, uint64_t size, uint64_t extra,
                     hr__block_t **out) {
  uint64_t end = c->addr + size;
  int rc;
  if (c->unmapped && (rc = map_block(p, c, HR_MIN(c->size, size + extra), end, &c)) != 0) return rc;
  while (c->size < size) {
    hr__block_t *u = c->next;
    HR_ASSERT(u && u->unmapped);
    if ((rc = map_block(p, u, HR_MIN(size - c->size + extra, u->size), end, &c)) != 0) return rc;
  }
  *out = c;
  return 0;
}

/* ---- unmapping ----------------------------------------------------------- */

/* Adds the extents that lie inside the free block b to the pool's list. */
static int gather_block(hr_pool_t *p, hr__block_t *b, size_t *n) {
  hr__segment_t *s = b->seg;
  uint64_t ga = (b->addr - s->base + s->gran - 1) / s->gran;
  uint64_t gb = (b->addr + b->size - s->base) / s->gran;
  for (uint64_t g = ga; g < gb;) {
    if (!hr__gran_is_mapped(s, g)) {
      g = bm_next(s->mapped_bm, g, gb, true);
      continue;
    }
    uint64_t h = s->ext_head[g], len = s->ext_len[h];
    if (h >= ga && h + len <= gb) {
      if (*n == p->cap_exts) {
        size_t cap = p->cap_exts ? p->cap_exts * 2 : 256;
        hr__ext_ref_t *x = realloc(p->exts, cap * sizeof *x);
        if (!x) return HR_ENOMEM;
        p->exts = x;
        p->cap_exts = cap;
      }
      p->exts[(*n)++] = (hr__ext_ref_t){b, (uint32_t)h, (uint32_t)len};
    }
    g = h + len;
  }
  return 0;
}

/* Lists the extents inside free blocks of `min` bytes or more (a granule
 * at least) of expandable segments, leaving out the blocks inside
 * [lo, hi). The index gives those blocks without a walk over every block.
 * Returns how many. */
static size_t gather(hr_pool_t *p, uint64_t min, uint64_t lo, uint64_t hi) {
  size_t n = 0;
  min = HR_MAX(min, p->backend->granularity);
  for (hr__bins_t *x = p->bins; x; x = x->next)
    for (hr__block_t *b = hr__index_best(x, min); b; b = hr__index_next(x, b)) {
      if (!b->seg->expandable) continue;
      if ((b->addr + b->size <= lo || b->addr >= hi) && gather_block(p, b, &n))
        return n; /* out of memory: what was found so far */
    }
  return n;
}

/* Splits the free block b, some of whose granules were just unmapped, into
 * free mapped and unmapped blocks (merging unmapped ones with unmapped
 * neighbours). Block records were reserved. */
static void reshape(hr_pool_t *p, hr__block_t *b) {
  hr__segment_t *s = b->seg;
  uint64_t end = b->addr + b->size;
  hr__free_remove_locked(p, b);
  hr__block_t *cur = b;
  for (;;) {
    uint64_t g = gran_of(s, cur->addr);
    bool un = (cur->addr - s->base) % s->gran == 0 && !hr__gran_is_mapped(s, g);
    uint64_t stop = s->base + bm_next(s->mapped_bm, g, s->ngran, un) * s->gran;
    if (stop < end) {
      hr__block_t *n = hr__block_new_locked(p);
      n->addr = stop;
      n->size = end - stop;
      hr__block_link_after(cur, n);
      cur->size = stop - cur->addr;
    }
    if (un)
      unmapped_mark(s, cur);
    else
      hr__free_insert_locked(p, cur);
    if (stop >= end) break;
    cur = cur->next;
  }
  if (cur != b && cur->unmapped) unmapped_merge(p, cur);
  if (b->unmapped) unmapped_merge(p, b);
}

static uint64_t ext_addr(const hr__ext_ref_t *x) {
  return x->b->seg->base + x->head * x->b->seg->gran;
}

static int cmp_addr(const void *a, const void *b) {
  uint64_t x = ext_addr(a), y = ext_addr(b);
  return x != y ? (x < y ? -1 : 1) : 0;
}

/* Longest first, the highest address first among equals. */
static int cmp_len_desc(const hr__ext_ref_t *x, const hr__ext_ref_t *y) {
  return x->len != y->len ? (x->len < y->len ? 1 : -1) : cmp_addr(y, x);
}

/* Shortest first, the lowest address first among equals. */
static int cmp_size_addr(const hr__ext_ref_t *x, const hr__ext_ref_t *y) {
  return x->len != y->len ? (x->len < y->len ? -1 : 1) : cmp_addr(x, y);
}

static uint64_t ext_bytes(const hr__ext_ref_t *x) {
  return (uint64_t)x->len * x->b->seg->gran;
}

/* The smallest of the n listed extents that holds `want` bytes alone (the
 * lowest among equals), moved to the front of the list; false when none. */
static bool pick_one(hr_pool_t *p, size_t n, uint64_t want) {
  size_t best = n;
  for (size_t i = 0; i < n; i++)
    if (ext_bytes(&p->exts[i]) >= want &&
        (best == n || cmp_size_addr(&p->exts[i], &p->exts[best]) < 0))
      best = i;
  if (best < n) p->exts[0] = p->exts[best];
  return best < n;
}

/* Moves the largest of the n listed extents (the highest among equals) to
 * the front until they hold `want` bytes, or all are; returns how many. A
 * selection, not a sort: usually a few are picked from hundreds. */
static size_t pick_largest(hr_pool_t *p, size_t n, uint64_t want) {
  size_t k = 0;
  for (uint64_t sum = 0; k < n && sum < want; k++) {
    size_t top = k;
    for (size_t i = k + 1; i < n; i++)
      if (cmp_len_desc(&p->exts[i], &p->exts[top]) < 0) top = i;
    hr__ext_ref_t t = p->exts[k];
    p->exts[k] = p->exts[top];
    p->exts[top] = t;
    sum += ext_bytes(&p->exts[k]);
  }
  return k;
}

/* Unmaps the first k listed extents (after one synchronize) and reshapes
 * their blocks. Returns the bytes unmapped. */
static uint64_t unmap_listed(hr_pool_t *p, size_t k) {
  hr_backend_t *be = p->backend;
  uint64_t done = 0;
  if (!k || hr__block_reserve_locked(p, 2 * k + 2)) return 0;
  /* Work queued before the blocks were freed may still use the memory. */
  if (be->ops->synchronize(be)) return 0;
  qsort(p->exts, k, sizeof *p->exts, cmp_addr);
  for (size_t i = 0; i < k; i++) {
    hr__ext_ref_t *x = &p->exts[i];
    ext_unmap(p, x->b->seg, x->head);
    done += (uint64_t)x->len * x->b->seg->gran;
    if (i + 1 == k || p->exts[i + 1].b != x->b) reshape(p, x->b);
  }
  return done;
}

/* Unmaps free extents outside [lo, hi) for at least `want` bytes, or as
 * many as there are: the smallest that is enough alone, else the largest
 * first. Only a free block of `want` bytes or more can hold an extent that
 * is enough alone, so those are searched first. Returns the bytes unmapped. */
static uint64_t compact(hr_pool_t *p, uint64_t want, uint64_t lo, uint64_t hi) {
  size_t n = gather(p, want, lo, hi);
  if (n && pick_one(p, n, want)) return unmap_listed(p, 1);
  n = gather(p, 0, lo, hi);
  return n ? unmap_listed(p, pick_largest(p, n, want)) : 0;
}

uint64_t hr__expand_release_locked(hr_pool_t *p) {
  return unmap_listed(p, gather(p, 0, 0, 0));
}

/* The most reserved memory may reach before a growth compacts: the most
 * memory ever allocated (this request included) and one growth step, which
 * *step gets: 1/HR__GROW_SHARE of that peak, at least PyTorch's 20 MiB
 * segment for 1-10 MiB requests, at most HR__GROW_STEP_MAX. Below the
 * mark, compacting cannot lower the peak much and costs device calls and
 * a synchronize; the step lets growth map that much at a time, so that
 * the next small requests fit. Bigger steps, or letting reserved memory
 * pass the mark by a share of it, saved calls but cost the tightest real
 * traces their margin (bench/results/pool-ideas.md). */
static uint64_t compact_mark(const hr_pool_t *p, uint64_t size, uint64_t *step) {
  uint64_t hwm = HR_MAX((uint64_t)p->alloc_hwm, (uint64_t)p->st.allocated_bytes.current + size);
  *step = HR_MIN(HR_MAX(hwm / HR__GROW_SHARE, HR__GROW_STEP_MIN), HR__GROW_STEP_MAX);
  return HR_MIN(hwm + *step, p->allowed);
}

int hr__expand_grow_locked(hr_pool_t *p, uint64_t size, void *stream, bool small,
                           hr__block_t **out) {
  uint64_t end = 0, extra = 0;
  if (size > p->allowed) return HR_ENOMEM; /* no mapping can hold it */
  hr__block_t *c = find_candidate(p, stream, small, size, &end);
  if (!c) {
    hr__segment_t *s;
    int rc = seg_new(p, stream, small, &s);
    if (rc) return rc;
    c = s->first;
    if (!room(c, size, &end)) return HR_ENOMEM;
  }
  uint64_t need = chain_need(c, size);
  if (!p->cfg.pytorch_compat) {
    uint64_t step, mark = compact_mark(p, size, &step);
    uint64_t res = (uint64_t)p->st.reserved_bytes.current;
    /* The row being grown is left alone. */
    if (p->cfg.compact_mapping && res + need > mark) compact(p, res + need - mark, c->addr, end);
    /* Grow by a step at least while that stays under the mark. */
    res = (uint64_t)p->st.reserved_bytes.current;
    if (need < step && mark > res + need) extra = HR_MIN(step - need, mark - res - need);
  }
  return map_chain(p, c, size, extra, out);
}
