/* Statistics, invariants, ownership tags and the out-of-memory diagnosis.
 *
 * Statistics are kept incrementally by the policy (pool.c, segment.c);
 * hr_pool_check recomputes every one of them from the blocks and compares,
 * along with the structure: blocks tile their segments, free blocks are
 * coalesced and indexed, allocated ones are in the address table, and in
 * expandable segments mapped blocks touch only mapped granules, unmapped
 * ones none, and extents tile what is mapped. Tags are interned process-wide (at most 255 names;
 * the rest share "(other)"), and each pool keeps live bytes per tag. */
#include "pool/pool_internal.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

/* ---- tags ---------------------------------------------------------------- */

static pthread_mutex_t tag_lock = PTHREAD_MUTEX_INITIALIZER;
static char tag_names[HR__MAX_TAGS][64] = {[HR__MAX_TAGS - 1] = "(other)"};
static unsigned tag_count = 1; /* 0 is "no tag" */
static _Thread_local uint16_t tag_current;

void hr_pool_set_tag(const char *tag) {
  if (!tag || !*tag) {
    tag_current = 0;
    return;
  }
  pthread_mutex_lock(&tag_lock);
  unsigned id = 0;
  for (unsigned i = 1; i < tag_count; i++)
    if (!strncmp(tag_names[i], tag, sizeof tag_names[i] - 1)) id = i;
  if (!id && tag_count < HR__MAX_TAGS - 1) {
    id = tag_count++;
    hr__strlcpy(tag_names[id], tag, sizeof tag_names[id]);
  }
  if (!id) id = HR__MAX_TAGS - 1; /* named "(other)" from the start */
  pthread_mutex_unlock(&tag_lock);
  tag_current = (uint16_t)id;
}

uint16_t hr__tag_current(void) {
  return tag_current;
}

const char *hr__tag_name(uint16_t id) {
  return id ? tag_names[id] : "(untagged)";
}

/* ---- statistics ---------------------------------------------------------- */

int hr_pool_stats(hr_pool_t *p, hr_pool_stats_t *out) {
  if (!p || !out || out->size < offsetof(hr_pool_stats_t, reserved_)) return HR_EINVAL;
  uint32_t size = out->size < sizeof *out ? out->size : (uint32_t)sizeof *out;
  pthread_mutex_lock(&p->lock);
  memcpy(out, &p->st, size);
  pthread_mutex_unlock(&p->lock);
  out->size = size;
  out->version = HR_POOL_STATS_VERSION;
  return 0;
}

int hr_pool_reset_peak(hr_pool_t *p) {
  if (!p) return HR_EINVAL;
  pthread_mutex_lock(&p->lock);
#define HR_RESET_PEAK_(name) p->st.name.peak = p->st.name.current;
  HR_POOL_STATS(HR_RESET_PEAK_)
#undef HR_RESET_PEAK_
  pthread_mutex_unlock(&p->lock);
  return 0;
}

/* ---- invariants ---------------------------------------------------------- */

#define FAIL_(...)                                                                                 \
  do {                                                                                             \
    hr__log(HR_LOG_ERROR, "pool check: " __VA_ARGS__);                                             \
    return HR_ESTATE;                                                                              \
  } while (0)

/* Counts the set bits of bm in [a, b]. */
static uint64_t bm_ones(const uint64_t *bm, uint64_t a, uint64_t b) {
  uint64_t n = 0;
  for (uint64_t w = a / 64; w <= b / 64; w++) {
    uint64_t m = ~0ull;
    if (w == a / 64) m &= ~0ull << (a % 64);
    if (w == b / 64) m &= ~0ull >> (63 - b % 64);
    n += (uint64_t)__builtin_popcountll(bm[w] & m);
  }
  return n;
}

/* A block of an expandable segment: an unmapped one is free, aligned to
 * the page, wholly unmapped, recorded at its first granule and not beside
 * another unmapped one; any other has every granule it touches mapped. */
