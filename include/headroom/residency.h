/* residency: a registry of models (assets) that keeps the right ones on the
 * device. (The workflow simulator that measures how well it does is in
 * headroom/workflow.h, part of the daemon library.)
 *
 * Each asset has a key (name plus variant, such as "fp16" or "nf4"), its
 * device and host sizes, an optional parent (auxiliary models form a group
 * with their parent and load with it), a pin, a priority and three callbacks
 * that move it: load (possibly partially, within a byte budget), offload
 * (possibly partially) and drop. hr_residency_require() makes a set of assets
 * resident with working memory to spare by offloading others under a policy,
 * and either carries out the whole plan or changes nothing and says what
 * would fit instead.
 *
 * The budget is fixed (simulation) or read from the device each time: free
 * device memory, plus the idle cached bytes of an attached pool, plus what the
 * registry's assets already hold, minus a reserve.
 *
 * Thread safety: every function on one hr_residency_t takes its lock, which
 * is recursive so that a load callback that allocates through a pool whose
 * reclaimer is this registry does not deadlock. Callbacks run with the lock
 * held: they must not register or unregister assets.
 * Included by headroom/headroom.h; do not include it alone. */
#ifndef HEADROOM_RESIDENCY_H
#define HEADROOM_RESIDENCY_H

#ifdef __cplusplus
extern "C" {
#endif

/* An asset's handle; never 0 (HR_ASSET_NONE) for a registered asset. */
typedef uint32_t hr_asset_id_t;
#define HR_ASSET_NONE 0u

/* How victims are chosen when room must be made. */
typedef enum hr_policy {
  HR_POLICY_AUTO = 0, /* lookahead when the caller gives upcoming uses, else lru */
  HR_POLICY_COMFY,    /* ComfyUI: most offloaded first, then least used, then smallest;
                         partial offload before full */
  HR_POLICY_LRU,      /* least recently used first, whole assets */
  HR_POLICY_LOOKAHEAD /* next use furthest away first; partial offload before full */
} hr_policy_t;

/* "auto", "comfy", "lru", "lookahead"; a static string. */
HR_API const char *hr_policy_name(hr_policy_t policy);
/* Parses a policy name; HR_EINVAL for anything else. */
HR_API int hr_policy_parse(const char *s, hr_policy_t *out);

/* ---- callbacks ----------------------------------------------------------- */

/* Brings asset `id` on the device so that it holds at most `budget_bytes`
 * there (its device size for a full load, less for a partial one) and sets
 * `*loaded_bytes` to what it holds on the device after the call. Returns 0 or
 * a negative HR_E* code (the registry then keeps what *loaded_bytes says). */
typedef int (*hr_asset_load_fn)(hr_asset_id_t id, uint64_t budget_bytes, uint64_t *loaded_bytes,
                                void *arg);
/* Moves at least `bytes_to_free` of asset `id` off the device when it can
 * (everything it holds when bytes_to_free is at least that), and sets `*freed`
 * to the bytes it gave back. An asset that cannot be partly offloaded offloads
 * whole. Returns 0 or a negative HR_E* code. */
typedef int (*hr_asset_offload_fn)(hr_asset_id_t id, uint64_t bytes_to_free, uint64_t *freed,
                                   void *arg);
/* Forgets asset `id` everywhere (device and host); called by unregister. */
typedef void (*hr_asset_drop_fn)(hr_asset_id_t id, void *arg);

/* ---- the registry -------------------------------------------------------- */

/* Where free device memory is read from when the budget is not fixed. */
typedef int (*hr_mem_info_fn)(void *arg, uint64_t *free_bytes, uint64_t *total_bytes);

typedef struct hr_residency_options {
  uint64_t budget_bytes;  /* > 0: fixed budget (simulation); 0: read from the device */
  uint64_t reserve_bytes; /* kept free on the device (option "reserve") */
  double patience_s;      /* wait for offloaded memory to show as free (option "patience") */
  double poll_interval_s; /* between two reads of free memory while waiting */
  hr_policy_t policy;
  hr_mem_info_fn mem_info; /* free memory source; NULL: the backend's */
  void *mem_info_arg;
  hr_backend_t *backend; /* read with hr_backend_mem_info() when mem_info is NULL */
  hr_pool_t *pool;       /* its idle cached bytes count as free; not owned */
} hr_residency_options_t;

typedef struct hr_residency hr_residency_t;

/* Fills `out` from the option table `table` (reserve, patience,
 * residency_policy) or, when table is NULL, from the built-in defaults. */
HR_API void hr_residency_options_default(const hr_options_t *table, hr_residency_options_t *out);

/* Creates a registry. With budget_bytes 0 a free memory source is needed
 * (mem_info or backend), else HR_EINVAL. The options are copied. With a
 * pool, the registry registers itself as the pool's reclaimer
 * (hr_residency_reclaim) until it is destroyed; the pool must outlive it. */
HR_API int hr_residency_create(const hr_residency_options_t *options, hr_residency_t **out);
/* Frees the registry without calling any callback: assets stay where they
 * are. With a pool, first takes the registry's reclaimer back from it
 * (hr_pool_remove_reclaimer), waiting for a call of it under way on another
 * thread, so an allocation from the pool never reaches a freed registry. Do
 * not call it with the registry's lock held, from one of its callbacks. */
HR_API void hr_residency_destroy(hr_residency_t *r);

typedef struct hr_asset_desc {
  const char *name;            /* required; copied */
  const char *variant;         /* "fp16", "int8", "nf4"; NULL or "" for none; copied */
  uint64_t device_bytes;       /* on the device when fully loaded; > 0 */
  uint64_t host_bytes;         /* in host memory when offloaded (informative) */
  hr_asset_id_t parent;        /* HR_ASSET_NONE, or the asset whose group this one joins */
  bool pinned;                 /* never offloaded by the registry */
  bool partial;                /* may be loaded and offloaded in part */
  int priority;                /* higher stays longer, before any policy order */
  uint64_t resident_bytes;     /* already on the device at registration */
  hr_asset_load_fn load;       /* required */
  hr_asset_offload_fn offload; /* required */
  hr_asset_drop_fn drop;       /* optional */
  void *arg;                   /* passed to the callbacks */
} hr_asset_desc_t;

/* Registers an asset. HR_EEXIST when name+variant is taken, HR_ENOENT for an
 * unknown parent, HR_EINVAL for a missing name, size or callback. */
HR_API int hr_asset_register(hr_residency_t *r, const hr_asset_desc_t *desc, hr_asset_id_t *id);
/* Calls the asset's drop callback and forgets it; its group members lose
 * their parent (each becomes its own group). */
HR_API int hr_asset_unregister(hr_residency_t *r, hr_asset_id_t id);
/* Records a use of the asset (and its group) now, for lru and comfy. */
HR_API int hr_asset_touch(hr_residency_t *r, hr_asset_id_t id);
/* Marks asset `id` (and its group) as in use by the caller (`busy` true)
 * or idle (false). A busy asset is never chosen to make room, by require or
 * by reclaim, and counts as staying, as a pinned one does; its pin is not
 * changed. Marking it idle also ends its being the set of the last require,
 * so that reclaim may offload it: a caller that knows when its computation
 * with a set ends (a Python `with` block) says so. */
HR_API int hr_asset_set_busy(hr_residency_t *r, hr_asset_id_t id, bool busy);
/* Finds an asset by name and variant (NULL or "" for none). */
HR_API int hr_asset_find(hr_residency_t *r, const char *name, const char *variant,
                         hr_asset_id_t *id);

typedef struct hr_asset_info {
  hr_asset_id_t id, parent, group; /* group: the root of its group */
  char name[128], variant[32];
  uint64_t device_bytes, host_bytes, resident_bytes;
  bool pinned, partial;
  int priority;
  uint64_t uses;     /* times required or touched */
  uint64_t last_use; /* the registry's use clock at the last use */
} hr_asset_info_t;

HR_API int hr_asset_info(hr_residency_t *r, hr_asset_id_t id, hr_asset_info_t *out);

/* ---- plans --------------------------------------------------------------- */

typedef enum hr_action_kind {
  HR_ACTION_LOAD,
  HR_ACTION_LOAD_PARTIAL,
  HR_ACTION_OFFLOAD,
  HR_ACTION_OFFLOAD_PARTIAL,
} hr_action_kind_t;

typedef struct hr_action {
  hr_action_kind_t kind;
  hr_asset_id_t id;
  uint64_t bytes;          /* moved by this action */
  uint64_t resident_after; /* the asset's device bytes after it */
} hr_action_t;

typedef enum hr_suggestion_kind {
  HR_SUGGEST_VARIANT, /* use another variant of the same name: `alt`, `bytes` on the device */
  HR_SUGGEST_PARTIAL, /* load `id` partially: `bytes` on the device, the rest on the host */
  HR_SUGGEST_CPU,     /* run `id` on the CPU: frees `bytes` */
  HR_SUGGEST_WORKING, /* lower working memory to `bytes` */
  HR_SUGGEST_UNPIN,   /* unpin `id`: frees `bytes` */
} hr_suggestion_kind_t;

typedef struct hr_suggestion {
  hr_suggestion_kind_t kind;
  hr_asset_id_t id, alt;
  uint64_t bytes;
  char text[256]; /* a sentence with the numbers */
} hr_suggestion_t;

#define HR_PLAN_MAX_SUGGESTIONS 8

/* What require did, or why it did nothing. Owned by the caller; the arrays
 * are freed by hr_plan_free(). */
typedef struct hr_plan {
  hr_policy_t policy; /* the policy that chose the victims */
  hr_action_t *actions;
  size_t n_actions, cap_actions;
  uint64_t bytes_loaded, bytes_offloaded;
  uint32_t loads, partial_loads, offloads, partial_offloads;
  uint64_t capacity_bytes; /* the budget this plan had: reserve already taken off */
  uint64_t used_bytes;     /* resident assets plus working bytes after the plan */
  uint64_t short_bytes;    /* on refusal: what was missing */
  double waited_s;         /* patience spent waiting for free memory */
  hr_suggestion_t suggestions[HR_PLAN_MAX_SUGGESTIONS];
  size_t n_suggestions;
  char message[512]; /* on failure: why, naming assets and numbers */
} hr_plan_t;

/* Frees the plan's arrays and zeroes it; a zeroed plan needs no free. */
HR_API void hr_plan_free(hr_plan_t *plan);
HR_API const char *hr_action_kind_name(hr_action_kind_t kind);

/* Upcoming uses, as a workflow engine knows them: ids[i] is used steps[i]
 * steps from now (non-decreasing; 1 is the next step), and that step needs
 * working[i] bytes of working memory (NULL: as much as this one). With a few
 * candidates the lookahead policy tries each minimal set of victims against
 * the next HR_LOOKAHEAD_ROLLOUT steps and keeps the cheapest. */
typedef struct hr_lookahead {
  const hr_asset_id_t *ids;
  const uint32_t *steps;
  size_t n;
  const uint64_t *working;
} hr_lookahead_t;

#define HR_LOOKAHEAD_ROLLOUT 24

/* Makes every asset of ids[0..n) and its group resident with working_bytes
 * free, offloading other unpinned assets as the policy chooses (lookahead
 * may be NULL). Partial assets of the set are loaded in part when the whole
 * set cannot fit. On success returns 0 and `plan` (may be NULL; it must be
 * zeroed or hold an earlier result, which is freed; free the last one with
 * hr_plan_free) lists the actions taken. When it cannot fit,
 * returns HR_ENOSPC, changes nothing, and the plan's message and suggestions
 * say what would fit. HR_ETIMEDOUT when offloaded memory did not show as free
 * within the patience (the message names the assets; the offloads stay done,
 * nothing was loaded), HR_ENOENT for an unknown id, or a callback's error
 * (the plan lists what was done before it). */
HR_API int hr_residency_require(hr_residency_t *r, const hr_asset_id_t *ids, size_t n,
                                uint64_t working_bytes, const hr_lookahead_t *lookahead,
                                hr_plan_t *plan);

/* hr_residency_require, and on success the set and its groups marked busy
 * (hr_asset_set_busy) while the lock is still held, so that nothing can
 * offload them in between: the start of a block of computation with the set
 * (Python's `with registry.use(...)`), in one call. The caller marks the
 * groups idle when the block ends. On failure nothing is marked busy. */
HR_API int hr_residency_use(hr_residency_t *r, const hr_asset_id_t *ids, size_t n,
                            uint64_t working_bytes, const hr_lookahead_t *lookahead,
                            hr_plan_t *plan);

/* What requiring ids[0..n) would cost, without doing it: `*need` is the
 * bytes that would be loaded (missing bytes of the set and its groups) plus
 * working_bytes; `*can_free` is what could be made available for them: the
 * budget's free bytes now plus every other unpinned asset's device bytes.
 * The set fits when *need <= *can_free. */
HR_API int hr_residency_estimate(hr_residency_t *r, const hr_asset_id_t *ids, size_t n,
                                 uint64_t working_bytes, uint64_t *need, uint64_t *can_free);

/* Offloads up to `bytes` of asset `id` now (all of it when `bytes` is at
 * least what it holds; an asset that is not partial offloads whole), because
 * the caller says it is done with it, pinned or not. Sets *freed (may be
 * NULL). HR_EBUSY for a busy asset (hr_asset_set_busy), HR_ENOENT for an
 * unknown id, or the offload callback's error. */
HR_API int hr_asset_offload(hr_residency_t *r, hr_asset_id_t id, uint64_t bytes, uint64_t *freed);

/* Offloads idle (not required by the running require), unpinned assets under
 * the policy until `needed` bytes are freed or none is left; sets *freed.
 * Matches hr_reclaim_fn, with the registry as `arg`, so that a pool can call
 * it when an allocation would fail: hr_pool_add_reclaimer(pool,
 * hr_residency_reclaim, r). HR_ENOSPC when nothing could be freed. */
HR_API int hr_residency_reclaim(hr_pool_t *pool, uint64_t needed, uint64_t *freed, void *r);

typedef struct hr_residency_stats {
  uint64_t capacity_bytes; /* the budget now, reserve taken off */
  uint64_t resident_bytes; /* held by registered assets */
  uint64_t bytes_loaded, bytes_offloaded;
  uint64_t loads, offloads, refusals, timeouts, reclaims;
  size_t assets;
} hr_residency_stats_t;

HR_API int hr_residency_stats(hr_residency_t *r, hr_residency_stats_t *out);

#ifdef __cplusplus
}
#endif

#endif /* HEADROOM_RESIDENCY_H */
