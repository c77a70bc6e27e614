/* pool internals shared by pool.c (policy), segment.c (segments, granules,
 * block records), index.c (the free-block index), stats.c (statistics,
 * invariants, diagnosis, tags), reclaimers.c (the reclaimers) and torch.c
 * (PyTorch entry points).
 *
 * A segment is a range of device addresses tiled by blocks in address order
 * (prev/next). A plain segment is all backed by memory; an expandable one is
 * a reservation of address space whose granules are mapped only while some
 * allocated block touches them (or until the cache is released). Free
 * blocks sit in an index per stream and pool (small or large), in size
 * bins ordered by (size, address), so the best fit is a short search.
 * Allocated blocks are found by address in an open-addressing table. Block
 * records come from a slab, so the hot path calls no heap allocator. */
#ifndef HR_POOL_INTERNAL_H
#define HR_POOL_INTERNAL_H

#include "backend/backend.h"

#include <pthread.h>

#define HR__MIN_BLOCK   512ull        /* every size is a multiple of this */
#define HR__SMALL_SIZE  (1ull << 20)  /* largest request of the small pool */
#define HR__SMALL_SEG   (2ull << 20)  /* segment of the small pool */
#define HR__LARGE_SEG   (20ull << 20) /* segment for 1-10 MiB requests */
#define HR__MIN_LARGE   (10ull << 20) /* requests from here get their own segment */
#define HR__ROUND_LARGE (2ull << 20)  /* rounding of such segments */
#define HR__MAX_TAGS    256
#define HR__VA_FACTOR   4   /* address reserved per expandable segment / allowed */
#define HR__NBINS       256 /* size bins of the free index, 8 per power of two */
#define HR__MAX_EXTENT  8   /* most granules one map call covers (default policy) */

typedef struct hr__segment hr__segment_t;
typedef struct hr__block hr__block_t;
typedef struct hr__bins hr__bins_t;

struct hr__block {
  uint64_t addr, size, requested;
  hr__block_t *prev, *next; /* neighbours in the segment, by address */
  hr__segment_t *seg;
  void *stream;
  hr__block_t *left, *right; /* free-index links; `left` chains the slab's free list */
  uint32_t prio;
  bool allocated, in_tree, split_counted;
  uint16_t tag;
  uint32_t event_count; /* events still pending before the block is free */
  uint64_t free_tick;   /* pool->tick when freed: its age for the GC */
  void **uses;          /* other streams given by record_stream (heap, rare) */
  uint32_t nuses, cap_uses;
};

struct hr__segment {
  uint64_t base, size; /* address range; for expandable ones, the reservation */
  void *stream;
  bool small, expandable;
  hr__block_t *first;
  hr__segment_t *prev, *next; /* the pool's list */
  hr__bins_t *bins;           /* where its free blocks are indexed */
  /* expandable only */
  uint64_t gran; /* granule size */
  uint64_t page; /* mapping unit, a multiple of gran */
  uint64_t ngran;
  /* A granule inside an allocated block (not at its ends) belongs to that
   * block alone: a bit says so. Granules at the ends of blocks may be
   * shared: a count says by how many. Free means neither. */
  uint32_t *used;      /* allocated blocks that start or end in the granule */
  uint64_t *busy_bm;   /* bitmap: granule inside an allocated block */
  uint64_t *mapped_bm; /* bitmap: granule mapped */
  uint64_t *queued_bm; /* bitmap: granule named by an entry of the pool's queue */
  /* Granules are mapped in extents: runs mapped by one backend call over
   * one allocation, which can only be unmapped whole (cuMemUnmap takes the
   * exact range cuMemMap mapped). Each mapped granule names its extent's
   * first granule; the first holds the length and the handle. */
  uint32_t *ext_head; /* first granule of the extent of each mapped granule */
  uint32_t *ext_len;  /* at an extent's first granule: its granules */
  uint64_t *handle;   /* at an extent's first granule: the backend handle */
  uint64_t mapped;    /* bytes mapped */
};

