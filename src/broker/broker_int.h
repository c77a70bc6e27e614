/* Internal contract between the broker's files. The broker is three parts:
 *
 * - the planner (planner.c): a pure function of the state it is handed
 *   (candidates with their offers, busy or idle, priorities, what is still
 *   needed) that returns whom to ask for what; no I/O;
 * - the engine (engine.c, lease.c, resources.c): reservations, asks and
 *   leases as state, moved on by messages, answers, adapter results and
 *   the clock (an injectable one); it calls the planner and hands the asks
 *   to the actor;
 * - the actor: server.c (the socket, the poll loop, the connections, lines
 *   in and out through the one protocol codec, proto.c) and the adapters
 *   (adapter.c with one file per program behind an operations table, over
 *   the non-blocking HTTP client of http_client.c). Nothing on the broker's
 *   thread waits: every socket is non-blocking on the one poll loop, and
 *   every ask, adapter job and reservation has its deadline.
 *
 * report.c writes events, counters and the status. Everything here runs on
 * the broker's one thread, except the counters, which hold their own lock. */
#ifndef HR_BROKER_INT_H
#define HR_BROKER_INT_H

#include "broker/proto.h"
#include "headroom/broker.h"
#include "util/buf.h"
#include "util/util.h"

#include <pthread.h>
#include <sys/socket.h>

#define HR_BROKER_WBUF_MAX    (1u << 20)
#define HR_BROKER_MAX_ADAPTER 8
#define HR_BROKER_REPLY_MAX   (1u << 20) /* an adapter's reply body */
#define HR_BROKER_HEADER_MAX  16384      /* an adapter's reply headers */
#define HR_BROKER_MAX_MODELS  32         /* models an adapter lists */
#define HR_BROKER_MAX_ASKED   32         /* asks one reservation makes */
/* A client or adapter whose last answer was none, 0 or an error counts as
 * busy for this long (asked after the idle ones), or until it answers with
 * bytes or offers again. */
#define HR_BROKER_STRIKE_S 30.0
/* A reservation that fits while asks for it are still in flight waits this
 * long at most for their answers, so its grant says what they released. */
#define HR_BROKER_GRACE_S 0.1
/* How often an adapter is looked at (its models, busy or asleep). */
#define HR_BROKER_REFRESH_S 1.0

typedef double (*hr__bclock_fn)(void *arg);

/* A resource the broker hands out: the host's memory or one GPU's. */
typedef struct hr__bres {
  char name[HR_BROKER_DEVICE_MAX]; /* "host", "gpu0" */
  int gpu;                         /* GPU index, -1 for the host */
  uint64_t budget;                 /* HR_UNLIMITED when none */
  uint64_t capacity;               /* total (host: MemTotal or the cgroup limit) */
  uint64_t phys_free;              /* free as the kernel or the driver says now */
  uint64_t clients_used;           /* what the registered clients and adapters hold now */
  uint64_t leased;                 /* what the leases hold, less what their holders use */
  double pressure_at;              /* last pressure ask */
} hr__bres_t;

/* An ask in flight to a client: its id, what, when, until when, and the
 * reservation it is for (0: pressure, or one that ended). */
typedef struct hr__bask {
  uint64_t id, bytes, req;
  double at, deadline;
  int res;
} hr__bask_t;

/* One connection. A registered one is a client with a name and priority. */
typedef struct hr__bconn {
  int fd;
  int peer_pid;
  uint32_t uid, gid;
  uint64_t id;
  bool registered, closing;
  int pid; /* the registered pid (the peer's, or its pid in its namespace) */
  char name[HR_BROKER_NAME_MAX];
  int priority;
  bool busy;        /* it said so in its last offer */
  double strike_at; /* its last answer was none, 0 or an error (0: never) */
  char last_error[HR_BROKER_TEXT_MAX];
  hr__bitem_t items[HR_BROKER_MAX_ITEMS];
  size_t n_items;
  uint64_t held[HR_BROKER_MAX_RES]; /* what its process holds per resource */
  size_t n_leases, n_queued;        /* held and waiting, for the per-client bounds */
  char *rbuf;
  size_t rlen;
  hr__buf_t wbuf;
  size_t woff;
  hr__bask_t ask; /* ask.id 0: none */
} hr__bconn_t;

/* A lease: memory handed out to a connection until released, expired or the
 * connection closes. When its holder's process is a registered client, what
 * that process grows by after the grant is the lease being used, so it is
 * not counted twice. */