static int check_expandable_block(const hr__segment_t *s, const hr__block_t *b) {
  uint64_t g0, g1;
  hr__gran_range(s, b->addr, b->size, &g0, &g1);
  if (!b->unmapped) {
    if (bm_ones(s->mapped_bm, g0, g1) != g1 - g0 + 1)
      FAIL_("block %#" PRIx64 " touches unmapped granules", b->addr);
    return 0;
  }
  if (b->allocated || b->in_tree || b->event_count)
    FAIL_("unmapped block %#" PRIx64 " is in use or indexed", b->addr);
  if ((b->addr - s->base) % s->page || b->size % s->page)
    FAIL_("unmapped block %#" PRIx64 " is not aligned to its page", b->addr);
  if (bm_ones(s->mapped_bm, g0, g1))
    FAIL_("unmapped block %#" PRIx64 " has mapped granules", b->addr);
  if (s->unmapped_at[g0] != b) FAIL_("unmapped block %#" PRIx64 " not recorded", b->addr);
  if (b->next && b->next->unmapped)
    FAIL_("unmapped blocks %#" PRIx64 " and its next not merged", b->addr);
  return 0;
}

/* Every mapped granule lies in one extent, all of it mapped, and the
 * segment's count of mapped bytes and unmapped blocks agree with them.
 * Only granules up to the start of the last block are read: past it lies
 * the last block alone (a reservation can be far larger than what was ever
 * mapped, and a walk over all of it after every operation took seconds). */
static int check_extents(const hr__segment_t *s, const hr__block_t *last,
                         uint64_t unmapped_blocks) {
  uint64_t mapped = 0, recorded = 0, g0, g1;
  hr__gran_range(s, last->addr, last->size, &g0, &g1);
  uint64_t n = last->unmapped ? g0 + 1 : g1 + 1;
  for (uint64_t g = 0; g < n; g++) {
    recorded += s->unmapped_at[g] != NULL;
    if (!hr__gran_is_mapped(s, g)) continue;
    mapped += s->gran;
    uint64_t h = s->ext_head[g];
    if (h > g || !s->ext_len[h] || g >= h + s->ext_len[h] || s->ext_head[h] != h ||
        (g == h && bm_ones(s->mapped_bm, h, h + s->ext_len[h] - 1) != s->ext_len[h]))
      FAIL_("granule %" PRIu64 " outside its extent %" PRIu64, g, h);
  }
  if (mapped != s->mapped)
    FAIL_("segment maps %" PRIu64 ", granules say %" PRIu64, s->mapped, mapped);
  if (recorded != unmapped_blocks)
    FAIL_("segment records %" PRIu64 " unmapped blocks, holds %" PRIu64, recorded, unmapped_blocks);
  return 0;
}

static int check_expandable(const hr__segment_t *s) {
  uint64_t unmapped = 0;
  const hr__block_t *last = s->first;
  for (const hr__block_t *b = s->first; b; b = b->next) {
    int rc = check_expandable_block(s, b);
    if (rc) return rc;
    unmapped += b->unmapped;
    last = b;
  }
  return check_extents(s, last, unmapped);
}

