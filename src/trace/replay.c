/* Replay of a trace through the pool: each device section gets a fresh
 * backend (capacity: PyTorch's own recorded peak reserved unless told) and a
 * fresh pool, the section's L and A lines become hr_pool_alloc calls and its
 * F lines hr_pool_free, and the replay measures peak live bytes (requested
 * sizes, as PyTorch's snapshot counts them), peak reserved bytes from the
 * pool's statistics, failed allocations, and the time of each pool call.
 *
 * Slots index a flat array of pointers (the importer made them dense), so
 * the loop does no hashing and no allocation. Times go into a fixed
 * histogram, so the median and p99 cost no memory per event either. */
#include "util/util.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* The capacity of a section without a recorded peak; see section_start. */
#define HR_REPLAY_DEFAULT_CAPACITY (1ull << 40)

/* Nanosecond histogram: exact below EXACT_NS, then power-of-two buckets. */
#define EXACT_NS    4096
#define LOG_BUCKETS 48

typedef struct hist {
  uint64_t exact[EXACT_NS];
  uint64_t log2[LOG_BUCKETS];
  uint64_t n;
} hist_t;

static inline uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline void hist_add(hist_t *h, uint64_t ns) {
  h->n++;
  if (ns < EXACT_NS) {
    h->exact[ns]++;
    return;
  }
  unsigned b = 63u - (unsigned)__builtin_clzll(ns);
  h->log2[b < LOG_BUCKETS ? b : LOG_BUCKETS - 1]++;
}

/* The value below which a fraction `q` of the samples lie; for the
 * power-of-two buckets, the bucket's middle. */
static double hist_quantile(const hist_t *h, double q) {
  if (h->n == 0) return 0;
  uint64_t want = (uint64_t)(q * (double)(h->n - 1)) + 1, seen = 0;
  for (uint64_t i = 0; i < EXACT_NS; i++)
    if ((seen += h->exact[i]) >= want) return (double)i;
  for (unsigned b = 0; b < LOG_BUCKETS; b++)
    if ((seen += h->log2[b]) >= want) return 1.5 * (double)(1ull << b);
  return 0;
}

enum { SLOT_FREE = 0, SLOT_LIVE = 1, SLOT_FAILED = 2 };

typedef struct slot {
  void *ptr;
  uint64_t size;
  uint64_t stream;
  uint8_t state;
} slot_t;

/* PyTorch's policy with the settings the trace was recorded with: the pool's
 * "pytorch" preset amended by the trace's PYTORCH_CUDA_ALLOC_CONF, and for
 * "pytorch-expandable" by expandable_segments:True after it (PyTorch's
 * expandable segments, whatever the trace was recorded with). */
static int config_pytorch(const char *alloc_conf, bool expandable, hr_pool_config_t *out, char *err,
                          size_t errlen) {
  char conf[HR_TRACE_MAX_LINE + 64];
  snprintf(conf, sizeof conf, "pytorch%s%s%s", *alloc_conf ? "," : "", alloc_conf,
           expandable ? ",expandable_segments:True" : "");
  return hr_pool_config_parse(conf, out, err, errlen);
}

static int config_for(const char *conf, const char *alloc_conf, hr_pool_config_t *out, char *err,
                      size_t errlen) {
  if (!conf || strcmp(conf, "default") == 0) {
    hr_pool_config_default(out);
    return 0;
  }
  if (strcmp(conf, "pytorch") == 0) return config_pytorch(alloc_conf, false, out, err, errlen);
  if (strcmp(conf, "pytorch-expandable") == 0)
    return config_pytorch(alloc_conf, true, out, err, errlen);
  return hr_pool_config_parse(conf, out, err, errlen);
}

typedef struct section {
  hr_backend_t *backend;
  hr_pool_t *pool;
  slot_t *slots;
  hist_t *hist;
  uint64_t index, live, peak_live, pytorch_reserved;
  uint64_t t0;
  size_t n_slots;          /* allocated entries of `slots`, grown as slots appear */
  hr_replay_result_t *res; /* NULL past `max`: measured, not stored */
  hr_replay_result_t scratch;
} section_t;

