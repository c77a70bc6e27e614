/* headroom reserve SIZE|auto -- CMD: asks the broker for SIZE bytes on a
 * device, waiting while it asks others to release; once granted, runs CMD
 * holding the lease on an open connection, and exits with CMD's status.
 *
 * The lease ends when CMD ends, whatever happens: this process waits for
 * its child even when its own parent ignores SIGCHLD (it takes the default
 * back, so the child's status is not lost and the wait cannot spin), then
 * closes the connection; should it die first, the kernel closes it. SIGTERM,
 * SIGINT and SIGHUP sent to it (systemd, docker stop) are passed to CMD; a
 * terminal's Ctrl-C reaches CMD itself and is not passed twice.
 *
 * `auto` learns the size from history: after the grant, the broker is told
 * which child runs the command (a `run` event history keeps), and the
 * watch samples that child's memory; a later `reserve auto` takes the p95
 * of those runs' peaks plus a margin, and says where the figure came from.
 * A refusal prints who holds what and exits 75 (EX_TEMPFAIL). */
#include "cli.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define EXIT_REFUSED 75

typedef struct reserve_args {
  int64_t device; /* -1: host */
  double timeout, lease;
  int64_t priority;
  double margin;
  uint64_t first_run;
  bool json;
} reserve_args_t;

static const hr_cli_opt_t reserve_opts[] = {
    {"device", HR_CLI_DEVICE, HR_CLI_AT(reserve_args_t, device), .meta = "N|host", .deflt = "0",
     .max = 63, .help = "GPU N, or host for host memory"},
    {"timeout", HR_CLI_DURATION, HR_CLI_AT(reserve_args_t, timeout), .meta = "D", .deflt = "30s",
     .max = 3650 * 86400.0, .help = "how long to wait for room"},
    {"lease", HR_CLI_DURATION, HR_CLI_AT(reserve_args_t, lease), .meta = "D", .max = 3650 * 86400.0,
     .help = "the lease ends after D even if CMD still runs (default: never)"},
    {"priority", HR_CLI_INT, HR_CLI_AT(reserve_args_t, priority), .meta = "P", .deflt = "0",
     .min = -1000000, .max = 1000000,
     .help = "the priority asked with; clients above it are never asked"},
    {"margin", HR_CLI_PERCENT, HR_CLI_AT(reserve_args_t, margin), .meta = "PCT", .deflt = "25",
     .max = 1000, .help = "auto: added to the p95 of earlier runs' peaks"},
    {"first-run", HR_CLI_SIZE, HR_CLI_AT(reserve_args_t, first_run), .meta = "SIZE",
     .max = 1099511627776.0 * 1024,
     .help = "auto: the size to reserve when history holds no earlier run of CMD"},
    HR_CLI_OPTION_AS(NULL, db, "PATH", HR_CLI_COMPLETE_FILE),
    HR_CLI_OPTION_AS("socket", broker_socket, "PATH", HR_CLI_COMPLETE_FILE),
    {"json", HR_CLI_FLAG, HR_CLI_AT(reserve_args_t, json),
     .help = "the broker's answer as JSON on stderr"},
};

/* Prints a refusal: the reason, every holder listed, and how many more. */
static void show_refusal(const cJSON *j) {
  char a[32], b[32];
  const cJSON *h;
  hr_cli_error(
      "reserve: refused on %s: %s; %s asked, %s fits",
      cJSON_GetStringValue(cJSON_GetObjectItem(j, "device")),
      cJSON_GetStringValue(cJSON_GetObjectItem(j, "reason")),
      hr_size_text(a, sizeof a, (uint64_t)cJSON_GetNumberValue(cJSON_GetObjectItem(j, "bytes"))),
      hr_size_text(b, sizeof b,
                   (uint64_t)cJSON_GetNumberValue(cJSON_GetObjectItem(j, "fits_bytes"))));
  cJSON_ArrayForEach(h, cJSON_GetObjectItem(j, "holders")) fprintf(
      stderr, "  pid %d %s (priority %d) holds %s, releasable %s: %s\n",
      (int)cJSON_GetNumberValue(cJSON_GetObjectItem(h, "pid")),
      cJSON_GetStringValue(cJSON_GetObjectItem(h, "name")),
      (int)cJSON_GetNumberValue(cJSON_GetObjectItem(h, "priority")),
      hr_size_text(a, sizeof a,
                   (uint64_t)cJSON_GetNumberValue(cJSON_GetObjectItem(h, "held_bytes"))),
      hr_size_text(b, sizeof b,
                   (uint64_t)cJSON_GetNumberValue(cJSON_GetObjectItem(h, "releasable_bytes"))),
      cJSON_GetStringValue(cJSON_GetObjectItem(h, "why")));
  cJSON_ArrayForEach(h, cJSON_GetObjectItem(j, "leases")) fprintf(
      stderr, "  lease %.0f of pid %d %s holds %s\n",
      cJSON_GetNumberValue(cJSON_GetObjectItem(h, "lease")),
      (int)cJSON_GetNumberValue(cJSON_GetObjectItem(h, "pid")),
      cJSON_GetStringValue(cJSON_GetObjectItem(h, "name")),
      hr_size_text(a, sizeof a, (uint64_t)cJSON_GetNumberValue(cJSON_GetObjectItem(h, "bytes"))));
  double more = cJSON_GetNumberValue(cJSON_GetObjectItem(j, "holders_total")) -
                cJSON_GetArraySize(cJSON_GetObjectItem(j, "holders"));
  if (more > 0) fprintf(stderr, "  and %.0f more clients\n", more);
  more = cJSON_GetNumberValue(cJSON_GetObjectItem(j, "leases_total")) -
         cJSON_GetArraySize(cJSON_GetObjectItem(j, "leases"));
  if (more > 0) fprintf(stderr, "  and %.0f more leases\n", more);
}

