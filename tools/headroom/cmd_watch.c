/* headroom watch: sample on an interval, classify, detect leaks and idle
 * hogs, act by mode, record history and serve /metrics.
 *
 * On a terminal it redraws a live view each interval, as htop and nvitop
 * do: in the alternate screen, every line cut to the terminal's width and
 * the process rows cut to its height, with keys read in raw mode by a
 * thread of their own (q quits; m, g and p sort by memory, GPU memory and
 * pid, redrawn at once from a copy of the last sample). The terminal's mode
 * is restored however watch ends: q, SIGINT, SIGTERM and SIGHUP all end the
 * loop, and the restore runs after it and at exit. Otherwise, or with
 * --json, it writes one JSON object per line per event and a sample line
 * per interval, and SIGHUP makes it load NVML again where loading failed
 * (otherwise tried at most once a minute). Every end is clean: history is
 * committed, the exporter stopped, hooks killed. */
#include "cli.h"

#include <inttypes.h>
#include <math.h>
#include <poll.h>
#include <stdarg.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

typedef struct watch_args {
  bool json, once;
  int64_t count;
} watch_args_t;

static const hr_cli_opt_t watch_opts[] = {
    HR_CLI_OPTION(interval, NULL),
    HR_CLI_OPTION(filter, "NAMES"),
    HR_CLI_OPTION(top, "N"),
    HR_CLI_OPTION(mode, "MODE"),
    HR_CLI_OPTION(ram_warn, NULL),
    HR_CLI_OPTION(ram_critical, NULL),
    HR_CLI_OPTION(vram_warn, NULL),
    HR_CLI_OPTION(vram_critical, NULL),
    HR_CLI_OPTION(hysteresis, NULL),
    HR_CLI_OPTION(leak_window, NULL),
    HR_CLI_OPTION(leak_min_rate, NULL),
    HR_CLI_OPTION(leak_min_samples, NULL),
    HR_CLI_OPTION(idle_share, NULL),
    HR_CLI_OPTION(idle_util, NULL),
    HR_CLI_OPTION(idle_samples, NULL),
    HR_CLI_OPTION(on_warning, "CMD"),
    HR_CLI_OPTION(on_critical, "CMD"),
    HR_CLI_OPTION(cooldown, NULL),
    HR_CLI_OPTION(action_timeout, NULL),
    HR_CLI_OPTION(allow_drop_caches, NULL),
    HR_CLI_OPTION(proc_budget, NULL),
    HR_CLI_OPTION(listen, "ADDR"),
    HR_CLI_OPTION(metrics_top, "N"),
    HR_CLI_OPTION_AS(NULL, db, "PATH", HR_CLI_COMPLETE_FILE),
    HR_CLI_OPTION(retain, NULL),
    HR_CLI_OPTION(history_flush, NULL),
    HR_CLI_OPTION(budget, "SPEC"),
    {"json", HR_CLI_FLAG, HR_CLI_AT(watch_args_t, json), .help = "JSON lines even on a terminal"},
    {"once", HR_CLI_FLAG, HR_CLI_AT(watch_args_t, once), .help = "stop after one sample"},
    {"count", HR_CLI_INT, HR_CLI_AT(watch_args_t, count), .meta = "N", .min = 1,
     .max = 999999999999999.0, .help = "stop after N samples"},
};

static volatile sig_atomic_t stop_flag;
static void on_signal(int sig) {
  (void)sig;
  stop_flag = 1;
}

/* SIGHUP without a live view (a service, a pipe): load NVML again at the
 * next sample where it failed (a driver installed or loaded since). */
static void on_hup(int sig) {
  (void)sig;
  hr_probe_retry_gpus();
}

#define N_RECENT 8
#define N_HEAD   16 /* lines above the process table, at most */

/* A process row as the last sample showed it, copied so that a key press
 * can redraw in another order without touching the watch's state. */
typedef struct view_row {
  int pid;
  char name[64];
  uint64_t rss, anon, gpu;
  double per_min;
  bool leak;
} view_row_t;

