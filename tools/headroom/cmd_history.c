/* headroom history: what watch recorded, as a summary table, JSON, or an
 * SVG picture of memory over time (per GPU, host and cgroup, and the top
 * processes) with the events marked as vertical lines.
 *
 * The database is only read: a missing one is an error that says to run
 * watch first, never a new empty file. */
#include "cli.h"

#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void history_usage(FILE *f) {
  fprintf(f, "usage: headroom history [--since 1h] [--pid N] [--json] [--svg FILE] [--db PATH]\n\n"
             "Shows what 'headroom watch' recorded: per scope (host, cgroup, each GPU) the\n"
             "samples and their range, the top processes with their growth, and the events.\n\n"
             "  --since D   how far back (durations: 30s, 10m, 1h, 2d; default 1h)\n"
             "  --pid N     only that process's samples and events\n"
             "  --json      {\"samples\": [...], \"events\": [...]} with sizes in bytes\n"
             "  --svg FILE  draw memory over time per GPU, host and cgroup, and for the top\n"
             "              processes, with events marked, into FILE\n"
             "  --db PATH   the database (default $XDG_STATE_HOME/headroom/history.db)\n");
}

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

static void print_text(const hr_cli_t *cli, const char *path, double since, set_t *scopes,
                       set_t *procs, const hr_history_event_t *ev, size_t ne) {
  char a[32], b[32], c[32], d[32], t1[32], t2[32], lab[200], head[160];
  printf("%s %s since %s\n\n", hr_cli_paint(cli, lab, sizeof lab, "bold", "history"), path,
         clock_text(t1, sizeof t1, since, true));
  if (scopes->n) {
    snprintf(head, sizeof head, "%-8s %8s  %-8s  %-8s  %10s %10s %10s %10s", "SCOPE", "SAMPLES",
             "FIRST", "LAST", "MIN", "MEAN", "MAX", "OF");
    printf("%s\n", hr_cli_paint(cli, lab, sizeof lab, "bold", head));
  }
  for (size_t i = 0; i < scopes->n; i++) {
    series_t *s = &scopes->s[i];
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
           k ? hr_cli_size(a, sizeof a, (uint64_t)mn) : "-",
           k ? hr_cli_size(b, sizeof b, (uint64_t)(sum / (double)k)) : "-",
           k ? hr_cli_size(c, sizeof c, (uint64_t)mx) : "-",
           isnan(total) ? "-" : hr_cli_size(d, sizeof d, (uint64_t)total));
  }
  if (procs->n > 1) qsort(procs->s, procs->n, sizeof *procs->s, cmp_weight);
  if (procs->n) {
    snprintf(head, sizeof head, "%8s %-16s %8s %10s %10s %12s %10s", "PID", "NAME", "SAMPLES",
             "RSS FIRST", "RSS LAST", "PER MIN", "GPU MAX");
    printf("\n%s\n", hr_cli_paint(cli, lab, sizeof lab, "bold", head));
  }
  for (size_t i = 0; i < procs->n && i < 15; i++) {
    series_t *s = &procs->s[i];
    double span = s->t[s->n - 1] - s->t[0], gmax = 0;
    for (size_t j = 0; j < s->n; j++)
      if (!isnan(s->v2[j])) gmax = fmax(gmax, s->v2[j]);
    double per_min = span > 0 ? (s->v[s->n - 1] - s->v[0]) / span * 60 : 0;
    char pm[40];
    snprintf(pm, sizeof pm, "%s%s", per_min < 0 ? "-" : "+",
             hr_cli_size(c, sizeof c, (uint64_t)fabs(isnan(per_min) ? 0 : per_min)));
    printf("%8d %-16.16s %8zu %10s %10s %12s %10s\n", s->pid, s->name, s->n,
           isnan(s->v[0]) ? "-" : hr_cli_size(a, sizeof a, (uint64_t)s->v[0]),
           isnan(s->v[s->n - 1]) ? "-" : hr_cli_size(b, sizeof b, (uint64_t)s->v[s->n - 1]), pm,
           gmax > 0 ? hr_cli_size(d, sizeof d, (uint64_t)gmax) : "-");
  }
  printf("\n%s (%zu)\n", hr_cli_paint(cli, lab, sizeof lab, "bold", "events"), ne);
  for (size_t i = 0; i < ne; i++)
    printf("  %s %-9s %s\n", clock_text(t1, sizeof t1, ev[i].time, false), ev[i].kind, ev[i].json);
  if (!scopes->n && !procs->n && !ne) printf("nothing recorded in that time\n");
}

