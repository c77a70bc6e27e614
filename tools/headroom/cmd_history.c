/* headroom history: what watch recorded, as a summary table, JSON, or an
 * SVG picture of memory over time (per GPU, host and cgroup, and the top
 * processes) with the events marked as vertical lines.
 *
 * The database is only read: a missing one is an error that says to run
 * watch first, never a new empty file. */
#include "cli.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef struct history_args {
  double since;
  int64_t pid;
  bool json;
  const char *svg;
} history_args_t;

static const hr_cli_opt_t history_opts[] = {
    {"since", HR_CLI_DURATION, HR_CLI_AT(history_args_t, since), .meta = "D", .deflt = "1h",
     .max = 3650 * 86400.0, .help = "how far back (durations: 30s, 10m, 1h, 2d)"},
    {"pid", HR_CLI_INT, HR_CLI_AT(history_args_t, pid), .meta = "N", .min = 1, .max = 2147483647,
     .complete = HR_CLI_COMPLETE_PID, .help = "only that process's samples and events"},
    {"json", HR_CLI_FLAG, HR_CLI_AT(history_args_t, json),
     .help = "{\"samples\": [...], \"events\": [...]} with sizes in bytes"},
    {"svg", HR_CLI_STRING, HR_CLI_AT(history_args_t, svg), .meta = "FILE",
     .complete = HR_CLI_COMPLETE_FILE,
     .help = "draw memory over time per GPU, host and cgroup, and for the top processes, with "
             "events marked, into FILE"},
    HR_CLI_OPTION_AS(NULL, db, "PATH", HR_CLI_COMPLETE_FILE),
};

typedef struct series {
  char key[80]; /* scope, or "pid name" */
  int pid;
  char name[64];
  size_t n, cap;
  double *t;
  double *v, *v2; /* used and total (scopes); rss and gpu (processes) */
  double max;
} series_t;

typedef struct set {
  series_t *s;
  size_t n, cap;
} set_t;

static series_t *find_series(set_t *set, const char *key, int pid, const char *name) {
  for (size_t i = 0; i < set->n; i++)
    if (strcmp(set->s[i].key, key) == 0) return &set->s[i];
  if (set->n == set->cap) {
    size_t nc = set->cap ? set->cap * 2 : 16;
    series_t *p = realloc(set->s, nc * sizeof *p);
    if (!p) return NULL;
    set->s = p, set->cap = nc;
  }
  series_t *s = &set->s[set->n++];
  memset(s, 0, sizeof *s);
  snprintf(s->key, sizeof s->key, "%s", key);
  snprintf(s->name, sizeof s->name, "%s", name);
  s->pid = pid;
  return s;
}

static int series_push(series_t *s, double t, uint64_t a, uint64_t b) {
  if (s->n == s->cap) {
    size_t nc = s->cap ? s->cap * 2 : 64;
    double *t2 = realloc(s->t, nc * sizeof *t2);
    if (t2) s->t = t2;
    double *a2 = t2 ? realloc(s->v, nc * sizeof *a2) : NULL;
    if (a2) s->v = a2;
    double *b2 = a2 ? realloc(s->v2, nc * sizeof *b2) : NULL;
    if (!b2) return -1;
    s->v2 = b2, s->cap = nc;
  }
  s->t[s->n] = t;
  s->v[s->n] = a == HR_UNKNOWN ? NAN : (double)a;
  s->v2[s->n] = b == HR_UNKNOWN ? NAN : (double)b;
  double w =
      (isnan(s->v[s->n]) ? 0 : s->v[s->n]) + (s->pid && !isnan(s->v2[s->n]) ? s->v2[s->n] : 0);
  if (w > s->max) s->max = w;
  s->n++;
  return 0;
}

static void set_free(set_t *set) {
  for (size_t i = 0; i < set->n; i++) free(set->s[i].t), free(set->s[i].v), free(set->s[i].v2);
  free(set->s);
}

static int cmp_weight(const void *a, const void *b) {
  const series_t *x = a, *y = b;
  return (x->max < y->max) - (x->max > y->max);
}