typedef enum { SORT_GPU, SORT_MEM, SORT_PID } sort_t;

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
  /* The last sample, as drawn; guarded by lock (the key thread redraws). */
  pthread_mutex_t lock;
  char head_lines[N_HEAD][320];
  size_t n_head;
  view_row_t *rows;
  size_t n_rows, cap_rows;
  sort_t sort;
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

/* Appends one line to the header block. */
static void head_line(view_state_t *v, const char *fmt, ...) HR_PRINTF(2, 3);
static void head_line(view_state_t *v, const char *fmt, ...) {
  if (v->n_head == N_HEAD) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(v->head_lines[v->n_head++], sizeof v->head_lines[0], fmt, ap);
  va_end(ap);
}

/* Copies what the view shows of the last sample. Needs v->lock. */
static void collect_locked(view_state_t *v) {
  hr_cli_t *cli = v->cli;
  hr_watch_view_t w;
  hr_watch_get_view(v->w, &w);
  const hr_snapshot_t *s = w.snap;
  v->n_head = 0;
  if (!s) return;
  char a[32], b[32], c[64], lab[64], t[16];
  head_line(v, "%s  %s  interval %gs  mode %s",
            hr_cli_paint(cli, lab, sizeof lab, "bold", "headroom watch"),
            clock_text(t, sizeof t, s->time), hr_options_get_double(cli->opts, HR_OPTION_interval),
            hr_options_get_str(cli->opts, HR_OPTION_mode));
  head_line(v, "%s", v->listen);
  head_line(v, "%s", v->db);
  if (s->host_state == HR_PROBE_OK) {
    uint64_t used = s->host.total_bytes - s->host.available_bytes;
    head_line(v, "host     %s of %s (%.0f%%)  available %s  %s", hr_cli_size(a, sizeof a, used),
              hr_cli_size(b, sizeof b, s->host.total_bytes), hr_cli_pct(used, s->host.total_bytes),
              hr_cli_size(c, sizeof c, s->host.available_bytes),
              level_paint(cli, lab, sizeof lab, w.host));
  }
  if (s->cgroup.state == HR_PROBE_OK) {
    double p = hr_cli_pct(s->cgroup.usage_bytes, s->cgroup.limit_bytes);
    char pc[16] = "";
    if (p >= 0) snprintf(pc, sizeof pc, " (%.0f%%)", p);
    head_line(v, "cgroup   %s of %s%s  %s  %s", hr_cli_size(a, sizeof a, s->cgroup.usage_bytes),
              hr_cli_size(b, sizeof b, s->cgroup.limit_bytes), pc,
              level_paint(cli, lab, sizeof lab, w.cgroup), s->cgroup.path);
  } else {
    head_line(v, "cgroup   %s", s->cgroup.message);
  }
  if (s->gpu_state != HR_PROBE_OK || s->n_gpus == 0)
    head_line(v, "gpu      %s", s->gpu_state != HR_PROBE_OK ? s->gpu_message : "no GPUs");
  for (size_t i = 0; i < s->n_gpus; i++) {
    const hr_gpu_t *g = &s->gpus[i];
    char util[24] = "";
    if (g->util_gpu >= 0) snprintf(util, sizeof util, "  util %d%%", g->util_gpu);
    head_line(v, "gpu %-4u %s of %s (%.0f%%)%s  %s  %s", g->index,
              hr_cli_size(a, sizeof a, g->used_bytes), hr_cli_size(b, sizeof b, g->total_bytes),
              hr_cli_pct(g->used_bytes, g->total_bytes), util,
              level_paint(cli, lab, sizeof lab, w.gpus ? w.gpus[i] : HR_LEVEL_OK), g->name);
  }
  if (w.n_top > v->cap_rows) {
    view_row_t *r = realloc(v->rows, w.n_top * sizeof *r);
    if (!r)
      w.n_top = v->cap_rows;
    else
      v->rows = r, v->cap_rows = w.n_top;
  }
  v->n_rows = w.n_top;
  for (size_t i = 0; i < w.n_top; i++) {
    const hr_proc_t *p = w.top[i].proc;
    view_row_t *r = &v->rows[i];
    r->pid = p->pid;
    snprintf(r->name, sizeof r->name, "%s", p->name);
    r->rss = p->rss_bytes, r->anon = p->rss_anon_bytes, r->gpu = p->gpu_bytes;
    r->per_min = w.top[i].rss_per_min;
    r->leak = w.top[i].leak;
  }
}

