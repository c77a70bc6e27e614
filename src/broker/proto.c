/* The protocol's table and its three readers: the decoder of a client's
 * line, the encoder of every line either side sends, and the JSON Schema
 * writer (proto.h says why they share one table).
 *
 * A message is a shape: a list of fields, each a row naming the C member it
 * lives in (an offset into the message's struct), its type, its range (a
 * string's length is its array's size), its default and flags. Lists hold
 * objects of another shape, either inline (an array member with a count
 * member) or behind a pointer (the status's clients and leases). */
#include "broker/proto.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stddef.h>
#include <string.h>

typedef enum { T_U64, T_INT, T_NUM, T_STR, T_BOOL, T_LIST, T_OBJ, T_MAP } ftype_t;

enum {
  F_REQ = 1u,   /* a client must send it */
  F_NULL = 2u,  /* written as null: a U64 of HR_UNKNOWN or HR_UNLIMITED, a NUM that is NaN */
  F_OMIT = 4u,  /* left out when 0 or empty */
  F_TRUNC = 8u, /* a longer string is cut to fit (names), not refused */
  F_PTR = 16u,  /* a list behind a pointer member, not an inline array */
};

/* The largest whole number a JSON number carries here: 2^63. */
#define JSON_U64_MAX 9223372036854775807.0

typedef struct shape shape_t;
typedef struct field {
  const char *name;
  ftype_t t;
  unsigned flags;
  size_t off, size; /* STR: the array's size; LIST, MAP: one element's size */
  size_t count_off; /* LIST, MAP: the size_t count member */
  double min, max;  /* numbers; LIST and MAP: at most max elements */
  const char *choices;
  const char *fmt; /* NUM, in the encoder */
  bool has_default;
  double dnum;
  const char *dstr;
  const shape_t *sub;
  const char *doc;
} field_t;

struct shape {
  const char *name;
  const field_t *f;
  size_t n;
  const char *doc;
  bool client; /* a client sends it: its optional fields may be left out */
};

#define MEMBER(st, m) .name = #m, .off = offsetof(st, m), .size = sizeof(((st *)0)->m)
#define U64(st, m, fl, d)                                                                          \
  { MEMBER(st, m), .t = T_U64, .flags = (fl), .max = JSON_U64_MAX, .doc = d }
#define INT(st, m, lo, hi, d)                                                                      \
  { MEMBER(st, m), .t = T_INT, .min = (lo), .max = (hi), .doc = d }
#define STR(st, m, fl, d)                                                                          \
  { MEMBER(st, m), .t = T_STR, .flags = (fl), .doc = d }
#define BOOL(st, m, d)                                                                             \
  { MEMBER(st, m), .t = T_BOOL, .doc = d }
#define NUM(st, m, fl, lo, hi, f, d)                                                               \
  { MEMBER(st, m), .t = T_NUM, .flags = (fl), .min = (lo), .max = (hi), .fmt = (f), .doc = d }
#define LIST(st, m, cnt, fl, mx, shp, d)                                                           \
  {                                                                                                \
    .name = #m, .t = T_LIST, .flags = (fl), .off = offsetof(st, m),                                \
    .size = sizeof(((st *)0)->m[0]), .count_off = offsetof(st, cnt), .max = (mx), .sub = &(shp),   \
    .doc = d                                                                                       \
  }
#define SHAPE(n_, rows, d)                                                                         \
  { .name = (n_), .f = (rows), .n = HR_ARRAY_LEN(rows), .doc = (d) }

/* ---- the messages -------------------------------------------------------- */

static const field_t hello_f[] = {
    {MEMBER(hr__bm_hello_t, pid), .t = T_INT, .flags = F_REQ, .min = 1, .max = 4194304,
     .doc = "this process's pid (or its pid in its own namespace): a client registers only "
            "itself"},
    {MEMBER(hr__bm_hello_t, name), .t = T_STR, .flags = F_TRUNC, .dstr = "?", .has_default = true,
     .doc = "what the client is called in status, events and refusals"},
    {MEMBER(hr__bm_hello_t, priority), .t = T_INT, .min = -1e6, .max = 1e6, .has_default = true,
     .doc = "higher keeps its memory longer: never asked for a reservation of lower priority"},
};

static const field_t item_f[] = {
    {MEMBER(hr__bitem_t, name), .t = T_STR, .flags = F_TRUNC, .doc = "what it is"},
    {MEMBER(hr__bitem_t, device), .t = T_STR, .dstr = "host", .has_default = true,
     .doc = "host or gpuN"},
    {MEMBER(hr__bitem_t, kind), .t = T_STR, .flags = F_REQ, .choices = "cache|model",
     .doc = "a cache costs nothing to give back; a model costs a reload"},
    U64(hr__bitem_t, bytes, F_REQ, "what giving it back frees"),
    U64(hr__bitem_t, reload_bytes, 0, "what getting it back costs (default: bytes for a model)"),
    NUM(hr__bitem_t, idle_s, 0, 0, 1e12, "%.1f", "seconds since it was last used"),
};
static const shape_t item_s = {.name = "item",
                               .f = item_f,
                               .n = HR_ARRAY_LEN(item_f),
                               .doc = "something a client could give back",
                               .client = true};