/* ---- the child ----------------------------------------------------------- */

static volatile sig_atomic_t child_pid;

/* Passes a signal sent to this process on to the command; one a terminal
 * sent (to the whole foreground group) reached the command already. */
static void forward(int sig, siginfo_t *info, void *ctx) {
  (void)ctx;
  if (child_pid > 0 && info->si_code != SI_KERNEL) kill(child_pid, sig);
}

static const int forwarded[] = {SIGTERM, SIGINT, SIGHUP};

/* The command line as the broker records it and `auto` matches it: the
 * words joined by spaces, at most 255 bytes. */
static void command_line(char **argv, char *buf, size_t n) {
  size_t len = 0;
  buf[0] = '\0';
  for (size_t i = 0; argv[i] && len + 1 < n; i++)
    len += (size_t)snprintf(buf + len, n - len, "%s%s", i ? " " : "", argv[i]);
}

/* Tells the broker that the lease's command runs as pid (for history). */
static void say_running(int fd, uint64_t lease, pid_t pid, const char *cmdline) {
  cJSON *m = cJSON_CreateObject();
  cJSON_AddNumberToObject(m, "v", 1);
  cJSON_AddStringToObject(m, "op", "running");
  cJSON_AddNumberToObject(m, "lease", (double)lease);
  cJSON_AddNumberToObject(m, "pid", pid);
  cJSON_AddStringToObject(m, "command", cmdline);
  char *s = cJSON_PrintUnformatted(m);
  if (s) hr_cli_broker_send(fd, s);
  free(s);
  cJSON_Delete(m);
}