static void print_json(const hr_history_row_t *rows, size_t nr, const hr_history_event_t *ev,
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
  /* Events are stored as the JSON watch wrote; they go out as they are. */
  printf("], \"events\": [");
  for (size_t i = 0; i < ne; i++) printf("%s%s", i ? ", " : "", ev[i].json);
  printf("]}\n");
}

/* ---- SVG ---------------------------------------------------------------- */

#define SVG_W     1100
#define SVG_LEFT  90
#define SVG_RIGHT 230
#define PANEL_H   210
#define PANEL_GAP 60
#define SVG_TOP   60

static const char *const palette[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                                      "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f"};

static void xml_text(FILE *f, const char *s) {
  for (; *s; s++) {
    if (*s == '<')
      fputs("&lt;", f);
    else if (*s == '>')
      fputs("&gt;", f);
    else if (*s == '&')
      fputs("&amp;", f);
    else if (*s == '"')
      fputs("&quot;", f);
    else if ((unsigned char)*s >= 0x20)
      fputc(*s, f);
  }
}

static const char *event_color(const char *kind) {
  if (strcmp(kind, "level") == 0) return "#e69500";
  if (strcmp(kind, "leak") == 0) return "#d62728";
  if (strcmp(kind, "idle_hog") == 0) return "#9467bd";
  if (strcmp(kind, "oom_kill") == 0) return "#000000";
  if (strcmp(kind, "exit") == 0) return "#7f7f7f";
  if (strcmp(kind, "action") == 0) return "#1f77b4";
  return "#8c564b";
}

typedef struct panel {
  const char *title;
  series_t *lines[10];
  bool second[10]; /* draw v2 (dashed) instead of v */
  const char *label[10];
  size_t n;
} panel_t;

/* Draws one chart; `labels` writes each event's kind and pid above its line
 * (the first 40), on the topmost chart only. */