static void section_end(section_t *s) {
  if (s->pool) hr_pool_destroy(s->pool);
  if (s->backend) hr_backend_destroy(s->backend);
  free(s->slots);
  s->pool = NULL, s->backend = NULL, s->slots = NULL, s->n_slots = 0;
}

/* Closes the measurement of a section and fills its result. */
static int section_finish(section_t *s, char *err, size_t errlen) {
  hr_replay_result_t *res = s->res;
  hr_pool_stats_t st;
  memset(&st, 0, sizeof st);
  st.size = sizeof st;
  st.version = HR_POOL_STATS_VERSION;
  int rc = hr_pool_stats(s->pool, &st);
  if (rc)
    return hr__err(err, errlen, rc, "device %d: pool statistics: %s", res->device, hr_strerror(rc));
  res->peak_live_bytes = s->peak_live;
  res->peak_reserved_bytes = (uint64_t)st.reserved_bytes.peak;
  res->ratio = s->peak_live ? (double)res->peak_reserved_bytes / (double)s->peak_live : 0;
  res->device_calls = st.num_device_alloc + st.num_device_free;
  res->ns_per_op_median = hist_quantile(s->hist, 0.5);
  res->ns_per_op_p99 = hist_quantile(s->hist, 0.99);
  res->seconds = (double)(now_ns() - s->t0) / 1e9;
  return 0;
}

static int section_start(section_t *s, const hr_trace_device_t *d, const char *alloc_conf,
                         const hr_replay_opts_t *o, char *err, size_t errlen) {
  hr_pool_config_t cfg;
  int rc = config_for(o->conf, alloc_conf, &cfg, err, errlen);
  if (rc) return rc;
  memset(s->res, 0, sizeof *s->res);
  memset(s->hist, 0, sizeof *s->hist);
  hr_replay_result_t *res = s->res;
  res->device = d->device;
  res->has_pytorch = d->has_pytorch;
  res->has_times = d->has_times;
  res->duration_seconds = (double)d->duration_us / 1e6;
  if (d->has_pytorch) {
    res->pytorch_peak_reserved_bytes = d->pytorch_peak_reserved;
    res->pytorch_peak_live_bytes = d->pytorch_peak_live;
    res->pytorch_ooms = d->pytorch_ooms;
    res->pytorch_ratio =
        d->pytorch_peak_live ? (double)d->pytorch_peak_reserved / (double)d->pytorch_peak_live : 0;
  }
  /* Without a recorded peak (an RMM log), the capacity is more than any
   * GPU has, but not so much that the pool's per-granule maps of each
   * stream's reservation (four times the capacity) cost memory to allocate:
   * 1 TiB is 2 Mi granules of 2 MiB. */
  res->capacity = o->capacity                                  ? o->capacity
                  : d->has_pytorch && d->pytorch_peak_reserved ? d->pytorch_peak_reserved
                                                               : HR_REPLAY_DEFAULT_CAPACITY;
  s->index = s->live = s->peak_live = 0;
  s->pytorch_reserved = d->pytorch_reserved_start;
  /* The slot array starts small and doubles as slots appear (the reader
   * keeps them dense), so a device line that declares billions of slots
   * costs nothing until lines fill them. */
  s->n_slots = (size_t)HR_MIN(d->slots ? d->slots : 1, 1024);
  s->slots = calloc(s->n_slots, sizeof *s->slots);
  if (!s->slots) return hr__err(err, errlen, HR_ENOMEM, "out of memory");
  const char *kind = o->backend ? o->backend : "sim";
  if ((rc = hr_backend_create(kind, d->device, res->capacity, &s->backend)) != 0)
    return hr__err(err, errlen, rc, "backend '%s' for device %d: %s", kind, d->device,
                   hr_strerror(rc));
  if ((rc = hr_pool_create(&cfg, s->backend, d->device, &s->pool)) != 0)
    return hr__err(err, errlen, rc, "pool for device %d: %s", d->device, hr_strerror(rc));
  s->t0 = now_ns();
  return 0;
}