static const char *clock_text(char *buf, size_t n, double t, bool date) {
  time_t s = (time_t)t;
  struct tm tm;
  localtime_r(&s, &tm);
  strftime(buf, n, date ? "%Y-%m-%d %H:%M:%S" : "%H:%M:%S", &tm);
  return buf;
}

/* ---- text and JSON ------------------------------------------------------ */

/* A table's heading in bold. */
static void heading(const hr_cli_t *cli, const char *text) {
  char lab[200];
  printf("%s\n", hr_cli_paint(cli, lab, sizeof lab, "bold", text));
}

/* Each scope: its samples, their time and range. */
static void print_scopes(const hr_cli_t *cli, const set_t *scopes) {
  char a[32], b[32], c[32], d[32], t1[32], t2[32], head[160];
  snprintf(head, sizeof head, "%-8s %8s  %-8s  %-8s  %10s %10s %10s %10s", "SCOPE", "SAMPLES",
           "FIRST", "LAST", "MIN", "MEAN", "MAX", "OF");
  if (scopes->n) heading(cli, head);
  for (size_t i = 0; i < scopes->n; i++) {
    const series_t *s = &scopes->s[i];
    double mn = INFINITY, mx = 0, sum = 0, total = NAN;
    size_t k = 0;
    for (size_t j = 0; j < s->n; j++) {
      if (isnan(s->v[j])) continue;
      mn = fmin(mn, s->v[j]), mx = fmax(mx, s->v[j]), sum += s->v[j], k++;
      if (!isnan(s->v2[j])) total = s->v2[j];
    }
    printf("%-8s %8zu  %-8s  %-8s  %10s %10s %10s %10s\n", s->key, s->n,
           clock_text(t1, sizeof t1, s->t[0], false),
           clock_text(t2, sizeof t2, s->t[s->n - 1], false),
           k ? hr_size_text(a, sizeof a, (uint64_t)mn) : "-",
           k ? hr_size_text(b, sizeof b, (uint64_t)(sum / (double)k)) : "-",
           k ? hr_size_text(c, sizeof c, (uint64_t)mx) : "-",
           isnan(total) ? "-" : hr_size_text(d, sizeof d, (uint64_t)total));
  }
}

/* The heaviest processes (at most 15): resident memory first and last, its
 * growth per minute, the most GPU memory held. */
static void print_procs(const hr_cli_t *cli, set_t *procs) {
  char a[32], b[32], c[32], d[32], pm[40], head[160];
  if (procs->n > 1) qsort(procs->s, procs->n, sizeof *procs->s, cmp_weight);
  snprintf(head, sizeof head, "%8s %-16s %8s %10s %10s %12s %10s", "PID", "NAME", "SAMPLES",
           "RSS FIRST", "RSS LAST", "PER MIN", "GPU MAX");
  if (procs->n) printf("\n"), heading(cli, head);
  for (size_t i = 0; i < procs->n && i < 15; i++) {
    const series_t *s = &procs->s[i];
    double span = s->t[s->n - 1] - s->t[0], gmax = 0;
    for (size_t j = 0; j < s->n; j++)
      if (!isnan(s->v2[j])) gmax = fmax(gmax, s->v2[j]);
    double per_min = span > 0 ? (s->v[s->n - 1] - s->v[0]) / span * 60 : 0;
    snprintf(pm, sizeof pm, "%s%s", per_min < 0 ? "-" : "+",
             hr_size_text(c, sizeof c, (uint64_t)fabs(isnan(per_min) ? 0 : per_min)));
    printf("%8d %-16.16s %8zu %10s %10s %12s %10s\n", s->pid, s->name, s->n,
           isnan(s->v[0]) ? "-" : hr_size_text(a, sizeof a, (uint64_t)s->v[0]),
           isnan(s->v[s->n - 1]) ? "-" : hr_size_text(b, sizeof b, (uint64_t)s->v[s->n - 1]), pm,
           gmax > 0 ? hr_size_text(d, sizeof d, (uint64_t)gmax) : "-");
  }
}