static const field_t offer_f[] = {
    {MEMBER(hr__bm_offer_t, busy), .t = T_BOOL,
     .doc = "the client is at work (ComfyUI mid prompt): asked only after idle ones"},
    LIST(hr__bm_offer_t, items, n_items, F_REQ, HR_BROKER_MAX_ITEMS, item_s,
         "everything it could give back now; replaces the previous offer"),
};

static const field_t reserve_f[] = {
    U64(hr__bm_reserve_t, id, 0, "the asker's id for the answer"),
    {MEMBER(hr__bm_reserve_t, bytes), .t = T_U64, .flags = F_REQ, .min = 1, .max = JSON_U64_MAX,
     .doc = "whole bytes wanted"},
    {MEMBER(hr__bm_reserve_t, device), .t = T_STR, .dstr = "host", .has_default = true,
     .doc = "host or gpuN"},
    {MEMBER(hr__bm_reserve_t, timeout), .t = T_NUM, .min = 0, .max = 1e9, .has_default = true,
     .dnum = 30, .fmt = "%g", .doc = "seconds to wait for room, queued or asking"},
    NUM(hr__bm_reserve_t, lease, 0, 0, 1e12, "%g",
        "seconds the lease lasts; 0: until released or the connection closes"),
    INT(hr__bm_reserve_t, priority, -1e6, 1e6, "default: the client's (0 when not registered)"),
};

static const field_t released_f[] = {
    U64(hr__bm_released_t, id, F_REQ, "the release asked"),
    U64(hr__bm_released_t, bytes, F_REQ, "bytes that came back, measured"),
    STR(hr__bm_released_t, error, F_TRUNC | F_OMIT,
        "the release failed, and why (bytes is what came back before it failed)"),
};

static const field_t unreserve_f[] = {
    {MEMBER(hr__bm_unreserve_t, lease), .t = T_U64, .flags = F_REQ, .min = 1, .max = JSON_U64_MAX,
     .doc = "the lease to end"},
};

static const field_t running_f[] = {
    {MEMBER(hr__bm_running_t, lease), .t = T_U64, .flags = F_REQ, .min = 1, .max = JSON_U64_MAX,
     .doc = "a lease of this connection"},
    {MEMBER(hr__bm_running_t, pid), .t = T_INT, .flags = F_REQ, .min = 1, .max = 4194304,
     .doc = "the command's pid: a child of the asker"},
    STR(hr__bm_running_t, command, F_REQ | F_TRUNC, "the command line, for history"),
};

static const field_t welcome_f[] = {
    U64(hr__bm_welcome_t, client, F_REQ, "the client's id"),
    INT(hr__bm_welcome_t, pid, 1, 4194304, "the pid registered"),
};

static const field_t release_f[] = {
    U64(hr__bm_release_t, id, F_REQ, "answer released with this id"),
    STR(hr__bm_release_t, device, F_REQ, "host or gpuN"),
    U64(hr__bm_release_t, bytes, F_REQ, "give back at least this many if you can"),
};

static const field_t cancel_f[] = {
    U64(hr__bm_cancel_t, id, F_REQ, "the release no longer wanted"),
    STR(hr__bm_cancel_t, reason, F_REQ, "granted or refused, in words"),
};

static const field_t granted_f[] = {
    U64(hr__bm_granted_t, id, F_REQ, "the reservation's id"),
    U64(hr__bm_granted_t, lease, F_REQ, "the lease now held"),
    STR(hr__bm_granted_t, device, F_REQ, "host or gpuN"),
    U64(hr__bm_granted_t, bytes, F_REQ, "bytes leased"),
    U64(hr__bm_granted_t, released_bytes, F_REQ, "bytes others released for it"),
    NUM(hr__bm_granted_t, waited_s, F_REQ, 0, 1e12, "%.6f", "reserve to granted"),
};

static const field_t holder_f[] = {
    INT(hr__bholder_t, pid, 0, 4194304, "its pid"),
    STR(hr__bholder_t, name, 0, "its name"),
    INT(hr__bholder_t, priority, -1e6, 1e6, "its priority"),
    U64(hr__bholder_t, held_bytes, 0, "what its process holds on the device"),
    U64(hr__bholder_t, releasable_bytes, 0, "what it offers there"),
    BOOL(hr__bholder_t, busy, "it said it is at work, or its last answer was none or 0"),
    STR(hr__bholder_t, why, 0, "what the broker did with it, in words"),
};
static const shape_t holder_s = SHAPE("holder", holder_f, "a registered client on the device");

