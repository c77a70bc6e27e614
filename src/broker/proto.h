/* The broker's protocol in one place: every message of version 1, both
 * ways, as a C struct and a row of one table (proto.c) that names each
 * field, its type, its range, its default and whether it is required. The
 * one decoder reads a client's line into its struct through that table, the
 * one encoder writes every line the broker sends from its struct through the
 * same table, and the machine-readable schema (docs/broker-protocol.schema.json,
 * `headroom broker --schema`) is written from it too, so the three cannot
 * disagree. Sizes are bytes (whole numbers), times seconds. */
#ifndef HR_BROKER_PROTO_H
#define HR_BROKER_PROTO_H

#include "headroom/broker.h"
#include "util/buf.h"
#include "util/util.h"

#define HR_BROKER_MAX_ITEMS  64    /* releasable items one offer lists */
#define HR_BROKER_LINE_MAX   65536 /* a longer line is garbage */
#define HR_BROKER_NAME_MAX   64    /* a client's, an item's or a holder's name, with its NUL */
#define HR_BROKER_DEVICE_MAX 16    /* "host", "gpu12" */
#define HR_BROKER_TEXT_MAX   256   /* a command, an error, a reason */
#define HR_BROKER_MAX_RES    9     /* host and eight GPUs */

/* Every message, client's first. */
typedef enum hr__bop {
  HR__BOP_HELLO,
  HR__BOP_OFFER,
  HR__BOP_RESERVE,
  HR__BOP_RELEASED,
  HR__BOP_UNRESERVE,
  HR__BOP_RUNNING,
  HR__BOP_STATUS_ASK,
  HR__BOP_CLIENT_END_, /* the broker's from here */
  HR__BOP_WELCOME = HR__BOP_CLIENT_END_,
  HR__BOP_RELEASE,
  HR__BOP_CANCEL,
  HR__BOP_GRANTED,
  HR__BOP_REFUSED,
  HR__BOP_UNRESERVED,
  HR__BOP_ERROR,
  HR__BOP_STATUS,
  HR__BOP_COUNT_
} hr__bop_t;

/* ---- client to broker --------------------------------------------------- */

typedef struct hr__bm_hello {
  int64_t pid;
  char name[HR_BROKER_NAME_MAX];
  int64_t priority;
} hr__bm_hello_t;

/* Something a client could give back. */
typedef struct hr__bitem {
  char name[HR_BROKER_NAME_MAX];
  char device[HR_BROKER_DEVICE_MAX];
  char kind[8];          /* "cache" (costs nothing to give back) or "model" */
  uint64_t bytes;        /* what giving it back frees */
  uint64_t reload_bytes; /* what getting it back costs; 0: its bytes (a model) */
  double idle_s;         /* since last used (LRU) */
} hr__bitem_t;

typedef struct hr__bm_offer {
  bool busy; /* the client is at work (ComfyUI mid prompt): asked after idle ones */
  hr__bitem_t items[HR_BROKER_MAX_ITEMS];
  size_t n_items;
} hr__bm_offer_t;

typedef struct hr__bm_reserve {
  uint64_t id, bytes;
  char device[HR_BROKER_DEVICE_MAX];
  double timeout, lease;
  int64_t priority; /* when absent (see present), the client's */
} hr__bm_reserve_t;

typedef struct hr__bm_released {
  uint64_t id, bytes;
  char error[HR_BROKER_TEXT_MAX]; /* the release failed: why (bytes is then what came back) */
} hr__bm_released_t;

typedef struct hr__bm_unreserve {
  uint64_t lease;
} hr__bm_unreserve_t;

/* The command a lease was granted for runs as `pid` (a child of the
 * asker): recorded in history, where `headroom reserve auto` finds its
 * peaks. */
typedef struct hr__bm_running {
  uint64_t lease;
  int64_t pid;
  char command[HR_BROKER_TEXT_MAX];
} hr__bm_running_t;

/* ---- broker to client --------------------------------------------------- */

typedef struct hr__bm_welcome {
  uint64_t client;
  int64_t pid;
} hr__bm_welcome_t;

typedef struct hr__bm_release {
  uint64_t id;
  char device[HR_BROKER_DEVICE_MAX];
  uint64_t bytes;
} hr__bm_release_t;

/* A release asked earlier is no longer wanted (its reservation was granted
 * or refused): what the client set up for it and has not done yet (ComfyUI's
 * between-prompts flags) is withdrawn. */
typedef struct hr__bm_cancel {
  uint64_t id;
  char reason[HR_BROKER_TEXT_MAX];
} hr__bm_cancel_t;

typedef struct hr__bm_granted {
  uint64_t id, lease;
  char device[HR_BROKER_DEVICE_MAX];
  uint64_t bytes, released_bytes;
  double waited_s;
} hr__bm_granted_t;

typedef struct hr__bholder {
  int64_t pid;
  char name[HR_BROKER_NAME_MAX];
  int64_t priority;
  uint64_t held_bytes, releasable_bytes;
  bool busy;
  char why[64];
} hr__bholder_t;

