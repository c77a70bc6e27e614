/* The exporter under attack, over real loopback sockets: hundreds of idle
 * connections, clients that send one byte at a time, oversized requests and
 * addresses that must not bind. Each attack holds its sockets while a scraper
 * from another loopback address asks for /metrics, which must answer within
 * one second; every socket is closed before the test ends.
 *
 * Linux routes all of 127.0.0.0/8 to loopback, so binding a client socket to
 * 127.0.1.N gives each attacker an address of its own without any setup. */
#include "hr_test.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define N_ATTACK 200

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A TCP connection to 127.0.0.1:port from `src` (dotted), or -1. */
static int connect_from(const char *src, int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  struct sockaddr_in a = {.sin_family = AF_INET};
  inet_pton(AF_INET, src, &a.sin_addr);
  struct sockaddr_in d = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  inet_pton(AF_INET, "127.0.0.1", &d.sin_addr);
  if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
      connect(fd, (struct sockaddr *)&d, sizeof d) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

/* GET /metrics from 127.0.0.1 with a 3 s limit; returns the seconds it took
 * and whether the answer was a 200 with the published body. */
static double scrape(int port, bool *ok) {
  double t0 = now_s();
  *ok = false;
  int fd = connect_from("127.0.0.1", port);
  if (fd < 0) return now_s() - t0;
  struct timeval tv = {3, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  const char *req = "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
  char buf[4096];
  size_t n = 0;
  if (send(fd, req, strlen(req), MSG_NOSIGNAL) == (ssize_t)strlen(req)) {
    ssize_t r;
    while (n < sizeof buf - 1 && (r = recv(fd, buf + n, sizeof buf - 1 - n, 0)) > 0) n += (size_t)r;
  }
  buf[n] = '\0';
  *ok = strstr(buf, " 200 ") && strstr(buf, "headroom_attack_probe 1");
  close(fd);
  return now_s() - t0;
}

/* Sends one byte of a request that never ends to every slow socket every
 * 100 ms, as a slow-loris client does, until told to stop. */
typedef struct {
  int *fds;
  int n;
  atomic_bool stop;
} drip_t;

static void *drip(void *arg) {
  drip_t *d = arg;
  static const char req[] =
      "GET /metrics HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
  size_t at = 0;
  while (!atomic_load(&d->stop)) {
    for (int i = 0; i < d->n; i++)
      if (d->fds[i] >= 0) send(d->fds[i], &req[at % (sizeof req - 1)], 1, MSG_NOSIGNAL);
    at++;
    struct timespec p = {0, 100 * 1000 * 1000};
    nanosleep(&p, NULL);
  }
  return NULL;
}

static hr_exporter_t *started(int *port) {
  char err[256] = "";
  hr_exporter_t *e = NULL;
  if (hr_exporter_start("127.0.0.1:0", &e, err, sizeof err) != 0) return NULL;
  hr_exporter_publish(e, "headroom_attack_probe 1\n", "{}");
  *port = hr_exporter_port(e);
  return e;
}

static void close_all(int *fds, int n) {
  for (int i = 0; i < n; i++)
    if (fds[i] >= 0) close(fds[i]), fds[i] = -1;
}

/* `spread`: each attacker on an address of its own (past any per-address
 * limit), else all from 127.0.0.2. Half the sockets stay idle, half drip. */
static void attack(bool spread) {
  int port = 0, fds[N_ATTACK];
  hr_exporter_t *e = started(&port);
  CHECK(e != NULL);
  int opened = 0;
  for (int i = 0; i < N_ATTACK; i++) {
    char src[32];
    snprintf(src, sizeof src, spread ? "127.0.%d.%d" : "127.0.0.2", 1 + i / 250, 1 + i % 250);
    fds[i] = connect_from(src, port);
    opened += fds[i] >= 0;
  }
  drip_t d = {.fds = fds + N_ATTACK / 2, .n = N_ATTACK / 2};
  pthread_t t;
  pthread_create(&t, NULL, drip, &d);
  /* Let the server accept them all and the drip run a while. */
  struct timespec p = {1, 0};
  nanosleep(&p, NULL);
  bool ok[3];
  double took[3];
  for (int i = 0; i < 3; i++) took[i] = scrape(port, &ok[i]);
  atomic_store(&d.stop, true);
  pthread_join(t, NULL);
  close_all(fds, N_ATTACK);
  hr_exporter_stop(e);
  CHECK_MSG(opened == N_ATTACK, "only %d of %d attack sockets connected", opened, N_ATTACK);
  for (int i = 0; i < 3; i++)
    CHECK_MSG(ok[i] && took[i] < 1.0, "scrape %d under %d %s connections: ok %d in %.2f s", i,
              N_ATTACK, spread ? "spread" : "one-address", ok[i], took[i]);
}

static void test_slow_and_idle_from_one_address(void) {
  attack(false);
}

static void test_slow_and_idle_from_many_addresses(void) {
  attack(true);
}

/* One byte every 100 ms restarts an idle timeout for ever; the request
 * deadline must still close the connection. */
static void test_slow_request_is_cut(void) {
  int port = 0;
  hr_exporter_t *e = started(&port);
  CHECK(e != NULL);
  int fd = connect_from("127.0.0.3", port);
  double t0 = now_s(), closed_at = 0;
  const char *req = "GET /metrics HTTP/1.1\r\nX-Slow: ";
  for (size_t i = 0; fd >= 0 && now_s() - t0 < 9.0; i++) {
    char c = i < strlen(req) ? req[i] : 'a';
    if (send(fd, &c, 1, MSG_NOSIGNAL) != 1) {
      closed_at = now_s() - t0;
      break;
    }
    struct pollfd pf = {.fd = fd, .events = POLLIN};
    if (poll(&pf, 1, 100) > 0) {
      char b[256];
      if (recv(fd, b, sizeof b, MSG_DONTWAIT) <= 0) {
        closed_at = now_s() - t0;
        break;
      }
    }
  }
  if (fd >= 0) close(fd);
  hr_exporter_stop(e);
  CHECK(fd >= 0);
  CHECK_MSG(closed_at > 0 && closed_at < 7.0, "slow request still open after %.1f s", closed_at);
}

/* Headers past the per-connection cap are refused, and the server goes on. */
static void test_oversized_request(void) {
  int port = 0;
  hr_exporter_t *e = started(&port);
  CHECK(e != NULL);
  int fd = connect_from("127.0.0.4", port);
  size_t n = 256 * 1024, sent = 0;
  char *big = malloc(n);
  CHECK(big != NULL);
  memset(big, 'a', n);
  memcpy(big, "GET /metrics HTTP/1.1\r\nX-Big: ", 30);
  struct timeval tv = {2, 0};
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  ssize_t r = 0;
  while (fd >= 0 && sent < n && (r = send(fd, big + sent, n - sent, MSG_NOSIGNAL)) > 0)
    sent += (size_t)r;
  free(big);
  /* The answer is a refusal or a closed connection, soon; never a 200. */
  char ans[512] = "";
  struct timeval rt = {2, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &rt, sizeof rt);
  ssize_t got = fd >= 0 ? recv(fd, ans, sizeof ans - 1, 0) : -1;
  bool refused = got == 0 || (got < 0 && errno == ECONNRESET) ||
                 (got > 0 && strncmp(ans, "HTTP/1.1 4", 10) == 0);
  bool ok;
  double took = scrape(port, &ok);
  if (fd >= 0) close(fd);
  hr_exporter_stop(e);
  CHECK(fd >= 0);
  CHECK_MSG(refused, "%zu bytes of headers: recv gave %zd (%.12s)", n, got, ans);
  CHECK_MSG(ok && took < 1.0, "scrape after an oversized request: ok %d in %.2f s", ok, took);
}

/* A port that overflows must not wrap onto another; an empty host must not
 * silently mean every interface. */
static void test_addresses_checked(void) {
  static const char *bad[] = {"127.0.0.1:4294967297",
                              "127.0.0.1:65536",
                              "127.0.0.1:000080",
                              ":0",
                              ":10460",
                              "127.0.0.1:-1",
                              "127.0.0.1:+80",
                              "[]:80"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    char err[256] = "";
    hr_exporter_t *e = NULL;
    int rc = hr_exporter_start(bad[i], &e, err, sizeof err);
    if (e) hr_exporter_stop(e);
    CHECK_MSG(rc == HR_EINVAL, "%s gave %d", bad[i], rc);
    CHECK_CONTAINS(err, "0.0.0.0:10460");
  }
}

int main(void) {
  HR_RUN(test_addresses_checked);
  HR_RUN(test_slow_and_idle_from_one_address);
  HR_RUN(test_slow_and_idle_from_many_addresses);
  HR_RUN(test_slow_request_is_cut);
  HR_RUN(test_oversized_request);
  return hr_test_finish("test_export_attack");
}