static const field_t lease_ref_f[] = {
    U64(hr__blease_ref_t, lease, 0, "its id"),
    INT(hr__blease_ref_t, pid, 0, 4194304, "its holder's pid"),
    STR(hr__blease_ref_t, name, 0, "its holder's name"),
    U64(hr__blease_ref_t, bytes, 0, "bytes it holds"),
};
static const shape_t lease_ref_s = SHAPE("lease_ref", lease_ref_f, "a lease on the device");

static const field_t refused_f[] = {
    U64(hr__bm_refused_t, id, F_REQ, "the reservation's id"),
    STR(hr__bm_refused_t, device, F_REQ, "host or gpuN"),
    U64(hr__bm_refused_t, bytes, F_REQ, "bytes asked"),
    U64(hr__bm_refused_t, free_bytes, F_REQ, "free now"),
    U64(hr__bm_refused_t, fits_bytes, F_REQ, "the largest reservation that fits now"),
    U64(hr__bm_refused_t, released_bytes, F_REQ, "bytes others released for it"),
    STR(hr__bm_refused_t, reason, F_REQ, "why, in words"),
    LIST(hr__bm_refused_t, holders, n_holders, F_REQ, HR_BROKER_REFUSAL_LIST, holder_s,
         "the registered clients on the device, those holding most first"),
    U64(hr__bm_refused_t, holders_total, F_REQ, "how many there are in all"),
    LIST(hr__bm_refused_t, leases, n_leases, F_REQ, HR_BROKER_REFUSAL_LIST, lease_ref_s,
         "the leases on the device, largest first"),
    U64(hr__bm_refused_t, leases_total, F_REQ, "how many there are in all"),
};

static const field_t unreserved_f[] = {U64(hr__bm_unreserved_t, lease, F_REQ, "the lease ended")};

static const field_t error_f[] = {
    STR(hr__bm_error_t, error, F_REQ, "what was wrong, in words"),
    U64(hr__bm_error_t, id, F_OMIT, "the request it is about"),
    U64(hr__bm_error_t, lease, F_OMIT, "the lease it is about"),
};

/* ---- the status ----------------------------------------------------------- */

static const field_t res_f[] = {
    STR(hr__bs_res_t, device, 0, "host or gpuN"),
    U64(hr__bs_res_t, budget_bytes, F_NULL, "what the broker may hand out; null: no budget"),
    U64(hr__bs_res_t, capacity_bytes, F_NULL, "its total"),
    U64(hr__bs_res_t, physical_free_bytes, F_NULL, "free as the kernel or the driver says"),
    U64(hr__bs_res_t, clients_bytes, 0, "what registered clients and adapters hold"),
    U64(hr__bs_res_t, leased_bytes, 0, "what the leases hold, less what their holders use"),
    U64(hr__bs_res_t, free_bytes, 0, "what a reservation gets at once"),
};
static const shape_t res_s = SHAPE("resource", res_f, "a resource the broker hands out");

static const field_t kv_f[] = {
    STR(hr__bkv_t, key, 0, "a device"),
    U64(hr__bkv_t, v, 0, "bytes"),
};
static const shape_t kv_s = SHAPE("bytes_by_device", kv_f, "bytes by device");

static const field_t sclient_f[] = {
    U64(hr__bs_client_t, client, 0, "its id"),
    INT(hr__bs_client_t, pid, 0, 4194304, "its pid"),
    INT(hr__bs_client_t, uid, 0, 4294967295.0, "its user"),
    STR(hr__bs_client_t, name, 0, "its name"),
    INT(hr__bs_client_t, priority, -1e6, 1e6, "its priority"),
    BOOL(hr__bs_client_t, busy, "at work, or its last answer was none or 0"),
    STR(hr__bs_client_t, last_error, F_OMIT, "the error of its last failed release"),
    LIST(hr__bs_client_t, items, n_items, F_PTR, HR_BROKER_MAX_ITEMS, item_s, "its offer"),
    {.name = "releasable_bytes",
     .t = T_MAP,
     .off = offsetof(hr__bs_client_t, releasable),
     .size = sizeof(hr__bkv_t),
     .count_off = offsetof(hr__bs_client_t, n_releasable),
     .max = HR_BROKER_MAX_RES,
     .sub = &kv_s,
     .doc = "what it offers, by device"},
};
static const shape_t sclient_s = SHAPE("client", sclient_f, "a registered client");