static uint64_t known(uint64_t v) {
  return v == HR_UNKNOWN ? 0 : v;
}

static int cmp_rows(const void *a, const void *b, void *arg) {
  const view_row_t *x = a, *y = b;
  sort_t by = *(const sort_t *)arg;
  if (by == SORT_GPU && x->gpu != y->gpu) return x->gpu < y->gpu ? 1 : -1;
  if (by != SORT_PID && known(x->rss) != known(y->rss))
    return known(x->rss) < known(y->rss) ? 1 : -1;
  return (x->pid > y->pid) - (x->pid < y->pid);
}

/* Writes s cut to `cols` columns: escape sequences take none, a UTF-8
 * sequence one. Ends with a colour reset when s held colour. */
static void put_cut(const char *s, int cols) {
  int used = 0;
  bool esc = false;
  const char *p = s;
  while (*p) {
    if (*p == '\033') {
      const char *e = p + 1;
      if (*e == '[') {
        e++;
        while (*e && !(*e >= '@' && *e <= '~')) e++;
        if (*e) e++;
      }
      fwrite(p, 1, (size_t)(e - p), stdout);
      p = e;
      esc = true;
      continue;
    }
    size_t n = 1;
    if ((unsigned char)*p >= 0x80)
      while ((p[n] & 0xc0) == 0x80) n++;
    if (used == cols) break;
    fwrite(p, 1, n, stdout);
    used++;
    p += n;
  }
  if (esc) fputs("\033[0m", stdout);
}

/* The size of the terminal; rows 0 when there is none (then nothing is cut
 * by height). */
static void term_size(int *rows, int *cols) {
  struct winsize ws;
  *rows = 0, *cols = 100000;
  if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_row > 0 && ws.ws_col > 0)
    *rows = ws.ws_row, *cols = ws.ws_col;
}

/* Draws the copy: the header, as many process rows as fit, the last events
 * when room is left, and the keys. Needs v->lock. */