static void print_text(const hr_cli_t *cli, const char *path, double since, set_t *scopes,
                       set_t *procs, const hr_history_event_t *ev, size_t ne) {
  char t1[32], lab[200];
  printf("%s %s since %s\n\n", hr_cli_paint(cli, lab, sizeof lab, "bold", "history"), path,
         clock_text(t1, sizeof t1, since, true));
  print_scopes(cli, scopes);
  print_procs(cli, procs);
  printf("\n%s (%zu)\n", hr_cli_paint(cli, lab, sizeof lab, "bold", "events"), ne);
  for (size_t i = 0; i < ne; i++) printf("  %s\n", hr_event_text(&ev[i].event, lab, sizeof lab));
  if (!scopes->n && !procs->n && !ne) printf("nothing recorded in that time\n");
}

static int print_json(const hr_history_row_t *rows, size_t nr, const hr_history_event_t *ev,
                      size_t ne, double since) {
  printf("{\"since\": %.3f, \"samples\": [", since);
  for (size_t i = 0; i < nr; i++) {
    const hr_history_row_t *r = &rows[i];
    printf("%s{\"time\": %.3f, \"scope\": \"%s\"", i ? ", " : "", r->time, r->scope);
    if (strcmp(r->scope, "proc") == 0) {
      printf(", \"pid\": %d, \"name\": ", r->pid);
      hr_cli_json_str(stdout, r->name);
      printf(", \"rss_bytes\": ");
      r->used_bytes == HR_UNKNOWN ? printf("null") : printf("%" PRIu64, r->used_bytes);
      printf(", \"gpu_bytes\": ");
      r->total_bytes == HR_UNKNOWN ? printf("null") : printf("%" PRIu64, r->total_bytes);
    } else {
      printf(", \"used_bytes\": ");
      r->used_bytes == HR_UNKNOWN ? printf("null") : printf("%" PRIu64, r->used_bytes);
      printf(", \"total_bytes\": ");
      r->total_bytes == HR_UNKNOWN ? printf("null") : printf("%" PRIu64, r->total_bytes);
    }
    printf("}");
  }
  /* Events are written from their typed values by the one event writer,
   * as watch --json writes them. */
  printf("], \"events\": [");
  for (size_t i = 0; i < ne; i++) {
    char *line = NULL;
    int rc = hr_event_json(&ev[i].event, &line);
    if (rc) return rc;
    printf("%s%s", i ? ", " : "", line);
    free(line);
  }
  printf("]}\n");
  return 0;
}

/* ---- SVG ---------------------------------------------------------------- */

/* Each scope's and process's lines are drawn at most this many to a panel,
 * so the legend stays readable. */
#define MAX_LINES 10
#define COUNT(a)  (sizeof(a) / sizeof((a)[0]))
#define N_KINDS   7

static const char *event_color(const char *kind) {
  if (strcmp(kind, "level") == 0) return "#e69500";
  if (strcmp(kind, "leak") == 0) return "#d62728";
  if (strcmp(kind, "idle_hog") == 0) return "#9467bd";
  if (strcmp(kind, "oom_kill") == 0) return "#000000";
  if (strcmp(kind, "exit") == 0) return "#7f7f7f";
  if (strcmp(kind, "action") == 0) return "#1f77b4";
  return "#8c564b";
}

/* One panel's input for the chart writer, with room for its labels. */
typedef struct panel {
  hr_chart_series_t series[MAX_LINES];
  char label[MAX_LINES][96];
  hr_chart_hline_t hlines[MAX_LINES];
  char hlabel[MAX_LINES][64];
  size_t n, nh;
} panel_t;

/* The last total (or limit) a scope recorded; NaN when it never had one. */
static double last_total(const series_t *s) {
  for (size_t j = s->n; j-- > 0;)
    if (!isnan(s->v2[j]) && s->v2[j] > 0) return s->v2[j];
  return NAN;
}

static void add_line(panel_t *p, const series_t *s, bool second, bool right, const char *color,
                     const char *fmt, const char *a, int pid) {
  if (p->n == MAX_LINES) return;
  if (a)
    snprintf(p->label[p->n], sizeof p->label[0], fmt, a);
  else
    snprintf(p->label[p->n], sizeof p->label[0], fmt, pid);
  p->series[p->n] = (hr_chart_series_t){.label = p->label[p->n],
                                        .x = s->t,
                                        .y = second ? s->v2 : s->v,
                                        .n = s->n,
                                        .color = color,
                                        .style = second ? HR_CHART_DASHED : HR_CHART_LINE,
                                        .right = right};
  p->n++;
}

