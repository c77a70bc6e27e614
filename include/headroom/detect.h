/* detect: the pure decision primitives, shared by the daemon and the Python
 * package: the level of a use in percent (ok / warning / critical with
 * hysteresis), the leak trend test (Mann-Kendall with a Theil-Sen slope
 * over a window) and the table of what each cleanup mode does. They read
 * no machine state and keep none beyond a leak detector's series, so they
 * live in libheadroom, where an inference process that loads no daemon can
 * use them.
 * Included by headroom/headroom.h; do not include it alone. */
#ifndef HEADROOM_DETECT_H
#define HEADROOM_DETECT_H

#ifdef __cplusplus
extern "C" {
#endif

/* ---- levels ------------------------------------------------------------- */

typedef enum hr_level {
  HR_LEVEL_OK = 0,
  HR_LEVEL_WARNING = 1,
  HR_LEVEL_CRITICAL = 2,
} hr_level_t;

/* Returns "ok", "warning" or "critical". */
HR_API const char *hr_level_name(hr_level_t level);

/* Returns the level after `cur` given a use of `pct` percent. A level rises
 * as soon as pct reaches its threshold, and falls only when pct is more than
 * `hyst` points under it, so a value hovering at a threshold does not flap.
 * A NaN pct (unknown) keeps the current level. */
HR_API hr_level_t hr_level_update(hr_level_t cur, double pct, double warn, double crit,
                                  double hyst);

/* ---- leak detector ------------------------------------------------------ */

/* Mann-Kendall trend test on y (n values in time order), with the variance
 * corrected for ties. Writes the statistic S, the normal score z and the
 * one-sided p-value of an increasing trend. Needs n >= 3; O(n^2). */
HR_API int hr_mann_kendall(const double *y, size_t n, double *s, double *z, double *p_up);

/* Theil-Sen slope: the median of the slopes over every pair (i < j) with
 * t[j] > t[i]. Needs scratch room for n*(n-1)/2 doubles, or NULL to allocate.
 * Returns 0, HR_EINVAL (fewer than 2 distinct times) or HR_ENOMEM. */
HR_API int hr_theil_sen(const double *t, const double *y, size_t n, double *scratch, double *slope);

typedef struct hr_leak_config {
  double window_s;    /* samples older than this are dropped */
  size_t min_samples; /* an alarm needs at least this many points */
  double min_rate;    /* bytes per minute the slope must exceed */
  double alpha;       /* one-sided significance of the trend; 0 means 0.0001 */
  size_t max_points;  /* points kept per series (older ones merged); 0 means 120 */
} hr_leak_config_t;

typedef struct hr_leak_result {
  bool suspected;
  size_t n;             /* points in the window */
  double span_s;        /* time the points cover */
  double slope_per_min; /* Theil-Sen, bytes per minute */
  double z, p;          /* Mann-Kendall */
  double confidence;    /* 1 - p */
  bool raised;          /* hr_leak_add: the alarm started with this sample */
} hr_leak_result_t;

/* Evaluates one series (times in seconds, values in bytes, time order)
 * against the config. A trend alarms only when every test holds: enough
 * points, a significant Mann-Kendall trend, a Theil-Sen slope over min_rate,
 * each half of the window rising at a third of the slope at least, and the later
 * half's median above the earlier half's by a share of the slope, and the
 * growth over the window four times the residuals' median absolute
 * deviation (noise) at least. The halves keep a step or load ramp followed by a plateau and a
 * sawtooth quiet; the price is that a leak starting in a long flat history is found once it fills
 * about half the window. */
HR_API int hr_leak_evaluate(const hr_leak_config_t *cfg, const double *t, const double *y, size_t n,
                            hr_leak_result_t *out);

/* Evaluates a recorded series (times in seconds, values in bytes, time
 * order; samples whose time or value is not finite are skipped) as the
 * detector would at its last sample had it been fed every one: samples closer
 * together than window_s / max_points averaged into one point, points older
 * than window_s dropped, then the tests of hr_leak_evaluate(), min_samples
 * counting samples rather than points. It keeps no alarm state (raised is
 * false; suspected says whether the tests hold at the end). Any number of
 * samples: the tests run on max_points points at most. Returns 0, HR_EINVAL
 * or HR_ENOMEM. */
HR_API int hr_leak_evaluate_samples(const hr_leak_config_t *cfg, const double *t, const double *y,
                                    size_t n, hr_leak_result_t *out);

typedef struct hr_leak hr_leak_t;

/* Series per (pid, start time, series number); a pid that comes back with
 * another start time is a new process and starts a new series. */
HR_API int hr_leak_create(const hr_leak_config_t *cfg, hr_leak_t **out);
HR_API void hr_leak_destroy(hr_leak_t *d);

/* Adds one sample and evaluates the series; `out` (may be NULL) gets the
 * result. Only a series whose later points stand above its earlier ones is
 * put through the tests, which keeps a sample of a thousand flat processes
 * cheap. An alarm stays raised until the slope falls under half of min_rate
 * or the process goes. Values of HR_UNKNOWN are skipped. Returns 0 or
 * HR_ENOMEM. */
HR_API int hr_leak_add(hr_leak_t *d, int pid, uint64_t start_ticks, int series, double t,
                       uint64_t bytes, hr_leak_result_t *out);
/* The Theil-Sen slope (bytes per minute) of a series over its window, for
 * display; HR_ENOENT when there is no such series or too few points. */
HR_API int hr_leak_slope(hr_leak_t *d, int pid, uint64_t start_ticks, int series, double *per_min);
/* Forgets series not updated since `before` (processes that exited). */
HR_API void hr_leak_prune(hr_leak_t *d, double before);
/* Number of series held. */
HR_API size_t hr_leak_count(const hr_leak_t *d);

/* ---- cleanup modes ------------------------------------------------------ */

/* What each cleanup mode (the `mode` option: conservative, balanced,
 * aggressive) does, in one table read by `headroom watch`, the Python
 * package's free_memory() and the ComfyUI nodes alike. A process does what
 * only it can do (caches, a collection, idle modules, models, repeated
 * passes); watch, an outside process, runs hooks and drops the page cache.
 * Each mode does what the one before it does, and more. */
typedef struct hr_cleanup_mode {
  const char *name;        /* "conservative", "balanced", "aggressive" */
  const char *summary;     /* what the mode does, in one sentence */
  bool caches;             /* a process releases its allocator caches: PyTorch's CUDA cache,
                              headroom's pools' cached segments, malloc_trim(0) */
  bool collect;            /* ... after a garbage collection (Python's gc.collect) */
  bool idle_modules;       /* ... and offloads the idle modules of its open registries */
  bool models;             /* ... and, inside ComfyUI, unloads its models through
                              comfy.model_management */
  bool hooks;              /* watch runs on_warning at a warning, on_critical at a critical level */
  bool drop_caches;        /* watch drops the page cache at a critical host or cgroup level
                              (as root, with allow_drop_caches) */
  uint32_t max_passes;     /* a process repeats its pass at most this many times ... */
  uint64_t min_pass_bytes; /* ... while a pass brings back at least this many bytes */
} hr_cleanup_mode_t;

/* Returns the table, in the order of the `mode` option's choices, from the
 * gentlest mode to the strongest; `n` gets the number of rows. The table is
 * static and lives as long as the library. Never fails. */
HR_API const hr_cleanup_mode_t *hr_cleanup_modes(size_t *n);

/* Returns the row of the mode named `name`, or NULL when there is none
 * (NULL `name` included). */
HR_API const hr_cleanup_mode_t *hr_cleanup_mode(const char *name);

#ifdef __cplusplus
}
#endif

#endif /* HEADROOM_DETECT_H */