static const field_t sadapter_f[] = {
    STR(hr__bs_adapter_t, name, 0, "kind@host:port"),
    STR(hr__bs_adapter_t, kind, 0, "comfyui, ollama or vllm"),
    STR(hr__bs_adapter_t, device, 0, "host or gpuN"),
    INT(hr__bs_adapter_t, priority, -1e6, 1e6, "broker_adapter_priority"),
    BOOL(hr__bs_adapter_t, asleep, "put to sleep by the broker (vllm)"),
    BOOL(hr__bs_adapter_t, busy, "at work, or its last call failed"),
    U64(hr__bs_adapter_t, known_bytes, 0, "what it holds on its device, as it says (ollama)"),
    STR(hr__bs_adapter_t, last_error, F_OMIT, "why its last call failed"),
};
static const shape_t sadapter_s = SHAPE("adapter", sadapter_f, "a program asked over HTTP");

static const field_t slease_f[] = {
    U64(hr__bs_lease_t, lease, 0, "its id"),
    INT(hr__bs_lease_t, pid, 0, 4194304, "its holder's pid"),
    INT(hr__bs_lease_t, uid, 0, 4294967295.0, "its holder's user"),
    STR(hr__bs_lease_t, name, 0, "its holder's name"),
    STR(hr__bs_lease_t, device, 0, "host or gpuN"),
    U64(hr__bs_lease_t, bytes, 0, "bytes leased"),
    U64(hr__bs_lease_t, consumed_bytes, 0, "of which its holder, a registered client, now uses"),
    NUM(hr__bs_lease_t, expires_in_s, F_NULL, -1e12, 1e12, "%.1f", "null: never"),
};
static const shape_t slease_s = SHAPE("lease", slease_f, "a lease");

#define COUNTER(m, d) U64(hr_broker_counters_t, m, 0, d)
static const field_t counters_f[] = {
    COUNTER(connections, "connections accepted"),
    COUNTER(refused_peers, "connections refused"),
    COUNTER(protocol_errors, "connections closed for bad input"),
    COUNTER(registrations, "hellos"),
    COUNTER(reservations, "reservations asked"),
    COUNTER(granted, "reservations granted"),
    COUNTER(refused, "reservations refused"),
    COUNTER(asks, "releases asked"),
    COUNTER(answers, "releases answered"),
    COUNTER(no_answers, "releases not answered in time"),
    COUNTER(adapter_failures, "adapter calls failed"),
    COUNTER(released_bytes, "bytes released, as answered"),
    COUNTER(pressure_asks, "releases asked for pressure"),
    NUM(hr_broker_counters_t, grant_latency_s_total, 0, 0, 1e15, "%.6f", "sum of grant latencies"),
};
static const shape_t counters_s = SHAPE("counters", counters_f, "running totals");

static const field_t status_f[] = {
    STR(hr__bm_status_t, socket, 0, "the socket's path"),
    LIST(hr__bm_status_t, resources, n_resources, 0, HR_BROKER_MAX_RES, res_s, "host, gpuN"),
    LIST(hr__bm_status_t, clients, n_clients, F_PTR, HR_BROKER_STATUS_CLIENTS, sclient_s,
         "registered clients, the first ones"),
    U64(hr__bm_status_t, clients_total, 0, "registered clients in all"),
    LIST(hr__bm_status_t, adapters, n_adapters, F_PTR, 8, sadapter_s, "configured adapters"),
    LIST(hr__bm_status_t, leases, n_leases, F_PTR, HR_BROKER_STATUS_LEASES, slease_s,
         "leases, largest first"),
    U64(hr__bm_status_t, leases_total, 0, "leases in all"),
    U64(hr__bm_status_t, pending, 0, "reservations queued"),
    {.name = "counters",
     .t = T_OBJ,
     .off = offsetof(hr__bm_status_t, counters),
     .sub = &counters_s,
     .doc = "running totals"},
};

static const struct op {
  const char *name;
  shape_t s;
} ops[HR__BOP_COUNT_] = {
    [HR__BOP_HELLO] = {"hello",
                       SHAPE("hello", hello_f, "registers this process; answered welcome")},
    [HR__BOP_OFFER] = {"offer", SHAPE("offer", offer_f, "what it could give back; no answer")},
    [HR__BOP_RESERVE] = {"reserve",
                         SHAPE("reserve", reserve_f, "asks for room; answered granted or refused")},
    [HR__BOP_RELEASED] = {"released",
                          SHAPE("released", released_f, "answers a release; no answer")},
    [HR__BOP_UNRESERVE] = {"unreserve", SHAPE("unreserve", unreserve_f,
                                              "ends a lease; answered unreserved or error")},
    [HR__BOP_RUNNING] = {"running", SHAPE("running", running_f,
                                          "names the command a lease is for; no answer")},
    [HR__BOP_STATUS_ASK] = {"status", {.name = "status_ask", .doc = "answered with the status"}},
    [HR__BOP_WELCOME] = {"welcome", SHAPE("welcome", welcome_f, "the client is registered")},
    [HR__BOP_RELEASE] = {"release", SHAPE("release", release_f, "give back memory if you can")},
    [HR__BOP_CANCEL] = {"cancel", SHAPE("cancel", cancel_f, "a release asked is not wanted now")},
    [HR__BOP_GRANTED] = {"granted", SHAPE("granted", granted_f, "a reservation granted")},
    [HR__BOP_REFUSED] = {"refused", SHAPE("refused", refused_f, "a reservation refused")},
    [HR__BOP_UNRESERVED] = {"unreserved", SHAPE("unreserved", unreserved_f, "a lease ended")},
    [HR__BOP_ERROR] = {"error", SHAPE("error", error_f,
                                      "bad input (the connection is closed) or a failed request")},
    [HR__BOP_STATUS] = {"status", SHAPE("status", status_f, "what the broker knows now")},
};

