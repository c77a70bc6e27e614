/* Whom the exporter serves: its connections, their limits and the one
 * thread that runs them.
 *
 * libmicrohttpd parses and answers HTTP (http.c); the accept and the event
 * loop are ours, because the policy that keeps a scraper in needs both:
 * libmicrohttpd's own limits turn a connection away at capacity or past a
 * per-address count (an empty reply), and its timeout restarts with every
 * byte, so a client that drips one keeps its place for ever.
 *
 * The loop is one thread waiting in epoll on the listening socket,
 * libmicrohttpd's epoll descriptor (every connection; MHD_run reads, answers
 * and writes) and an eventfd that asks it to stop, with a timeout that is the
 * nearest deadline: it sleeps whenever nothing is due, and never spins.
 *
 * The policy (docs/watch.md, "Exporter"):
 *  - a connection that waits (idle, or its request's headers incomplete) is
 *    cut header_deadline after its accept or the end of its last response,
 *    judged only after what had arrived by then has been read: a thread
 *    kept from running (a loaded machine) never cuts a request that came in
 *    time;
 *  - a request whose headers are complete is answered and never dropped for
 *    another connection; its response must be taken within
 *    response_deadline;
 *  - at capacity, a new connection takes the place of the one that has
 *    waited longest, once what it sent has been read; when none waits
 *    (every one is being answered) the new one is taken all the same and
 *    accepting pauses until there is room, the next ones waiting in the
 *    kernel's backlog;
 *  - a request that arrives while max_answering responses are in flight is
 *    answered 503 with Retry-After (http.c);
 *  - no limit per address: the scraper often shares its address with the
 *    attacker (every local user of a node is 127.0.0.1), so such a limit
 *    would lock the scraper out with it. Every address is treated alike.
 * Each list is kept in order of entry, so the oldest is its head: a deadline
 * check or an eviction costs O(1), and memory is one record a connection.
 * Cutting is shutdown(): libmicrohttpd owns the descriptor, sees the end of
 * the stream on its next run and closes it. */
#include "export/http.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#define ACCEPT_BATCH 32  /* accepts per wake-up before the connections run */
#define PAUSE_NOFD_S 0.1 /* accepting pauses this long when out of descriptors */
#define NEVER        1e18

hr__http_limits_t hr__http_limits_default(void) {
  hr__http_limits_t l = {
      .capacity = 512, .max_answering = 128, .header_deadline = 2.0, .response_deadline = 10.0};
  /* Half the process's descriptors at most: watch needs the rest. */
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
      rl.rlim_cur / 2 < l.capacity)
    l.capacity = rl.rlim_cur / 2 > 16 ? (size_t)(rl.rlim_cur / 2) : 16;
  return l;
}

/* ---- the two lists ------------------------------------------------------- */

static void list_init(hr__conn_list_t *l) {
  l->head.next = l->head.prev = &l->head;
  l->n = 0;
}

static void list_push(hr__conn_list_t *l, hr__conn_t *k) {
  k->prev = l->head.prev, k->next = &l->head;
  l->head.prev->next = k, l->head.prev = k;
  l->n++;
}

static void list_remove(hr__conn_list_t *l, hr__conn_t *k) {
  k->prev->next = k->next, k->next->prev = k->prev;
  k->prev = k->next = NULL;
  l->n--;
}

static hr__conn_t *oldest(hr__conn_list_t *l) {
  return l->n ? l->head.next : NULL;
}

static hr__conn_list_t *list_of(hr_exporter_t *e, const hr__conn_t *k) {
  if (k->state == HR__CONN_WAITING) return &e->waiting;
  return k->state == HR__CONN_ANSWERING ? &e->answering : NULL;
}

/* Moves k into state s, at the young end of its list, from now. */
static void enter(hr_exporter_t *e, hr__conn_t *k, hr__conn_state_t s) {
  hr__conn_list_t *from = list_of(e, k);
  if (from) list_remove(from, k);
  k->state = s;
  k->since = hr__now_mono();
  hr__conn_list_t *to = list_of(e, k);
  if (to) list_push(to, k);
}

static void cut(hr_exporter_t *e, hr__conn_t *k, hr__drop_t why) {
  enter(e, k, HR__CONN_CUT);
  e->cut_pending++;
  /* Counted first: whoever sees the connection end may read the counter. */
  atomic_fetch_add_explicit(&e->dropped[why], 1, memory_order_relaxed);
  shutdown(k->fd, SHUT_RDWR);
}

/* Connections that count against capacity: open and not cut. */
static size_t live(const hr_exporter_t *e) {
  return e->open - e->cut_pending;
}

/* ---- libmicrohttpd's notifications ------------------------------------- */

static hr__conn_t *record(struct MHD_Connection *c) {
  const union MHD_ConnectionInfo *ci =
      MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
  return ci ? ci->socket_context : NULL;
}