static void draw_panel(FILE *f, const panel_t *p, int y0, double t0, double t1,
                       const hr_history_event_t *ev, size_t ne, bool labels) {
  int x0 = SVG_LEFT, w = SVG_W - SVG_LEFT - SVG_RIGHT, h = PANEL_H;
  double ymax = 0;
  for (size_t i = 0; i < p->n; i++)
    for (size_t j = 0; j < p->lines[i]->n; j++) {
      double v = p->second[i] ? p->lines[i]->v2[j] : p->lines[i]->v[j];
      if (!isnan(v)) ymax = fmax(ymax, v);
    }
  if (ymax <= 0) ymax = 1;
  ymax *= 1.08;
  double span = t1 > t0 ? t1 - t0 : 1;
  fprintf(f, "<text x=\"%d\" y=\"%d\" font-size=\"15\" font-weight=\"bold\">", x0, y0 - 10);
  xml_text(f, p->title);
  fprintf(f,
          "</text>\n<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"#fafafa\" "
          "stroke=\"#999\"/>\n",
          x0, y0, w, h);
  char a[32];
  for (int k = 0; k <= 4; k++) {
    double v = ymax * k / 4;
    int y = y0 + h - (int)(h * k / 4);
    fprintf(f, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"#e3e3e3\"/>\n", x0, y,
            x0 + w, y);
    fprintf(f, "<text x=\"%d\" y=\"%d\" font-size=\"11\" text-anchor=\"end\">%s</text>\n", x0 - 6,
            y + 4, hr_cli_size(a, sizeof a, (uint64_t)v));
  }
  for (int k = 0; k <= 5; k++) {
    double t = t0 + span * k / 5;
    int x = x0 + (int)(w * k / 5);
    fprintf(f, "<text x=\"%d\" y=\"%d\" font-size=\"11\" text-anchor=\"middle\">%s</text>\n", x,
            y0 + h + 15, clock_text(a, sizeof a, t, false));
  }
  for (size_t i = 0; i < ne; i++) {
    double x = x0 + w * (ev[i].time - t0) / span;
    if (x < x0 || x > x0 + w || strcmp(ev[i].kind, "sample") == 0) continue;
    fprintf(f,
            "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" stroke=\"%s\" "
            "stroke-width=\"1.5\" stroke-dasharray=\"4,3\" opacity=\"0.8\"/>\n",
            x, y0, x, y0 + h, event_color(ev[i].kind));
    if (labels && i < 40) {
      char lab[96];
      if (ev[i].pid)
        snprintf(lab, sizeof lab, "%s %d", ev[i].kind, ev[i].pid);
      else
        snprintf(lab, sizeof lab, "%s", ev[i].kind);
      fprintf(f, "<text x=\"%.1f\" y=\"%d\" font-size=\"10\" fill=\"%s\">", x + 3,
              y0 + 12 + (int)(i % 3) * 12, event_color(ev[i].kind));
      xml_text(f, lab);
      fprintf(f, "</text>\n");
    }
  }
  for (size_t i = 0; i < p->n; i++) {
    const series_t *s = p->lines[i];
    const char *color = palette[i % (sizeof palette / sizeof palette[0])];
    fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"%s\"%s points=\"", color,
            p->second[i] ? "1.2" : "2", p->second[i] ? " stroke-dasharray=\"6,4\"" : "");
    for (size_t j = 0; j < s->n; j++) {
      double v = p->second[i] ? s->v2[j] : s->v[j];
      if (isnan(v)) continue;
      fprintf(f, "%.1f,%.1f ", x0 + w * (s->t[j] - t0) / span, y0 + h - h * v / ymax);
    }
    fprintf(f, "\"/>\n");
    int ly = y0 + 14 + (int)i * 18;
    fprintf(f,
            "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"%s\" stroke-width=\"2\"%s/>\n",
            x0 + w + 12, ly - 4, x0 + w + 34, ly - 4, color,
            p->second[i] ? " stroke-dasharray=\"6,4\"" : "");
    fprintf(f, "<text x=\"%d\" y=\"%d\" font-size=\"12\">", x0 + w + 40, ly);
    xml_text(f, p->label[i]);
    fprintf(f, "</text>\n");
  }
  if (p->n == 0)
    fprintf(f,
            "<text x=\"%d\" y=\"%d\" font-size=\"13\" fill=\"#777\" "
            "text-anchor=\"middle\">no samples</text>\n",
            x0 + w / 2, y0 + h / 2);
}