/* Makes slot `i` addressable; new entries are free. */
static int slots_cover(section_t *s, uint32_t i) {
  if (i < s->n_slots) return 0;
  size_t n = HR_MAX(s->n_slots * 2, (size_t)i + 1);
  slot_t *g = realloc(s->slots, n * sizeof *g);
  if (!g) return HR_ENOMEM;
  memset(g + s->n_slots, 0, (n - s->n_slots) * sizeof *g);
  s->slots = g, s->n_slots = n;
  return 0;
}

static int do_alloc(section_t *s, const hr_trace_event_t *ev, uint64_t line, const char *path,
                    char *err, size_t errlen) {
  if (slots_cover(s, ev->slot) != 0)
    return hr__err(err, errlen, HR_ENOMEM, "%s:%" PRIu64 ": out of memory for slot %u", path, line,
                   ev->slot);
  slot_t *sl = &s->slots[ev->slot];
  if (sl->state == SLOT_LIVE)
    return hr__err(err, errlen, HR_EPARSE, "%s:%" PRIu64 ": slot %u is allocated while live", path,
                   line, ev->slot);
  void *ptr = NULL;
  uint64_t t = now_ns();
  int rc = hr_pool_alloc(s->pool, ev->size, (void *)(uintptr_t)ev->stream, &ptr);
  hist_add(s->hist, now_ns() - t);
  if (rc == HR_ENOMEM) {
    s->res->ooms++;
    sl->state = SLOT_FAILED;
    return 0;
  }
  if (rc)
    return hr__err(err, errlen, rc, "%s:%" PRIu64 ": allocating %" PRIu64 " bytes: %s", path, line,
                   ev->size, hr_strerror(rc));
  sl->ptr = ptr, sl->size = ev->size, sl->stream = ev->stream, sl->state = SLOT_LIVE;
  s->live += ev->size;
  if (s->live > s->peak_live) s->peak_live = s->live;
  return 0;
}

static int do_free(section_t *s, const hr_trace_event_t *ev, uint64_t line, const char *path,
                   char *err, size_t errlen) {
  if (ev->slot >= s->n_slots)
    return hr__err(err, errlen, HR_EPARSE, "%s:%" PRIu64 ": free of slot %u, which is not live",
                   path, line, ev->slot);
  slot_t *sl = &s->slots[ev->slot];
  if (sl->state == SLOT_FAILED) { /* its allocation failed: nothing to free */
    sl->state = SLOT_FREE;
    return 0;
  }
  if (sl->state != SLOT_LIVE)
    return hr__err(err, errlen, HR_EPARSE, "%s:%" PRIu64 ": free of slot %u, which is not live",
                   path, line, ev->slot);
  uint64_t t = now_ns();
  int rc = hr_pool_free(s->pool, sl->ptr, (void *)(uintptr_t)sl->stream);
  hist_add(s->hist, now_ns() - t);
  if (rc)
    return hr__err(err, errlen, rc, "%s:%" PRIu64 ": freeing slot %u: %s", path, line, ev->slot,
                   hr_strerror(rc));
  sl->state = SLOT_FREE;
  s->live -= sl->size;
  return 0;
}

/* Applies an R line to PyTorch's recorded reserved bytes, in unsigned
 * arithmetic: a signed sum of a large start and a large change overflowed.
 * Reserved memory below zero or past 2^64 is a damaged trace. */