void hr__conn_notify(void *cls, struct MHD_Connection *c, void **socket_context,
                     enum MHD_ConnectionNotificationCode code) {
  hr_exporter_t *e = cls;
  hr__conn_t *k = *socket_context;
  if (code == MHD_CONNECTION_NOTIFY_STARTED) {
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    k = ci ? calloc(1, sizeof *k) : NULL;
    if (!k) {
      /* Without a record no deadline holds it: refuse it instead. */
      if (ci) shutdown(ci->connect_fd, SHUT_RDWR);
      return;
    }
    k->fd = ci->connect_fd;
    k->state = HR__CONN_WAITING;
    k->since = hr__now_mono();
    list_push(&e->waiting, k);
    e->open++;
    *socket_context = k;
  } else if (k) {
    hr__conn_list_t *l = list_of(e, k);
    if (l) list_remove(l, k);
    if (k->state == HR__CONN_CUT) e->cut_pending--;
    e->open--;
    free(k);
    *socket_context = NULL;
  }
  atomic_store_explicit(&e->open_now, e->open, memory_order_relaxed);
}

void hr__conn_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                        enum MHD_RequestTerminationCode code) {
  (void)con_cls, (void)code;
  hr__conn_t *k = record(c);
  /* Answered. libmicrohttpd closes the connection after a response queued
   * as the headers arrive (ours are); should it keep one alive, it waits
   * for its next request from now. */
  if (k && k->state == HR__CONN_ANSWERING) {
    k->shed = false;
    enter(cls, k, HR__CONN_WAITING);
  }
}

bool hr__conn_answering(hr_exporter_t *e, struct MHD_Connection *c) {
  hr__conn_t *k = record(c);
  if (!k || k->state != HR__CONN_WAITING) return k && k->shed;
  enter(e, k, HR__CONN_ANSWERING);
  k->shed = e->answering.n > e->lim.max_answering;
  if (k->shed) atomic_fetch_add_explicit(&e->shed, 1, memory_order_relaxed);
  return k->shed;
}

/* ---- accepting ----------------------------------------------------------- */

static void listen_polled(hr_exporter_t *e, bool on, double until) {
  struct epoll_event ev = {.events = on ? EPOLLIN : 0, .data.fd = e->fd};
  epoll_ctl(e->ep, EPOLL_CTL_MOD, e->fd, &ev);
  e->paused = !on;
  e->resume_at = until;
}

/* Whether bytes wait on fd that libmicrohttpd has not read yet. */
static bool unread(int fd) {
  int n = 0;
  return ioctl(fd, FIONREAD, &n) == 0 && n > 0;
}

/* Cuts the connection that has waited longest, to make room for a new one,
 * and lets libmicrohttpd close it at once. False when none waits. Bytes
 * that came since the last read are read first: the request they complete
 * is answered, and its connection no longer waits. */
static bool make_room(hr_exporter_t *e) {
  hr__conn_t *k = oldest(&e->waiting);
  if (k && unread(k->fd)) {
    MHD_run(e->daemon);
    k = oldest(&e->waiting);
  }
  if (!k) return false;
  cut(e, k, HR__DROP_CAPACITY);
  MHD_run(e->daemon);
  return true;
}

/* Accepts what the backlog holds, up to ACCEPT_BATCH, and hands each to
 * libmicrohttpd (which closes it if it cannot take it). At capacity the
 * connection that waited longest makes room; when none waits, the new one
 * is taken all the same (one over capacity: its request will be answered,
 * or shed with a 503, never met with silence) and accepting pauses until
 * there is room again. */
static void accept_some(hr_exporter_t *e) {
  for (int i = 0; i < ACCEPT_BATCH; i++) {
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    int fd = accept4(e->fd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) return;
      if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO) continue;
      /* Out of descriptors or memory: free one for the next try, and do
       * not spin on a backlog that cannot be taken now. */
      make_room(e);
      listen_polled(e, false, hr__now_mono() + PAUSE_NOFD_S);
      return;
    }
    atomic_fetch_add_explicit(&e->accepted, 1, memory_order_relaxed);
    bool room = live(e) < e->lim.capacity || make_room(e);
    MHD_add_connection(e->daemon, fd, (struct sockaddr *)&ss, sl);
    if (!room) {
      listen_polled(e, false, 0);
      return;
    }
  }
}

/* ---- the loop ------------------------------------------------------------ */

/* Cuts what is past its deadline at `now`, read before libmicrohttpd last
 * read the connections (serve). */
static void expire(hr_exporter_t *e, double now) {
  hr__conn_t *k;
  while ((k = oldest(&e->waiting)) && now - k->since >= e->lim.header_deadline)
    cut(e, k, HR__DROP_DEADLINE);
  while ((k = oldest(&e->answering)) && now - k->since >= e->lim.response_deadline)
    cut(e, k, HR__DROP_SLOW);
}

/* Milliseconds until something is due (-1: nothing is), rounded up so the
 * loop never wakes just before a deadline and spins to it. */
