/* libFuzzer harness: the broker's line parser and reservation engine
 * (src/broker), driven the way clients drive them: through the public API
 * (hr_broker_start, one broker for the whole run, its thread serving a Unix
 * socket) and protocol lines on real connections. See README.md.
 *
 * The input is lines. "N:line" (N in 1-3) goes to client N, which said
 * hello first as this process (priority 10 * N); any other line goes to
 * client 0, which has not. "PID" in a line becomes this process's id (hello
 * checks it). A line "W" waits until the broker has read and acted on
 * everything sent so far (two status round trips on client 0), then answers
 * every release ask the clients have received with "released" of the asked
 * bytes, so that a reservation can go from asked to granted; a line "S"
 * sleeps 15 ms, longer than the broker waits for a client's answer (10 ms;
 * it waits for none to show as free). At the end each
 * client half-closes and reads until the broker closes it (its leases and
 * reservations end); a broker that has not closed one within 30 s aborts the
 * run, as a hang. */
#include <headroom/broker.h>
#include <headroom/headroom.h>

#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define CLIENTS 4
#define WAIT_MS 30000

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static hr_broker_t *broker;
static char sock_path[108];

typedef struct {
  int fd;
  char line[4096]; /* the start of the line being read; the rest is dropped */
  size_t len;
} client_t;

static void stop(void) {
  hr_broker_stop(broker);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc, (void)argv;
  static const char *set[][2] = {
      {"budget", "host=64G"},     {"broker_timeout", "10ms"},
      {"patience", "0"},          {"cooldown", "0"},
      {"ram_warn", "100"},        {"ram_critical", "100"},
      {"broker_max_conns", "64"}, {"nvml_library", "/nonexistent/libnvidia-ml.so.1"}};
  char err[300];
  hr_options_t *o = NULL;
  snprintf(sock_path, sizeof sock_path, "/tmp/hr-fuzz-broker-%d.sock", (int)getpid());
  if (hr_options_create(&o) != 0) abort();
  hr_options_set(o, "broker_socket", sock_path, HR_SRC_CLI, err, sizeof err);
  for (size_t i = 0; i < sizeof set / sizeof set[0]; i++)
    if (hr_options_set(o, set[i][0], set[i][1], HR_SRC_CLI, err, sizeof err) != 0) {
      fprintf(stderr, "fuzz_broker: %s\n", err);
      abort();
    }
  if (hr_broker_start(o, NULL, NULL, &broker, err, sizeof err) != 0) {
    fprintf(stderr, "fuzz_broker: %s\n", err);
    abort();
  }
  hr_options_destroy(o);
  atexit(stop);
  return 0;
}

static void say(client_t *c, const char *s, size_t n) {
  while (c->fd >= 0 && n > 0) {
    ssize_t w = send(c->fd, s, n, MSG_NOSIGNAL);
    if (w <= 0) return; /* closed by the broker: the rest is lost, as for a real client */
    s += w, n -= (size_t)w;
  }
}

static void dial(client_t *c, int k) {
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  snprintf(sa.sun_path, sizeof sa.sun_path, "%s", sock_path);
  c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (c->fd < 0 || connect(c->fd, (struct sockaddr *)&sa, sizeof sa) != 0) abort();
  c->len = 0;
  if (k == 0) return;
  char hello[128];
  int n = snprintf(hello, sizeof hello,
                   "{\"v\":1,\"op\":\"hello\",\"pid\":%d,\"name\":\"c%d\",\"priority\":%d}\n",
                   (int)getpid(), k, 10 * k);
  say(c, hello, (size_t)n);
}

/* Reads what is there (or waits up to WAIT_MS when `wait`), calling fn on
 * each whole line's start. Returns 1 when it read, 0 at EOF, -1 when nothing
 * was there. */