static int reserved_change(section_t *s, const hr_trace_event_t *ev, uint64_t line,
                           const char *path, char *err, size_t errlen) {
  uint64_t mag = ev->delta < 0 ? 0 - (uint64_t)ev->delta : (uint64_t)ev->delta;
  bool bad = ev->delta < 0 ? mag > s->pytorch_reserved : mag > UINT64_MAX - s->pytorch_reserved;
  if (bad)
    return hr__err(err, errlen, HR_EPARSE,
                   "%s:%" PRIu64 ": R %c%" PRIu64 " takes PyTorch's reserved memory (%" PRIu64
                   " bytes) %s",
                   path, line, ev->delta < 0 ? '-' : '+', mag, s->pytorch_reserved,
                   ev->delta < 0 ? "below zero" : "past 2^64 bytes");
  s->pytorch_reserved = ev->delta < 0 ? s->pytorch_reserved - mag : s->pytorch_reserved + mag;
  return 0;
}

static void sample(section_t *s, const hr_replay_opts_t *o, const hr_trace_device_t *d,
                   uint64_t time_us) {
  hr_pool_stats_t st;
  memset(&st, 0, sizeof st);
  st.size = sizeof st;
  st.version = HR_POOL_STATS_VERSION;
  if (hr_pool_stats(s->pool, &st) != 0) return;
  hr_replay_point_t pt = {
      s->index - d->initial, d->ops,       s->live, (uint64_t)st.reserved_bytes.current,
      s->pytorch_reserved,   d->has_times, time_us, d->duration_us};
  o->sample(d->device, &pt, o->sample_arg);
}

int hr_replay_file(const char *path, const hr_replay_opts_t *opts, hr_replay_result_t *res,
                   size_t max, size_t *n, char *err, size_t errlen) {
  static const hr_replay_opts_t no_opts;
  const hr_replay_opts_t *o = opts ? opts : &no_opts;
  hr_trace_reader_t *r = NULL;
  section_t s = {0};
  hr_trace_event_t ev;
  uint64_t since_progress = 0, done, total;
  int rc;
  bool open_section = false;

  *n = 0;
  s.hist = malloc(sizeof *s.hist);
  if (!s.hist) return hr__err(err, errlen, HR_ENOMEM, "out of memory");
  if ((rc = hr_trace_open(path, &r, err, errlen)) != 0) goto out;
  for (;;) {
    if ((rc = hr_trace_next(r, &ev, err, errlen)) != 0) goto out;
    if (ev.op == HR_TRACE_DEVICE || ev.op == HR_TRACE_END) {
      if (open_section) {
        if ((rc = section_finish(&s, err, errlen)) != 0) goto out;
        section_end(&s);
        open_section = false;
        (*n)++;
      }
      if (ev.op == HR_TRACE_END) break;
      s.res = *n < max ? &res[*n] : &s.scratch;
      if ((rc = section_start(&s, hr_trace_device(r), hr_trace_alloc_conf(r), o, err, errlen)))
        goto out;
      open_section = true;
      continue;
    }
    switch (ev.op) {
    case HR_TRACE_LIVE:
    case HR_TRACE_ALLOC:
      rc = do_alloc(&s, &ev, hr_trace_line(r), path, err, errlen);
      s.index++, s.res->events++;
      break;
    case HR_TRACE_FREE:
      rc = do_free(&s, &ev, hr_trace_line(r), path, err, errlen);
      s.index++, s.res->events++;
      break;
    case HR_TRACE_RESERVED:
      rc = reserved_change(&s, &ev, hr_trace_line(r), path, err, errlen);
      break;
    default: /* PyTorch's own OOMs are in the device header already */
      break;
    }
    if (rc) goto out;
    /* The chart starts where the recorded window does, after the L lines. */
    if (o->sample && ev.op != HR_TRACE_LIVE) sample(&s, o, hr_trace_device(r), ev.time_us);
    if (o->progress && ++since_progress == 65536) {
      since_progress = 0;
      hr_trace_progress(r, &done, &total);
      o->progress(done, total, o->progress_arg);
    }
  }
  if (o->progress) {
    hr_trace_progress(r, &done, &total);
    o->progress(done, total, o->progress_arg);
  }
out:
  section_end(&s);
  free(s.hist);
  hr_trace_close(r);
  return rc;
}