/* The warning and critical thresholds of a scope, as lines at that share of
 * its last total (or limit). */
static void add_thresholds(panel_t *p, const series_t *s, double warn, double crit) {
  double total = last_total(s);
  if (isnan(total) || p->nh + 2 > MAX_LINES) return;
  snprintf(p->hlabel[p->nh], sizeof p->hlabel[0], "%.16s warning %.0f%%", s->key, warn);
  p->hlines[p->nh] = (hr_chart_hline_t){p->hlabel[p->nh], total * warn / 100, false, "#e69500"};
  p->nh++;
  snprintf(p->hlabel[p->nh], sizeof p->hlabel[0], "%.16s critical %.0f%%", s->key, crit);
  p->hlines[p->nh] = (hr_chart_hline_t){p->hlabel[p->nh], total * crit / 100, false, "#d62728"};
  p->nh++;
}

static const char *const palette[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                                      "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f"};

/* Fills the three panels' lines and thresholds: each GPU (pd[0]), the host
 * and the cgroup (pd[1]), and the heaviest processes (pd[2]). */
static void fill_panels(const hr_options_t *opts, set_t *scopes, set_t *procs, panel_t pd[3]) {
  double vw = hr_options_get_double(opts, HR_OPTION_vram_warn);
  double vc = hr_options_get_double(opts, HR_OPTION_vram_critical);
  double rw = hr_options_get_double(opts, HR_OPTION_ram_warn);
  double rc = hr_options_get_double(opts, HR_OPTION_ram_critical);
  for (size_t i = 0; i < scopes->n; i++) {
    const series_t *s = &scopes->s[i];
    bool gpu = strncmp(s->key, "gpu", 3) == 0;
    panel_t *p = &pd[gpu ? 0 : 1];
    if (p->n + 2 > MAX_LINES) continue;
    const char *color = palette[(p->n / 2) % COUNT(palette)];
    add_line(p, s, false, false, color, "%s used", s->key, 0);
    add_line(p, s, true, false, color, "%s total", s->key, 0);
    add_thresholds(p, s, gpu ? vw : rw, gpu ? vc : rc);
  }
  if (procs->n > 1) qsort(procs->s, procs->n, sizeof *procs->s, cmp_weight);
  for (size_t i = 0, k = 0; i < procs->n && pd[2].n + 2 <= MAX_LINES; i++, k++) {
    const series_t *s = &procs->s[i];
    const char *color = palette[k % COUNT(palette)];
    char lab[96];
    snprintf(lab, sizeof lab, "%d %.20s", s->pid, s->name);
    add_line(&pd[2], s, false, false, color, "%s", lab, 0);
    bool gpu = false;
    for (size_t j = 0; j < s->n && !gpu; j++) gpu = !isnan(s->v2[j]) && s->v2[j] > 0;
    if (gpu) add_line(&pd[2], s, true, true, color, "%d GPU", NULL, s->pid);
    if (k + 1 >= 8) break;
  }
}

/* The time the series span; [since, since + 1] when they hold nothing. */
static void time_span(const set_t *scopes, const set_t *procs, double since, double *t0,
                      double *t1) {
  const set_t *sets[] = {scopes, procs};
  *t0 = INFINITY, *t1 = -INFINITY;
  for (size_t k = 0; k < 2; k++)
    for (size_t i = 0; i < sets[k]->n; i++)
      *t0 = fmin(*t0, sets[k]->s[i].t[0]), *t1 = fmax(*t1, sets[k]->s[i].t[sets[k]->s[i].n - 1]);
  if (isinf(*t0)) *t0 = since, *t1 = since + 1;
  if (*t1 <= *t0) *t1 = *t0 + 1;
}

/* The events as markers and their key. Every event but samples is a marker,
 * labelled with its kind and pid; the key counts them by kind. */
typedef struct marks {
  hr_chart_marker_t *m;
  char (*label)[96];
  size_t n;
  hr_chart_key_t keys[N_KINDS];
  char klabel[N_KINDS][48];
} marks_t;