static void render_locked(view_state_t *v) {
  hr_cli_t *cli = v->cli;
  if (v->n_head == 0) return;
  int rows, cols;
  term_size(&rows, &cols);
  if (!v->clear) rows = 0;
  qsort_r(v->rows, v->n_rows, sizeof *v->rows, cmp_rows, &v->sort);
  char line[512], lab[160], a[32], b[32], g[32], tr[64], leak[64];
  static const char *const by[] = {"GPU memory", "memory", "pid"};
  /* Header, table head and footer are kept; then the rows; then events. */
  size_t head = v->n_head + 2, foot = v->clear ? 2 : 0;
  size_t room = rows ? (size_t)rows > head + foot ? (size_t)rows - head - foot : 0 : v->n_rows;
  size_t n_rows = v->n_rows < room ? v->n_rows : room;
  size_t left = room - n_rows, n_ev = v->n_recent ? v->n_recent : 1;
  bool events = !rows || left >= 3;
  if (rows && events && n_ev > left - 2) n_ev = left - 2;
  size_t emitted = 0;
#define EMIT(text)                                                                                 \
  do {                                                                                             \
    if (emitted) fputs("\r\n", stdout);                                                            \
    put_cut(text, cols);                                                                           \
    emitted++;                                                                                     \
  } while (0)
  if (v->clear) fputs("\033[H\033[2J", stdout);
  for (size_t i = 0; i < v->n_head; i++) EMIT(v->head_lines[i]);
  EMIT("");
  snprintf(line, sizeof line, "%8s %-16s %9s %9s %9s  %-20s", "PID", "NAME", "RSS", "ANON", "GPU",
           "ANON TREND");
  EMIT(hr_cli_paint(cli, lab, sizeof lab, "bold", line));
  for (size_t i = 0; i < n_rows; i++) {
    const view_row_t *r = &v->rows[i];
    if (r->gpu)
      hr_size_text(g, sizeof g, r->gpu);
    else
      snprintf(g, sizeof g, "-");
    leak[0] = '\0';
    if (r->leak) hr_cli_paint(cli, leak, sizeof leak, "red", "LEAK?");
    snprintf(line, sizeof line, "%8d %-16.16s %9s %9s %9s  %-20s %s", r->pid, r->name,
             hr_cli_size(a, sizeof a, r->rss), hr_cli_size(b, sizeof b, r->anon), g,
             trend(v, tr, sizeof tr, r->per_min), leak);
    EMIT(line);
  }
  if (events) {
    EMIT("");
    EMIT(hr_cli_paint(cli, lab, sizeof lab, "bold", "last events"));
    if (v->n_recent == 0) EMIT(hr_cli_paint(cli, lab, sizeof lab, "dim", "  none yet"));
    for (size_t k = v->n_recent - (v->n_recent ? n_ev : 0); k < v->n_recent; k++) {
      size_t i = (v->head + N_RECENT - v->n_recent + k) % N_RECENT;
      snprintf(line, sizeof line, "  %s", v->recent[i]);
      EMIT(line);
    }
  }
  if (v->clear) {
    EMIT("");
    snprintf(line, sizeof line, "q quit  m memory  g GPU  p pid  (sorted by %s)", by[v->sort]);
    EMIT(hr_cli_paint(cli, lab, sizeof lab, "dim", line));
  } else {
    fputs("\n", stdout);
  }
#undef EMIT
  fflush(stdout);
}

static void draw(view_state_t *v) {
  pthread_mutex_lock(&v->lock);
  collect_locked(v);
  render_locked(v);
  pthread_mutex_unlock(&v->lock);
}

/* ---- the terminal ------------------------------------------------------- */

static struct termios saved_tty;
static bool tty_saved, screen_on;

/* Gives the terminal back: its saved mode, the cursor, the main screen.
 * Safe to call twice (atexit and the normal end). */
static void tty_restore(void) {
  if (tty_saved) tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved_tty);
  if (screen_on) fputs("\033[?25h\033[?1049l", stdout), fflush(stdout);
  tty_saved = screen_on = false;
}

/* Non-canonical, no echo: keys arrive one by one and are not shown. Ctrl-C
 * still signals (ISIG stays on), so the normal stop path restores. */
static bool tty_raw_on(void) {
  if (!isatty(STDIN_FILENO) || tcgetattr(STDIN_FILENO, &saved_tty) != 0) return false;
  struct termios t = saved_tty;
  t.c_lflag &= ~(tcflag_t)(ICANON | ECHO);
  t.c_cc[VMIN] = 0, t.c_cc[VTIME] = 0;
  if (tcsetattr(STDIN_FILENO, TCSAFLUSH, &t) != 0) return false;
  tty_saved = true;
  return true;
}

/* The key thread: q quits, m/g/p sort and redraw at once. Ends when the
 * loop stops (it polls every 100 ms). */
static void *keys_main(void *arg) {
  view_state_t *v = arg;
  while (!stop_flag) {
    struct pollfd pfd = {.fd = STDIN_FILENO, .events = POLLIN};
    if (poll(&pfd, 1, 100) <= 0) continue;
    char c;
    ssize_t n = read(STDIN_FILENO, &c, 1);
    if (n == 0) break; /* end of input: no more keys */
    if (n < 0) continue;
    if (c == 'q' || c == 'Q') {
      stop_flag = 1;
      break;
    }
    sort_t by = c == 'm' ? SORT_MEM : c == 'g' ? SORT_GPU : c == 'p' ? SORT_PID : (sort_t)-1;
    if ((int)by < 0) continue;
    pthread_mutex_lock(&v->lock);
    v->sort = by;
    render_locked(v);
    pthread_mutex_unlock(&v->lock);
  }
  return NULL;
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
  if (e->kind == HR_EVENT_SAMPLE) {
    draw(v);
  } else {
    pthread_mutex_lock(&v->lock);
    remember(v, e);
    pthread_mutex_unlock(&v->lock);
  }
}