/* The free blocks of one stream in one pool (small or large). */
struct hr__bins {
  struct hr__bins *next;
  void *stream;
  bool small;
  uint64_t map[HR__NBINS / 64];
  hr__block_t *bin[HR__NBINS];
};

typedef struct hr__pending {
  uint64_t ev;
  hr__block_t *block;
} hr__pending_t;

/* Granules [g, end] of a segment that may have become free while mapped. */
typedef struct hr__gref {
  hr__segment_t *seg;
  uint64_t g, end;
} hr__gref_t;

typedef struct hr__reclaimer {
  hr_reclaim_fn fn;
  void *arg;
  uint64_t id;   /* in the order added: an allocation walks them by id */
  unsigned busy; /* calls under way */
  bool live;     /* false once hr_pool_remove_reclaimer began taking it back */
} hr__reclaimer_t;

typedef struct hr__slab {
  struct hr__slab *next;
  hr__block_t blocks[];
} hr__slab_t;

struct hr_pool {
  pthread_mutex_t lock;
  hr_pool_config_t cfg;
  hr_backend_t *backend;
  int device;
  uint64_t allowed; /* most bytes the pool may reserve */
  uint64_t total;   /* the backend's total at creation */

  hr__bins_t *bins; /* free blocks, per stream and pool */
  uint64_t rng;
  hr__segment_t *segs;

  /* allocated blocks (and freed ones waiting on events) by address */
  hr__block_t **table;
  uint64_t table_cap, table_count;

  hr__slab_t *slabs;
  hr__block_t *free_records;

  hr__pending_t *pending;
  size_t npending, cap_pending;

  hr__gref_t *freeg; /* granules that became free while mapped */
  size_t nfreeg, cap_freeg;

  hr__reclaimer_t reclaimers[16];
  size_t nreclaimers;
  uint64_t reclaimer_ids;      /* the last id given */
  pthread_cond_t reclaim_done; /* a dead reclaimer's last call ended */

  uint64_t tick;     /* best-fit searches so far (the GC's clock) */
  int64_t alloc_hwm; /* highest allocated bytes ever (reset_peak leaves it) */
  hr_pool_stats_t st;
  uint64_t tag_live[HR__MAX_TAGS];
  char diag[2048];
};

/* ---- index.c: the free index --------------------------------------------- */
HR_INTERNAL void hr__index_insert(hr__bins_t *x, hr__block_t *b);
HR_INTERNAL void hr__index_remove(hr__bins_t *x, hr__block_t *b);
/* The best fit: the smallest block of at least `size`, lowest address
 * among equals; NULL when none. */
HR_INTERNAL hr__block_t *hr__index_best(const hr__bins_t *x, uint64_t size);
/* The block after b in (size, address) order, or NULL. */
HR_INTERNAL hr__block_t *hr__index_next(const hr__bins_t *x, const hr__block_t *b);
/* The index of (stream, small), NULL when it has none yet / made on demand. */
HR_INTERNAL hr__bins_t *hr__index_find(hr_pool_t *p, void *stream, bool small);
HR_INTERNAL int hr__index_get(hr_pool_t *p, void *stream, bool small, hr__bins_t **out);
/* Checks order, heap and bitmap; counts the indexed blocks into *n. */
HR_INTERNAL bool hr__index_valid(const hr_pool_t *p, size_t *n);
HR_INTERNAL void hr__index_free_all(hr_pool_t *p);

/* ---- segment.c ----------------------------------------------------------- */
HR_INTERNAL hr__block_t *hr__block_new_locked(hr_pool_t *p);
HR_INTERNAL void hr__block_put_locked(hr_pool_t *p, hr__block_t *b);
HR_INTERNAL void hr__slabs_free(hr_pool_t *p);

/* Makes room for one more entry (doubling, rarely); insert cannot fail. */
HR_INTERNAL int hr__table_reserve_locked(hr_pool_t *p);
HR_INTERNAL void hr__table_insert_locked(hr_pool_t *p, hr__block_t *b);
HR_INTERNAL hr__block_t *hr__table_find_locked(hr_pool_t *p, uint64_t addr);
HR_INTERNAL void hr__table_remove_locked(hr_pool_t *p, hr__block_t *b);

