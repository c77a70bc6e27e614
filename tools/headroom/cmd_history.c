/* headroom history: what watch recorded, as a summary table, JSON, or an
 * SVG picture of memory over time (per GPU, host and cgroup, and the top
 * processes) with the events marked as vertical lines.
 *
 * The database is opened read-only (hr_history_open_readonly): read access
 * is enough, a missing file is an error that says to run watch first (never
 * a new empty file), and a file an older watch still writes is not migrated
 * under it.
 *
 * Thresholds: each scope sample carries the warning and critical
 * thresholds watch ran with; they are what the picture draws and what the
 * time at each level is counted with (the levels replayed with the
 * library's hysteresis). A threshold option given to history replaces the
 * recorded one for its report; a sample that recorded none (files before
 * schema 5) takes the option in force. Growth: a process's PER MIN is the
 * library's leak trend test (Mann-Kendall with a Theil-Sen slope, the
 * halves and noise checks: hr_leak_evaluate_samples) over the samples
 * shown, so a one-off load or a wave is no trend and only steady growth
 * (or shrinking) gets a rate, as watch's detector judges it. */
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
     .help = "{\"samples\", \"scopes\", \"processes\", \"events\"}: the rows, what the report "
             "judged of each scope and process, the events; sizes in bytes"},
    {"svg", HR_CLI_STRING, HR_CLI_AT(history_args_t, svg), .meta = "FILE",
     .complete = HR_CLI_COMPLETE_FILE,
     .help = "draw memory over time per GPU, host and cgroup, and for the top processes, with "
             "events marked, into FILE"},
    HR_CLI_OPTION_AS(NULL, db, "PATH", HR_CLI_COMPLETE_FILE),
    HR_CLI_OPTION(ram_warn, NULL),
    HR_CLI_OPTION(ram_critical, NULL),
    HR_CLI_OPTION(vram_warn, NULL),
    HR_CLI_OPTION(vram_critical, NULL),
    HR_CLI_OPTION(hysteresis, NULL),
    HR_CLI_OPTION(leak_min_rate, NULL),
    HR_CLI_OPTION(leak_min_samples, NULL),
};

/* The columns of a series, one array each (the chart takes x and y
 * arrays). */
enum { C_T, C_V, C_V2, C_WARN, C_CRIT, N_COLS };

typedef struct series {
  char key[80]; /* scope, or "pid name" */
  int pid;
  char name[64];
  size_t n, cap;
  double *col[N_COLS]; /* time; used and total (scopes), rss and gpu (processes);
                          the recorded thresholds (scopes; NaN: none) */
  double max;
} series_t;

#define T(s)  ((s)->col[C_T])
#define V(s)  ((s)->col[C_V])
#define V2(s) ((s)->col[C_V2])

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

static double bytes_or_nan(uint64_t v) {
  return v == HR_UNKNOWN ? NAN : (double)v;
}

static int series_push(series_t *s, const hr_history_row_t *r) {
  if (s->n == s->cap) {
    size_t nc = s->cap ? s->cap * 2 : 64;
    for (int c = 0; c < N_COLS; c++) {
      double *p = realloc(s->col[c], nc * sizeof *p);
      if (!p) return -1;
      s->col[c] = p;
    }
    s->cap = nc;
  }
  double row[N_COLS] = {r->time, bytes_or_nan(r->used_bytes), bytes_or_nan(r->total_bytes),
                        r->warn_pct, r->critical_pct};
  for (int c = 0; c < N_COLS; c++) s->col[c][s->n] = row[c];
  double w = (isnan(row[C_V]) ? 0 : row[C_V]) + (s->pid && !isnan(row[C_V2]) ? row[C_V2] : 0);
  if (w > s->max) s->max = w;
  s->n++;
  return 0;
}