static int write_svg(const char *file, set_t *scopes, set_t *procs, const hr_history_event_t *ev,
                     size_t ne, double since) {
  double t0 = INFINITY, t1 = -INFINITY;
  for (size_t i = 0; i < scopes->n; i++)
    t0 = fmin(t0, scopes->s[i].t[0]), t1 = fmax(t1, scopes->s[i].t[scopes->s[i].n - 1]);
  for (size_t i = 0; i < procs->n; i++)
    t0 = fmin(t0, procs->s[i].t[0]), t1 = fmax(t1, procs->s[i].t[procs->s[i].n - 1]);
  if (isinf(t0)) t0 = since, t1 = since + 1;

  panel_t panels[3] = {{.title = "GPU memory used (dashed: total)"},
                       {.title = "host and cgroup memory used (dashed: total or limit)"},
                       {.title = "top processes: resident memory (dashed: GPU memory)"}};
  static char labels[30][96];
  size_t nl = 0;
  for (size_t i = 0; i < scopes->n; i++) {
    series_t *s = &scopes->s[i];
    panel_t *p = strncmp(s->key, "gpu", 3) == 0 ? &panels[0] : &panels[1];
    if (p->n + 2 > 10 || nl + 2 > 30) continue;
    snprintf(labels[nl], sizeof labels[0], "%s used", s->key);
    p->lines[p->n] = s, p->second[p->n] = false, p->label[p->n++] = labels[nl++];
    snprintf(labels[nl], sizeof labels[0], "%s total", s->key);
    p->lines[p->n] = s, p->second[p->n] = true, p->label[p->n++] = labels[nl++];
  }
  if (procs->n > 1) qsort(procs->s, procs->n, sizeof *procs->s, cmp_weight);
  for (size_t i = 0; i < procs->n && panels[2].n < 10 && nl < 30; i++) {
    series_t *s = &procs->s[i];
    panel_t *p = &panels[2];
    snprintf(labels[nl], sizeof labels[0], "%d %.20s", s->pid, s->name);
    p->lines[p->n] = s, p->second[p->n] = false, p->label[p->n++] = labels[nl++];
    bool gpu = false;
    for (size_t j = 0; j < s->n && !gpu; j++) gpu = !isnan(s->v2[j]) && s->v2[j] > 0;
    if (gpu && p->n < 10 && nl < 30) {
      snprintf(labels[nl], sizeof labels[0], "%d gpu", s->pid);
      p->lines[p->n] = s, p->second[p->n] = true, p->label[p->n++] = labels[nl++];
    }
    if (p->n >= 8) break;
  }
  FILE *f = fopen(file, "w");
  if (!f) return -1;
  int drawn = (panels[0].n > 0) + (panels[1].n > 0) + (panels[2].n > 0);
  int height = SVG_TOP + 25 + drawn * (PANEL_H + PANEL_GAP) + (3 - drawn) * 30 + 20;
  fprintf(f,
          "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
          "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
          "viewBox=\"0 0 %d %d\" font-family=\"sans-serif\">\n"
          "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n",
          SVG_W, height, SVG_W, height);
  char a[32], b[32];
  fprintf(f,
          "<text x=\"%d\" y=\"28\" font-size=\"18\" font-weight=\"bold\">headroom history "
          "%s to %s</text>\n",
          SVG_LEFT, clock_text(a, sizeof a, t0, true), clock_text(b, sizeof b, t1, false));
  /* The event legend, with counts. */
  static const char *const kinds[] = {"level", "leak",   "idle_hog", "oom_kill",
                                      "exit",  "action", "error"};
  int lx = SVG_LEFT;
  for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
    size_t cnt = 0;
    for (size_t i = 0; i < ne; i++) cnt += strcmp(ev[i].kind, kinds[k]) == 0;
    fprintf(f,
            "<line x1=\"%d\" y1=\"42\" x2=\"%d\" y2=\"52\" stroke=\"%s\" stroke-width=\"2\"/>"
            "<text x=\"%d\" y=\"51\" font-size=\"11\">%s (%zu)</text>\n",
            lx, lx, event_color(kinds[k]), lx + 5, kinds[k], cnt);
    lx += 105;
  }
  /* Panels without samples (no GPU on the machine) are left out, and say
   * so in one line rather than as an empty chart. */
  int y = SVG_TOP + 25;
  bool labelled = false;
  for (int i = 0; i < 3; i++) {
    if (panels[i].n == 0) {
      fprintf(f, "<text x=\"%d\" y=\"%d\" font-size=\"13\" fill=\"#777\">", SVG_LEFT, y);
      xml_text(f, panels[i].title);
      fprintf(f, ": no samples</text>\n");
      y += 30;
      continue;
    }
    draw_panel(f, &panels[i], y + 10, t0, t1, ev, ne, !labelled);
    labelled = true;
    y += PANEL_H + PANEL_GAP;
  }
  fprintf(f, "</svg>\n");
  return fclose(f) == 0 ? 0 : -1;
}

/* ---- the command -------------------------------------------------------- */

