/* event: what watch decides, as typed C values.
 *
 * Each kind of event has its own payload in hr_watch_event_t; the JSON line,
 * the terminal line, the history row and the Prometheus counters are written
 * from these values at the edges, each by one writer, and nothing parses
 * text that headroom wrote. This part sits under watch, history and the
 * CLI: it knows the snapshot's types and the levels, and nothing above.
 * Included by headroom/watch.h; do not include it alone. */
#ifndef HEADROOM_EVENT_H
#define HEADROOM_EVENT_H

#ifdef __cplusplus
extern "C" {
#endif

typedef enum hr_event_kind {
  HR_EVENT_SAMPLE = 0,
  HR_EVENT_LEVEL,
  HR_EVENT_LEAK,
  HR_EVENT_IDLE_HOG,
  HR_EVENT_OOM_KILL,
  HR_EVENT_EXIT,
  HR_EVENT_ACTION,
  HR_EVENT_ERROR,
  HR_EVENT_BROKER,
  HR_EVENT_KINDS_
} hr_event_kind_t;

/* Returns "sample", "level", "leak", "idle_hog", "oom_kill", "exit",
 * "action", "error" or "broker"; "unknown" for anything else. */
HR_API const char *hr_event_kind_name(hr_event_kind_t k);
/* The kind named `name`, or HR_EVENT_KINDS_ when there is none. */
HR_API hr_event_kind_t hr_event_kind_from_name(const char *name);

/* One process as the live view and the sample event show it. */
typedef struct hr_watch_proc_view {
  const hr_proc_t *proc;
  double rss_per_min, gpu_per_min; /* Theil-Sen over the window; 0 when too few points */
  bool leak;
} hr_watch_proc_view_t;

/* A scope's level changed (host, cgroup, gpuN). A hook started for it gets
 * the same event with `mode` set. */
typedef struct hr_event_level {
  char scope[16];
  hr_level_t level, previous;
  double used_pct; /* NaN when not known */
  uint64_t used_bytes, total_bytes;
  char mode[16]; /* the watch mode, in the copy a hook gets; empty otherwise */
} hr_event_level_t;

/* A leak alarm started for a process (pid and name in the event). */
typedef struct hr_event_leak {
  char series[16]; /* "rss_anon" or "gpu" */
  double slope_bytes_per_min, window_s, span_s;
  uint64_t points;
  double confidence; /* 1 - p of the Mann-Kendall test */
} hr_event_leak_t;

/* A process held a large share of an idle GPU for `samples` samples. */
typedef struct hr_event_idle_hog {
  unsigned gpu;
  uint64_t gpu_bytes;
  double share_pct;
  int util_pct;
  uint64_t samples;
} hr_event_idle_hog_t;

/* The cgroup's oom_kill counter rose. */
typedef struct hr_event_oom_kill {
  char scope[16];
  char path[512];
  uint64_t kills, total;
} hr_event_oom_kill_t;

/* A hook or drop_caches was started or ended. */
typedef struct hr_event_action {
  char action[16];  /* on_warning, on_critical, drop_caches */
  char result[16];  /* started, done, failed, timeout, not started */
  char detail[256]; /* empty when there is none */
} hr_event_action_t;

/* What the memory broker did or saw (docs/broker.md, "Events"): an ask to
 * release and its answer, a grant or refusal, a lease's end, pressure.
 * Written as {"event":"broker_WHAT",...}; pid and name in the event are the
 * client's (pid 0 for an adapter). */
typedef struct hr_event_broker {
  char what[16];   /* "ask", "answer", "granted", ... (hr_broker_event_name) */
  uint32_t uid;    /* the peer's uid */
  char device[16]; /* "host", "gpu0", ... */
  int priority;
  uint64_t bytes;          /* asked, reserved or granted */
  uint64_t released_bytes; /* released (answer), or released for a grant */
  double latency_s;        /* ask to answer, or reserve to granted/refused */
  int status;              /* an adapter's HTTP status; 0 when none came */
  uint64_t lease;          /* the lease's id, or 0 */
  char message[256];
} hr_event_broker_t;

typedef struct hr_event_error {
  char message[600];
} hr_event_error_t;

/* The sample closing each feed. Its pointers belong to the watch and are
 * valid during the callback only; an event read back from history has
 * none (history keeps samples in their own tables). */
typedef struct hr_event_sample {
  const hr_snapshot_t *snap;
  hr_level_t host, cgroup;
  const hr_level_t *gpus; /* one per snapshot GPU */
  const hr_watch_proc_view_t *top;
  size_t n_top;
  bool processes_read; /* false when the last process table was carried over */
  double cpu_s;        /* CPU time the decisions took */
} hr_event_sample_t;

typedef struct hr_watch_event {
  hr_event_kind_t kind;
  double time;   /* seconds since the epoch */
  int pid;       /* 0 when no process is concerned */
  char name[64]; /* the process's name, or empty */
  union {        /* the member named by `kind`; exit has none */
    hr_event_sample_t sample;
    hr_event_level_t level;
    hr_event_leak_t leak;
    hr_event_idle_hog_t idle_hog;
    hr_event_oom_kill_t oom_kill;
    hr_event_action_t action;
    hr_event_error_t error;
    hr_event_broker_t broker;
  };
} hr_watch_event_t;

/* The event as one JSON object on one line, without a newline, into a
 * malloc'd string the caller frees (keys in docs/watch.md; every string
 * goes through the one JSON string writer, so a process name with invalid
 * UTF-8 still gives valid JSON). Returns 0, HR_EINVAL or HR_ENOMEM. */
HR_API int hr_event_json(const hr_watch_event_t *e, char **out);

/* The event as one line for a person, "HH:MM:SS  kind      what", local
 * time, sizes in binary units, into buf (always terminated). Returns buf. */
HR_API const char *hr_event_text(const hr_watch_event_t *e, char *buf, size_t n);

#ifdef __cplusplus
}
#endif

#endif /* HEADROOM_EVENT_H */