static void set_free(set_t *set) {
  for (size_t i = 0; i < set->n; i++)
    for (int c = 0; c < N_COLS; c++) free(set->s[i].col[c]);
  free(set->s);
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
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

/* ---- thresholds and levels --------------------------------------------- */

/* Where a scope's thresholds came from, the strongest source of any of its
 * samples' winning. */
typedef enum { FROM_RECORDED, FROM_SETTINGS, FROM_COMMAND_LINE } from_t;
static const char *const from_names[] = {"recorded", "settings", "command line"};

/* A threshold of one sample: the option when history's command line gives
 * it, else the one recorded, else the option in force (a file before schema
 * 5 recorded none). */
static double threshold(const hr_options_t *o, hr_option_id_t id, double recorded, from_t *from) {
  from_t f = hr_options_source(o, id) == HR_SRC_CLI ? FROM_COMMAND_LINE
             : isfinite(recorded)                   ? FROM_RECORDED
                                                    : FROM_SETTINGS;
  if (f > *from) *from = f;
  return f == FROM_RECORDED ? recorded : hr_options_get_double(o, id);
}

/* The median time between a series' samples; 0 with fewer than two. */
static double median_step(const series_t *s) {
  if (s->n < 2) return 0;
  double *d = malloc((s->n - 1) * sizeof *d);
  if (!d) return 0;
  for (size_t j = 0; j + 1 < s->n; j++) d[j] = T(s)[j + 1] - T(s)[j];
  qsort(d, s->n - 1, sizeof *d, cmp_double);
  double m = d[(s->n - 1) / 2];
  free(d);
  return m;
}

/* A scope's thresholds (at its last sample) and the time it spent at each
 * level, the levels replayed sample by sample as watch classifies them
 * (hr_level_update with the hysteresis in force), each sample counting for
 * the median time between samples (a gap while watch was not running
 * counts for nothing). */
typedef struct scope_levels {
  double warn, crit;
  bool varied;    /* the thresholds changed within the samples shown */
  bool has_total; /* a total or limit was known: levels apply */
  bool inverted;  /* a sample's warning threshold stood above its critical one */
  from_t from;
  double warning_s, critical_s;
} scope_levels_t;

static void judge_scope(const hr_options_t *o, const series_t *s, scope_levels_t *out) {
  bool gpu = strncmp(s->key, "gpu", 3) == 0;
  hr_option_id_t wid = gpu ? HR_OPTION_vram_warn : HR_OPTION_ram_warn;
  hr_option_id_t cid = gpu ? HR_OPTION_vram_critical : HR_OPTION_ram_critical;
  double hyst = hr_options_get_double(o, HR_OPTION_hysteresis), dt = median_step(s);
  hr_level_t lv = HR_LEVEL_OK;
  *out = (scope_levels_t){.warn = NAN, .crit = NAN};
  for (size_t j = 0; j < s->n; j++) {
    double w = threshold(o, wid, s->col[C_WARN][j], &out->from);
    double c = threshold(o, cid, s->col[C_CRIT][j], &out->from);
    if (j && (w != out->warn || c != out->crit)) out->varied = true;
    out->inverted |= w > c;
    out->warn = w, out->crit = c;
    double pct = V2(s)[j] > 0 ? 100 * V(s)[j] / V2(s)[j] : NAN;
    out->has_total |= !isnan(pct);
    lv = hr_level_update(lv, pct, w, c, hyst);
    if (lv == HR_LEVEL_WARNING) out->warning_s += dt;
    if (lv == HR_LEVEL_CRITICAL) out->critical_s += dt;
  }
}

/* ---- growth ------------------------------------------------------------- */

typedef enum { TREND_FEW, TREND_NONE, TREND_RISING, TREND_LEAK, TREND_FALLING } trend_kind_t;
static const char *const trend_names[] = {"-", "none", "rising", "leak", "falling"};

/* A process's resident memory over the samples shown, judged by the leak
 * detector's own test: steady growth (a leak when at leak_min_rate or more),
 * steady shrinking, or no trend (flat, a one-off load, a wave); too few
 * samples (under leak_min_samples) to say. `per_min` is the Theil-Sen slope
 * in bytes per minute of a steady trend, NaN otherwise. */
typedef struct trend {
  trend_kind_t kind;
  double per_min;
} trend_t;

static int judge_process(const hr_options_t *o, const series_t *s, trend_t *out) {
  *out = (trend_t){TREND_FEW, NAN};
  size_t known = 0, min_samples = (size_t)hr_options_get_int(o, HR_OPTION_leak_min_samples);
  for (size_t j = 0; j < s->n; j++) known += !isnan(V(s)[j]);
  double span = s->n ? T(s)[s->n - 1] - T(s)[0] : 0;
  if (known < min_samples || !(span > 0)) return 0;
  /* The window holds every sample shown; the rate bar is a byte a minute: a
   * steady trend of any size is reported (a flat line is none), and called
   * a leak against leak_min_rate below. */
  hr_leak_config_t cfg = {.window_s = span + 1, .min_samples = min_samples, .min_rate = 1};
  hr_leak_result_t up, down;
  double *neg = malloc(s->n * sizeof *neg);
  if (!neg) return -1;
  for (size_t j = 0; j < s->n; j++) neg[j] = -V(s)[j];
  int rc = hr_leak_evaluate_samples(&cfg, T(s), V(s), s->n, &up);
  if (rc == 0) rc = hr_leak_evaluate_samples(&cfg, T(s), neg, s->n, &down);
  free(neg);
  if (rc) return -1;
  double bar = (double)hr_options_get_size(o, HR_OPTION_leak_min_rate);
  if (up.suspected)
    *out = (trend_t){up.slope_per_min >= bar ? TREND_LEAK : TREND_RISING, up.slope_per_min};
  else if (down.suspected)
    *out = (trend_t){TREND_FALLING, -down.slope_per_min};
  else
    out->kind = TREND_NONE;
  return 0;
}

/* ---- text and JSON ------------------------------------------------------ */

/* What the report says of each scope and process (in their sets' order). */
typedef struct judged {
  scope_levels_t *levels;
  trend_t *trends;
} judged_t;

/* A table's heading in bold. */
static void heading(const hr_cli_t *cli, const char *text) {
  char lab[200];
  printf("%s\n", hr_cli_paint(cli, lab, sizeof lab, "bold", text));
}

/* A time for the tables: "0s", "45s", "12m05s", "3h20m", "2d04h". */
static const char *duration_text(char *buf, size_t n, double s) {
  long v = lround(s);
  if (v < 60)
    snprintf(buf, n, "%lds", v);
  else if (v < 3600)
    snprintf(buf, n, "%ldm%02lds", v / 60, v % 60);
  else if (v < 86400)
    snprintf(buf, n, "%ldh%02ldm", v / 3600, v % 3600 / 60);
  else
    snprintf(buf, n, "%ldd%02ldh", v / 86400, v % 86400 / 3600);
  return buf;
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
      if (isnan(V(s)[j])) continue;
      mn = fmin(mn, V(s)[j]), mx = fmax(mx, V(s)[j]), sum += V(s)[j], k++;
      if (!isnan(V2(s)[j])) total = V2(s)[j];
    }
    printf("%-8s %8zu  %-8s  %-8s  %10s %10s %10s %10s\n", s->key, s->n,
           clock_text(t1, sizeof t1, T(s)[0], false),
           clock_text(t2, sizeof t2, T(s)[s->n - 1], false),
           k ? hr_size_text(a, sizeof a, (uint64_t)mn) : "-",
           k ? hr_size_text(b, sizeof b, (uint64_t)(sum / (double)k)) : "-",
           k ? hr_size_text(c, sizeof c, (uint64_t)mx) : "-",
           isnan(total) ? "-" : hr_size_text(d, sizeof d, (uint64_t)total));
  }
}