typedef struct hr__blease {
  uint64_t id;
  uint64_t conn_id;
  int pid, peer_pid;
  uint32_t uid;
  char name[HR_BROKER_NAME_MAX];
  int res;
  uint64_t bytes;
  uint64_t base_held; /* the holder's process's memory on res at the grant */
  uint64_t consumed;  /* of bytes, what the holder's process uses now (at the last reading) */
  double expires;     /* 0 for never */
  char woke[HR_BROKER_MAX_ADAPTER]; /* adapters put to sleep for it */
} hr__blease_t;

/* ---- adapters ---------------------------------------------------------------- */

/* A non-blocking HTTP/1.1 exchange (http_client.c): one request, one reply,
 * read into capped buffers and parsed as it comes, in linear time. */
typedef struct hr__bhttp {
  int fd;
  int state; /* HR__HTTP_* */
  hr__buf_t out;
  size_t out_off;
  hr__buf_t hdr;  /* the status line and headers, as received */
  hr__buf_t body; /* the body, decoded (chunks joined) */
  int status;
  int64_t content_length; /* -1: none given */
  bool chunked, headers_done;
  int chunk_state;
  uint64_t chunk_left;
  size_t examined; /* bytes the parser looked at, for the tests of its linearity */
} hr__bhttp_t;

enum { HR__HTTP_IDLE, HR__HTTP_CONNECT, HR__HTTP_SEND, HR__HTTP_RECV, HR__HTTP_DONE };

typedef enum { HR__JOB_NONE, HR__JOB_REFRESH, HR__JOB_RELEASE, HR__JOB_WAKE } hr__bjob_kind_t;

/* What an adapter is doing: one job at a time, one deadline for all of it
 * (broker_timeout), whatever the number of requests it takes. */
typedef struct hr__bjob {
  hr__bjob_kind_t kind;
  uint64_t ask_id, req; /* a release's ask and reservation (req 0: pressure) */
  uint64_t bytes, got;
  double started, deadline;
  int step, status;
  size_t cursor;  /* the adapter's own place in a job of many requests */
  char what[160]; /* the request under way: "POST /free" */
  char msg[200];
} hr__bjob_t;

/* One request an adapter makes. */
typedef struct hr__breq_http {
  const char *method;
  char target[128];
  char body[512];
} hr__breq_http_t;

struct hr__badapter;

/* What one program's adapter does (adapter_<kind>.c): each job is a
 * sequence of requests, `next` making each and `reply` taking its answer.
 * A new program is one file with one of these. */
typedef struct hr__adapter_ops {
  const char *kind;
  bool sized;  /* says what it holds (its releasable bytes are known) */
  bool sleeps; /* a release puts it to sleep until the lease it made room for ends:
                  never asked for pressure, woken when that reservation fails */
  /* Fills the job's next request and returns true, or false when the job
   * is done (j->step counts the requests made). */
  bool (*next)(struct hr__badapter *a, hr__bjob_t *j, hr__breq_http_t *r);
  /* Takes the reply to the last request (2xx only: other statuses fail the
   * job before); returns false when the reply is unusable (said in
   * j->msg), which fails the job. */
  bool (*reply)(struct hr__badapter *a, hr__bjob_t *j, const char *body, size_t len);
} hr__adapter_ops_t;

typedef struct hr__bmodel {
  char name[128];
  uint64_t bytes;
} hr__bmodel_t;

/* A configured adapter (adapter.c). */
typedef struct hr__badapter {
  const hr__adapter_ops_t *ops;
  char name[96]; /* kind@host:port */
  char device[HR_BROKER_DEVICE_MAX];
  char host[64];
  int port;
  struct sockaddr_storage addr;
  socklen_t addrlen;
  bool asleep;      /* put to sleep by the broker */
  bool busy;        /* it says it is at work (ComfyUI's queue runs a prompt) */
  double strike_at; /* its last job failed or released nothing (0: never) */
  char last_error[HR_BROKER_TEXT_MAX];
  uint64_t used; /* its models' bytes on the device, at the last look (sized ones) */
  hr__bmodel_t models[HR_BROKER_MAX_MODELS];
  size_t n_models;
  double refreshed_at; /* the last refresh's start */
  bool want_wake;
  hr__bjob_t job;
  hr__bhttp_t http;
} hr__badapter_t;

/* ---- reservations ------------------------------------------------------------ */

/* One ask a reservation made: of a connection (who: its id) or an adapter
 * (who: its index). */
typedef struct hr__basked {
  uint64_t who, ask_id, bytes, got;
  bool adapter, unknown; /* unknown: the adapter does not say what it frees */
  bool done, failed;     /* answered (failed: none, 0 or an error) */
} hr__basked_t;