static int run_child(int fd, uint64_t lease, char **argv) {
  sigset_t block, old;
  sigemptyset(&block);
  struct sigaction sa = {.sa_sigaction = forward, .sa_flags = SA_SIGINFO | SA_RESTART};
  sigemptyset(&sa.sa_mask);
  for (size_t i = 0; i < sizeof forwarded / sizeof *forwarded; i++) {
    sigaddset(&block, forwarded[i]);
    sigaction(forwarded[i], &sa, NULL);
  }
  /* A parent that ignores SIGCHLD would have the child reaped unseen. */
  signal(SIGCHLD, SIG_DFL);
  sigprocmask(SIG_BLOCK, &block, &old); /* a signal before child_pid is set waits */
  pid_t pid = fork();
  if (pid < 0) {
    sigprocmask(SIG_SETMASK, &old, NULL);
    return hr_cli_error("reserve: fork failed: %s", strerror(errno)), 1;
  }
  if (pid == 0) {
    for (size_t i = 0; i < sizeof forwarded / sizeof *forwarded; i++) signal(forwarded[i], SIG_DFL);
    sigprocmask(SIG_SETMASK, &old, NULL);
    execvp(argv[0], argv);
    fprintf(stderr, "headroom: reserve: cannot run '%s': %s\n", argv[0], strerror(errno));
    _exit(127);
  }
  child_pid = pid;
  sigprocmask(SIG_SETMASK, &old, NULL);
  char cmdline[256];
  command_line(argv, cmdline, sizeof cmdline);
  say_running(fd, lease, pid, cmdline);
  int st = 0;
  pid_t w;
  while ((w = waitpid(pid, &st, 0)) < 0 && errno == EINTR) {
  }
  child_pid = 0;
  if (w < 0) return hr_cli_error("reserve: the command's status is lost: %s", strerror(errno)), 1;
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* ---- sizes --------------------------------------------------------------- */

/* A size that is a whole number of bytes: "512M", "1.5G", "4096"; not
 * "1.5" (one and a half bytes) nor "0.3K". */
static int whole_size(const char *s, uint64_t *out) {
  if (hr_parse_size(s, out) != 0) return -1;
  char *end;
  double v = strtod(s, &end);
  const char *units = "KMGT", *u = strchr(units, *end ? (char)(*end & ~0x20) : '#');
  double bytes = ldexp(v, u ? 10 * (int)(u - units + 1) : 0);
  return bytes == floor(bytes) && *out > 0 ? 0 : -1;
}

/* ---- auto: the size learned from history ------------------------------------ */

/* The first lease_end of `lease` after event i, or `now` when none came. */
static double run_end(const hr_history_event_t *ev, size_t n, size_t i, double now) {
  for (size_t k = i + 1; k < n; k++)
    if (ev[k].event.kind == HR_EVENT_BROKER && ev[k].event.broker.what == HR_BROKER_EV_LEASE_END &&
        ev[k].event.broker.lease == ev[i].event.broker.lease)
      return ev[k].time;
  return now;
}

/* The highest memory run i's process reached on `device` between its start
 * and its lease's end, as the watch sampled it (0: never sampled). */
static uint64_t run_peak(hr_history_t *h, const hr_history_event_t *ev, size_t n, size_t i,
                         const char *device) {
  hr_history_row_t *rows = NULL;
  hr_history_event_t *evs = NULL;
  size_t nr = 0, ne = 0;
  char err[300];
  uint64_t peak = 0;
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  double end = run_end(ev, n, i, (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9);
  if (hr_history_query(h, ev[i].time, ev[i].pid, &rows, &nr, &evs, &ne, err, sizeof err) != 0)
    return 0;
  for (size_t k = 0; k < nr && rows[k].time <= end; k++) {
    uint64_t v = strcmp(device, "host") == 0 ? rows[k].used_bytes : rows[k].total_bytes;
    if (v != HR_UNKNOWN && v > peak) peak = v;
  }
  hr_history_free_rows(rows, evs, ne);
  return peak;
}

static int u64_cmp(const void *x, const void *y) {
  uint64_t a = *(const uint64_t *)x, b = *(const uint64_t *)y;
  return a < b ? -1 : a > b;
}

/* The peaks of the earlier runs of `cmdline` on `device` in the history at
 * `path`; *n gets how many (malloc'd; NULL when none). */
static uint64_t *run_peaks(const char *path, const char *cmdline, const char *device, size_t *n) {
  hr_history_t *h = NULL;
  hr_history_row_t *rows = NULL;
  hr_history_event_t *ev = NULL;
  size_t nr = 0, ne = 0;
  uint64_t *peaks = NULL;
  char err[600];
  *n = 0;
  if (access(path, R_OK) != 0 || hr_history_open(path, &h, err, sizeof err) != 0) return NULL;
  if (hr_history_query(h, 0, -1, &rows, &nr, &ev, &ne, err, sizeof err) == 0 &&
      (peaks = malloc((ne + 1) * sizeof *peaks)) != NULL)
    for (size_t i = 0; i < ne; i++) {
      const hr_watch_event_t *e = &ev[i].event;
      if (e->kind != HR_EVENT_BROKER || e->broker.what != HR_BROKER_EV_RUN ||
          strcmp(e->broker.message, cmdline) != 0 || strcmp(e->broker.device, device) != 0)
        continue;
      uint64_t p = run_peak(h, ev, ne, i, device);
      if (p) peaks[(*n)++] = p;
    }
  hr_history_free_rows(rows, ev, ne);
  hr_history_close(h);
  return peaks;
}

/* The size for `auto`: the p95 of the earlier runs' peaks plus margin %,
 * or first_run when there is none; said on stderr with its source. Returns
 * 0, or 2 (said) when there is neither. */
static int learn(hr_cli_t *cli, int64_t device, double margin, uint64_t first_run, char **cmd,
                 uint64_t *bytes) {
  char path[600], cmdline[256], dev[32], a[32], b[32];
  command_line(cmd, cmdline, sizeof cmdline);
  snprintf(dev, sizeof dev, device < 0 ? "host" : "gpu%lld", (long long)device);
  const char *db = hr_options_get_str(cli->opts, HR_OPTION_db);
  if (*db)
    snprintf(path, sizeof path, "%s", db);
  else if (hr_history_default_path(path, sizeof path) != 0)
    snprintf(path, sizeof path, "none");
  size_t n = 0;
  uint64_t *peaks = run_peaks(path, cmdline, dev, &n);
  if (n == 0) {
    free(peaks);
    if (!first_run)
      return hr_cli_error("reserve: auto: history (%s) holds no earlier run of '%s' on %s; give "
                          "--first-run SIZE",
                          path, cmdline, dev),
             2;
    *bytes = first_run;
    hr_cli_error("reserve: auto: %s for '%s' on %s: its first run (--first-run); history (%s) "
                 "holds none before",
                 hr_size_text(a, sizeof a, first_run), cmdline, dev, path);
    return 0;
  }
  qsort(peaks, n, sizeof *peaks, u64_cmp);
  uint64_t p95 = peaks[(size_t)ceil(0.95 * (double)n) - 1];
  free(peaks);
  *bytes = (uint64_t)ceil((double)p95 * (1 + margin / 100));
  hr_cli_error("reserve: auto: %s for '%s' on %s: the p95 of the peaks of %zu earlier run%s "
               "(%s) + %g%%, from history %s",
               hr_size_text(a, sizeof a, *bytes), cmdline, dev, n, n == 1 ? "" : "s",
               hr_size_text(b, sizeof b, p95), margin, path);
  return 0;
}

/* Asks the broker for `bytes` on the connection `fd`; returns its answer
 * (malloc'd), or NULL when none came. */
static char *ask(int fd, const reserve_args_t *a, uint64_t bytes) {
  char req[300], device[32];
  if (a->device < 0)
    snprintf(device, sizeof device, "host");
  else
    snprintf(device, sizeof device, "gpu%lld", (long long)a->device);
  snprintf(req, sizeof req,
           "{\"v\":1,\"op\":\"reserve\",\"id\":1,\"bytes\":%llu,\"device\":\"%s\","
           "\"timeout\":%g,\"lease\":%g,\"priority\":%lld}",
           (unsigned long long)bytes, device, a->timeout, a->lease, (long long)a->priority);
  return hr_cli_broker_send(fd, req) == 0 ? hr_cli_broker_read(fd, a->timeout + 10) : NULL;
}

/* Options may follow SIZE; "--" ends them, and CMD keeps its own. */
static int reserve_run(hr_cli_t *cli, const void *args, int argc, char **argv) {
  const reserve_args_t *a = args;
  uint64_t bytes;
  if (argc < 2)
    return hr_cli_error("reserve: no command to run (headroom reserve SIZE -- CMD ARGS...)"), 2;
  if (strcmp(argv[0], "auto") == 0) {
    int rc = learn(cli, a->device, a->margin, a->first_run, argv + 1, &bytes);
    if (rc) return rc;
  } else if (whole_size(argv[0], &bytes) != 0)
    return hr_cli_error("reserve: SIZE %s is not a whole number of bytes (512M, 8G, 4096) nor "
                        "auto",
                        argv[0]),
           2;
  int fd = hr_cli_broker_connect(cli);
  if (fd < 0) return 1;
  char *line = ask(fd, a, bytes);
  cJSON *j = line ? cJSON_Parse(line) : NULL;
  const char *op = cJSON_GetStringValue(cJSON_GetObjectItem(j, "op"));
  int status;
  if (a->json && line) fprintf(stderr, "%s\n", line);
  if (op && strcmp(op, "granted") == 0)
    status =
        run_child(fd, (uint64_t)cJSON_GetNumberValue(cJSON_GetObjectItem(j, "lease")), argv + 1);
  else if (op && strcmp(op, "refused") == 0)
    show_refusal(j), status = EXIT_REFUSED;
  else {
    hr_cli_error("reserve: %s", op && strcmp(op, "error") == 0
                                    ? cJSON_GetStringValue(cJSON_GetObjectItem(j, "error"))
                                    : "no answer from the broker");
    status = 1;
  }
  close(fd);
  cJSON_Delete(j);
  free(line);
  return status;
}

HR_CLI_COMMAND(
    reserve, "reserve memory through the broker while a command runs",
    .operands = "SIZE|auto -- CMD [ARGS...]", .min_operands = 1, .max_operands = -1,
    .missing = "SIZE (or auto) and a command are needed",
    .about = "Reserves SIZE (512M, 8G: whole bytes) through the broker of 'headroom watch' "
             "before CMD runs: the broker grants at once when it is free, or asks idle clients "
             "of no higher priority to release first. CMD runs while the lease is held; the "
             "lease ends when CMD exits, and headroom exits with CMD's status. SIGTERM, SIGINT "
             "and SIGHUP sent to headroom are passed to CMD.\n\n"
             "With auto, the size is learned from history (--db, the watch's): the p95 of the "
             "peaks that earlier runs of the same command line reached (their memory on the "
             "device, as the watch sampled it), plus --margin; the first run takes --first-run. "
             "Where the figure came from is said on stderr.",
    .notes = "Exit status: CMD's (128+N when a signal N ended it), or 75 when refused (the "
             "reason and the holders on stderr), 1 when the broker cannot be reached, 2 on a "
             "usage error or when auto has no history and no --first-run.");