const char *hr__bproto_name(hr__bop_t op) {
  return op < HR__BOP_COUNT_ ? ops[op].name : "?";
}

uint32_t hr__bproto_bit(hr__bop_t op, const char *name) {
  for (size_t i = 0; op < HR__BOP_COUNT_ && i < ops[op].s.n; i++)
    if (strcmp(ops[op].s.f[i].name, name) == 0) return 1u << i;
  return 0;
}

/* ---- the decoder ------------------------------------------------------------ */

static int bad(char *err, size_t n, const char *where, const field_t *f, const char *fmt, ...)
    HR_PRINTF(5, 6);
static int bad(char *err, size_t n, const char *where, const field_t *f, const char *fmt, ...) {
  char what[160];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(what, sizeof what, fmt, ap);
  va_end(ap);
  return hr__err(err, n, HR_EINVAL, "%s: \"%s\" must be %s", where, f->name, what);
}

/* A whole number in the field's range, or a number when `whole` is false. */
static int number(const cJSON *v, const field_t *f, bool whole, double *out, const char *where,
                  char *err, size_t n) {
  double d = cJSON_IsNumber(v) ? v->valuedouble : NAN;
  if (!isfinite(d) || d < f->min || d > f->max || (whole && d != floor(d))) {
    char hi[32] = "2^63-1";
    if (f->max != JSON_U64_MAX) snprintf(hi, sizeof hi, "%.0f", f->max);
    return bad(err, n, where, f, "%s in [%.0f, %s]", whole ? "a whole number" : "a number", f->min,
               hi);
  }
  *out = d;
  return 0;
}

static int decode_shape(const cJSON *obj, const shape_t *s, char *base, uint32_t *present,
                        const char *where, char *err, size_t n);

static int decode_list(const cJSON *v, const field_t *f, char *base, const char *where, char *err,
                       size_t n) {
  if (!cJSON_IsArray(v)) return bad(err, n, where, f, "a list");
  size_t k = 0;
  const cJSON *it;
  cJSON_ArrayForEach(it, v) {
    if (k == (size_t)f->max) return bad(err, n, where, f, "a list of at most %.0f", f->max);
    char at[96];
    snprintf(at, sizeof at, "%s: %s[%zu]", where, f->name, k);
    if (!cJSON_IsObject(it)) return hr__err(err, n, HR_EINVAL, "%s: must be an object", at);
    int rc = decode_shape(it, f->sub, base + f->off + k * f->size, NULL, at, err, n);
    if (rc) return rc;
    k++;
  }
  *(size_t *)(void *)(base + f->count_off) = k;
  return 0;
}

static int decode_field(const cJSON *v, const field_t *f, char *base, const char *where, char *err,
                        size_t n) {
  void *p = base + f->off;
  double d = 0;
  int rc = 0;
  switch (f->t) {
  case T_U64:
    if (!(rc = number(v, f, true, &d, where, err, n))) *(uint64_t *)p = (uint64_t)d;
    return rc;
  case T_INT:
    if (!(rc = number(v, f, true, &d, where, err, n))) *(int64_t *)p = (int64_t)d;
    return rc;
  case T_NUM:
    if (!(rc = number(v, f, false, &d, where, err, n))) *(double *)p = d;
    return rc;
  case T_BOOL:
    if (!cJSON_IsBool(v)) return bad(err, n, where, f, "true or false");
    *(bool *)p = cJSON_IsTrue(v);
    return 0;
  case T_STR:
    if (!cJSON_IsString(v)) return bad(err, n, where, f, "a string");
    if (strlen(v->valuestring) >= f->size && !(f->flags & F_TRUNC))
      return bad(err, n, where, f, "a string of at most %zu bytes", f->size - 1);
    if (f->choices && !hr__choices_has(f->choices, v->valuestring))
      return bad(err, n, where, f, "one of %s", f->choices);
    hr__strlcpy(p, v->valuestring, f->size);
    return 0;
  case T_LIST:
    return decode_list(v, f, base, where, err, n);
  default: /* OBJ and MAP are only sent by the broker */
    return bad(err, n, where, f, "left out (the broker sends it)");
  }
}