typedef struct hr__blease_ref {
  uint64_t lease;
  int64_t pid;
  char name[HR_BROKER_NAME_MAX];
  uint64_t bytes;
} hr__blease_ref_t;

/* Lists in a refusal stop at this many; the totals count them all. */
#define HR_BROKER_REFUSAL_LIST 16

typedef struct hr__bm_refused {
  uint64_t id;
  char device[HR_BROKER_DEVICE_MAX];
  uint64_t bytes, free_bytes, fits_bytes, released_bytes;
  char reason[HR_BROKER_TEXT_MAX];
  hr__bholder_t holders[HR_BROKER_REFUSAL_LIST];
  size_t n_holders;
  uint64_t holders_total;
  hr__blease_ref_t leases[HR_BROKER_REFUSAL_LIST];
  size_t n_leases;
  uint64_t leases_total;
} hr__bm_refused_t;

typedef struct hr__bm_unreserved {
  uint64_t lease;
} hr__bm_unreserved_t;

typedef struct hr__bm_error {
  char error[300];
  uint64_t id, lease; /* the request's, when the error is about one; 0: left out */
} hr__bm_error_t;

/* A key and a byte count, for an object keyed by device. */
typedef struct hr__bkv {
  char key[HR_BROKER_DEVICE_MAX];
  uint64_t v;
} hr__bkv_t;

typedef struct hr__bs_res {
  char device[HR_BROKER_DEVICE_MAX];
  uint64_t budget_bytes, capacity_bytes, physical_free_bytes; /* null when unknown or none */
  uint64_t clients_bytes, leased_bytes, free_bytes;
} hr__bs_res_t;

typedef struct hr__bs_client {
  uint64_t client;
  int64_t pid, uid;
  char name[HR_BROKER_NAME_MAX];
  int64_t priority;
  bool busy;
  char last_error[HR_BROKER_TEXT_MAX];
  const hr__bitem_t *items;
  size_t n_items;
  hr__bkv_t releasable[HR_BROKER_MAX_RES];
  size_t n_releasable;
} hr__bs_client_t;

typedef struct hr__bs_adapter {
  char name[96], kind[16], device[HR_BROKER_DEVICE_MAX];
  int64_t priority;
  bool asleep, busy;
  uint64_t known_bytes;
  char last_error[HR_BROKER_TEXT_MAX];
} hr__bs_adapter_t;

typedef struct hr__bs_lease {
  uint64_t lease;
  int64_t pid, uid;
  char name[HR_BROKER_NAME_MAX], device[HR_BROKER_DEVICE_MAX];
  uint64_t bytes, consumed_bytes;
  double expires_in_s; /* NaN (null): never */
} hr__bs_lease_t;

/* Lists in a status stop at these; the totals count them all. */
#define HR_BROKER_STATUS_CLIENTS 32
#define HR_BROKER_STATUS_LEASES  64

typedef struct hr__bm_status {
  char socket[256];
  hr__bs_res_t resources[HR_BROKER_MAX_RES];
  size_t n_resources;
  hr__bs_client_t *clients;
  size_t n_clients;
  uint64_t clients_total;
  hr__bs_adapter_t *adapters;
  size_t n_adapters;
  hr__bs_lease_t *leases;
  size_t n_leases;
  uint64_t leases_total, pending;
  hr_broker_counters_t counters;
} hr__bm_status_t;

/* A decoded client message: its op, which of its fields were given (bit i:
 * the op's field i), and its struct. */
typedef struct hr__bmsg {
  hr__bop_t op;
  uint32_t present;
  union {
    hr__bm_hello_t hello;
    hr__bm_offer_t offer;
    hr__bm_reserve_t reserve;
    hr__bm_released_t released;
    hr__bm_unreserve_t unreserve;
    hr__bm_running_t running;
  } u;
} hr__bmsg_t;

/* Bit of field `name` of op in hr__bmsg_t.present (0 when it has none). */
HR_INTERNAL uint32_t hr__bproto_bit(hr__bop_t op, const char *name);

/* Decodes one line (without its newline; NUL-terminated, `len` bytes) that
 * a client sent. Checks "v", finds the op among the client's and each field
 * by the table: type, range, length, choices; a missing optional field
 * takes its default; unknown fields are ignored (a later version adds
 * some). Returns 0, or HR_EPARSE (not a JSON object), HR_EVERSION, HR_EINVAL
 * (an unknown op or a bad field) with a message naming the op and the field
 * in err. Linear in len. */
HR_INTERNAL int hr__bproto_decode(const char *line, size_t len, hr__bmsg_t *m, char *err, size_t n);

/* Appends one message of op (any, the broker's or a client's) from its
 * struct `msg`, as one JSON object with "v" and "op" first, without a
 * newline. Strings go through the one JSON string writer. */
HR_INTERNAL void hr__bproto_encode(hr__buf_t *o, hr__bop_t op, const void *msg);

/* Appends the JSON Schema (draft 2020-12) of every message of version 1. */
HR_INTERNAL void hr__bproto_schema(hr__buf_t *o);

/* The op's name ("reserve"). */
HR_INTERNAL const char *hr__bproto_name(hr__bop_t op);

#endif /* HR_BROKER_PROTO_H */