/* History: a database that cannot be opened is reported, and watch goes on
 * without it. */
static hr_history_t *open_history(const hr_cli_t *cli, view_state_t *v) {
  char err[600], path[512] = "";
  hr_history_t *h = NULL;
  const char *db = hr_options_get_str(cli->opts, HR_OPTION_db);
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
  snprintf(v->db, sizeof v->db, "history: %s", h ? path : "off");
  return h;
}

/* The exporter: an address asked for explicitly that cannot be served is an
 * error (returns 1); the default one is only a warning, so a second watch
 * still runs. */
static int open_exporter(const hr_cli_t *cli, view_state_t *v, hr_exporter_t **e) {
  char err[600];
  const char *listen = hr_options_get_str(cli->opts, HR_OPTION_listen);
  *e = NULL;
  if (strcmp(listen, "none") != 0 && hr_exporter_start(listen, e, err, sizeof err) != 0) {
    *e = NULL;
    if (hr_options_source(cli->opts, HR_OPTION_listen) != HR_SRC_DEFAULT) {
      hr_cli_error("%s", err);
      return 1;
    }
    hr_cli_error("%s; watching without the exporter", err);
  }
  if (*e)
    snprintf(v->listen, sizeof v->listen, "metrics: http://%s/metrics", listen);
  else
    snprintf(v->listen, sizeof v->listen, "metrics: off");
  return 0;
}

/* Runs the loop until a signal, q or `count` samples: on the alternate
 * screen with the key thread unless the output is JSON or one sample.
 * Returns hr_watch_run's result. */
static int run_loop(hr_watch_t *w, view_state_t *v, uint64_t count) {
  struct sigaction sa = {.sa_handler = on_signal}, hup = {.sa_handler = on_hup};
  v->clear = !v->json && count != 1;
  sigemptyset(&sa.sa_mask);
  sigemptyset(&hup.sa_mask);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGHUP, v->clear ? &sa : &hup, NULL); /* a terminal hanging up ends the view */
  signal(SIGPIPE, SIG_IGN);
  pthread_t keys;
  bool have_keys = false;
  if (v->clear) {
    printf("\033[?1049h\033[?25l"); /* alternate screen, hide the cursor */
    screen_on = true;
    atexit(tty_restore);
    if (tty_raw_on()) have_keys = pthread_create(&keys, NULL, keys_main, v) == 0;
  }
  int rc = hr_watch_run(w, &stop_flag, count);
  if (have_keys) {
    stop_flag = 1;
    pthread_join(keys, NULL);
  }
  tty_restore();
  return rc;
}

/* The last line of a watch on the screen. */
static void print_summary(hr_watch_t *w) {
  hr_watch_view_t vw;
  hr_watch_get_view(w, &vw);
  printf("headroom watch: stopped; %" PRIu64 " samples, %" PRIu64 " level changes, %" PRIu64
         " leaks suspected\n",
         vw.events_total[HR_EVENT_SAMPLE], vw.events_total[HR_EVENT_LEVEL],
         vw.events_total[HR_EVENT_LEAK]);
}

/* Raises the soft limit on open files to the hard one (at most 131072):
 * watch keeps a statm file open per process (half the limit), and it waits
 * with poll and epoll, never select, so descriptors past 1024 are safe. */
static void raise_nofile(void) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return;
  rlim_t want = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > 131072 ? 131072 : rl.rlim_max;
  if (rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur >= want) return;
  rl.rlim_cur = want;
  setrlimit(RLIMIT_NOFILE, &rl);
}