static int fill_marks(marks_t *mk, const hr_history_event_t *ev, size_t ne) {
  static const char *const kinds[N_KINDS] = {"level", "leak",   "idle_hog", "oom_kill",
                                             "exit",  "action", "error"};
  mk->m = calloc(ne ? ne : 1, sizeof *mk->m);
  mk->label = calloc(ne ? ne : 1, sizeof *mk->label);
  if (!mk->m || !mk->label) return -1;
  for (size_t i = 0; i < ne; i++) {
    if (strcmp(ev[i].kind, "sample") == 0) continue;
    if (ev[i].pid)
      snprintf(mk->label[mk->n], sizeof mk->label[0], "%s %d", ev[i].kind, ev[i].pid);
    else
      snprintf(mk->label[mk->n], sizeof mk->label[0], "%s", ev[i].kind);
    mk->m[mk->n] = (hr_chart_marker_t){ev[i].time, mk->label[mk->n], event_color(ev[i].kind)};
    mk->n++;
  }
  for (size_t k = 0; k < N_KINDS; k++) {
    size_t cnt = 0;
    for (size_t i = 0; i < ne; i++) cnt += strcmp(ev[i].kind, kinds[k]) == 0;
    snprintf(mk->klabel[k], sizeof mk->klabel[k], "%s (%zu)", kinds[k], cnt);
    mk->keys[k] = (hr_chart_key_t){mk->klabel[k], event_color(kinds[k])};
  }
  return 0;
}

/* The three panels of the chart, the events marked on each; their labels
 * on the first that has points. */
static void fill_chart_panels(hr_chart_panel_t panels[3], panel_t pd[3], const marks_t *mk,
                              double t0, double t1) {
  static const char *const titles[] = {
      "GPU memory used (dashed: total; thresholds: warning and critical)",
      "host and cgroup memory used (dashed: total or limit; thresholds: warning and critical)",
      "top processes: resident memory (left axis; dashed: GPU memory, right axis)"};
  bool labelled = false;
  for (int i = 0; i < 3; i++) {
    bool points = false;
    for (size_t j = 0; j < pd[i].n && !points; j++) points = pd[i].series[j].n > 0;
    panels[i] = (hr_chart_panel_t){.title = titles[i],
                                   .y_title = i == 2 ? "resident memory" : "memory",
                                   .y2_title = i == 2 ? "GPU memory" : NULL,
                                   .x_scale = HR_CHART_CLOCK,
                                   .y_scale = HR_CHART_BYTES,
                                   .y2_scale = HR_CHART_BYTES,
                                   .x_min = t0,
                                   .x_max = t1,
                                   .series = pd[i].series,
                                   .n_series = pd[i].n,
                                   .hlines = pd[i].hlines,
                                   .n_hlines = pd[i].nh,
                                   .markers = mk->m,
                                   .n_markers = mk->n,
                                   .marker_labels = points && !labelled};
    labelled |= points;
  }
}

/* Three panels: GPUs, host and cgroup, the top processes (resident memory
 * on the left axis, GPU memory dashed on the right one: a process's RSS of a
 * few hundred MiB would lie flat at zero on an axis that GPU gigabytes set).
 * The scopes' panels draw the warning and critical thresholds of the
 * options in force. Events are vertical markers on every panel. */
static int write_svg(const hr_options_t *opts, const char *file, set_t *scopes, set_t *procs,
                     const hr_history_event_t *ev, size_t ne, double since) {
  double t0, t1;
  time_span(scopes, procs, since, &t0, &t1);
  panel_t pd[3] = {0};
  fill_panels(opts, scopes, procs, pd);
  marks_t mk = {0};
  char *svg = NULL;
  int status = -1;
  if (fill_marks(&mk, ev, ne) != 0) goto out;
  hr_chart_panel_t panels[3];
  fill_chart_panels(panels, pd, &mk, t0, t1);
  char title[128], a[32], b[32];
  snprintf(title, sizeof title, "headroom history %s to %s", clock_text(a, sizeof a, t0, true),
           clock_text(b, sizeof b, t1, false));
  hr_chart_t chart = {.title = title,
                      .keys = mk.keys,
                      .n_keys = N_KINDS,
                      .panels = panels,
                      .n_panels = 3,
                      .width = 1100,
                      .plot_height = 210};
  if (hr_chart_svg(&chart, &svg) == 0) status = hr_cli_write_file(file, svg);
out:
  free(svg);
  free(mk.m);
  free(mk.label);
  return status;
}