int hr__check_locked(hr_pool_t *p) {
  int64_t alloc_b = 0, req_b = 0, active_b = 0, split_b = 0, reserved = 0;
  int64_t nalloc = 0, nactive = 0, nsplit = 0, nseg = 0;
  uint64_t nfree = 0, tags[HR__MAX_TAGS] = {0};
  for (hr__segment_t *s = p->segs; s; s = s->next) {
    nseg++;
    reserved += (int64_t)(s->expandable ? s->mapped : s->size);
    if (!s->first || s->first->prev || s->first->addr != s->base)
      FAIL_("segment %#" PRIx64 " does not start with its first block", s->base);
    uint64_t end = s->base;
    for (hr__block_t *b = s->first; b; b = b->next) {
      if (b->addr != end) FAIL_("block %#" PRIx64 " leaves a gap or overlaps", b->addr);
      if (b->seg != s || b->stream != s->stream)
        FAIL_("block %#" PRIx64 " points elsewhere", b->addr);
      if (b->next && b->next->prev != b) FAIL_("block %#" PRIx64 ": broken links", b->addr);
      if (!b->size || b->size % HR__MIN_BLOCK) FAIL_("block %#" PRIx64 ": bad size", b->addr);
      if (b->unmapped && !s->expandable)
        FAIL_("block %#" PRIx64 ": unmapped in a plain segment", b->addr);
      end += b->size;
      bool is_free = !b->allocated && !b->event_count && !b->unmapped;
      if (b->allocated) {
        alloc_b += (int64_t)b->size, req_b += (int64_t)b->requested, nalloc++;
        tags[b->tag] += b->size;
        if (hr__table_find_locked(p, b->addr) != b)
          FAIL_("block %#" PRIx64 " not in table", b->addr);
      }
      if (!is_free && !b->unmapped) active_b += (int64_t)b->size, nactive++;
      if (is_free != b->in_tree) FAIL_("block %#" PRIx64 ": free but not indexed", b->addr);
      if (is_free) {
        nfree++;
        if (b->next && b->next->in_tree)
          FAIL_("blocks %#" PRIx64 " and its next are free but not merged", b->addr);
        if (b->split_counted) split_b += (int64_t)b->size, nsplit++;
      }
    }
    if (end != s->base + s->size) FAIL_("segment %#" PRIx64 " not tiled to its end", s->base);
    if (s->expandable) {
      int rc = check_expandable(s);
      if (rc) return rc;
    }
  }
  size_t nindexed;
  if (!hr__index_valid(p, &nindexed)) FAIL_("free index out of order");
  if (nindexed != nfree) FAIL_("free index holds other blocks than the free ones");
  if (p->table_count != (uint64_t)nalloc)
    FAIL_("address table holds %" PRIu64 ", %" PRId64 " allocated", p->table_count, nalloc);
  for (unsigned i = 0; i < HR__MAX_TAGS; i++)
    if (tags[i] != p->tag_live[i])
      FAIL_("tag %s: %" PRIu64 " live, blocks say %" PRIu64, hr__tag_name((uint16_t)i),
            p->tag_live[i], tags[i]);
#define CMP_(field, v)                                                                             \
  if (p->st.field.current != (v))                                                                  \
    FAIL_(#field " is %" PRId64 ", blocks say %" PRId64, p->st.field.current, (int64_t)(v));
  CMP_(allocated_bytes, alloc_b)
  CMP_(requested_bytes, req_b)
  CMP_(active_bytes, active_b)
  CMP_(inactive_split_bytes, split_b)
  CMP_(reserved_bytes, reserved)
  CMP_(allocation, nalloc)
  CMP_(active, nactive)
  CMP_(inactive_split, nsplit)
  CMP_(segment, nseg)
#undef CMP_
#define PEAK_(name)                                                                                \
  if (p->st.name.peak < p->st.name.current) FAIL_(#name " peak below current");
  HR_POOL_STATS(PEAK_)
#undef PEAK_
  return 0;
}

int hr_pool_check(hr_pool_t *p) {
  if (!p) return HR_EINVAL;
  pthread_mutex_lock(&p->lock);
  int rc = hr__check_locked(p);
  pthread_mutex_unlock(&p->lock);
  return rc;
}

/* ---- segments ------------------------------------------------------------ */

int hr_pool_segments(hr_pool_t *p, hr_segment_visit_fn visit, void *arg) {
  if (!p || !visit) return HR_EINVAL;
  int rc = 0;
  size_t cap = 0;
  hr_block_info_t *bi = NULL;
  pthread_mutex_lock(&p->lock);
  for (hr__segment_t *s = p->segs; s && !rc; s = s->next) {
    size_t n = 0;
    for (hr__block_t *b = s->first; b; b = b->next) n++;
    if (n > cap) {
      hr_block_info_t *nb = realloc(bi, n * sizeof *nb);
      if (!nb) {
        rc = HR_ENOMEM;
        break;
      }
      bi = nb;
      cap = n;
    }
    n = 0;
    for (hr__block_t *b = s->first; b; b = b->next, n++)
      bi[n] = (hr_block_info_t){b->addr,      b->size,
                                b->requested, b->allocated || b->event_count,
                                b->stream,    b->allocated ? hr__tag_name(b->tag) : NULL};
    hr_segment_info_t si = {s->base,   s->size,  s->expandable ? s->mapped : s->size,
                            s->stream, s->small, s->expandable};
    rc = visit(&si, bi, n, arg);
  }
  pthread_mutex_unlock(&p->lock);
  free(bi);
  return rc > 0 ? 0 : rc;
}

/* ---- diagnosis ----------------------------------------------------------- */

/* The largest free block that is backed by memory (unmapped blocks are
 * address space, not memory, and are not indexed). */
static uint64_t largest_free_locked(hr_pool_t *p) {
  uint64_t best = 0;
  for (hr__segment_t *s = p->segs; s; s = s->next)
    for (hr__block_t *b = s->first; b; b = b->next)
      if (b->in_tree && b->size > best) best = b->size;
  return best;
}

void hr__diagnose_locked(hr_pool_t *p, uint64_t size, void *stream) {
  char a[32], b[32], c[32], d[32], e[32], f[32], g[32], lim[32];
  uint64_t dfree = 0, dtotal = 0;
  p->backend->ops->mem_info(p->backend, &dfree, &dtotal);
  uint64_t alloc = (uint64_t)p->st.allocated_bytes.current;
  uint64_t res = (uint64_t)p->st.reserved_bytes.current;
  hr__size_text(a, sizeof a, size);
  hr__size_text(b, sizeof b, alloc);
  hr__size_text(c, sizeof c, res);
  hr__size_text(d, sizeof d, res > alloc ? res - alloc : 0);
  hr__size_text(e, sizeof e, largest_free_locked(p));
  hr__size_text(f, sizeof f, dfree);
  hr__size_text(g, sizeof g, dtotal);
  hr__size_text(lim, sizeof lim, p->allowed);
  int n = snprintf(p->diag, sizeof p->diag,
                   "out of memory on device %d: tried to allocate %s on stream %p; allocated %s, "
                   "reserved %s (limit %s), cached but unusable %s, largest free block %s, "
                   "device free %s of %s",
                   p->device, a, stream, b, c, lim, d, e, f, g);
  /* Top tags by live bytes, largest first. */
  bool shown[HR__MAX_TAGS] = {false};
  for (int k = 0; k < 5 && n > 0 && (size_t)n < sizeof p->diag; k++) {
    int best = -1;
    for (int i = 0; i < HR__MAX_TAGS; i++)
      if (!shown[i] && p->tag_live[i] && (best < 0 || p->tag_live[i] > p->tag_live[best])) best = i;
    if (best < 0) break;
    shown[best] = true;
    hr__size_text(a, sizeof a, p->tag_live[best]);
    n += snprintf(p->diag + n, sizeof p->diag - (size_t)n, "%s %s %s",
                  k ? "," : "; live by tag:", hr__tag_name((uint16_t)best), a);
  }
}

int hr_pool_last_diagnosis(hr_pool_t *p, char *buf, size_t len) {
  if (!p || !buf || !len) return HR_EINVAL;
  pthread_mutex_lock(&p->lock);
  hr__strlcpy(buf, p->diag, len);
  int rc = p->diag[0] ? 0 : HR_ENOENT;
  pthread_mutex_unlock(&p->lock);
  return rc;
}