static void set_default(const field_t *f, char *base) {
  if (!f->has_default) return;
  if (f->t == T_STR) hr__strlcpy(base + f->off, f->dstr, f->size);
  if (f->t == T_NUM) *(double *)(void *)(base + f->off) = f->dnum;
  if (f->t == T_INT) *(int64_t *)(void *)(base + f->off) = (int64_t)f->dnum;
}

static int decode_shape(const cJSON *obj, const shape_t *s, char *base, uint32_t *present,
                        const char *where, char *err, size_t n) {
  for (size_t i = 0; i < s->n; i++) {
    const field_t *f = &s->f[i];
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, f->name);
    if (!v || cJSON_IsNull(v)) {
      if (f->flags & F_REQ)
        return hr__err(err, n, HR_EINVAL, "%s: \"%s\" is missing", where, f->name);
      set_default(f, base);
      continue;
    }
    int rc = decode_field(v, f, base, where, err, n);
    if (rc) return rc;
    if (present) *present |= 1u << i;
  }
  return 0;
}

int hr__bproto_decode(const char *line, size_t len, hr__bmsg_t *m, char *err, size_t n) {
  int rc = 0;
  cJSON *j = cJSON_ParseWithLength(line, len);
  memset(m, 0, sizeof *m);
  if (!cJSON_IsObject(j)) {
    rc = hr__err(err, n, HR_EPARSE, "not a JSON object: one object per line is expected");
    goto out;
  }
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, "v");
  if (!cJSON_IsNumber(v) || v->valuedouble != HR_BROKER_PROTOCOL) {
    rc = hr__err(err, n, HR_EVERSION, "protocol version %s: this broker speaks \"v\": %d",
                 cJSON_IsNumber(v) ? "not supported" : "missing", HR_BROKER_PROTOCOL);
    goto out;
  }
  const cJSON *op = cJSON_GetObjectItemCaseSensitive(j, "op");
  const char *name = cJSON_IsString(op) ? op->valuestring : "";
  size_t k = 0;
  while (k < HR__BOP_CLIENT_END_ && strcmp(ops[k].name, name) != 0) k++;
  if (k == HR__BOP_CLIENT_END_) {
    rc = hr__err(err, n, HR_EINVAL,
                 "unknown op '%.32s' (hello, offer, reserve, released, unreserve, running, "
                 "status)",
                 name);
    goto out;
  }
  m->op = (hr__bop_t)k;
  rc = decode_shape(j, &ops[k].s, (char *)&m->u, &m->present, ops[k].name, err, n);
out:
  cJSON_Delete(j);
  return rc;
}

/* ---- the encoder ------------------------------------------------------------- */

static void encode_shape(hr__buf_t *o, const shape_t *s, const char *base, bool first);

static bool is_empty(const field_t *f, const char *p) {
  switch (f->t) {
  case T_U64:
    return *(const uint64_t *)(const void *)p == 0;
  case T_STR:
    return *p == '\0';
  default:
    return false;
  }
}

static void encode_list(hr__buf_t *o, const field_t *f, const char *base) {
  const char *p = base + f->off;
  if (f->flags & F_PTR) p = *(const char *const *)(const void *)p;
  size_t count = *(const size_t *)(const void *)(base + f->count_off);
  hr__buf_puts(o, f->t == T_MAP ? "{" : "[");
  for (size_t i = 0; i < count && p; i++) {
    const char *e = p + i * f->size;
    if (i) hr__buf_puts(o, ",");
    if (f->t == T_MAP) {
      const hr__bkv_t *kv = (const hr__bkv_t *)(const void *)e;
      hr__buf_json_str(o, kv->key);
      hr__buf_printf(o, ":%llu", (unsigned long long)kv->v);
      continue;
    }
    hr__buf_puts(o, "{");
    encode_shape(o, f->sub, e, true);
    hr__buf_puts(o, "}");
  }
  hr__buf_puts(o, f->t == T_MAP ? "}" : "]");
}