/* Each scope's thresholds, where they came from, and the time at each
 * level. */
static void print_levels(const hr_cli_t *cli, const set_t *scopes, const scope_levels_t *lv) {
  char head[160], a[32], b[32];
  snprintf(head, sizeof head, "%-8s %6s %9s  %-14s %11s %12s", "SCOPE", "WARN", "CRITICAL", "FROM",
           "AT WARNING", "AT CRITICAL");
  if (scopes->n) printf("\n"), heading(cli, head);
  for (size_t i = 0; i < scopes->n; i++)
    if (!lv[i].has_total)
      printf("%-8s %6s %9s  %-14s %11s %12s\n", scopes->s[i].key, "-", "-", "no limit", "-", "-");
    else
      printf("%-8s %5.0f%% %8.0f%%  %-14s %11s %12s\n", scopes->s[i].key, lv[i].warn, lv[i].crit,
             lv[i].varied ? "recorded (varied)" : from_names[lv[i].from],
             duration_text(a, sizeof a, lv[i].warning_s),
             duration_text(b, sizeof b, lv[i].critical_s));
}

/* The heaviest processes (at most 15): resident memory first and last, its
 * steady growth per minute and trend, the most GPU memory held. */
static void print_procs(const hr_cli_t *cli, const set_t *procs, const trend_t *tr) {
  char a[32], b[32], c[32], d[32], pm[40], head[160];
  snprintf(head, sizeof head, "%8s %-16s %8s %10s %10s %12s %-7s %10s", "PID", "NAME", "SAMPLES",
           "RSS FIRST", "RSS LAST", "PER MIN", "TREND", "GPU MAX");
  if (procs->n) printf("\n"), heading(cli, head);
  for (size_t i = 0; i < procs->n && i < 15; i++) {
    const series_t *s = &procs->s[i];
    double gmax = 0;
    for (size_t j = 0; j < s->n; j++)
      if (!isnan(V2(s)[j])) gmax = fmax(gmax, V2(s)[j]);
    if (isnan(tr[i].per_min))
      snprintf(pm, sizeof pm, "-");
    else
      snprintf(pm, sizeof pm, "%s%s", tr[i].per_min < 0 ? "-" : "+",
               hr_size_text(c, sizeof c, (uint64_t)fabs(tr[i].per_min)));
    printf("%8d %-16.16s %8zu %10s %10s %12s %-7s %10s\n", s->pid, s->name, s->n,
           isnan(V(s)[0]) ? "-" : hr_size_text(a, sizeof a, (uint64_t)V(s)[0]),
           isnan(V(s)[s->n - 1]) ? "-" : hr_size_text(b, sizeof b, (uint64_t)V(s)[s->n - 1]), pm,
           trend_names[tr[i].kind], gmax > 0 ? hr_size_text(d, sizeof d, (uint64_t)gmax) : "-");
  }
}

