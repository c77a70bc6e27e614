/* broker: the memory broker that `headroom watch` runs beside its loop.
 *
 * Processes connect to a Unix socket (never a network port), register what
 * they could give back (caches that cost nothing, models that cost a reload),
 * reserve memory before a big load, and are asked to release when another
 * process needs room or memory runs short. The protocol is versioned JSON
 * lines (docs/broker.md). The broker runs on its own thread, polls every
 * connection from that one thread (no thread per client), and reports what
 * it does as typed events (the watch's event type, kind HR_EVENT_BROKER) and
 * counters. Include headroom/headroom.h first. */
#ifndef HEADROOM_BROKER_H
#define HEADROOM_BROKER_H

#include "headroom/headroom.h"
#include "headroom/event.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The protocol version the broker speaks; every line carries "v". */
#define HR_BROKER_PROTOCOL 1

typedef struct hr_broker hr_broker_t;

/* Called on the broker's thread for every event, a typed event of kind
 * HR_EVENT_BROKER (headroom/event.h: `broker.what` says what happened), the
 * type watch records in history and writes with its one JSON and text
 * writer; valid during the call; must not block. */
typedef void (*hr_broker_event_fn)(const hr_watch_event_t *e, void *arg);

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

/* The JSON Schema (draft 2020-12) of every message of the protocol's
 * version HR_BROKER_PROTOCOL, both ways, written from the table the broker
 * encodes and decodes with (docs/broker-protocol.schema.json is this
 * text). *out is malloc'd; the caller frees it. Returns 0, HR_EINVAL or
 * HR_ENOMEM. */
HR_API int hr_broker_protocol_schema(char **out);

#ifdef __cplusplus
}
#endif

#endif /* HEADROOM_BROKER_H */
