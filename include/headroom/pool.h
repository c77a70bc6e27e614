/* pool: a caching device-memory allocator over a backend (cuda, host, sim).
 *
 * Blocks are carved from segments the backend provides, cached when freed,
 * and reused by the stream that freed them at once, by other streams after
 * an event recorded on every stream that used them has completed. A failed
 * allocation releases cache, then asks the registered reclaimers (residency),
 * then fails with HR_ENOMEM and a diagnosis. Statistics follow the names and
 * meanings of torch.cuda.memory_stats().
 * Included by headroom/headroom.h; do not include it alone. */
#ifndef HEADROOM_POOL_H
#define HEADROOM_POOL_H

#ifdef __cplusplus
extern "C" {
#endif

/* ---- backends ----------------------------------------------------------- */

typedef struct hr_backend hr_backend_t;

/* Creates a backend: "sim" (address space only, `capacity` bytes), "host"
 * (mmap'd memory, at most `capacity` bytes) or "cuda" (device `device` through
 * the driver loaded with dlopen; `capacity` 0 means the device's memory).
 * "cuda" without a driver returns HR_ENODRIVER. The caller destroys the
 * backend after every pool on it. */
HR_API int hr_backend_create(const char *kind, int device, uint64_t capacity, hr_backend_t **out);
HR_API void hr_backend_destroy(hr_backend_t *b);
/* The backend's own idea of free and total memory (cuMemGetInfo for cuda). */
HR_API int hr_backend_mem_info(hr_backend_t *b, uint64_t *free_bytes, uint64_t *total_bytes);

/* ---- configuration ------------------------------------------------------ */

#define HR_ROUNDUP_INTERVALS 16

typedef struct hr_pool_config {
  uint64_t max_split_size; /* blocks above this are never split; UINT64_MAX: no limit */
  double gc_threshold;     /* 0: off; else reclaim cache by age above this fraction */
  bool expandable_segments;
  /* roundup_power2_divisions per power-of-two interval of the size, as in
   * PyTorch: index 0 is below 2 MiB, index i is [2^(20+i), 2^(21+i)), the
   * last one everything from 32 GiB; 0 or 1 means no extra rounding. */
  unsigned roundup_divisions[HR_ROUNDUP_INTERVALS];
  double memory_fraction; /* of the backend's total, in (0, 1] */
  uint64_t reserve_bytes; /* never reserve into the last reserve_bytes */
  bool pytorch_compat;    /* mimic PyTorch's policy exactly */
  /* Expandable segments only: before mapping new granules, unmap granules
   * that no block uses (after a device synchronize), so reserved memory
   * follows live memory instead of its history. */
  bool compact_mapping;
} hr_pool_config_t;

/* Fills `out` with headroom's default configuration: expandable segments
 * with compact mapping where the backend can map, no split limit, no GC. */
HR_API void hr_pool_config_default(hr_pool_config_t *out);
/* Fills `out` with the configuration that mimics PyTorch's
 * CUDACachingAllocator with an empty PYTORCH_CUDA_ALLOC_CONF. */
HR_API void hr_pool_config_pytorch(hr_pool_config_t *out);

/* Parses PYTORCH_CUDA_ALLOC_CONF syntax ("key:value,key:value") into `out`.
 * The string may start with a preset, "default" or "pytorch", that the keys
 * after it amend; without one it starts from the default. PyTorch's keys:
 * max_split_size_mb, garbage_collection_threshold, expandable_segments,
 * roundup_power2_divisions (N or [256:1,512:2,>:8]); the pinned-memory keys
 * are accepted and ignored; backend is refused. headroom's keys:
 * memory_fraction, reserve_mb, pytorch_compat, compact_mapping. Unknown keys,
 * bad numbers and out-of-range values return HR_EINVAL with a message naming
 * the key and the accepted range. NULL or "" gives the default. */
HR_API int hr_pool_config_parse(const char *conf, hr_pool_config_t *out, char *err, size_t errlen);

/* ---- the pool ----------------------------------------------------------- */

typedef struct hr_pool hr_pool_t;

/* Creates a pool on `backend` (NULL config: the default). Expandable
 * segments fall back to plain ones when the backend cannot map. The pool
 * may reserve at most memory_fraction of the backend's total, less
 * reserve_bytes. One lock per pool; every call is thread-safe. */
HR_API int hr_pool_create(const hr_pool_config_t *config, hr_backend_t *backend, int device,
                          hr_pool_t **out);
/* Frees every segment back to the backend. Live blocks are lost. */
HR_API void hr_pool_destroy(hr_pool_t *pool);

/* Allocates `size` bytes for use on `stream` and sets *ptr (NULL for size
 * 0). On failure releases cache, calls the reclaimers without the lock and
 * retries; then returns HR_ENOMEM and keeps a diagnosis
 * (hr_pool_last_diagnosis), also logged at warn level. */
HR_API int hr_pool_alloc(hr_pool_t *pool, uint64_t size, void *stream, void **ptr);
/* Frees a block from hr_pool_alloc. A `stream` other than the one it was
 * allocated on counts as hr_pool_record_stream(ptr, stream) first. Returns
 * HR_EINVAL for a pointer the pool did not hand out (or freed twice). */
HR_API int hr_pool_free(hr_pool_t *pool, void *ptr, void *stream);
/* Marks `ptr` as used by `stream` too: its reuse waits for that stream. */
HR_API int hr_pool_record_stream(hr_pool_t *pool, void *ptr, void *stream);
/* Returns every fully free cached segment to the backend (empty_cache). */
HR_API int hr_pool_release_cached(hr_pool_t *pool);

typedef struct hr_stat {
  int64_t current;
  int64_t peak;
  uint64_t total; /* cumulative amount added */
} hr_stat_t;

/* {current, peak, total} triples, named as in torch.cuda.memory_stats(). */
#define HR_POOL_STATS(X)                                                                           \
  X(allocated_bytes)                                                                               \
  X(reserved_bytes)                                                                                \
  X(active_bytes)                                                                                  \
  X(inactive_split_bytes)                                                                          \
  X(requested_bytes)                                                                               \
  X(allocation)                                                                                    \
  X(segment)                                                                                       \
  X(active)                                                                                        \
  X(inactive_split)

#define HR_POOL_STATS_VERSION 1

typedef struct hr_pool_stats {
  uint32_t size;    /* sizeof(hr_pool_stats_t) as the caller compiled it */
  uint32_t version; /* HR_POOL_STATS_VERSION */
#define HR_POOL_STAT_FIELD_(name) hr_stat_t name;
  HR_POOL_STATS(HR_POOL_STAT_FIELD_)
#undef HR_POOL_STAT_FIELD_
  uint64_t num_alloc_retries, num_ooms, num_device_alloc, num_device_free;
  uint64_t reserved_[16];
} hr_pool_stats_t;

/* Copies the statistics. Set stats->size before the call. */
HR_API int hr_pool_stats(hr_pool_t *pool, hr_pool_stats_t *stats);
HR_API int hr_pool_reset_peak(hr_pool_t *pool);
/* Verifies every invariant; returns 0 or HR_ESTATE and logs what broke. */
HR_API int hr_pool_check(hr_pool_t *pool);

typedef struct hr_block_info {
  uint64_t addr, size, requested;
  bool allocated;
  void *stream;
  const char *tag;
} hr_block_info_t;

typedef struct hr_segment_info {
  uint64_t addr, size; /* for an expandable segment, its address reservation */
  uint64_t mapped;     /* bytes backed by memory (== size unless expandable) */
  void *stream;
  bool small_pool, expandable;
} hr_segment_info_t;

/* Calls `visit` once per segment, blocks in address order, under the pool
 * lock: the visitor must not call the pool. A non-zero return stops. */
typedef int (*hr_segment_visit_fn)(const hr_segment_info_t *seg, const hr_block_info_t *blocks,
                                   size_t n, void *arg);
HR_API int hr_pool_segments(hr_pool_t *pool, hr_segment_visit_fn visit, void *arg);

/* Sets the calling thread's ownership tag (a model or stage name; copied).
 * NULL clears it. Live bytes are kept per tag. */
HR_API void hr_pool_set_tag(const char *tag);

/* Called when an allocation would fail: free what you can (at least `needed`
 * bytes if possible) by calling hr_pool_free and set *freed. Runs under no
 * pool lock. */
typedef int (*hr_reclaim_fn)(hr_pool_t *pool, uint64_t needed, uint64_t *freed, void *arg);
/* Adds a reclaimer; a failing allocation calls them in the order added.
 * Returns 0, HR_EINVAL, or HR_ENOSPC when 16 are registered. `arg` must stay
 * valid until hr_pool_remove_reclaimer() or hr_pool_destroy(). */
HR_API int hr_pool_add_reclaimer(hr_pool_t *pool, hr_reclaim_fn fn, void *arg);
/* Takes back the reclaimer added with this fn and arg (the last added, when
 * the pair was added twice). Once it returns, `fn` is not running with `arg`
 * on any thread and is never called with it again, so `arg` may be freed: it
 * waits for a call under way on another thread (so the caller must not hold
 * a lock that `fn` takes). From inside `fn` it may take back that very
 * reclaimer (its own call then ends as usual); no other. Returns 0,
 * HR_EINVAL, or HR_ENOENT when no such reclaimer is registered. */
HR_API int hr_pool_remove_reclaimer(hr_pool_t *pool, hr_reclaim_fn fn, void *arg);

/* The text of the last HR_ENOMEM diagnosis (requested, allocated, reserved,
 * cached but unusable, largest free block, device free/total, top tags). */
HR_API int hr_pool_last_diagnosis(hr_pool_t *pool, char *buf, size_t len);

/* ---- PyTorch entry points (CUDAPluggableAllocator) ---------------------- */

/* hr_torch_malloc returns a block of `size` bytes on `device` for `stream`,
 * and NULL for size 0. On failure (out of memory after the pool released its
 * cache and asked its reclaimers, or a pool that cannot be made) it calls the
 * raise hook, which must not return; without a hook it returns NULL and logs
 * an error once. PyTorch does not check for NULL, so under PyTorch the hook
 * must be set. hr_torch_free gives a block back (PyTorch passes the stream
 * the block was allocated on). */
HR_API void *hr_torch_malloc(ssize_t size, int device, void *stream);
HR_API void hr_torch_free(void *ptr, ssize_t size, int device, void *stream);
/* The raise hook: the signature of libc10's c10::detail::torchCheckFail
 * (const char *func, const char *file, uint32_t line, const char *msg),
 * which throws c10::Error. hr_torch_malloc calls it holding no lock, with a
 * message that starts "CUDA out of memory." for out of memory (the request,
 * the device, the pool's reserved, allocated and free bytes, the device's
 * free and total, a hint), and "headroom: " for other failures; the
 * exception unwinds through hr_torch_malloc, which is built with unwind
 * tables, and leaves the pool as it was. The hook is read only when an
 * allocation fails. NULL removes it. Thread-safe. */
typedef void (*hr_torch_raise_fn)(const char *func, const char *file, uint32_t line,
                                  const char *msg);
HR_API void hr_torch_set_oom_raise(hr_torch_raise_fn fn);
/* The pool behind hr_torch_malloc for `device`, or NULL when that device has
 * none yet: for statistics and release_cached from the Python layer. The pool
 * lives until the process ends. */
HR_API hr_pool_t *hr_torch_pool(int device);

#ifdef __cplusplus
}
#endif

#endif /* HEADROOM_POOL_H */