static void print_text(const hr_cli_t *cli, const char *path, double since, const set_t *scopes,
                       const set_t *procs, const judged_t *j, const hr_history_event_t *ev,
                       size_t ne) {
  char t1[32], lab[200];
  printf("%s %s since %s\n\n", hr_cli_paint(cli, lab, sizeof lab, "bold", "history"), path,
         clock_text(t1, sizeof t1, since, true));
  print_scopes(cli, scopes);
  print_levels(cli, scopes, j->levels);
  print_procs(cli, procs, j->trends);
  printf("\n%s (%zu)\n", hr_cli_paint(cli, lab, sizeof lab, "bold", "events"), ne);
  for (size_t i = 0; i < ne; i++) printf("  %s\n", hr_event_text(&ev[i].event, lab, sizeof lab));
  if (!scopes->n && !procs->n && !ne) printf("nothing recorded in that time\n");
}

/* Writes ", \"key\": " and the number, or null when it is not known. */
static void json_u64(const char *key, uint64_t v) {
  printf(", \"%s\": ", key);
  v == HR_UNKNOWN ? printf("null") : printf("%" PRIu64, v);
}
static void json_num(const char *key, double v, const char *fmt) {
  printf(", \"%s\": ", key);
  isfinite(v) ? printf(fmt, v) : printf("null");
}

