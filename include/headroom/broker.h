/* broker: the memory broker that `headroom watch` runs beside its loop.
 *
 * Processes connect to a Unix socket (never a network port), register what
 * they could give back (caches that cost nothing, models that cost a reload),
 * reserve memory before a big load, and are asked to release when another
 * process needs room or memory runs short. The protocol is versioned JSON
 * lines (docs/broker.md). The broker runs on its own thread, polls every
 * connection from that one thread (no thread per client), and reports what
 * it does as typed events and counters. Include headroom/headroom.h first. */
#ifndef HEADROOM_BROKER_H
#define HEADROOM_BROKER_H

#include "headroom/headroom.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The protocol version the broker speaks; every line carries "v". */
#define HR_BROKER_PROTOCOL 1

typedef struct hr_broker hr_broker_t;

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
  X(HR_BROKER_EV_PRESSURE, "pressure")             /* warning or critical use: releases asked */

typedef enum hr_broker_event_kind {
#define HR_BROKER_EV_ENUM_(name, text) name,
  HR_BROKER_EVENTS(HR_BROKER_EV_ENUM_)
#undef HR_BROKER_EV_ENUM_
      HR_BROKER_EV_COUNT
} hr_broker_event_kind_t;

/* One thing the broker did or saw. Strings are terminated and may be empty. */
typedef struct hr_broker_event {
  hr_broker_event_kind_t kind;
  double time;       /* seconds since the epoch */
  int pid;           /* the client's pid; 0 for an adapter or none */
  uint32_t uid;      /* the peer's uid */
  char name[64];     /* the client's or the adapter's name */
  char device[16];   /* "host", "gpu0", ... */
  int priority;      /* the client's priority */
  uint64_t bytes;    /* asked, reserved or granted */
  uint64_t released; /* released (answer), or released for a grant */
  double latency_s;  /* ask to answer, or reserve to granted/refused */
  int status;        /* an adapter's HTTP status; 0 when no answer came */
  uint64_t lease;    /* the lease's id, when one is concerned */
  char message[256]; /* why, in words */
} hr_broker_event_t;

/* Called on the broker's thread for every event; must not block. */
typedef void (*hr_broker_event_fn)(const hr_broker_event_t *e, void *arg);

/* Bytes released by one client or adapter name, for the exporter. */
typedef struct hr_broker_released_by {
  char name[64];
  uint64_t bytes;
} hr_broker_released_by_t;

/* The exporter's label set stays bounded: the first HR_BROKER_NAMES_COUNTED
 * - 1 names that release anything have a slot each, later ones share the
 * last slot, named "other". */
#define HR_BROKER_NAMES_COUNTED 16

/* Upper bounds (seconds) of the grant latency histogram's buckets; a last,
 * implicit bucket is +Inf (the count of grants). */
#define HR_BROKER_LATENCY_BOUNDS                                                                   \
  { 0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30 }
#define HR_BROKER_LATENCY_BUCKETS 12

/* Running totals for the exporter and `headroom broker`. */
typedef struct hr_broker_counters {
  uint64_t connections, refused_peers, protocol_errors, registrations;
  uint64_t reservations, granted, refused, asks, answers, no_answers, adapter_failures;
  uint64_t released_bytes; /* as answered by clients and adapters */
  uint64_t pressure_asks;
  double grant_latency_s_total; /* sum over granted reservations */
  uint64_t clients, leases;     /* now */
  /* Grants whose latency was at most each of HR_BROKER_LATENCY_BOUNDS
   * (cumulative, as Prometheus histograms count). */
  uint64_t grant_latency_le[HR_BROKER_LATENCY_BUCKETS];
  hr_broker_released_by_t released_by[HR_BROKER_NAMES_COUNTED];
  size_t n_released_by;
} hr_broker_counters_t;

/* The event kind's name ("granted"); "?" for an unknown one. */
HR_API const char *hr_broker_event_name(hr_broker_event_kind_t kind);

/* The event as one JSON object ({"event":"broker_granted",...}) in *out,
 * malloc'd; the caller frees: hr_event_json of hr_broker_event_to_watch.
 * Returns 0, HR_EINVAL or HR_ENOMEM. */
HR_API int hr_broker_event_json(const hr_broker_event_t *e, char **out);

struct hr_watch_event;

/* The event as the watch's typed event (kind HR_EVENT_BROKER), which the
 * watch records in history and writes with its one JSON and text writer. */
HR_API void hr_broker_event_to_watch(const hr_broker_event_t *e, struct hr_watch_event *out);

/* The socket path the options give (broker_socket; empty: the default,
 * $XDG_RUNTIME_DIR/headroom/broker.sock, or /run/headroom/broker.sock for
 * root without XDG_RUNTIME_DIR). Returns 0, HR_ENOENT (no default: neither
 * XDG_RUNTIME_DIR nor root; or broker_socket is "none") or HR_ERANGE. */
HR_API int hr_broker_socket_path(const hr_options_t *o, char *buf, size_t n);

/* Binds the socket and starts the broker's thread. Reads broker_*, budget,
 * patience, cooldown, ram_warn/ram_critical, vram_warn/vram_critical and
 * root from `o` (copied: o may be freed after). `fn` (may be NULL) gets every
 * event. A socket path held by a live broker is HR_EBUSY; a bad budget or
 * adapter list is HR_EINVAL; each with the reason in err. */
HR_API int hr_broker_start(const hr_options_t *o, hr_broker_event_fn fn, void *arg,
                           hr_broker_t **out, char *err, size_t errlen);

/* Stops the thread, closes every connection (ending every lease), removes the
 * socket and frees b. NULL is a no-op. */
HR_API void hr_broker_stop(hr_broker_t *b);

/* Copies the counters; any thread. */
HR_API void hr_broker_get_counters(hr_broker_t *b, hr_broker_counters_t *out);

/* The path the broker listens on. */
HR_API const char *hr_broker_path(const hr_broker_t *b);

#ifdef __cplusplus
}
#endif

#endif /* HEADROOM_BROKER_H */