typedef struct hr__breq {
  uint64_t seq; /* the broker's own id for it */
  uint64_t conn_id, req_id;
  int res, priority, pid, peer_pid;
  uint32_t uid;
  char name[HR_BROKER_NAME_MAX];
  uint64_t bytes, released;
  double lease_s, started, deadline;
  double settle_until; /* answers came: they count as coming until then (patience) */
  double fit_at;       /* it first fitted while its asks were still in flight (0: not yet) */
  bool replan;         /* an ask failed: plan again now, whatever is still in flight */
  hr__basked_t asked[HR_BROKER_MAX_ASKED];
  size_t n_asked;
  char slept[HR_BROKER_MAX_ADAPTER];
  struct hr__breq *prev, *next;
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
  hr__bclock_fn clock; /* monotonic seconds; tests set their own */
  void *clock_arg;
  double request_timeout, patience, cooldown;
  double warn[2], critical[2]; /* fractions: [0] host, [1] GPUs */
  size_t max_conns, max_leases, max_queued;
  bool group_set; /* broker_group: other users of the group may connect */
  int adapter_priority;
  hr__bres_t res[HR_BROKER_MAX_RES];
  size_t n_res;
  hr__bconn_t **conns;
  size_t n_conns, cap_conns;
  hr__blease_t *leases;
  size_t n_leases, cap_leases;
  hr__breq_t *queue, *queue_tail; /* in arrival order */
  size_t n_queue;
  hr__badapter_t adapters[HR_BROKER_MAX_ADAPTER];
  size_t n_adapters;
  uint64_t next_id;
  double last_read;      /* when resources were last read */
  double last_pressure;  /* when pressure was last looked at */
  double cg_read_at;     /* when the cgroup was last read */
  bool cg_limited;       /* the cgroup has a limit under the host's memory */
  double accept_paused;  /* out of descriptors: the listening socket rests until then */
  double accept_backoff; /* the current rest, doubled each time up to 1 s */
  pthread_mutex_t lock;  /* guards counters */
  hr_broker_counters_t counters;
};

/* ---- broker.c ------------------------------------------------------------------ */

/* The broker's clock (monotonic seconds): b->clock when set, else the
 * system's. */
HR_INTERNAL double hr__broker_now(const hr_broker_t *b);
/* Makes a broker with the options' settings and no socket or thread (the
 * engine's tests drive it directly). Returns 0 or a negative code with err. */
HR_INTERNAL int hr__broker_new(const hr_options_t *o, hr_broker_event_fn fn, void *arg,
                               hr_broker_t **out, char *err, size_t n);
/* Frees what hr__broker_new made and the connections left (no lease
 * events); not the thread or the socket. */
HR_INTERNAL void hr__broker_free_state(hr_broker_t *b);

/* ---- report.c ------------------------------------------------------------------ */

/* Hands e to the caller as a broker event (kind HR_EVENT_BROKER; its time
 * now when unset), with the client's or adapter's `name` and the `device`
 * when not NULL. */
HR_INTERNAL void hr__broker_emit(hr_broker_t *b, hr_watch_event_t *e, const char *name,
                                 const char *device);
/* Adds n to a counter under the lock: hr__broker_count(b, &b->counters.x, 1). */
HR_INTERNAL void hr__broker_count(hr_broker_t *b, uint64_t *field, uint64_t n);
/* Adds `bytes` released by `name` to the counters: its own slot, or the
 * shared "other" one when every slot is taken. Needs b->lock. */
HR_INTERNAL void hr__broker_count_released_locked(hr_broker_t *b, const char *name, uint64_t bytes);
/* Counts a grant that took `latency_s` in the latency histogram. Needs
 * b->lock. */
HR_INTERNAL void hr__broker_count_grant_locked(hr_broker_t *b, double latency_s);
/* The status message, bounded (the first clients, the largest leases, the
 * totals); reads the resources afresh. */
HR_INTERNAL void hr__broker_status_json(hr_broker_t *b, hr__buf_t *o);

/* ---- server.c ------------------------------------------------------------------ */

/* Encodes message `op` from `msg` and queues it on c (a closing connection
 * gets nothing). */
HR_INTERNAL void hr__broker_send(hr_broker_t *b, hr__bconn_t *c, hr__bop_t op, const void *msg);
HR_INTERNAL hr__bconn_t *hr__broker_conn(hr_broker_t *b, uint64_t id);
/* A registered, open connection of process `peer_pid`, or NULL. */
HR_INTERNAL hr__bconn_t *hr__broker_client_of(hr_broker_t *b, int peer_pid);
/* Adds a connection for fd (-1: none, as the engine's tests make) from a
 * peer with these credentials, subject to broker_max_conns and the user
 * check; returns it (closing when refused), or NULL without memory. */
