/* headroom watch: sample on an interval, classify, detect leaks and idle
 * hogs, act by mode, record history and serve /metrics.
 *
 * On a terminal it redraws a live view each interval (in the alternate
 * screen, so Ctrl-C gives the terminal back as it was); otherwise, or with
 * --json, it writes one JSON object per line per event and a sample line
 * per interval. SIGINT and SIGTERM end it cleanly: history is committed,
 * the exporter stopped, hooks killed. */
#include "cli.h"

#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

static void watch_usage(FILE *f) {
  fprintf(f,
          "usage: headroom watch [--interval 1s] [--filter NAMES] [--mode MODE] [--ram-warn 80]\n"
          "                      [--ram-critical 90] [--vram-warn 85] [--vram-critical 95]\n"
          "                      [--leak-window 10m] [--on-warning CMD] [--on-critical CMD]\n"
          "                      [--cooldown 60s] [--listen 127.0.0.1:9835|none] [--db PATH|none]\n"
          "                      [--retain 7d] [--top N] [--json] [--once] [--count N]\n\n"
          "Samples host, cgroup, GPU and process memory every interval. Each GPU, the host\n"
          "and the cgroup is ok, warning or critical against the thresholds (percent), with\n"
          "hysteresis. Leaks (memory rising steadily over the window, by a Mann-Kendall\n"
          "test and a Theil-Sen slope), idle GPU hogs, cgroup OOM kills and exits of\n"
          "watched processes are events.\n\n"
          "  --mode MODE          conservative: report only (default); balanced: also run\n"
          "                       --on-warning/--on-critical with the event as JSON in\n"
          "                       HEADROOM_EVENT; aggressive: also sync and drop the page\n"
          "                       cache at critical host or cgroup use, when root and\n"
          "                       --allow-drop-caches. Each action waits --cooldown.\n"
          "  --action-timeout D   a hook running longer is killed (10s)\n"
          "  --leak-min-rate SIZE growth per minute a leak must exceed (2M)\n"
          "  --leak-min-samples N samples a leak alarm needs (30)\n"
          "  --idle-share P, --idle-util P, --idle-samples N\n"
          "                       idle hog: holds P%% of a GPU whose utilisation stays under\n"
          "                       P%% for N samples (20, 10, 60)\n"
          "  --proc-budget P      share of a core that reading processes may take (1%%):\n"
          "                       with many processes they are read less often than the\n"
          "                       interval, and leaks need as many process reads\n"
          "  --top N              processes shown, recorded and exported besides those\n"
          "                       holding GPU memory: the N largest by resident memory\n"
          "                       after --filter, as in 'headroom status' (10)\n"
          "  --listen ADDR        Prometheus /metrics and /api/snapshot (none: off)\n"
          "  --db PATH            history database ($XDG_STATE_HOME/headroom/history.db;\n"
          "                       none: off)\n"
          "  --budget SPEC        what the broker may hand out: host=16G,gpu0=20G\n"
          "  --json               JSON lines even on a terminal\n"
          "  --once, --count N    stop after 1 or N samples\n\n"
          "Every option also comes from the config file and HEADROOM_<NAME> variables\n"
          "(see 'headroom config'). An outside process cannot free another process's GPU\n"
          "memory or heap: hooks and the Python layer let processes free their own\n"
          "(docs/freeing-memory.md).\n");
}

static volatile sig_atomic_t stop_flag;
static void on_signal(int sig) {
  (void)sig;
  stop_flag = 1;
}

#define N_RECENT 8

typedef struct view_state {
  hr_cli_t *cli;
  hr_watch_t *w;
  bool json;
  char recent[N_RECENT][160];
  size_t n_recent, head;
  char listen[160], db[600];
  double leak_min_rate;
  bool write_failed;
  bool clear; /* redraw in place (not for --once) */
} view_state_t;

static const char *clock_text(char *buf, size_t n, double t) {
  time_t s = (time_t)t;
  struct tm tm;
  localtime_r(&s, &tm);
  strftime(buf, n, "%H:%M:%S", &tm);
  return buf;
}

/* One line for the "last events" list of the live view. */
static void remember(view_state_t *v, const hr_watch_event_t *e) {
  if (e->kind == HR_EVENT_SAMPLE) return;
  hr_event_text(e, v->recent[v->head], sizeof v->recent[0]);
  v->head = (v->head + 1) % N_RECENT;
  if (v->n_recent < N_RECENT) v->n_recent++;
}