static void json_samples(const hr_history_row_t *rows, size_t nr) {
  printf("\"samples\": [");
  for (size_t i = 0; i < nr; i++) {
    const hr_history_row_t *r = &rows[i];
    bool proc = strcmp(r->scope, "proc") == 0;
    printf("%s{\"time\": %.3f, \"scope\": \"%s\"", i ? ", " : "", r->time, r->scope);
    if (proc) {
      printf(", \"pid\": %d, \"name\": ", r->pid);
      hr_cli_json_str(stdout, r->name);
    }
    json_u64(proc ? "rss_bytes" : "used_bytes", r->used_bytes);
    json_u64(proc ? "gpu_bytes" : "total_bytes", r->total_bytes);
    if (!proc)
      json_num("warn_pct", r->warn_pct, "%g"), json_num("critical_pct", r->critical_pct, "%g");
    printf("}");
  }
  printf("]");
}

/* What the report judged: each scope's thresholds and time at each level,
 * each process's trend. */
static void json_judged(const set_t *scopes, const set_t *procs, const judged_t *j) {
  printf(", \"scopes\": [");
  for (size_t i = 0; i < scopes->n; i++) {
    const scope_levels_t *l = &j->levels[i];
    printf("%s{\"scope\": \"%s\"", i ? ", " : "", scopes->s[i].key);
    json_num("warn_pct", l->warn, "%g"), json_num("critical_pct", l->crit, "%g");
    printf(", \"thresholds_from\": \"%s\", \"thresholds_varied\": %s", from_names[l->from],
           l->varied ? "true" : "false");
    json_num("warning_s", l->has_total ? l->warning_s : NAN, "%.3f");
    json_num("critical_s", l->has_total ? l->critical_s : NAN, "%.3f");
    printf("}");
  }
  printf("], \"processes\": [");
  for (size_t i = 0; i < procs->n; i++) {
    const series_t *s = &procs->s[i];
    printf("%s{\"pid\": %d, \"name\": ", i ? ", " : "", s->pid);
    hr_cli_json_str(stdout, s->name);
    printf(", \"samples\": %zu, \"trend\": \"%s\"", s->n,
           j->trends[i].kind == TREND_FEW ? "too_few_samples" : trend_names[j->trends[i].kind]);
    json_num("growth_bytes_per_min", j->trends[i].per_min, "%.0f");
    printf("}");
  }
  printf("]");
}

static int print_json(const hr_history_row_t *rows, size_t nr, const set_t *scopes,
                      const set_t *procs, const judged_t *j, const hr_history_event_t *ev,
                      size_t ne, double since) {
  printf("{\"since\": %.3f, ", since);
  json_samples(rows, nr);
  json_judged(scopes, procs, j);
  /* Events are written from their typed values by the one event writer,
   * as watch --json writes them. */
  printf(", \"events\": [");
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
    if (!isnan(V2(s)[j]) && V2(s)[j] > 0) return V2(s)[j];
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
                                        .x = T(s),
                                        .y = second ? V2(s) : V(s),
                                        .n = s->n,
                                        .color = color,
                                        .style = second ? HR_CHART_DASHED : HR_CHART_LINE,
                                        .right = right};
  p->n++;
}

/* The warning and critical thresholds of a scope (those of its last
 * sample), as lines at that share of its last total (or limit), labelled
 * with where they came from. */
