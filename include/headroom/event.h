/* event: what watch decides and what the broker does, as typed C values.
 *
 * Each kind of event has its own payload in hr_watch_event_t, and each
 * payload's fields are declared once, in a field list below: the payload
 * struct, the JSON line, the terminal line, the history columns and the
 * history reader are all made from that list (src/event/, src/store/), so
 * nothing parses text that headroom wrote and no writer can forget a field.
 * This part sits under watch, the broker, history and the CLI: it knows the
 * snapshot's types and the levels, and nothing above. Included by
 * headroom/watch.h and headroom/broker.h; include headroom/headroom.h first. */
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

/* What the memory broker did or saw (docs/broker.md, "Events"): the `what`
 * of a broker event, written as {"event":"broker_WHAT",...}. */
#define HR_BROKER_EVENTS(X)                                                                        \
  X(HR_BROKER_EV_REFUSED_PEER, "refused_peer")     /* a connection refused: cap, user, pid */      \
  X(HR_BROKER_EV_PROTOCOL_ERROR, "protocol_error") /* garbage from a client: it is closed */       \
  X(HR_BROKER_EV_REGISTER, "register")             /* a client registered */                       \
  X(HR_BROKER_EV_GONE, "gone")                     /* a registered client closed or exited */      \
  X(HR_BROKER_EV_RESERVE, "reserve")               /* a reservation asked */                       \
  X(HR_BROKER_EV_GRANTED, "granted")               /* a reservation granted (latency_s) */         \
  X(HR_BROKER_EV_REFUSED, "refused")               /* a reservation refused (message) */           \
  X(HR_BROKER_EV_ASK, "ask")                       /* a client or adapter asked to release */      \
  X(HR_BROKER_EV_ANSWER, "answer")                 /* what it said it released (latency_s) */      \
  X(HR_BROKER_EV_NO_ANSWER, "no_answer")           /* no answer before the deadline */             \
  X(HR_BROKER_EV_ADAPTER_FAILED, "adapter_failed") /* an adapter's HTTP call failed (status) */    \
  X(HR_BROKER_EV_LEASE_END, "lease_end")           /* a lease ended (message: why) */              \
  X(HR_BROKER_EV_PRESSURE, "pressure")             /* warning or critical use: releases asked */   \
  X(HR_BROKER_EV_RUN, "run")                       /* a lease's command runs (message: it) */      \
  X(HR_BROKER_EV_CANCEL, "cancel")                 /* an ask withdrawn: its reservation ended */

typedef enum hr_broker_event_kind {
#define HR_BROKER_EV_ENUM_(name, text) name,
  HR_BROKER_EVENTS(HR_BROKER_EV_ENUM_)
#undef HR_BROKER_EV_ENUM_
      HR_BROKER_EV_COUNT
} hr_broker_event_kind_t;

/* The broker event's name ("granted"); "?" for an unknown one. */
HR_API const char *hr_broker_event_name(hr_broker_event_kind_t kind);

/* ---- the field lists ----------------------------------------------------
 *
 * A row is X(k, TYPE, member, dims, fmt, flags, since):
 *   k       the payload (the union member of hr_watch_event_t), passed on;
 *   TYPE    STR (char member dims), U64, INT, UINT (unsigned), REAL (double,
 *           written with `fmt` in JSON; NaN or infinite is null), LEVEL
 *           (hr_level_t: its name in JSON, 0/1/2 in history) or WHAT
 *           (hr_broker_event_kind_t: part of the event's name, "broker_ask",
 *           and in history a column named after the kind);
 *   member  the C member, the JSON key and the history column;
 *   flags   HR_EVENT_FIELD_OPTIONAL: the JSON line leaves an empty string out;
 *   since   the history schema that added the column (kinds may share one,
 *           as level and oom_kill share `scope`); 0: history keeps no column.
 * JSON writes the fields in this order, after "event", "time", and "pid" and
 * "name" for a kind about a process. A new field is a row here; a new
 * column also needs HR_HISTORY_SCHEMA raised (headroom/watch.h), and the
 * migration to it adds the rows whose `since` is the new version. */
#define HR_EVENT_FIELD_OPTIONAL 1u

/* A scope's level changed (host, cgroup, gpuN). A hook started for it gets
 * the same event with `mode` set. */
#define HR_EVENT_LEVEL_FIELDS(X, k)                                                                \
  X(k, STR, scope, [16], NULL, 0, 3)                                                               \
  X(k, LEVEL, level, , NULL, 0, 3)                                                                 \
  X(k, LEVEL, previous, , NULL, 0, 3)                                                              \
  X(k, REAL, used_pct, , "%.1f", 0, 3) /* NaN when not known */                                    \
  X(k, U64, used_bytes, , NULL, 0, 3)                                                              \
  X(k, U64, total_bytes, , NULL, 0, 3)                                                             \
  X(k, STR, mode, [16], NULL, HR_EVENT_FIELD_OPTIONAL, 0) /* the watch mode, in a hook's copy */

/* A leak alarm started for a process (pid and name in the event). */
#define HR_EVENT_LEAK_FIELDS(X, k)                                                                 \
  X(k, STR, series, [16], NULL, 0, 3) /* "rss_anon" or "gpu" */                                    \
  X(k, REAL, slope_bytes_per_min, , "%.0f", 0, 3)                                                  \
  X(k, REAL, window_s, , "%g", 0, 3)                                                               \
  X(k, REAL, span_s, , "%.1f", 0, 3)                                                               \
  X(k, U64, points, , NULL, 0, 3)                                                                  \
  X(k, REAL, confidence, , "%.6f", 0, 3) /* 1 - p of the Mann-Kendall test */

