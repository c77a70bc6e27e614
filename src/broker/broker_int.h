/* Internal contract between the broker's files: server.c (the socket, the
 * poll loop, the connections and the protocol's parsing), reserve.c
 * (resources, budgets, release plans, reservations and leases), adapter.c
 * (programs asked through their own HTTP API) and report.c (events,
 * counters, the status JSON). Everything here runs on the broker's one thread, except
 * the counters, which hold their own lock. */
#ifndef HR_BROKER_INT_H
#define HR_BROKER_INT_H

#include "headroom/broker.h"
#include "util/buf.h"
#include "util/util.h"

#include <pthread.h>

#define HR_BROKER_MAX_RES     9     /* host and eight GPUs */
#define HR_BROKER_MAX_ITEMS   64    /* releasable items a client reports */
#define HR_BROKER_LINE_MAX    65536 /* a longer line is garbage */
#define HR_BROKER_WBUF_MAX    (1u << 20)
#define HR_BROKER_MAX_ADAPTER 8

/* A resource the broker hands out: the host's memory or one GPU's. */
typedef struct hr__bres {
  char name[16];         /* "host", "gpu0" */
  int gpu;               /* GPU index, -1 for the host */
  uint64_t budget;       /* HR_UNLIMITED when none */
  uint64_t capacity;     /* total (host: MemTotal or the cgroup limit) */
  uint64_t phys_free;    /* free as the kernel or the driver says now */
  uint64_t clients_used; /* what the registered clients hold now */
  uint64_t leased;       /* what the leases hold */
  double pressure_at;    /* last pressure ask (monotonic) */
} hr__bres_t;

/* Something a client could give back. */
typedef struct hr__bitem {
  char name[64];
  char device[16];
  bool cache;            /* costs nothing to give back */
  uint64_t bytes;        /* what giving it back frees */
  uint64_t reload_bytes; /* what getting it back costs */
  double idle_s;         /* since last used (LRU) */
} hr__bitem_t;

struct hr__bplan;

/* One connection. A registered one is a client with a name and priority. */
typedef struct hr__bconn {
  int fd;
  int peer_pid;
  uint32_t uid, gid;
  uint64_t id;
  bool registered, closing;
  int pid; /* the registered pid (the peer's, or its pid in its namespace) */
  char name[64];
  int priority;
  hr__bitem_t items[HR_BROKER_MAX_ITEMS];
  size_t n_items;
  uint64_t held[HR_BROKER_MAX_RES]; /* what its process holds per resource */
  char *rbuf;
  size_t rlen;
  hr__buf_t wbuf;
  size_t woff;
  /* An ask in flight: its id, what was asked, when, until when. */
  uint64_t ask_id;
  uint64_t ask_bytes;
  double ask_at, ask_deadline;
  char ask_device[16];
} hr__bconn_t;

/* A lease: memory handed out to a connection until released, expired or the
 * connection closes. */
typedef struct hr__blease {
  uint64_t id;
  uint64_t conn_id;
  int pid;
  uint32_t uid;
  char name[64];
  int res;
  uint64_t bytes;
  double expires;                   /* monotonic; 0 for never */
  char woke[HR_BROKER_MAX_ADAPTER]; /* adapters put to sleep for it */
} hr__blease_t;

/* A configured adapter (adapter.c). */
typedef struct hr__badapter {
  char kind[16]; /* comfyui, ollama, vllm */
  char name[96]; /* kind@host:port */
  char device[16];
  char host[64];
  int port;
  bool asleep;   /* vllm: put to sleep by the broker */
  uint64_t used; /* ollama: its models' bytes on the device, at the last look */
} hr__badapter_t;

/* A reservation waiting for room; the broker works on one at a time. */
typedef enum { HR__RES_PLAN, HR__RES_ASKED, HR__RES_VISIBLE } hr__rstate_t;
typedef struct hr__breq {
  uint64_t conn_id, req_id;
  int res, priority, pid;
  uint32_t uid;
  char name[64];
  uint64_t bytes, released;
  double lease_s, started, deadline;
  hr__rstate_t state;
  double phase_deadline;
  uint64_t asked_conns[64]; /* connections already asked for this one */
  size_t n_asked;
  bool asked_adapter[HR_BROKER_MAX_ADAPTER];
  char slept[HR_BROKER_MAX_ADAPTER];
  struct hr__breq *next;
} hr__breq_t;

struct hr_broker {
  char path[256];
  char root[256];
  char nvml[256];   /* nvml_library: the NVML the probe loads; empty: the default */
  char cgroup[512]; /* cgroup / cgroup_pid: the cgroup whose limit bounds host memory */
  int cgroup_pid;
  int listen_fd, wake[2];
  pthread_t thread;
  bool running;
  hr_broker_event_fn fn;
  void *fn_arg;
  double request_timeout, patience, cooldown;
  double warn[2], critical[2]; /* fractions: [0] host, [1] GPUs */
  size_t max_conns;
  bool group_set; /* broker_group: other users of the group may connect */
  int adapter_priority;
  hr__bres_t res[HR_BROKER_MAX_RES];
  size_t n_res;
  hr__bconn_t **conns;
  size_t n_conns, cap_conns;
  hr__blease_t *leases;
  size_t n_leases, cap_leases;
  hr__breq_t *queue; /* head is the one being worked on */
  hr__badapter_t adapters[HR_BROKER_MAX_ADAPTER];
  size_t n_adapters;
  uint64_t next_id;
  double last_read;     /* monotonic: when resources were last read */
  double last_pressure; /* monotonic: when pressure was last looked at */
  double cg_read_at;    /* monotonic: when the cgroup was last read */
  bool cg_limited;      /* the cgroup has a limit under the host's memory */
  pthread_mutex_t lock; /* guards counters */
  hr_broker_counters_t counters;
};