static int wait_ms(hr_exporter_t *e, double now) {
  double t = NEVER;
  MHD_UNSIGNED_LONG_LONG mt;
  if (MHD_get_timeout(e->daemon, &mt) == MHD_YES) t = (double)mt / 1000;
  hr__conn_t *k;
  if ((k = oldest(&e->waiting))) t = HR_MIN(t, k->since + e->lim.header_deadline - now);
  if ((k = oldest(&e->answering))) t = HR_MIN(t, k->since + e->lim.response_deadline - now);
  if (e->paused && e->resume_at > 0) t = HR_MIN(t, e->resume_at - now);
  if (t >= NEVER) return -1;
  return t <= 0 ? 0 : (int)HR_MIN(t * 1000 + 1, 60000.0);
}

static void drain(int fd) {
  uint64_t v;
  ssize_t r = read(fd, &v, sizeof v);
  (void)r; /* a nonblocking eventfd: read or already empty */
}

static void *serve(void *arg) {
  hr_exporter_t *e = arg;
  struct epoll_event ev[8];
  while (!atomic_load(&e->stopping)) {
    int n = epoll_wait(e->ep, ev, (int)HR_ARRAY_LEN(ev), wait_ms(e, hr__now_mono()));
    bool incoming = false;
    for (int i = 0; i < n; i++) {
      if (ev[i].data.fd == e->fd) incoming = true;
      if (ev[i].data.fd == e->wake) drain(e->wake);
    }
    /* The clock is read before the connections are: every request that
     * had come by `now` is parsed (its connection answering, no longer
     * waiting) before expire() judges against `now`, however long the
     * thread was kept from running in between. */
    double now = hr__now_mono();
    MHD_run(e->daemon);
    expire(e, now);
    if (e->paused &&
        (e->resume_at > 0 ? now >= e->resume_at : live(e) < e->lim.capacity || e->waiting.n > 0))
      listen_polled(e, true, 0);
    if (incoming && !e->paused) {
      accept_some(e);
      MHD_run(e->daemon);
    }
  }
  return NULL;
}

/* ---- start and stop ------------------------------------------------------ */

int hr__conns_init(hr_exporter_t *e) {
  list_init(&e->waiting);
  list_init(&e->answering);
  e->ep = epoll_create1(EPOLL_CLOEXEC);
  e->wake = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (e->ep < 0 || e->wake < 0) return HR_EIO;
  struct epoll_event w = {.events = EPOLLIN, .data.fd = e->wake};
  struct epoll_event l = {.events = EPOLLIN, .data.fd = e->fd};
  if (epoll_ctl(e->ep, EPOLL_CTL_ADD, e->wake, &w) != 0 ||
      epoll_ctl(e->ep, EPOLL_CTL_ADD, e->fd, &l) != 0)
    return HR_EIO;
  return 0;
}

int hr__conns_start(hr_exporter_t *e) {
  const union MHD_DaemonInfo *di = MHD_get_daemon_info(e->daemon, MHD_DAEMON_INFO_EPOLL_FD);
  if (!di) return HR_EIO;
  struct epoll_event m = {.events = EPOLLIN, .data.fd = di->epoll_fd};
  if (epoll_ctl(e->ep, EPOLL_CTL_ADD, di->epoll_fd, &m) != 0) return HR_EIO;
  if (pthread_create(&e->thread, NULL, serve, e) != 0) return HR_ENOMEM;
  pthread_setname_np(e->thread, "hr-exporter");
  e->thread_started = true;
  return 0;
}

void hr__conns_stop(hr_exporter_t *e) {
  if (!e->thread_started) return;
  atomic_store(&e->stopping, true);
  uint64_t one = 1;
  ssize_t w = write(e->wake, &one, sizeof one);
  (void)w; /* one write cannot overflow the counter */
  pthread_join(e->thread, NULL);
  e->thread_started = false;
}

void hr__conns_close(hr_exporter_t *e) {
  if (e->ep >= 0) close(e->ep);
  if (e->wake >= 0) close(e->wake);
  e->ep = e->wake = -1;
}

void hr__exporter_counters(hr_exporter_t *e, hr__http_counters_t *out) {
  memset(out, 0, sizeof *out);
  out->accepted = atomic_load_explicit(&e->accepted, memory_order_relaxed);
  out->shed = atomic_load_explicit(&e->shed, memory_order_relaxed);
  out->dropped_deadline =
      atomic_load_explicit(&e->dropped[HR__DROP_DEADLINE], memory_order_relaxed);
  out->dropped_capacity =
      atomic_load_explicit(&e->dropped[HR__DROP_CAPACITY], memory_order_relaxed);
  out->dropped_slow = atomic_load_explicit(&e->dropped[HR__DROP_SLOW], memory_order_relaxed);
  out->open = atomic_load_explicit(&e->open_now, memory_order_relaxed);
  out->capacity = e->lim.capacity;
}