static int history_run(hr_cli_t *cli, int argc, char **argv) {
  static const struct option longopts[] = {{"since", required_argument, NULL, 's'},
                                           {"pid", required_argument, NULL, 'p'},
                                           {"json", no_argument, NULL, 'j'},
                                           {"svg", required_argument, NULL, 'g'},
                                           {"db", required_argument, NULL, 'd'},
                                           {"help", no_argument, NULL, 'h'},
                                           {NULL, 0, NULL, 0}};
  double since_s = 3600;
  int pid = 0, c;
  bool json = false;
  const char *svg = NULL;
  while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
    switch (c) {
    case 's':
      if (hr_parse_duration(optarg, &since_s) != 0) {
        hr_cli_error("history: --since: '%s' is not a duration (30s, 10m, 1h, 2d)", optarg);
        return 2;
      }
      break;
    case 'p': {
      char *end;
      long v = strtol(optarg, &end, 10);
      if (*end || v <= 0 || v > 0x7fffffff) {
        hr_cli_error("history: --pid: '%s' is not a process id", optarg);
        return 2;
      }
      pid = (int)v;
      break;
    }
    case 'j':
      json = true;
      break;
    case 'g':
      svg = optarg;
      break;
    case 'd':
      if (hr_cli_set(cli, "db", optarg) != 0) return 2;
      break;
    case 'h':
      history_usage(stdout);
      return 0;
    default:
      history_usage(stderr);
      return 2;
    }
  }
  if (optind < argc) {
    hr_cli_error("history: unexpected argument '%s'", argv[optind]);
    return 2;
  }
  char path[512];
  const char *db = hr_options_get_str(cli->opts, HR_OPTION_db);
  if (*db && strcmp(db, "none") != 0)
    snprintf(path, sizeof path, "%s", db);
  else if (hr_history_default_path(path, sizeof path) != 0) {
    hr_cli_error("history: no database path: set --db, XDG_STATE_HOME or HOME");
    return 1;
  }
  if (access(path, R_OK) != 0) {
    hr_cli_error("history: no history at %s (run 'headroom watch' first, or give --db)", path);
    return 1;
  }
  char err[600];
  hr_history_t *h = NULL;
  if (hr_history_open(path, &h, err, sizeof err) != 0) {
    hr_cli_error("%s", err);
    return 1;
  }
  struct timespec now;
  clock_gettime(CLOCK_REALTIME, &now);
  double since = (double)now.tv_sec - since_s;
  hr_history_row_t *rows = NULL;
  hr_history_event_t *ev = NULL;
  size_t nr = 0, ne = 0;
  int status = 0;
  set_t scopes = {0}, procs = {0};
  if (hr_history_query(h, since, pid, &rows, &nr, &ev, &ne, err, sizeof err) != 0) {
    hr_cli_error("%s", err);
    status = 1;
    goto out;
  }
  for (size_t i = 0; i < nr; i++) {
    const hr_history_row_t *r = &rows[i];
    bool proc = strcmp(r->scope, "proc") == 0;
    char key[80];
    if (proc)
      snprintf(key, sizeof key, "%d %s", r->pid, r->name);
    else
      snprintf(key, sizeof key, "%s", r->scope);
    series_t *s = find_series(proc ? &procs : &scopes, key, proc ? r->pid : 0, r->name);
    if (!s || series_push(s, r->time, r->used_bytes, r->total_bytes) != 0) {
      hr_cli_error("history: out of memory");
      status = 1;
      goto out;
    }
  }
  if (json) print_json(rows, nr, ev, ne, since);
  if (svg) {
    if (write_svg(svg, &scopes, &procs, ev, ne, since) != 0) {
      hr_cli_error("history: cannot write %s", svg);
      status = 1;
      goto out;
    }
    if (!json) fprintf(stderr, "headroom: history: wrote %s\n", svg);
  }
  if (!json && !svg) print_text(cli, path, since, &scopes, &procs, ev, ne);
out:
  set_free(&scopes);
  set_free(&procs);
  hr_history_free_rows(rows, ev, ne);
  hr_history_close(h);
  return status;
}

const hr_cli_command_t hr_cmd_history = {
    "history", "show recorded samples and events; draw them as SVG", history_run, history_usage};
