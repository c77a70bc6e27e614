/* headroom broker: what the broker in `headroom watch` knows now (its
 * resources, clients with their priorities and releasable bytes, adapters and
 * leases), from one "status" request on its socket. Also the client side
 * that `headroom reserve` shares, and the start of the broker beside the
 * watch loop. */
#include "cli.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

int hr_cli_broker_connect(hr_cli_t *cli) {
  char path[256];
  if (hr_broker_socket_path(cli->opts, path, sizeof path) != 0) {
    hr_cli_error("no broker socket: set broker_socket, or XDG_RUNTIME_DIR");
    return -1;
  }
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  memcpy(sa.sun_path, path, strlen(path) + 1); /* checked: under 108 bytes */
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
    int e = errno;
    hr_cli_error("cannot reach the broker at %s: %s%s", path, strerror(e),
                 e == ENOENT || e == ECONNREFUSED ? " (is 'headroom watch' running?)" : "");
    if (fd >= 0) close(fd);
    return -1;
  }
  return fd;
}

int hr_cli_broker_send(int fd, const char *line) {
  size_t n = strlen(line);
  for (size_t off = 0; off < n;) {
    ssize_t w = send(fd, line + off, n - off, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return -1;
    off += (size_t)w;
  }
  return send(fd, "\n", 1, MSG_NOSIGNAL) == 1 ? 0 : -1;
}

/* Reads one line (without its newline) into a malloc'd string, waiting at
 * most timeout seconds in all (< 0: forever). NULL on EOF, timeout or error,
 * or past 16 MiB. It peeks before it reads, so the rest of the stream stays
 * unread, and reads what it peeked at in one go: a long line costs a few
 * calls, not one a byte. */
char *hr_cli_broker_read(int fd, double timeout) {
  size_t n = 0, cap = 0;
  char *s = NULL, chunk[65536];
  struct timespec t0;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (;;) {
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double left =
        timeout - (double)(t1.tv_sec - t0.tv_sec) - (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9;
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int r = timeout >= 0 && left <= 0 ? 0 : poll(&p, 1, timeout < 0 ? -1 : (int)(left * 1000) + 1);
    if (r < 0 && errno == EINTR) continue;
    ssize_t got = r == 1 ? recv(fd, chunk, sizeof chunk, MSG_PEEK) : -1;
    if (got <= 0) break;
    char *nl = memchr(chunk, '\n', (size_t)got);
    size_t take = nl ? (size_t)(nl - chunk) + 1 : (size_t)got;
    if (n + take + 1 > cap) {
      size_t nc = cap * 2 > n + take + 1 ? cap * 2 : n + take + 1;
      char *ns = nc <= (1u << 24) ? realloc(s, nc) : NULL;
      if (!ns) break;
      s = ns, cap = nc;
    }
    if (recv(fd, s + n, take, 0) != (ssize_t)take) break;
    n += take;
    if (nl) {
      s[n - 1] = '\0';
      return s;
    }
  }
  free(s);
  return NULL;
}

typedef struct broker_args {
  bool json, schema;
} broker_args_t;

static const hr_cli_opt_t broker_opts[] = {
    HR_CLI_OPTION_AS("socket", broker_socket, "PATH", HR_CLI_COMPLETE_FILE),
    {"json", HR_CLI_FLAG, HR_CLI_AT(broker_args_t, json),
     .help = "the broker's status object as it is"},
    {"schema", HR_CLI_FLAG, HR_CLI_AT(broker_args_t, schema),
     .help = "print the JSON Schema of the broker's protocol (every message, both ways) and exit"},
};

static const char *sz(char *buf, size_t n, const cJSON *v) {
  if (!cJSON_IsNumber(v)) return snprintf(buf, n, "-"), buf;
  return hr_size_text(buf, n, (uint64_t)v->valuedouble);
}

/* "and N more" when a bounded list left some out. */
static void more(const cJSON *j, const char *list, const char *total, const char *what) {
  double n = cJSON_GetNumberValue(cJSON_GetObjectItem(j, total)) -
             cJSON_GetArraySize(cJSON_GetObjectItem(j, list));
  if (n > 0) printf("%8s and %.0f more %s\n", "", n, what);
}

static void show(const cJSON *j) {
  char a[32], b[32], c[32], d[32];
  const cJSON *x, *k;
  printf("broker %s\n\n%-8s %10s %10s %10s %10s\n", cJSON_GetObjectItem(j, "socket")->valuestring,
         "DEVICE", "BUDGET", "CLIENTS", "LEASED", "FREE");
  cJSON_ArrayForEach(x, cJSON_GetObjectItem(j, "resources")) {
    printf("%-8s %10s %10s %10s %10s\n", cJSON_GetObjectItem(x, "device")->valuestring,
           sz(a, sizeof a, cJSON_GetObjectItem(x, "budget_bytes")),
           sz(b, sizeof b, cJSON_GetObjectItem(x, "clients_bytes")),
           sz(c, sizeof c, cJSON_GetObjectItem(x, "leased_bytes")),
           sz(d, sizeof d, cJSON_GetObjectItem(x, "free_bytes")));
  }
  printf("\n%8s %-20s %8s %-5s %s\n", "PID", "CLIENT", "PRIORITY", "STATE", "RELEASABLE");
  cJSON_ArrayForEach(x, cJSON_GetObjectItem(j, "clients")) {
    printf("%8d %-20.20s %8d %-5s", cJSON_GetObjectItem(x, "pid")->valueint,
           cJSON_GetObjectItem(x, "name")->valuestring,
           cJSON_GetObjectItem(x, "priority")->valueint,
           cJSON_IsTrue(cJSON_GetObjectItem(x, "busy")) ? "busy" : "idle");
    cJSON_ArrayForEach(k, cJSON_GetObjectItem(x, "releasable_bytes"))
        printf(" %s %s", k->string, sz(a, sizeof a, k));
    const char *e = cJSON_GetStringValue(cJSON_GetObjectItem(x, "last_error"));
    printf("%s%s\n", e ? "  last release failed: " : "", e ? e : "");
  }
  more(j, "clients", "clients_total", "clients");
  cJSON_ArrayForEach(x, cJSON_GetObjectItem(j, "adapters")) {
    const char *e = cJSON_GetStringValue(cJSON_GetObjectItem(x, "last_error"));
    printf("%8s %-20.20s %8d %-5s %s%s%s%s\n", "-", cJSON_GetObjectItem(x, "name")->valuestring,
           cJSON_GetObjectItem(x, "priority")->valueint,
           cJSON_IsTrue(cJSON_GetObjectItem(x, "busy")) ? "busy" : "idle",
           cJSON_GetObjectItem(x, "device")->valuestring,
           cJSON_IsTrue(cJSON_GetObjectItem(x, "asleep")) ? " (asleep)" : "",
           e ? "  last call failed: " : "", e ? e : "");
  }
  printf("\n%8s %8s %-20s %-8s %10s\n", "LEASE", "PID", "HOLDER", "DEVICE", "BYTES");
  cJSON_ArrayForEach(x, cJSON_GetObjectItem(j, "leases"))
      printf("%8.0f %8d %-20.20s %-8s %10s\n", cJSON_GetObjectItem(x, "lease")->valuedouble,
             cJSON_GetObjectItem(x, "pid")->valueint, cJSON_GetObjectItem(x, "name")->valuestring,
             cJSON_GetObjectItem(x, "device")->valuestring,
             sz(a, sizeof a, cJSON_GetObjectItem(x, "bytes")));
  more(j, "leases", "leases_total", "leases");
  printf("\n%.0f reservation(s) waiting\n",
         cJSON_GetNumberValue(cJSON_GetObjectItem(j, "pending")));
}

static int broker_run(hr_cli_t *cli, const void *args, int argc, char **argv) {
  const broker_args_t *a = args;
  (void)argc, (void)argv;
  if (a->schema) {
    char *schema = NULL;
    if (hr_broker_protocol_schema(&schema) != 0) return hr_cli_error("out of memory"), 1;
    fputs(schema, stdout);
    free(schema);
    return 0;
  }
  int fd = hr_cli_broker_connect(cli);
  if (fd < 0) return 1;
  char *line = hr_cli_broker_send(fd, "{\"v\":1,\"op\":\"status\"}") == 0
                   ? hr_cli_broker_read(fd, 10)
                   : NULL;
  close(fd);
  cJSON *j = line ? cJSON_Parse(line) : NULL;
  int status = 0;
  const cJSON *op = cJSON_GetObjectItem(j, "op");
  if (!cJSON_IsString(op) || strcmp(op->valuestring, "status") != 0) {
    hr_cli_error("broker: no status came back%s%s", line ? ": " : "", line ? line : "");
    status = 1;
  } else if (a->json)
    printf("%s\n", line);
  else
    show(j);
  cJSON_Delete(j);
  free(line);
  return status;
}

HR_CLI_COMMAND(
    broker, "show the broker's clients, priorities, releasable bytes and leases",
    .about = "Shows what the broker in 'headroom watch' knows: each resource (host, gpuN) with "
             "its budget and what is free, the registered clients with their priorities and "
             "releasable bytes, the adapters and the leases.");

/* Each broker event goes to the watch, which records it in history and
 * writes it with its own events (watch --json, the live view). */
static void post_event(const hr_watch_event_t *e, void *arg) {
  hr_watch_post_event(arg, e);
}

static void counters_of(void *arg, struct hr_broker_counters *out) {
  hr_broker_get_counters(arg, out);
}

int hr_cli_broker_start(hr_cli_t *cli, hr_watch_t *w, hr_broker_t **out) {
  char err[600];
  *out = NULL;
  if (strcmp(hr_options_get_str(cli->opts, HR_OPTION_broker_socket), "none") == 0) return 0;
  int rc = hr_broker_start(cli->opts, post_event, w, out, err, sizeof err);
  if (rc == HR_EINVAL) return hr_cli_error("%s", err), 2;
  /* Like the exporter's: a socket asked for explicitly is an error, the
   * default one only a warning, so a second watch still runs. */
  if (rc && hr_options_source(cli->opts, HR_OPTION_broker_socket) != HR_SRC_DEFAULT)
    return hr_cli_error("%s", err), 1;
  if (rc) hr_cli_error("%s; watching without the broker", err);
  if (*out) hr_watch_set_broker_counters(w, counters_of, *out);
  return 0;
}