/* Puts a free block into its index / takes it out, keeping stats. */
HR_INTERNAL void hr__free_insert_locked(hr_pool_t *p, hr__block_t *b);
HR_INTERNAL void hr__free_remove_locked(hr_pool_t *p, hr__block_t *b);

HR_INTERNAL int hr__segment_new_locked(hr_pool_t *p, uint64_t size, void *stream, bool small,
                                       hr__segment_t **out);
HR_INTERNAL int hr__segment_new_expandable_locked(hr_pool_t *p, void *stream, bool small,
                                                  hr__segment_t **out);
/* Gives a segment back to the backend; its one block must be free. */
HR_INTERNAL void hr__segment_free_locked(hr_pool_t *p, hr__segment_t *s);
HR_INTERNAL hr__segment_t *hr__segment_find_expandable_locked(hr_pool_t *p, void *stream,
                                                              bool small);

static inline bool hr__gran_is_mapped(const hr__segment_t *s, uint64_t g) {
  return (s->mapped_bm[g / 64] >> (g % 64)) & 1;
}

static inline bool hr__gran_is_free(const hr__segment_t *s, uint64_t g) {
  return !s->used[g] && !((s->busy_bm[g / 64] >> (g % 64)) & 1);
}

/* Expandable segments: the granules [first, last] of a byte range. */
HR_INTERNAL void hr__gran_range(const hr__segment_t *s, uint64_t addr, uint64_t size,
                                uint64_t *first, uint64_t *last);
/* Counts an allocated block on its granules and maps those not mapped,
 * first unmapping free granules elsewhere when the configuration says so.
 * On failure nothing changed. */
HR_INTERNAL int hr__gran_take_locked(hr_pool_t *p, hr__block_t *b);
/* Uncounts a block that is no longer allocated. */
HR_INTERNAL void hr__gran_drop_locked(hr_pool_t *p, hr__block_t *b);
/* Unmaps every mapped granule that no allocated block touches. Returns the
 * bytes unmapped. */
HR_INTERNAL uint64_t hr__gran_release_all_locked(hr_pool_t *p, hr__segment_t *only);
/* Frees an expandable segment's per-granule arrays (not the segment). */
HR_INTERNAL void hr__seg_maps_free(hr__segment_t *s);

/* ---- stats.c ------------------------------------------------------------- */
static inline void hr__stat_add(hr_stat_t *s, int64_t d) {
  s->current += d;
  if (s->current > s->peak) s->peak = s->current;
  if (d > 0) s->total += (uint64_t)d;
}
HR_INTERNAL uint16_t hr__tag_current(void);
HR_INTERNAL const char *hr__tag_name(uint16_t id);
HR_INTERNAL void hr__diagnose_locked(hr_pool_t *p, uint64_t size, void *stream);
HR_INTERNAL int hr__check_locked(hr_pool_t *p);

/* ---- reclaimers.c --------------------------------------------------------- */
/* The reclaimers (reclaimers.c). An allocation that would fail walks them:
 * hr__reclaimer_next_locked() gives the first live one added after the one
 * with id `after` (0: the first), counted busy; hr__reclaimer_call() calls it
 * without the lock; hr__reclaimer_done_locked() ends the call. */
HR_INTERNAL bool hr__reclaimer_next_locked(hr_pool_t *p, uint64_t after, hr__reclaimer_t *out);
HR_INTERNAL void hr__reclaimer_call(hr_pool_t *p, const hr__reclaimer_t *r, uint64_t needed);
HR_INTERNAL void hr__reclaimer_done_locked(hr_pool_t *p, uint64_t id);

/* ---- pool.c -------------------------------------------------------------- */
HR_INTERNAL uint64_t hr__round_size(const hr_pool_config_t *c, uint64_t size);

#endif /* HR_POOL_INTERNAL_H */