static const char *level_paint(const hr_cli_t *cli, char *buf, size_t n, hr_level_t l) {
  return hr_cli_paint(cli, buf, n,
                      l == HR_LEVEL_CRITICAL  ? "red"
                      : l == HR_LEVEL_WARNING ? "yellow"
                                              : "green",
                      hr_level_name(l));
}

static double pct(uint64_t part, uint64_t whole) {
  if (part == HR_UNKNOWN || whole == HR_UNKNOWN || whole == HR_UNLIMITED || whole == 0) return -1;
  return 100.0 * (double)part / (double)whole;
}

static const char *size_or(char *buf, size_t n, uint64_t v) {
  if (v == HR_UNKNOWN) return snprintf(buf, n, "-"), buf;
  if (v == HR_UNLIMITED) return snprintf(buf, n, "unlimited"), buf;
  return hr_size_text(buf, n, v);
}

static const char *trend(const view_state_t *v, char *buf, size_t n, double per_min) {
  char a[32];
  double bar = v->leak_min_rate / 4;
  const char *arrow = per_min > bar    ? "\xe2\x86\x91"
                      : per_min < -bar ? "\xe2\x86\x93"
                                       : "\xe2\x86\x92";
  snprintf(buf, n, "%s %s%s/min", arrow, per_min < 0 ? "-" : "+",
           hr_size_text(a, sizeof a, (uint64_t)fabs(per_min)));
  return buf;
}

static void draw(view_state_t *v) {
  hr_cli_t *cli = v->cli;
  hr_watch_view_t w;
  hr_watch_get_view(v->w, &w);
  const hr_snapshot_t *s = w.snap;
  if (!s) return;
  int rows = 40;
  struct winsize ws;
  if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_row > 0) rows = ws.ws_row;
  char a[32], b[32], c[64], lab[64], t[16];
  if (v->clear) printf("\033[H\033[2J");
  printf("%s  %s  interval %gs  mode %s\n",
         hr_cli_paint(cli, lab, sizeof lab, "bold", "headroom watch"),
         clock_text(t, sizeof t, s->time), hr_options_get_double(cli->opts, HR_OPTION_interval),
         hr_options_get_str(cli->opts, HR_OPTION_mode));
  printf("%s\n", hr_cli_paint(cli, lab, sizeof lab, "dim", v->listen));
  printf("%s\n\n", hr_cli_paint(cli, lab, sizeof lab, "dim", v->db));
  if (s->host_state == HR_PROBE_OK) {
    uint64_t used = s->host.total_bytes - s->host.available_bytes;
    printf("host     %s of %s (%.0f%%)  available %s  %s\n", size_or(a, sizeof a, used),
           size_or(b, sizeof b, s->host.total_bytes), pct(used, s->host.total_bytes),
           size_or(c, sizeof c, s->host.available_bytes),
           level_paint(cli, lab, sizeof lab, w.host));
  }
  if (s->cgroup.state == HR_PROBE_OK) {
    printf("cgroup   %s of %s", size_or(a, sizeof a, s->cgroup.usage_bytes),
           size_or(b, sizeof b, s->cgroup.limit_bytes));
    double p = pct(s->cgroup.usage_bytes, s->cgroup.limit_bytes);
    if (p >= 0) printf(" (%.0f%%)", p);
    printf("  %s  %s\n", s->cgroup.path, level_paint(cli, lab, sizeof lab, w.cgroup));
  } else {
    printf("cgroup   %s\n", hr_cli_paint(cli, lab, sizeof lab, "dim", s->cgroup.message));
  }
  if (s->gpu_state != HR_PROBE_OK || s->n_gpus == 0) {
    printf("gpu      %s\n", hr_cli_paint(cli, lab, sizeof lab, "dim",
                                         s->gpu_state != HR_PROBE_OK ? s->gpu_message : "no GPUs"));
  }
  for (size_t i = 0; i < s->n_gpus; i++) {
    const hr_gpu_t *g = &s->gpus[i];
    printf("gpu %-4u %s  %s of %s (%.0f%%)", g->index, g->name, size_or(a, sizeof a, g->used_bytes),
           size_or(b, sizeof b, g->total_bytes), pct(g->used_bytes, g->total_bytes));
    if (g->util_gpu >= 0) printf("  util %d%%", g->util_gpu);
    printf("  %s\n", level_paint(cli, lab, sizeof lab, w.gpus ? w.gpus[i] : HR_LEVEL_OK));
  }
  char head[160];
  snprintf(head, sizeof head, "%8s %-16s %10s %10s %10s  %-22s", "PID", "NAME", "RSS", "ANON",
           "GPU", "ANON TREND");
  printf("\n%s\n", hr_cli_paint(cli, lab, sizeof lab, "bold", head));
  size_t room = rows > 20 + N_RECENT ? (size_t)rows - 14 - N_RECENT : 6;
  for (size_t i = 0; i < w.n_top && i < room; i++) {
    const hr_proc_t *p = w.top[i].proc;
    char g[32], tr[64], leak[64] = "";
    if (p->gpu_bytes)
      hr_size_text(g, sizeof g, p->gpu_bytes);
    else
      snprintf(g, sizeof g, "-");
    if (w.top[i].leak) hr_cli_paint(cli, leak, sizeof leak, "red", "LEAK?");
    printf("%8d %-16.16s %10s %10s %10s  %-22s %s\n", p->pid, p->name,
           size_or(a, sizeof a, p->rss_bytes), size_or(b, sizeof b, p->rss_anon_bytes), g,
           trend(v, tr, sizeof tr, w.top[i].rss_per_min), leak);
  }
  printf("\n%s\n", hr_cli_paint(cli, lab, sizeof lab, "bold", "last events"));
  if (v->n_recent == 0) printf("%s\n", hr_cli_paint(cli, lab, sizeof lab, "dim", "  none yet"));
  for (size_t k = 0; k < v->n_recent; k++) {
    size_t i = (v->head + N_RECENT - v->n_recent + k) % N_RECENT;
    printf("  %s\n", v->recent[i]);
  }
  if (v->clear) printf("\n%s\n", hr_cli_paint(cli, lab, sizeof lab, "dim", "Ctrl-C to stop"));
  fflush(stdout);
}

