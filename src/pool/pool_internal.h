/* pool internals shared by pool.c (policy), segment.c (plain segments,
 * block records), expand.c (expandable segments), index.c (the free-block
 * index), stats.c (statistics, invariants, diagnosis, tags) and torch.c
 * (PyTorch entry points).
 *
 * A segment is a range of device addresses tiled by blocks in address order
 * (prev/next). A plain segment is all backed by memory; an expandable one is
 * a reservation of address space of which only some granules are mapped:
 * its blocks are allocated, free and mapped, or unmapped (free, granule
 * aligned, nothing of it mapped), as in PyTorch's expandable segments. Free
 * mapped blocks sit in an index per stream and pool (small or large), in
 * size bins ordered by (size, address), so the best fit is a short search.
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
#define HR__VA_FACTOR   4   /* address reserved per expandable segment / allowed (default) */
#define HR__NBINS       256 /* size bins of the free index, 8 per power of two */
#define HR__MAX_EXTENT  16  /* most granules one map call covers (default policy) */
/* Least an expandable segment grows by (default): 1/HR__GROW_SHARE of the
 * most memory ever allocated, within [HR__GROW_STEP_MIN, HR__GROW_STEP_MAX]. */
#define HR__GROW_SHARE    64
#define HR__GROW_STEP_MIN (20ull << 20)
#define HR__GROW_STEP_MAX (40ull << 20)

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
  bool unmapped; /* expandable segments: free, and none of its granules mapped */
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
  uint64_t page; /* mapping unit, a multiple of gran: unmapped blocks are aligned to it */
  uint64_t ngran;
  uint64_t *mapped_bm; /* bitmap: granule mapped */
  /* Granules are mapped in extents: runs mapped by one backend call over
   * one allocation, which can only be unmapped whole (cuMemUnmap takes the
   * exact range cuMemMap mapped). Each mapped granule names its extent's
   * first granule; the first holds the length and the handle. */
  uint32_t *ext_head;        /* first granule of the extent of each mapped granule */
  uint32_t *ext_len;         /* at an extent's first granule: its granules */
  uint64_t *handle;          /* at an extent's first granule: the backend handle */
  hr__block_t **unmapped_at; /* at the first granule of each unmapped block: that block */
  uint64_t first_hole;       /* no granule below it is unmapped (a lower bound) */
  uint64_t mapped;           /* bytes mapped */
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

/* An extent that compaction may unmap: granules [head, head + len) of the
 * free block `b`. */
typedef struct hr__ext_ref {
  hr__block_t *b;
  uint32_t head, len;
} hr__ext_ref_t;

typedef struct hr__reclaimer {
  hr_reclaim_fn fn;
  void *arg;
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

  hr__ext_ref_t *exts; /* compaction's scratch list of unmappable extents */
  size_t cap_exts;

  hr__reclaimer_t reclaimers[16];
  size_t nreclaimers;

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
/* Indexes the free mapped block b (not indexed yet), merged first with
 * free mapped neighbours; returns the merged block (the lowest of them). */
HR_INTERNAL hr__block_t *hr__free_merge_locked(hr_pool_t *p, hr__block_t *b);
/* Makes sure `n` block records can be taken without calling malloc. */
HR_INTERNAL int hr__block_reserve_locked(hr_pool_t *p, size_t n);
/* Links the new block n into its segment's list right after b. */
HR_INTERNAL void hr__block_link_after(hr__block_t *b, hr__block_t *n);
/* Unlinks n, the block after b, and gives b its bytes. */
HR_INTERNAL void hr__block_absorb_next_locked(hr_pool_t *p, hr__block_t *b);

HR_INTERNAL void hr__segment_link(hr_pool_t *p, hr__segment_t *s);
HR_INTERNAL int hr__segment_new_locked(hr_pool_t *p, uint64_t size, void *stream, bool small,
                                       hr__segment_t **out);
/* Gives a segment back to the backend; its one block must be free (or,
 * expandable, unmapped). */
HR_INTERNAL void hr__segment_free_locked(hr_pool_t *p, hr__segment_t *s);

/* ---- expand.c: expandable segments --------------------------------------- */
static inline bool hr__gran_is_mapped(const hr__segment_t *s, uint64_t g) {
  return (s->mapped_bm[g / 64] >> (g % 64)) & 1;
}

/* Expandable segments: the granules [first, last] of a byte range. */
HR_INTERNAL void hr__gran_range(const hr__segment_t *s, uint64_t addr, uint64_t size,
                                uint64_t *first, uint64_t *last);
/* A free mapped block of at least `size` bytes for (stream, small), made
 * by mapping unmapped blocks of an expandable segment (a new segment when
 * no segment has room), at the lowest address where free and unmapped
 * blocks in a row hold `size`. Compacts first when the policy says so.
 * Call it when no free mapped block fits. Returns 0 and the block (still
 * indexed), HR_ENOMEM, or HR_EDEVICE. */
HR_INTERNAL int hr__expand_grow_locked(hr_pool_t *p, uint64_t size, void *stream, bool small,
                                       hr__block_t **out);
/* Unmaps every extent that lies inside one free block of an expandable
 * segment (after one synchronize). Returns the bytes unmapped. */
HR_INTERNAL uint64_t hr__expand_release_locked(hr_pool_t *p);
/* Unmaps every extent (uncounted) and releases the reservation and the
 * per-granule arrays of s (not s itself); for hr_pool_destroy and
 * hr__segment_free_locked. */
HR_INTERNAL void hr__expand_destroy_locked(hr_pool_t *p, hr__segment_t *s);

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

/* ---- pool.c -------------------------------------------------------------- */
HR_INTERNAL uint64_t hr__round_size(const hr_pool_config_t *c, uint64_t size);

#endif /* HR_POOL_INTERNAL_H */