/* report.c */
/* Hands e to the caller as a broker event (kind HR_EVENT_BROKER; its time
 * now when unset), with the client's or adapter's `name` and the `device`
 * when not NULL. */
HR_INTERNAL void hr__broker_emit(hr_broker_t *b, hr_watch_event_t *e, const char *name,
                                 const char *device);
/* Adds one to a counter under the lock: hr__broker_count(b, &b->counters.x, 1). */
HR_INTERNAL void hr__broker_count(hr_broker_t *b, uint64_t *field, uint64_t n);
/* Adds `bytes` released by `name` to the counters: its own slot, or the
 * shared "other" one when every slot is taken. Needs b->lock. */
HR_INTERNAL void hr__broker_count_released_locked(hr_broker_t *b, const char *name, uint64_t bytes);
/* Counts a grant that took `latency_s` in the latency histogram. Needs
 * b->lock. */
HR_INTERNAL void hr__broker_count_grant_locked(hr_broker_t *b, double latency_s);
HR_INTERNAL void hr__broker_status_json(hr_broker_t *b, hr__buf_t *o);

/* server.c */
HR_INTERNAL void hr__broker_send(hr_broker_t *b, hr__bconn_t *c, const char *line);
HR_INTERNAL hr__bconn_t *hr__broker_conn(hr_broker_t *b, uint64_t id);
/* The broker thread's body. */
HR_INTERNAL void *hr__broker_loop(void *arg);

/* reserve.c */
HR_INTERNAL int hr__broker_parse_budget(hr_broker_t *b, const char *spec, char *err, size_t n);
HR_INTERNAL int hr__broker_res_find(hr_broker_t *b, const char *name);
HR_INTERNAL void hr__broker_read(hr_broker_t *b);
HR_INTERNAL uint64_t hr__broker_free(const hr__bres_t *r);
/* Plans and sends asks for `need` bytes of resource ri on behalf of q (NULL:
 * pressure, which with `caches_only` asks caches alone). Returns how many
 * clients and adapters were asked. */
HR_INTERNAL size_t hr__broker_plan(hr_broker_t *b, hr__breq_t *q, int ri, uint64_t need,
                                   bool caches_only);
HR_INTERNAL uint64_t hr__broker_releasable(const hr__bconn_t *c, const char *device);
HR_INTERNAL void hr__broker_reserve(hr_broker_t *b, hr__bconn_t *c, uint64_t req_id,
                                    const char *device, uint64_t bytes, double timeout,
                                    double lease_s, int priority);
HR_INTERNAL void hr__broker_answer(hr_broker_t *b, hr__bconn_t *c, uint64_t id, uint64_t bytes);
HR_INTERNAL int hr__broker_unreserve(hr_broker_t *b, hr__bconn_t *c, uint64_t lease, char *err,
                                     size_t n);
HR_INTERNAL void hr__broker_conn_gone(hr_broker_t *b, hr__bconn_t *c);
HR_INTERNAL void hr__broker_tick(hr_broker_t *b);
/* The soonest time (monotonic) the loop must wake for a deadline. */
HR_INTERNAL double hr__broker_next_deadline(hr_broker_t *b);

/* adapter.c */
HR_INTERNAL int hr__broker_parse_adapters(hr_broker_t *b, const char *spec, char *err, size_t n);
/* What the adapter could give back on its device now (ollama: its models'
 * bytes; comfyui, vllm: unknown, so 0 with *unknown set). */
HR_INTERNAL uint64_t hr__adapter_releasable(hr_broker_t *b, hr__badapter_t *a, bool *unknown);
/* Asks it to release; returns what it reports released (ollama) or 0, and
 * emits the ask, the answer or the failure. */
HR_INTERNAL uint64_t hr__adapter_release(hr_broker_t *b, hr__badapter_t *a, uint64_t bytes);
HR_INTERNAL void hr__adapter_wake(hr_broker_t *b, hr__badapter_t *a);
/* Looks again at what each adapter holds (ollama's /api/ps), so that what it
 * holds counts against the budget like a client's memory. */
HR_INTERNAL void hr__adapter_refresh(hr_broker_t *b);
/* One HTTP/1.1 request to host:port with a deadline; the status in *status
 * (0 when none came) and the body in *body (malloc'd, may be NULL). Returns
 * 0 or HR_EIO/HR_ETIMEDOUT/HR_ENOMEM with the reason in err. */
HR_INTERNAL int hr__http(const char *host, int port, const char *method, const char *target,
                         const char *body, double timeout, int *status, char **resp, char *err,
                         size_t n);

#endif /* HR_BROKER_INT_H */
