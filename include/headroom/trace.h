/* trace: read headroom's allocation traces (docs/trace-format.md) and replay
 * them through the pool.
 *
 * The reader streams: it holds one buffer of the file and one line, whatever
 * the trace's length, and reports a malformed line with its number. The
 * replay feeds each device's section to a fresh pool on a backend ("sim" by
 * default, which touches no memory) and measures peak live and reserved
 * bytes, out-of-memory failures and the time of each pool call, beside the
 * numbers PyTorch recorded for the same trace.
 * Part of the daemon library. Included by headroom/daemon.h; do not include it
 * alone. */
#ifndef HEADROOM_TRACE_H
#define HEADROOM_TRACE_H

#ifdef __cplusplus
extern "C" {
#endif

/* ---- reading ------------------------------------------------------------ */

/* The newest format version; the reader also reads every older one (1: no
 * times; 2: T lines give each event's time). */
#define HR_TRACE_VERSION  2
#define HR_TRACE_MAX_LINE 4096

typedef enum hr_trace_op {
  HR_TRACE_DEVICE,   /* a device section starts: see hr_trace_device() */
  HR_TRACE_LIVE,     /* L: a block live before the window */
  HR_TRACE_ALLOC,    /* A: allocate */
  HR_TRACE_FREE,     /* F: free (reusable now) */
  HR_TRACE_RESERVED, /* R: PyTorch's reserved bytes changed by `delta` */
  HR_TRACE_OOM,      /* O: PyTorch failed a request of `size` bytes here */
  HR_TRACE_END,      /* the end of the trace; nothing follows */
} hr_trace_op_t;

typedef struct hr_trace_event {
  hr_trace_op_t op;
  uint32_t slot;   /* LIVE, ALLOC, FREE */
  uint64_t size;   /* LIVE, ALLOC, OOM */
  uint64_t stream; /* LIVE, ALLOC, OOM */
  int64_t delta;   /* RESERVED */
  /* Microseconds since the section's start, from the last T line (0 before
   * any, and in a section without times: see hr_trace_device_t.has_times). */
  uint64_t time_us;
} hr_trace_event_t;

/* A device section's header. The pytorch_* numbers are valid only when
 * has_pytorch is set (RMM logs have none). has_times says the section's events
 * carry times (a version 2 trace whose device line has duration_us=); then
 * every event's time_us lies in [0, duration_us]. */
typedef struct hr_trace_device {
  int device;
  uint64_t slots, initial, ops;
  bool has_pytorch;
  uint64_t pytorch_reserved_start, pytorch_peak_reserved, pytorch_peak_live, pytorch_ooms;
  bool pytorch_expandable;
  bool has_times;
  uint64_t duration_us;
} hr_trace_device_t;

typedef struct hr_trace_reader hr_trace_reader_t;

/* Opens `path` and reads its first line. Returns 0, HR_ENOENT/HR_EPERM/HR_EIO
 * when it cannot be read, HR_EPARSE when it is not a headroom trace, or
 * HR_EVERSION for another format version; err says which and where. The
 * caller closes the reader. */
HR_API int hr_trace_open(const char *path, hr_trace_reader_t **out, char *err, size_t errlen);
HR_API void hr_trace_close(hr_trace_reader_t *r);

/* Reads the next event into *ev. After HR_TRACE_END every call returns
 * HR_TRACE_END again. On a malformed line returns HR_EPARSE with
 * "PATH:LINE: what" in err; the reader is then unusable. */
HR_API int hr_trace_next(hr_trace_reader_t *r, hr_trace_event_t *ev, char *err, size_t errlen);

/* The header of the current device section (valid after the first
 * HR_TRACE_DEVICE event), the trace's source ("pytorch-snapshot NAME"), its
 * alloc_conf ("" when none), the current line number, and how many of the
 * file's bytes were read so far and in all (for progress). Strings belong to
 * the reader. */
HR_API const hr_trace_device_t *hr_trace_device(const hr_trace_reader_t *r);
HR_API const char *hr_trace_source(const hr_trace_reader_t *r);
HR_API const char *hr_trace_alloc_conf(const hr_trace_reader_t *r);
HR_API uint64_t hr_trace_line(const hr_trace_reader_t *r);
HR_API void hr_trace_progress(const hr_trace_reader_t *r, uint64_t *done, uint64_t *total);

/* ---- replay ------------------------------------------------------------- */

/* One point of the timeline, given to the sample callback after each event of
 * the recorded window (not after L lines): how many of the section's `total`
 * A and F lines were replayed, live and reserved bytes in the pool, and
 * PyTorch's reserved bytes at the same point. When has_times is set, the
 * event happened time_us microseconds into the section's duration_us. */
typedef struct hr_replay_point {
  uint64_t index, total;
  uint64_t live, reserved, pytorch_reserved;
  bool has_times;
  uint64_t time_us, duration_us;
} hr_replay_point_t;

typedef void (*hr_replay_sample_fn)(int device, const hr_replay_point_t *pt, void *arg);
typedef void (*hr_replay_progress_fn)(uint64_t done, uint64_t total, void *arg);

typedef struct hr_replay_opts {
  /* "default" (headroom's default), "pytorch" (PyTorch's policy with the
   * alloc_conf the trace was recorded with), "pytorch-expandable" (the same
   * with expandable_segments:True: PyTorch's expandable segments), or a
   * PYTORCH_CUDA_ALLOC_CONF string for hr_pool_config_parse(). NULL means
   * "default". */
  const char *conf;
  const char *backend; /* "sim" (NULL) or "host" */
  uint64_t capacity;   /* 0: PyTorch's recorded peak reserved of each device, else 1 TiB */
  hr_replay_sample_fn sample;
  void *sample_arg;
  hr_replay_progress_fn progress; /* called every 65536 events and at the end */
  void *progress_arg;
} hr_replay_opts_t;

typedef struct hr_replay_result {
  int device;
  uint64_t events;          /* pool operations: L, A and F lines */
  uint64_t peak_live_bytes; /* sum of requested sizes of live blocks, at peak */
  uint64_t peak_reserved_bytes;
  double ratio; /* peak reserved / peak live; 0 when nothing was live */
  uint64_t capacity;
  uint64_t ooms; /* allocations that failed at `capacity` */
  /* Calls into the backend: segment allocs and frees, granule maps and unmaps.
   * On a real device each costs microseconds, so a low ratio bought with many
   * calls is not free. */
  uint64_t device_calls;
  bool has_pytorch;
  uint64_t pytorch_peak_reserved_bytes, pytorch_peak_live_bytes, pytorch_ooms;
  double pytorch_ratio;
  double ns_per_op_median, ns_per_op_p99; /* of each hr_pool_alloc/hr_pool_free */
  double seconds;                         /* wall time of the section, reading included */
  /* The recorded window's length, when the trace keeps times (has_times). */
  bool has_times;
  double duration_seconds;
} hr_replay_result_t;

/* Replays every device section of the trace at `path`. Fills up to `max`
 * results (one per section) and sets *n to the number of sections. Returns
 * 0, the reader's errors, HR_EINVAL for a bad configuration, HR_EPARSE for a
 * trace that frees a slot that is not live (with the line), or the backend's
 * error; err says what. An allocation that fails with HR_ENOMEM is counted
 * as an OOM, not an error. */
HR_API int hr_replay_file(const char *path, const hr_replay_opts_t *opts, hr_replay_result_t *res,
                          size_t max, size_t *n, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif

#endif /* HEADROOM_TRACE_H */