static void add_thresholds(panel_t *p, const series_t *s, const scope_levels_t *lv) {
  double total = last_total(s);
  if (isnan(total) || p->nh + 2 > MAX_LINES) return;
  const char *from = lv->varied ? "last recorded" : from_names[lv->from];
  snprintf(p->hlabel[p->nh], sizeof p->hlabel[0], "%.16s warning %.0f%% (%s)", s->key, lv->warn,
           from);
  p->hlines[p->nh] = (hr_chart_hline_t){p->hlabel[p->nh], total * lv->warn / 100, false, "#e69500"};
  p->nh++;
  snprintf(p->hlabel[p->nh], sizeof p->hlabel[0], "%.16s critical %.0f%% (%s)", s->key, lv->crit,
           from);
  p->hlines[p->nh] = (hr_chart_hline_t){p->hlabel[p->nh], total * lv->crit / 100, false, "#d62728"};
  p->nh++;
}

static const char *const palette[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                                      "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f"};

/* Fills the three panels' lines and thresholds: each GPU (pd[0]), the host
 * and the cgroup (pd[1]), and the heaviest processes (pd[2], in weight
 * order already). */
static void fill_panels(const set_t *scopes, const set_t *procs, const judged_t *jd,
                        panel_t pd[3]) {
  for (size_t i = 0; i < scopes->n; i++) {
    const series_t *s = &scopes->s[i];
    bool gpu = strncmp(s->key, "gpu", 3) == 0;
    panel_t *p = &pd[gpu ? 0 : 1];
    if (p->n + 2 > MAX_LINES) continue;
    const char *color = palette[(p->n / 2) % COUNT(palette)];
    add_line(p, s, false, false, color, "%s used", s->key, 0);
    add_line(p, s, true, false, color, "%s total", s->key, 0);
    add_thresholds(p, s, &jd->levels[i]);
  }
  for (size_t i = 0, k = 0; i < procs->n && pd[2].n + 2 <= MAX_LINES; i++, k++) {
    const series_t *s = &procs->s[i];
    const char *color = palette[k % COUNT(palette)];
    char lab[96];
    snprintf(lab, sizeof lab, "%d %.20s", s->pid, s->name);
    add_line(&pd[2], s, false, false, color, "%s", lab, 0);
    bool gpu = false;
    for (size_t j = 0; j < s->n && !gpu; j++) gpu = !isnan(V2(s)[j]) && V2(s)[j] > 0;
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
      *t0 = fmin(*t0, T(&sets[k]->s[i])[0]),
      *t1 = fmax(*t1, T(&sets[k]->s[i])[sets[k]->s[i].n - 1]);
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
 * The scopes' panels draw the warning and critical thresholds watch
 * recorded (or those history is given). Events are vertical markers on
 * every panel. */
static int write_svg(const char *file, const set_t *scopes, const set_t *procs, const judged_t *jd,
                     const hr_history_event_t *ev, size_t ne, double since) {
  double t0, t1;
  time_span(scopes, procs, since, &t0, &t1);
  panel_t pd[3] = {0};
  fill_panels(scopes, procs, jd, pd);
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

/* Opens the database of --db (or the default one) read-only: a missing
 * one is an error that says to run watch first. Returns 0 or 1. */
static int open_db(const hr_cli_t *cli, char *path, size_t n, hr_history_t **h) {
  char err[1200];
  const char *db = hr_options_get_str(cli->opts, HR_OPTION_db);
  if (*db && strcmp(db, "none") != 0)
    snprintf(path, n, "%s", db);
  else if (hr_history_default_path(path, n) != 0) {
    hr_cli_error("history: no database path: set --db, XDG_STATE_HOME or HOME");
    return 1;
  }
  int rc = hr_history_open_readonly(path, h, err, sizeof err);
  if (rc == HR_ENOENT)
    hr_cli_error("history: no history at %s (run 'headroom watch' first, or give --db)", path);
  else if (rc)
    hr_cli_error("%s", err);
  return rc ? 1 : 0;
}

/* Sorts the rows into series: one per scope, one per process, the
 * processes heaviest first. */
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
    if (!s || series_push(s, r) != 0) return -1;
  }
  if (procs->n > 1) qsort(procs->s, procs->n, sizeof *procs->s, cmp_weight);
  return 0;
}

/* Judges every scope and process. Returns 0, or -1 when out of memory. */
static int judge(const hr_options_t *o, const set_t *scopes, const set_t *procs, judged_t *j) {
  j->levels = calloc(scopes->n + 1, sizeof *j->levels);
  j->trends = calloc(procs->n + 1, sizeof *j->trends);
  if (!j->levels || !j->trends) return -1;
  for (size_t i = 0; i < scopes->n; i++) judge_scope(o, &scopes->s[i], &j->levels[i]);
  for (size_t i = 0; i < procs->n; i++)
    if (judge_process(o, &procs->s[i], &j->trends[i]) != 0) return -1;
  return 0;
}

/* A threshold given to history can stand above the other one recorded
 * (--ram-warn 95 over a recorded critical 90): refused, as watch refuses
 * it. Returns 0 or the exit status 2. */
static int check_order(const set_t *scopes, const scope_levels_t *lv) {
  for (size_t i = 0; i < scopes->n; i++)
    if (lv[i].inverted && lv[i].has_total) {
      hr_cli_error("history: %s: the warning threshold %g%% is above the critical one %g%% (%s); "
                   "give both",
                   scopes->s[i].key, lv[i].warn, lv[i].crit, from_names[lv[i].from]);
      return 2;
    }
  return 0;
}

/* The query's result, in the form each output takes. */
typedef struct recorded {
  hr_history_row_t *rows;
  hr_history_event_t *ev;
  size_t nr, ne;
  set_t scopes, procs;
  judged_t judged;
} recorded_t;

static int show(const hr_cli_t *cli, const history_args_t *a, const char *path, recorded_t *r,
                double since) {
  const judged_t *j = &r->judged;
  if (a->json && print_json(r->rows, r->nr, &r->scopes, &r->procs, j, r->ev, r->ne, since) != 0) {
    hr_cli_error("history: out of memory");
    return 1;
  }
  if (a->svg) {
    if (write_svg(a->svg, &r->scopes, &r->procs, j, r->ev, r->ne, since) != 0) {
      hr_cli_error("history: cannot write %s", a->svg);
      return 1;
    }
    if (!a->json) fprintf(stderr, "headroom: history: wrote %s\n", a->svg);
  }
  if (!a->json && !a->svg) print_text(cli, path, since, &r->scopes, &r->procs, j, r->ev, r->ne);
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
  } else if (collect(r.rows, r.nr, &r.scopes, &r.procs) != 0 ||
             judge(cli->opts, &r.scopes, &r.procs, &r.judged) != 0) {
    hr_cli_error("history: out of memory");
    status = 1;
  } else if ((status = check_order(&r.scopes, r.judged.levels)) == 0) {
    status = show(cli, a, path, &r, since);
  }
  free(r.judged.levels);
  free(r.judged.trends);
  set_free(&r.scopes);
  set_free(&r.procs);
  hr_history_free_rows(r.rows, r.ev, r.ne);
  hr_history_close(h);
  return status;
}

HR_CLI_COMMAND(
    history, "show recorded samples and events; draw them as SVG",
    .about =
        "Shows what 'headroom watch' recorded: per scope (host, cgroup, each GPU) the "
        "samples and their range, the thresholds and the time spent at each level, the "
        "top processes with their growth, and the events. The database is only read: "
        "read access is enough.\n\n"
        "The thresholds are those watch recorded with each sample; a threshold option "
        "given here replaces them for this report, and samples that recorded none "
        "(in a file from before history schema 5) take the options in force. A process's PER MIN "
        "is the leak detector's own trend test over the samples shown: only steady "
        "growth or shrinking gets a rate (TREND rising, or leak at --leak-min-rate and "
        "above, or falling); a one-off load or a wave is no trend (none); fewer than "
        "--leak-min-samples samples are too few to say (-).");