HR_INTERNAL hr__bconn_t *hr__broker_add_conn(hr_broker_t *b, int fd, int pid, uint32_t uid,
                                             uint32_t gid);
/* Takes one line (NUL-terminated, len bytes, no newline) from c: decodes
 * it through the protocol's table and does what it asks; bad input gets one
 * error line and closes c. The entry point of everything a client says. */
HR_INTERNAL void hr__broker_on_line(hr_broker_t *b, hr__bconn_t *c, const char *line, size_t len);
/* Frees closed connections, ending what they held. */
HR_INTERNAL void hr__broker_reap(hr_broker_t *b);
/* The broker thread's body. */
HR_INTERNAL void *hr__broker_loop(void *arg);

/* ---- resources.c --------------------------------------------------------------- */

HR_INTERNAL int hr__broker_parse_budget(hr_broker_t *b, const char *spec, char *err, size_t n);
HR_INTERNAL int hr__broker_res_find(const hr_broker_t *b, const char *name);
/* Reads the resources, the clients' memory and the leases' use (at most
 * every 10 ms; b->last_read = 0 forces it). */
HR_INTERNAL void hr__broker_read(hr_broker_t *b);
/* What a reservation on r gets at once. */
HR_INTERNAL uint64_t hr__broker_free(const hr__bres_t *r);
/* What r's use is for pressure: leases not yet used by their holders do
 * not count (a grant alone is no pressure). */
HR_INTERNAL double hr__broker_pressure_use(const hr__bres_t *r);
/* What c offers on device. */
HR_INTERNAL uint64_t hr__broker_releasable(const hr__bconn_t *c, const char *device);
/* The memory process `pid` holds on resource ri now (registered clients'
 * as last read; others' host RSS). */
HR_INTERNAL uint64_t hr__broker_held_by(hr_broker_t *b, int pid, int ri);

/* ---- planner.c ----------------------------------------------------------------- */

/* One thing that could be given back: an item of a client, or an adapter. */
typedef struct hr__pcand {
  uint64_t who; /* a connection's id, or an adapter's index */
  bool adapter;
  bool busy;    /* at work, or its last answer was none or 0 */
  bool cache;   /* costs nothing to give back */
  bool unknown; /* its size is not known (bytes 0) */
  bool sleeps;  /* giving back puts it to sleep (never for pressure) */
  bool asked;   /* already asked for this reservation */
  bool pending; /* an ask to it is in flight */
  int priority;
  uint32_t uid;
  double idle_s;
  uint64_t bytes;
} hr__pcand_t;

/* What is wanted: `need` more bytes, for a reservation of `priority` by
 * user `uid` (0: root, who may ask anyone), or for pressure (anyone; with
 * caches_only, caches alone). */
typedef struct hr__pwant {
  uint64_t need;
  int priority;
  uint32_t uid;
  bool pressure, caches_only;
} hr__pwant_t;

typedef struct hr__pask {
  uint64_t who;
  bool adapter, unknown;
  uint64_t bytes;
} hr__pask_t;

/* The plan: whom to ask for what. Orders `c` in place (idle before busy;
 * known sizes before unknown; caches, then models by priority, lowest
 * first, then least recently used), leaves out what may not be asked
 * (asked already, an ask in flight, a higher priority than the asker's,
 * another user's unless the asker is root; for pressure, whatever sleeps),
 * and takes the first ones until `need` is covered, each client once for
 * its share. An unknown size covers what is left. A reservation that all it
 * may ask for could not satisfy asks nobody (*short_all set). Writes at
 * most `max` asks to out; returns how many. Pure: no I/O, no clock. */
HR_INTERNAL size_t hr__plan(hr__pcand_t *c, size_t n, const hr__pwant_t *w, hr__pask_t *out,
                            size_t max, bool *short_all);

/* ---- engine.c ------------------------------------------------------------------ */

/* A reservation from c (the message decoded); queued, then moved on by
 * hr__broker_tick. */
HR_INTERNAL void hr__broker_reserve(hr_broker_t *b, hr__bconn_t *c, const hr__bm_reserve_t *m,
                                    bool priority_given);
/* c answered the ask `id` with `bytes` (error: why it failed, or ""). */
HR_INTERNAL void hr__broker_answer(hr_broker_t *b, hr__bconn_t *c, uint64_t id, uint64_t bytes,
                                   const char *error);
/* An adapter's release job ended: got bytes (ok), or it failed (ok false;
 * status 0 when no answer came). */