static void on_event(const hr_watch_event_t *e, void *arg) {
  view_state_t *v = arg;
  if (v->json) {
    char *line = NULL;
    int rc = hr_event_json(e, &line);
    if (rc) {
      hr_cli_error("watch: %s", hr_strerror(rc));
      stop_flag = 1;
    } else if (puts(line) == EOF || fflush(stdout) == EOF) {
      /* The reader went away (a closed pipe): stop rather than spin. */
      v->write_failed = true;
      stop_flag = 1;
    }
    free(line);
    return;
  }
  if (e->kind == HR_EVENT_SAMPLE)
    draw(v);
  else
    remember(v, e);
}

/* Long options that map one to one onto option-table names. */
static const char *const table_opts[] = {
    "interval",     "filter",        "mode",          "ram-warn",       "ram-critical",
    "vram-warn",    "vram-critical", "leak-window",   "leak-min-rate",  "leak-min-samples",
    "on-warning",   "on-critical",   "cooldown",      "action-timeout", "listen",
    "db",           "retain",        "top",           "idle-share",     "idle-util",
    "idle-samples", "hysteresis",    "history-flush", "proc-budget",    NULL};

static int watch_run(hr_cli_t *cli, int argc, char **argv) {
  enum { OPT_JSON = 1000, OPT_ONCE, OPT_COUNT, OPT_DROP, OPT_HELP, OPT_BUDGET };
  struct option longopts[40];
  size_t n = 0;
  for (; table_opts[n]; n++)
    longopts[n] = (struct option){table_opts[n], required_argument, NULL, (int)n + 1};
  longopts[n++] = (struct option){"json", no_argument, NULL, OPT_JSON};
  longopts[n++] = (struct option){"once", no_argument, NULL, OPT_ONCE};
  longopts[n++] = (struct option){"count", required_argument, NULL, OPT_COUNT};
  longopts[n++] = (struct option){"allow-drop-caches", no_argument, NULL, OPT_DROP};
  longopts[n++] = (struct option){"help", no_argument, NULL, OPT_HELP};
  longopts[n++] = (struct option){"budget", required_argument, NULL, OPT_BUDGET};
  longopts[n] = (struct option){NULL, 0, NULL, 0};
  bool json = !cli->tty;
  uint64_t count = 0;
  int c, status = 0;
  while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
    if (c >= 1 && c <= (int)(sizeof table_opts / sizeof table_opts[0])) {
      if ((status = hr_cli_set(cli, table_opts[c - 1], optarg)) != 0) return status;
    } else if (c == OPT_JSON)
      json = true;
    else if (c == OPT_ONCE)
      count = 1;
    else if (c == OPT_COUNT) {
      /* Digits only: strtoull would take "-1" as 2^64-1, a watch for ever. */
      size_t nd = strspn(optarg, "0123456789");
      unsigned long long v = nd && nd <= 15 && !optarg[nd] ? strtoull(optarg, NULL, 10) : 0;
      if (v == 0) {
        hr_cli_error("watch: --count: '%s' is not a whole number from 1 to 10^15-1", optarg);
        return 2;
      }
      count = v;
    } else if (c == OPT_DROP) {
      if ((status = hr_cli_set(cli, "allow_drop_caches", "true")) != 0) return status;
    } else if (c == OPT_BUDGET) {
      if ((status = hr_cli_set(cli, "budget", optarg)) != 0) return status;
    } else if (c == OPT_HELP || c == 'h')
      return watch_usage(stdout), 0;
    else
      return watch_usage(stderr), 2;
  }
  if (optind < argc) {
    hr_cli_error("watch: unexpected argument '%s'", argv[optind]);
    return 2;
  }

  char err[600];
  hr_watch_t *w = NULL;
  hr_history_t *h = NULL;
  hr_exporter_t *e = NULL;
  hr_broker_t *bk = NULL;
  view_state_t v = {.cli = cli,
                    .json = json,
                    .leak_min_rate =
                        (double)hr_options_get_size(cli->opts, HR_OPTION_leak_min_rate)};
  if (hr_watch_create(cli->opts, &w, err, sizeof err) != 0) {
    hr_cli_error("watch: %s", err);
    return 2;
  }
  v.w = w;

  /* History: a database that cannot be opened is reported, and watch goes
   * on without it. */
  const char *db = hr_options_get_str(cli->opts, HR_OPTION_db);
  char path[512] = "";
  if (strcmp(db, "none") != 0) {
    if (*db)
      snprintf(path, sizeof path, "%s", db);
    else if (hr_history_default_path(path, sizeof path) != 0)
      path[0] = '\0';
    if (!*path)
      hr_cli_error("watch: no history: neither XDG_STATE_HOME nor HOME is set");
    else if (hr_history_open(path, &h, err, sizeof err) != 0) {
      hr_cli_error("%s; watching without history", err);
      h = NULL;
    }
  }
  snprintf(v.db, sizeof v.db, "history: %s", h ? path : "off");

  /* The exporter: an address asked for explicitly that cannot be served is
   * an error; the default one is only a warning, so a second watch still
   * runs. */
  const char *listen = hr_options_get_str(cli->opts, HR_OPTION_listen);
  if (strcmp(listen, "none") != 0) {
    if (hr_exporter_start(listen, &e, err, sizeof err) != 0) {
      if (hr_options_source(cli->opts, HR_OPTION_listen) != HR_SRC_DEFAULT) {
        hr_cli_error("%s", err);
        status = 1;
        goto out;
      }
      hr_cli_error("%s; watching without the exporter", err);
      e = NULL;
    }
  }
  if (e)
    snprintf(v.listen, sizeof v.listen, "metrics: http://%s/metrics", listen);
  else
    snprintf(v.listen, sizeof v.listen, "metrics: off");

  if ((status = hr_cli_broker_start(cli, w, &bk)) != 0) goto out;
  hr_watch_attach_history(w, h);
  hr_watch_attach_exporter(w, e);
  hr_watch_on_event(w, on_event, &v);

  struct sigaction sa = {.sa_handler = on_signal};
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGHUP, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);
  bool screen = !json && count != 1;
  v.clear = screen;
  if (screen) printf("\033[?1049h\033[?25l"); /* alternate screen, hide the cursor */
  int rc = hr_watch_run(w, &stop_flag, count);
  if (screen) printf("\033[?25h\033[?1049l"), fflush(stdout);
  if (rc) {
    hr_cli_error("watch: the first sample failed: %s", hr_strerror(rc));
    status = 1;
  } else if (!json && count != 1) {
    hr_watch_view_t vw;
    hr_watch_get_view(w, &vw);
    printf("headroom watch: stopped; %" PRIu64 " samples, %" PRIu64 " level changes, %" PRIu64
           " leaks suspected\n",
           vw.events_total[HR_EVENT_SAMPLE], vw.events_total[HR_EVENT_LEVEL],
           vw.events_total[HR_EVENT_LEAK]);
  }
out:
  hr_broker_stop(bk);
  hr_watch_destroy(w);
  hr_exporter_stop(e);
  hr_history_close(h);
  return status;
}

const hr_cli_command_t hr_cmd_watch = {
    "watch", "sample memory, detect leaks and idle hogs, act, record, serve /metrics", watch_run,
    watch_usage};