/* ---- the command -------------------------------------------------------- */

/* Opens the database of --db (or the default one) for reading: a missing
 * one is an error that says to run watch first. Returns 0 or 1. */
static int open_db(const hr_cli_t *cli, char *path, size_t n, hr_history_t **h) {
  char err[600];
  const char *db = hr_options_get_str(cli->opts, HR_OPTION_db);
  if (*db && strcmp(db, "none") != 0)
    snprintf(path, n, "%s", db);
  else if (hr_history_default_path(path, n) != 0) {
    hr_cli_error("history: no database path: set --db, XDG_STATE_HOME or HOME");
    return 1;
  }
  if (access(path, R_OK) != 0) {
    hr_cli_error("history: no history at %s (run 'headroom watch' first, or give --db)", path);
    return 1;
  }
  if (hr_history_open(path, h, err, sizeof err) != 0) {
    hr_cli_error("%s", err);
    return 1;
  }
  return 0;
}

/* Sorts the rows into series: one per scope, one per process. */
static int collect(const hr_history_row_t *rows, size_t nr, set_t *scopes, set_t *procs) {
  for (size_t i = 0; i < nr; i++) {
    const hr_history_row_t *r = &rows[i];
    bool proc = strcmp(r->scope, "proc") == 0;
    char key[80];
    if (proc)
      snprintf(key, sizeof key, "%d %s", r->pid, r->name);
    else
      snprintf(key, sizeof key, "%s", r->scope);
    series_t *s = find_series(proc ? procs : scopes, key, proc ? r->pid : 0, r->name);
    if (!s || series_push(s, r->time, r->used_bytes, r->total_bytes) != 0) return -1;
  }
  return 0;
}

/* The query's result, in the form each output takes. */
typedef struct recorded {
  hr_history_row_t *rows;
  hr_history_event_t *ev;
  size_t nr, ne;
  set_t scopes, procs;
} recorded_t;

static int show(const hr_cli_t *cli, const history_args_t *a, const char *path, recorded_t *r,
                double since) {
  if (a->json && print_json(r->rows, r->nr, r->ev, r->ne, since) != 0) {
    hr_cli_error("history: out of memory");
    return 1;
  }
  if (a->svg) {
    if (write_svg(cli->opts, a->svg, &r->scopes, &r->procs, r->ev, r->ne, since) != 0) {
      hr_cli_error("history: cannot write %s", a->svg);
      return 1;
    }
    if (!a->json) fprintf(stderr, "headroom: history: wrote %s\n", a->svg);
  }
  if (!a->json && !a->svg) print_text(cli, path, since, &r->scopes, &r->procs, r->ev, r->ne);
  return 0;
}

static int history_run(hr_cli_t *cli, const void *args, int argc, char **argv) {
  const history_args_t *a = args;
  char path[512], err[600];
  hr_history_t *h = NULL;
  recorded_t r = {0};
  (void)argc, (void)argv;
  int status = open_db(cli, path, sizeof path, &h);
  if (status) return status;
  struct timespec now;
  clock_gettime(CLOCK_REALTIME, &now);
  double since = (double)now.tv_sec - a->since;
  if (hr_history_query(h, since, (int)a->pid, &r.rows, &r.nr, &r.ev, &r.ne, err, sizeof err) != 0) {
    hr_cli_error("%s", err);
    status = 1;
  } else if (collect(r.rows, r.nr, &r.scopes, &r.procs) != 0) {
    hr_cli_error("history: out of memory");
    status = 1;
  } else {
    status = show(cli, a, path, &r, since);
  }
  set_free(&r.scopes);
  set_free(&r.procs);
  hr_history_free_rows(r.rows, r.ev, r.ne);
  hr_history_close(h);
  return status;
}

HR_CLI_COMMAND(history, "show recorded samples and events; draw them as SVG",
               .about =
                   "Shows what 'headroom watch' recorded: per scope (host, cgroup, each GPU) the "
                   "samples and their range, the top processes with their growth, and the events.");