HR_INTERNAL void hr__broker_adapter_done(hr_broker_t *b, hr__badapter_t *a, const hr__bjob_t *j,
                                         bool ok);
/* Moves everything on: asks past their deadline, leases past theirs, the
 * queue (grants, asks, refusals), pressure, the adapters' jobs. */
HR_INTERNAL void hr__broker_tick(hr_broker_t *b);
/* The soonest time the loop must wake for a deadline. */
HR_INTERNAL double hr__broker_next_deadline(hr_broker_t *b);
/* c is going: its leases end, its queued reservations go. */
HR_INTERNAL void hr__broker_conn_gone(hr_broker_t *b, hr__bconn_t *c);

/* ---- lease.c ------------------------------------------------------------------- */

/* Makes a lease for q (granted) and returns it, or NULL without memory. */
HR_INTERNAL hr__blease_t *hr__broker_lease_add(hr_broker_t *b, const hr__breq_t *q);
/* Ends lease i (why: in words, for its event); wakes what slept for it. */
HR_INTERNAL void hr__broker_lease_end(hr_broker_t *b, size_t i, const char *why);
/* The op unreserve from c; an unknown lease gets a non-fatal error line. */
HR_INTERNAL int hr__broker_unreserve(hr_broker_t *b, hr__bconn_t *c, uint64_t lease, char *err,
                                     size_t n);
/* The op running from c: its lease's command runs as pid (a child of c's
 * process); recorded as a `run` event. */
HR_INTERNAL int hr__broker_running(hr_broker_t *b, hr__bconn_t *c, const hr__bm_running_t *m,
                                   char *err, size_t n);

/* ---- adapter.c ----------------------------------------------------------------- */

HR_INTERNAL int hr__broker_parse_adapters(hr_broker_t *b, const char *spec, char *err, size_t n);
/* Starts a release of `bytes` for ask_id (req: its reservation, 0 for
 * pressure); a refresh under way is dropped for it. Returns false when the
 * adapter is at another release or a wake. */
HR_INTERNAL bool hr__adapter_release(hr_broker_t *b, hr__badapter_t *a, uint64_t bytes,
                                     uint64_t ask_id, uint64_t req);
/* Asks it to wake (after the job under way). */
HR_INTERNAL void hr__adapter_wake(hr_broker_t *b, hr__badapter_t *a);
/* Starts refreshes that are due, fails jobs past their deadline. */
HR_INTERNAL void hr__adapter_tick(hr_broker_t *b);
/* The poll events each adapter's exchange waits for (0: none), and the
 * work after poll. */
HR_INTERNAL short hr__adapter_events(const hr__badapter_t *a);
HR_INTERNAL void hr__adapter_io(hr_broker_t *b, hr__badapter_t *a, short revents);
HR_INTERNAL void hr__adapter_close(hr__badapter_t *a);
/* True while a release or wake job of a is under way. */
HR_INTERNAL bool hr__adapter_in_flight(const hr__badapter_t *a);

extern const hr__adapter_ops_t hr__adapter_comfyui, hr__adapter_ollama, hr__adapter_vllm;

/* ---- http_client.c ------------------------------------------------------------ */

/* Starts a request to the address (connect without waiting). Returns 0 or
 * HR_EIO with err. */
HR_INTERNAL int hr__bhttp_start(hr__bhttp_t *h, const struct sockaddr *sa, socklen_t len,
                                const char *host, int port, const hr__breq_http_t *r, char *err,
                                size_t n);
/* The poll events the exchange waits for. */
HR_INTERNAL short hr__bhttp_events(const hr__bhttp_t *h);
/* Moves the exchange on after poll: returns 1 when the reply is complete,
 * 0 to wait, a negative code on failure (err). */
HR_INTERNAL int hr__bhttp_step(hr__bhttp_t *h, short revents, char *err, size_t n);
/* Parses received bytes: returns 1 when the reply is complete, 0 for more,
 * a negative code when it is not HTTP or too long (err). Linear in all the
 * bytes fed, however they are split. */
HR_INTERNAL int hr__bhttp_feed(hr__bhttp_t *h, const char *data, size_t len, char *err, size_t n);
/* The peer closed: complete when the body runs to the end (no length),
 * else HR_EIO. */
HR_INTERNAL int hr__bhttp_eof(hr__bhttp_t *h, char *err, size_t n);
/* Closes the socket and frees the buffers; the exchange may start again. */
HR_INTERNAL void hr__bhttp_close(hr__bhttp_t *h);

#endif /* HR_BROKER_INT_H */