static int watch_run(hr_cli_t *cli, const void *args, int argc, char **argv) {
  const watch_args_t *a = args;
  uint64_t count = a->once ? 1 : (uint64_t)a->count;
  char err[600];
  hr_history_t *h = NULL;
  hr_exporter_t *e = NULL;
  hr_broker_t *bk = NULL;
  int status = 0;
  (void)argc, (void)argv;
  view_state_t v = {.cli = cli,
                    .json = a->json || !cli->tty,
                    .lock = PTHREAD_MUTEX_INITIALIZER,
                    .sort = SORT_GPU,
                    .leak_min_rate =
                        (double)hr_options_get_size(cli->opts, HR_OPTION_leak_min_rate)};
  raise_nofile();
  if (hr_watch_create(cli->opts, &v.w, err, sizeof err) != 0) {
    hr_cli_error("watch: %s", err);
    return 2;
  }
  h = open_history(cli, &v);
  if ((status = open_exporter(cli, &v, &e)) != 0) goto out;
  if ((status = hr_cli_broker_start(cli, v.w, &bk)) != 0) goto out;
  hr_watch_attach_history(v.w, h);
  hr_watch_attach_exporter(v.w, e);
  hr_watch_on_event(v.w, on_event, &v);
  int rc = run_loop(v.w, &v, count);
  if (rc) {
    hr_cli_error("watch: the first sample failed: %s", hr_strerror(rc));
    status = 1;
  } else if (!v.json && count != 1) {
    print_summary(v.w);
  }
out:
  hr_broker_stop(bk);
  hr_watch_destroy(v.w);
  hr_exporter_stop(e);
  hr_history_close(h);
  free(v.rows);
  return status;
}

/* The cleanup modes of --mode, a paragraph each, from the library's table
 * (the one free_memory and the ComfyUI nodes read too). */
static void cleanup_modes_text(char *buf, size_t len) {
  size_t n = 0, at = 0;
  const hr_cleanup_mode_t *modes = hr_cleanup_modes(&n);
  buf[0] = '\0';
  for (size_t i = 0; i < n && at < len; i++) {
    int w = snprintf(buf + at, len - at, "%s--mode %s: %s", i ? "\n\n" : "", modes[i].name,
                     modes[i].summary);
    at = w < 0 ? len : at + (size_t)w;
  }
}

HR_CLI_COMMAND(
    watch, "sample memory, detect leaks and idle hogs, act, record, serve /metrics",
    .about =
        "Samples host, cgroup, GPU and process memory every interval. Each GPU, the host and "
        "the cgroup is ok, warning or critical against the thresholds (percent), with "
        "hysteresis. Leaks (memory rising steadily over the window, by a Mann-Kendall test and a "
        "Theil-Sen slope), idle GPU hogs (a process holding --idle-share of a GPU whose "
        "utilisation stays under --idle-util for --idle-samples samples), cgroup OOM kills and "
        "exits of watched processes are events.\n\n"
        "--mode picks a cleanup mode from the table below (docs/freeing-memory.md); each does "
        "what the one before it does, and more. A hook gets the event as JSON in "
        "HEADROOM_EVENT. Each action waits --cooldown.\n\n"
        "On a terminal the view is redrawn each interval (q quits; m, g and p sort by memory, "
        "GPU memory and pid); otherwise, or with --json, each event is one JSON object per "
        "line. --listen serves Prometheus /metrics and /api/snapshot (docs/metrics.md); --db "
        "records history ($XDG_STATE_HOME/headroom/history.db by default); --budget starts the "
        "broker with what it may hand out (docs/broker.md).",
    .tables = cleanup_modes_text,
    .notes = "Every option also comes from the config file and HEADROOM_<NAME> variables (see "
             "'headroom config'); none turns --listen or --db off. An outside process cannot "
             "free another process's GPU memory or heap: hooks and the Python layer let "
             "processes free their own (docs/freeing-memory.md). Without a live view (--json, "
             "a pipe, a service), SIGHUP loads NVML again where loading failed, which is "
             "otherwise tried at most once a minute.");