static int hear(client_t *c, bool wait, bool (*fn)(client_t *, const char *), bool *done) {
  char buf[8192];
  struct pollfd p = {.fd = c->fd, .events = POLLIN};
  int ready = poll(&p, 1, wait ? WAIT_MS : 0);
  if (ready == 0 && wait) {
    fprintf(stderr, "fuzz_broker: no answer from the broker in %d ms\n", WAIT_MS);
    abort();
  }
  if (ready <= 0) return -1;
  ssize_t r = recv(c->fd, buf, sizeof buf, 0);
  if (r <= 0) return 0;
  for (ssize_t i = 0; i < r; i++) {
    if (buf[i] != '\n') {
      if (c->len < sizeof c->line - 1) c->line[c->len++] = buf[i];
      continue;
    }
    c->line[c->len] = '\0';
    c->len = 0;
    if (fn && fn(c, c->line) && done) *done = true;
  }
  return 1;
}

static bool is_status(client_t *c, const char *line) {
  (void)c;
  return strncmp(line, "{\"v\":1,\"op\":\"status\"", 20) == 0;
}

static bool answer_ask(client_t *c, const char *line) {
  unsigned long long id, bytes;
  const char *i = strstr(line, "\"id\":"), *b = strstr(line, "\"bytes\":");
  if (strncmp(line, "{\"v\":1,\"op\":\"release\"", 21) != 0 || !i || !b) return false;
  id = strtoull(i + 5, NULL, 10), bytes = strtoull(b + 8, NULL, 10);
  char reply[128];
  int n = snprintf(reply, sizeof reply,
                   "{\"v\":1,\"op\":\"released\",\"id\":%llu,\"bytes\":%llu}\n", id, bytes);
  say(c, reply, (size_t)n);
  return true;
}

/* The "W" line: two status round trips on client 0 (the second begins after
 * a whole turn of the broker's loop), then the asks answered. */
static void settle(client_t *cl) {
  static const char status[] = "{\"v\":1,\"op\":\"status\"}\n";
  for (int round = 0; round < 2 && cl[0].fd >= 0; round++) {
    bool done = false;
    say(&cl[0], status, sizeof status - 1);
    while (!done)
      if (hear(&cl[0], true, is_status, &done) == 0) {
        close(cl[0].fd); /* closed by the broker (a protocol error) */
        cl[0].fd = -1;
        break;
      }
  }
  for (int k = 1; k < CLIENTS; k++)
    while (cl[k].fd >= 0 && hear(&cl[k], false, answer_ask, NULL) == 1) {
    }
}

/* Sends one input line, "PID" replaced, to the client it names. */
static void send_line(client_t *cl, const char *s, size_t n) {
  int k = 0;
  if (n >= 2 && s[0] >= '1' && s[0] < '0' + CLIENTS && s[1] == ':') k = s[0] - '0', s += 2, n -= 2;
  if (cl[k].fd < 0) dial(&cl[k], k);
  char pid[16];
  int np = snprintf(pid, sizeof pid, "%d", (int)getpid());
  const char *at;
  while (n >= 3 && (at = memmem(s, n, "PID", 3)) != NULL) {
    say(&cl[k], s, (size_t)(at - s));
    say(&cl[k], pid, (size_t)np);
    n -= (size_t)(at - s) + 3, s = at + 3;
  }
  say(&cl[k], s, n);
  say(&cl[k], "\n", 1);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  client_t cl[CLIENTS];
  for (int k = 0; k < CLIENTS; k++) cl[k].fd = -1;
  const char *s = (const char *)data, *end = s + size;
  while (s < end) {
    const char *nl = memchr(s, '\n', (size_t)(end - s));
    size_t n = (size_t)((nl ? nl : end) - s);
    if (n == 1 && s[0] == 'W') {
      if (cl[0].fd < 0) dial(&cl[0], 0);
      settle(cl);
    } else if (n == 1 && s[0] == 'S')
      usleep(15000);
    else
      send_line(cl, s, n);
    s += n + (nl != NULL);
  }
  for (int k = 0; k < CLIENTS; k++) {
    if (cl[k].fd < 0) continue;
    shutdown(cl[k].fd, SHUT_WR);
    while (hear(&cl[k], true, NULL, NULL) != 0) {
    }
    close(cl[k].fd);
  }
  return 0;
}