/* A process held a large share of an idle GPU for `samples` samples. */
#define HR_EVENT_IDLE_HOG_FIELDS(X, k)                                                             \
  X(k, UINT, gpu, , NULL, 0, 3)                                                                    \
  X(k, U64, gpu_bytes, , NULL, 0, 3)                                                               \
  X(k, REAL, share_pct, , "%.1f", 0, 3)                                                            \
  X(k, INT, util_pct, , NULL, 0, 3)                                                                \
  X(k, U64, samples, , NULL, 0, 3)

/* The cgroup's oom_kill counter rose. */
#define HR_EVENT_OOM_KILL_FIELDS(X, k)                                                             \
  X(k, STR, scope, [16], NULL, 0, 3)                                                               \
  X(k, STR, path, [512], NULL, 0, 3)                                                               \
  X(k, U64, kills, , NULL, 0, 3)                                                                   \
  X(k, U64, total, , NULL, 0, 3)

/* A hook or drop_caches was started or ended. */
#define HR_EVENT_ACTION_FIELDS(X, k)                                                               \
  X(k, STR, action, [16], NULL, 0, 3) /* on_warning, on_critical, drop_caches */                   \
  X(k, STR, result, [16], NULL, 0, 3) /* started, done, failed, timeout, not started */            \
  X(k, STR, detail, [256], NULL, HR_EVENT_FIELD_OPTIONAL, 3)

#define HR_EVENT_ERROR_FIELDS(X, k) X(k, STR, message, [600], NULL, 0, 3)

/* What the memory broker did or saw: an ask to release and its answer, a
 * grant or refusal, a lease's end, pressure. pid and name in the event are
 * the client's (pid 0 for an adapter). */
#define HR_EVENT_BROKER_FIELDS(X, k)                                                               \
  X(k, WHAT, what, , NULL, 0, 4)                                                                   \
  X(k, UINT, uid, , NULL, 0, 4)       /* the peer's uid */                                         \
  X(k, STR, device, [16], NULL, 0, 4) /* "host", "gpu0", ... */                                    \
  X(k, INT, priority, , NULL, 0, 4)                                                                \
  X(k, U64, bytes, , NULL, 0, 4)          /* asked, reserved or granted */                         \
  X(k, U64, released_bytes, , NULL, 0, 4) /* released (answer), or for a grant */                  \
  X(k, REAL, latency_s, , "%.6f", 0, 4)   /* ask to answer, reserve to grant */                    \
  X(k, INT, status, , NULL, 0, 4)         /* an adapter's HTTP status; 0: none */                  \
  X(k, U64, lease, , NULL, 0, 4)          /* the lease's id, or 0 */                               \
  X(k, STR, message, [256], NULL, 0, 3)   /* why, in words */

#define HR_EVENT_CTYPE_STR_   char
#define HR_EVENT_CTYPE_U64_   uint64_t
#define HR_EVENT_CTYPE_INT_   int
#define HR_EVENT_CTYPE_UINT_  unsigned
#define HR_EVENT_CTYPE_REAL_  double
#define HR_EVENT_CTYPE_LEVEL_ hr_level_t
#define HR_EVENT_CTYPE_WHAT_  hr_broker_event_kind_t
#define HR_EVENT_MEMBER_(k, type, member, dims, fmt, flags, since)                                 \
  HR_EVENT_CTYPE_##type##_ member dims;

typedef struct hr_event_level {
  HR_EVENT_LEVEL_FIELDS(HR_EVENT_MEMBER_, level)
} hr_event_level_t;

typedef struct hr_event_leak {
  HR_EVENT_LEAK_FIELDS(HR_EVENT_MEMBER_, leak)
} hr_event_leak_t;

typedef struct hr_event_idle_hog {
  HR_EVENT_IDLE_HOG_FIELDS(HR_EVENT_MEMBER_, idle_hog)
} hr_event_idle_hog_t;

typedef struct hr_event_oom_kill {
  HR_EVENT_OOM_KILL_FIELDS(HR_EVENT_MEMBER_, oom_kill)
} hr_event_oom_kill_t;

typedef struct hr_event_action {
  HR_EVENT_ACTION_FIELDS(HR_EVENT_MEMBER_, action)
} hr_event_action_t;

typedef struct hr_event_error {
  HR_EVENT_ERROR_FIELDS(HR_EVENT_MEMBER_, error)
} hr_event_error_t;

typedef struct hr_event_broker {
  HR_EVENT_BROKER_FIELDS(HR_EVENT_MEMBER_, broker)
} hr_event_broker_t;

/* ---- the sample ---------------------------------------------------------- */

/* One process as the live view and the sample event show it. */
typedef struct hr_watch_proc_view {
  const hr_proc_t *proc;
  double rss_per_min, gpu_per_min; /* Theil-Sen over the window; 0 when too few points */
  bool leak;
} hr_watch_proc_view_t;

/* The sample closing each feed. Its pointers belong to the watch and are
 * valid during the callback only; an event read back from history has
 * none (history keeps samples in their own tables), so it has no field list
 * and its JSON is written by hand. */
typedef struct hr_event_sample {
  const hr_snapshot_t *snap;
  hr_level_t host, cgroup;
  const hr_level_t *gpus; /* one per snapshot GPU */
  const hr_watch_proc_view_t *top;
  size_t n_top;
  bool processes_read; /* false when the last process table was carried over */
  double cpu_s;        /* CPU time the decisions took */
} hr_event_sample_t;

/* ---- the event ----------------------------------------------------------- */

typedef struct hr_watch_event {
  hr_event_kind_t kind;
  double time;   /* seconds since the epoch */
  int pid;       /* 0 when no process is concerned */
  char name[64]; /* the process's name (the client's or adapter's for the broker), or empty */
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
