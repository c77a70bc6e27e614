/* Internal: the exporter's HTTP server, shared by what it serves (http.c:
 * routes, documents, the start and stop of the server) and whom it serves
 * (conns.c: the connection table, its limits and the one thread's event
 * loop that accepts, reads and writes).
 *
 * Everything below the lock is touched by the server's thread alone (and by
 * hr_exporter_stop once that thread has ended); the counters are atomics
 * that any thread may read. */
#ifndef HR_EXPORT_HTTP_H
#define HR_EXPORT_HTTP_H

#include "export/export.h"

#include <microhttpd.h>
#include <pthread.h>
#include <stdatomic.h>

/* The limits a server holds to; hr__http_limits_default() gives those that
 * docs/watch.md lists. Tests start servers with smaller ones. */
typedef struct hr__http_limits {
  size_t capacity;          /* connections held at once */
  size_t max_answering;     /* responses in flight; a request past them is answered 503 */
  double header_deadline;   /* seconds from the accept, or from the end of the previous
                               response, to a request's complete headers */
  double response_deadline; /* seconds from the complete headers to the response taken */
} hr__http_limits_t;

/* One connection, from libmicrohttpd's "started" notification to its
 * "closed" one (which comes before the socket is closed, so `fd` is never a
 * reused descriptor while the record lives). A waiting connection (idle,
 * or its request incomplete) is in `waiting`, one whose request is being
 * answered in `answering`, each list in the order of `since`; a cut one is
 * in neither and waits for libmicrohttpd to close it. */
typedef enum { HR__CONN_WAITING, HR__CONN_ANSWERING, HR__CONN_CUT } hr__conn_state_t;

typedef struct hr__conn {
  struct hr__conn *prev, *next;
  int fd;
  hr__conn_state_t state;
  bool shed;    /* its request is answered 503 */
  double since; /* monotonic: when it entered its state */
} hr__conn_t;

typedef struct hr__conn_list {
  hr__conn_t head; /* sentinel: head.next is the oldest */
  size_t n;
} hr__conn_list_t;

typedef enum { HR__DROP_DEADLINE, HR__DROP_CAPACITY, HR__DROP_SLOW, HR__DROP_KINDS_ } hr__drop_t;

struct hr_exporter {
  struct MHD_Daemon *daemon;
  hr__http_limits_t lim;
  int fd, port; /* the listening socket, ours (libmicrohttpd never sees it) */
  int ep, wake; /* the loop's epoll and the eventfd that wakes it to stop */
  pthread_mutex_t lock;
  char *metrics, *snapshot; /* guarded by lock */
  /* The server's thread alone: */
  hr__conn_list_t waiting, answering;
  size_t open;        /* records alive, cut ones included */
  size_t cut_pending; /* cut, not yet closed by libmicrohttpd */
  bool paused;        /* the listening socket is out of the epoll set */
  double resume_at;   /* paused until then; 0: until there is room */
  /* Any thread: */
  pthread_t thread;
  bool thread_started;
  atomic_bool stopping;
  _Atomic uint64_t accepted, shed, dropped[HR__DROP_KINDS_], open_now;
};

HR_INTERNAL hr__http_limits_t hr__http_limits_default(void);

/* hr_exporter_start with the limits given (tests). */
HR_INTERNAL int hr__exporter_start_with(const char *listen, const hr__http_limits_t *lim,
                                        hr_exporter_t **out, char *err, size_t errlen);

/* The counters as they are now. Any thread. */
HR_INTERNAL void hr__exporter_counters(hr_exporter_t *e, hr__http_counters_t *out);

/* conns.c, in this order: hr__conns_init empties the lists and makes the
 * loop's epoll (watching the listening socket e->fd) and eventfd, before the
 * daemon starts; hr__conns_start adds the daemon's epoll and starts the
 * thread; hr__conns_stop ends and joins the thread (then the caller stops
 * the daemon); hr__conns_close closes what init opened. init and start
 * return 0 or an HR_E* code; stop and close may be called after a failure. */
HR_INTERNAL int hr__conns_init(hr_exporter_t *e);
HR_INTERNAL int hr__conns_start(hr_exporter_t *e);
HR_INTERNAL void hr__conns_stop(hr_exporter_t *e);
HR_INTERNAL void hr__conns_close(hr_exporter_t *e);

/* libmicrohttpd's notifications, given to MHD_start_daemon (cls: e). */
HR_INTERNAL void hr__conn_notify(void *cls, struct MHD_Connection *c, void **socket_context,
                                 enum MHD_ConnectionNotificationCode code);
HR_INTERNAL void hr__conn_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                                    enum MHD_RequestTerminationCode code);

/* The request on c has complete headers and is about to be answered: its
 * connection leaves the waiting list (it can no longer be dropped for a new
 * one) for the answering one. Returns true when the request must be shed
 * (answered 503): too many responses are in flight. Called again for the
 * same request, it gives the same answer. */
HR_INTERNAL bool hr__conn_answering(hr_exporter_t *e, struct MHD_Connection *c);

#endif /* HR_EXPORT_HTTP_H */