static void encode_value(hr__buf_t *o, const field_t *f, const char *base) {
  const void *p = base + f->off;
  switch (f->t) {
  case T_U64: {
    uint64_t v = *(const uint64_t *)p;
    if ((f->flags & F_NULL) && (v == HR_UNKNOWN || v == HR_UNLIMITED))
      hr__buf_puts(o, "null");
    else
      hr__buf_printf(o, "%llu", (unsigned long long)v);
    return;
  }
  case T_INT:
    hr__buf_printf(o, "%lld", (long long)*(const int64_t *)p);
    return;
  case T_NUM: {
    double d = *(const double *)p;
    if (!isfinite(d)) {
      hr__buf_puts(o, "null");
      return;
    }
    char num[64];
    snprintf(num, sizeof num, f->fmt ? f->fmt : "%.6g", d);
    hr__buf_puts(o, num);
    return;
  }
  case T_STR:
    hr__buf_json_str(o, p);
    return;
  case T_BOOL:
    hr__buf_puts(o, *(const bool *)p ? "true" : "false");
    return;
  case T_OBJ:
    hr__buf_puts(o, "{");
    encode_shape(o, f->sub, p, true);
    hr__buf_puts(o, "}");
    return;
  default:
    encode_list(o, f, base);
    return;
  }
}

static void encode_shape(hr__buf_t *o, const shape_t *s, const char *base, bool first) {
  for (size_t i = 0; i < s->n; i++) {
    const field_t *f = &s->f[i];
    if ((f->flags & F_OMIT) && is_empty(f, base + f->off)) continue;
    hr__buf_puts(o, first ? "\"" : ",\"");
    hr__buf_puts(o, f->name);
    hr__buf_puts(o, "\":");
    encode_value(o, f, base);
    first = false;
  }
}

void hr__bproto_encode(hr__buf_t *o, hr__bop_t op, const void *msg) {
  hr__buf_printf(o, "{\"v\":%d,\"op\":\"%s\"", HR_BROKER_PROTOCOL, ops[op].name);
  encode_shape(o, &ops[op].s, msg, false);
  hr__buf_puts(o, "}");
}

/* ---- the schema ------------------------------------------------------------ */

static void put_num(hr__buf_t *o, double d) {
  if (d == JSON_U64_MAX)
    hr__buf_puts(o, "9223372036854775807");
  else
    hr__buf_printf(o, "%.17g", d);
}

static void indent(hr__buf_t *o, int n) {
  hr__buf_printf(o, "\n%*s", 2 * n, "");
}

/* One field's schema on one line: "name": {...}. */
static void schema_field(hr__buf_t *o, const field_t *f) {
  static const char *const types[] = {
      [T_U64] = "integer",  [T_INT] = "integer", [T_NUM] = "number", [T_STR] = "string",
      [T_BOOL] = "boolean", [T_LIST] = "array",  [T_OBJ] = "object", [T_MAP] = "object"};
  hr__buf_json_str(o, f->name);
  if (f->t == T_OBJ) {
    hr__buf_printf(o, ": {\"$ref\": \"#/$defs/%s\", \"description\": ", f->sub->name);
    hr__buf_json_str(o, f->doc);
    hr__buf_puts(o, "}");
    return;
  }
  if (f->flags & F_NULL)
    hr__buf_printf(o, ": {\"type\": [\"%s\", \"null\"]", types[f->t]);
  else
    hr__buf_printf(o, ": {\"type\": \"%s\"", types[f->t]);
  if (f->t == T_U64 || f->t == T_INT || f->t == T_NUM) {
    hr__buf_puts(o, ", \"minimum\": ");
    put_num(o, f->min);
    hr__buf_puts(o, ", \"maximum\": ");
    put_num(o, f->max);
  }
  if (f->t == T_STR && f->choices) {
    hr__buf_puts(o, ", \"enum\": [");
    for (const char *c = f->choices; *c;) {
      const char *bar = strchr(c, '|');
      size_t cl = bar ? (size_t)(bar - c) : strlen(c);
      hr__buf_printf(o, "%s\"%.*s\"", c == f->choices ? "" : ", ", (int)cl, c);
      c += cl + (bar != NULL);
    }
    hr__buf_puts(o, "]");
  } else if (f->t == T_STR && !(f->flags & F_TRUNC))
    hr__buf_printf(o, ", \"maxLength\": %zu", f->size - 1);
  if (f->t == T_LIST)
    hr__buf_printf(o, ", \"maxItems\": %.0f, \"items\": {\"$ref\": \"#/$defs/%s\"}", f->max,
                   f->sub->name);
  if (f->t == T_MAP)
    hr__buf_puts(o, ", \"additionalProperties\": {\"type\": \"integer\", \"minimum\": 0}");
  if (f->has_default && f->t == T_STR) {
    hr__buf_puts(o, ", \"default\": ");
    hr__buf_json_str(o, f->dstr);
  } else if (f->has_default) {
    hr__buf_puts(o, ", \"default\": ");
    put_num(o, f->dnum);
  }
  hr__buf_puts(o, ", \"description\": ");
  hr__buf_json_str(o, f->doc);
  hr__buf_puts(o, "}");
}

/* A definition: "name": {"description", "type": "object", "required",
 * "properties"}; a message's also has "v" and "op". */
static void schema_def(hr__buf_t *o, const shape_t *s, const char *op, bool client) {
  indent(o, 2);
  hr__buf_printf(o, "\"%s\": {", s->name);
  indent(o, 3);
  hr__buf_puts(o, "\"description\": ");
  hr__buf_json_str(o, s->doc);
  hr__buf_puts(o, ",");
  indent(o, 3);
  hr__buf_printf(o, "\"type\": \"object\",");
  indent(o, 3);
  hr__buf_puts(o, op ? "\"required\": [\"v\", \"op\"" : "\"required\": [");
  bool first = !op;
  /* What the broker writes it always writes, unless it may leave it out. */
  for (size_t i = 0; i < s->n; i++)
    if (client ? s->f[i].flags & F_REQ : !(s->f[i].flags & F_OMIT)) {
      hr__buf_printf(o, "%s\"%s\"", first ? "" : ", ", s->f[i].name);
      first = false;
    }
  hr__buf_puts(o, "],");
  indent(o, 3);
  hr__buf_puts(o, "\"properties\": {");
  if (op) {
    indent(o, 4);
    hr__buf_printf(o, "\"v\": {\"const\": %d},", HR_BROKER_PROTOCOL);
    indent(o, 4);
    hr__buf_printf(o, "\"op\": {\"const\": \"%s\"}%s", op, s->n ? "," : "");
  }
  for (size_t i = 0; i < s->n; i++) {
    indent(o, 4);
    schema_field(o, &s->f[i]);
    if (i + 1 < s->n) hr__buf_puts(o, ",");
  }
  indent(o, 3);
  hr__buf_puts(o, "}");
  indent(o, 2);
  hr__buf_puts(o, "}");
}

/* The shapes lists and objects refer to, each once, in the order met. */
static size_t sub_shapes(const shape_t *s, const shape_t **out, size_t n, size_t max) {
  for (size_t i = 0; i < s->n; i++) {
    const shape_t *sub = s->f[i].sub;
    if (!sub || s->f[i].t == T_MAP) continue;
    bool seen = false;
    for (size_t k = 0; k < n && !seen; k++) seen = out[k] == sub;
    if (seen || n == max) continue;
    out[n++] = sub;
    n = sub_shapes(sub, out, n, max);
  }
  return n;
}

static void schema_one_of(hr__buf_t *o, const char *name, size_t from, size_t to) {
  indent(o, 2);
  hr__buf_printf(o, "\"%s\": {\"oneOf\": [", name);
  for (size_t k = from; k < to; k++)
    hr__buf_printf(o, "%s{\"$ref\": \"#/$defs/%s\"}", k > from ? ", " : "", ops[k].s.name);
  hr__buf_puts(o, "]},");
}

void hr__bproto_schema(hr__buf_t *o) {
  hr__buf_puts(o, "{");
  indent(o, 1);
  hr__buf_puts(o, "\"$schema\": \"https://json-schema.org/draft/2020-12/schema\",");
  indent(o, 1);
  hr__buf_printf(o, "\"title\": \"headroom broker protocol, version %d\",", HR_BROKER_PROTOCOL);
  indent(o, 1);
  hr__buf_puts(o, "\"description\": \"JSON lines over the broker's Unix socket (docs/broker.md): "
                  "one object a line, each with v and op. Sizes are whole bytes, times seconds. "
                  "Written by `headroom broker --schema` from the table the broker encodes and "
                  "decodes with. A field not listed is ignored: a later version adds some.\",");
  indent(o, 1);
  hr__buf_puts(o, "\"anyOf\": [{\"$ref\": \"#/$defs/client_message\"}, "
                  "{\"$ref\": \"#/$defs/broker_message\"}],");
  indent(o, 1);
  hr__buf_puts(o, "\"$defs\": {");
  schema_one_of(o, "client_message", 0, HR__BOP_CLIENT_END_);
  schema_one_of(o, "broker_message", HR__BOP_CLIENT_END_, HR__BOP_COUNT_);
  const shape_t *subs[16];
  size_t n_subs = 0;
  for (size_t k = 0; k < HR__BOP_COUNT_; k++) {
    schema_def(o, &ops[k].s, ops[k].name, k < HR__BOP_CLIENT_END_);
    hr__buf_puts(o, ",");
    n_subs = sub_shapes(&ops[k].s, subs, n_subs, HR_ARRAY_LEN(subs));
  }
  for (size_t k = 0; k < n_subs; k++) {
    schema_def(o, subs[k], NULL, subs[k]->client);
    if (k + 1 < n_subs) hr__buf_puts(o, ",");
  }
  indent(o, 1);
  hr__buf_puts(o, "}\n}\n");
}
