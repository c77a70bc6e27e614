/* headroom replay: replays allocation traces through the pool and shows what
 * each configuration reserves against what PyTorch reserved for the same
 * trace. Several --conf values replay the same trace side by side; --json
 * prints one object per trace, device and configuration; --svg draws live
 * and reserved memory over each trace, over seconds where the trace keeps
 * times and over the order of its events where it does not. */
#include "cli.h"

#include <getopt.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_CONFS   8
#define MAX_DEVICES 16
#define BINS        600

/* One trace and device under one configuration, downsampled for the chart:
 * each bin keeps the maximum of each quantity over its events. The bins cut
 * the section's duration when it has times (duration_us > 0), else its
 * `total` events. */
typedef struct series {
  int trace, device, conf;
  uint64_t total, duration_us;
  uint64_t live[BINS], reserved[BINS], pytorch[BINS];
  bool used[BINS];
} series_t;

typedef struct replay_ctx {
  const char *trace_name;
  const char *conf_name;
  int trace, conf;
  bool bar;
  series_t *series;
  size_t n_series, cap_series;
  bool oom; /* out of memory for the chart: drawn without it */
} replay_ctx_t;

static void replay_usage(FILE *f) {
  fprintf(f, "usage: headroom replay TRACE... [--conf CONF]... [--capacity BYTES]\n"
             "                       [--backend sim|host] [--json] [--svg FILE]\n\n"
             "Replays allocation traces (import PyTorch snapshots first with\n"
             "'python3 -m headroom.trace import SNAPSHOT.pickle -o TRACE') through the pool\n"
             "and prints, per trace and device: events, peak live, peak reserved, their\n"
             "ratio beside PyTorch's recorded one, OOMs at the capacity, and the median and\n"
             "p99 time of a pool call.\n\n"
             "  --conf CONF       'default' (headroom's default), 'pytorch' (PyTorch's policy\n"
             "                    with the settings the trace was recorded with), or a\n"
             "                    PYTORCH_CUDA_ALLOC_CONF string; repeat to compare side by\n"
             "                    side (default: --conf default)\n"
             "  --capacity BYTES  device memory for the replay, K/M/G suffixes (default:\n"
             "                    PyTorch's recorded peak reserved of each device; 1 TiB\n"
             "                    for a trace without one, such as an RMM log)\n"
             "  --backend KIND    sim (address space only; default) or host (real memory)\n"
             "  --json            one JSON object per line: trace, device, config, events,\n"
             "                    peak_live_bytes, peak_reserved_bytes, ratio,\n"
             "                    pytorch_peak_reserved_bytes, pytorch_peak_live_bytes,\n"
             "                    pytorch_ratio, ooms, device_calls,\n"
             "                    pytorch_ooms, capacity_bytes, ns_per_op_median,\n"
             "                    ns_per_op_p99, seconds, events_per_second,\n"
             "                    duration_seconds (the recorded window; null when the\n"
             "                    trace keeps no times)\n"
             "  --svg FILE        chart of live and reserved GiB over each trace, ours and\n"
             "                    PyTorch's, over seconds (or over events for a trace\n"
             "                    without times)\n");
}

static const char *base_name(const char *path) {
  const char *s = strrchr(path, '/');
  return s ? s + 1 : path;
}

static void progress(uint64_t done, uint64_t total, void *arg) {
  replay_ctx_t *c = arg;
  if (!c->bar || total == 0) return;
  int width = 30, fill = (int)((double)done / (double)total * width);
  char bar[64];
  for (int i = 0; i < width; i++) bar[i] = i < fill ? '#' : '.';
  bar[width] = '\0';
  fprintf(stderr, "\r%-36.36s %-10.10s [%s] %3d%%", c->trace_name, c->conf_name, bar,
          (int)(100.0 * (double)done / (double)total));
  fflush(stderr);
}

static series_t *series_for(replay_ctx_t *c, int device, uint64_t total, uint64_t duration_us) {
  for (size_t i = c->n_series; i-- > 0;) {
    series_t *s = &c->series[i];
    if (s->trace == c->trace && s->device == device && s->conf == c->conf) return s;
  }
  if (c->n_series == c->cap_series) {
    size_t cap = c->cap_series ? 2 * c->cap_series : 8;
    series_t *n = realloc(c->series, cap * sizeof *n);
    if (!n) return NULL;
    c->series = n, c->cap_series = cap;
  }
  series_t *s = &c->series[c->n_series++];
  memset(s, 0, sizeof *s);
  s->trace = c->trace, s->device = device, s->conf = c->conf, s->total = total;
  s->duration_us = duration_us;
  return s;
}

static void on_sample(int device, const hr_replay_point_t *pt, void *arg) {
  replay_ctx_t *c = arg;
  uint64_t duration = pt->has_times ? pt->duration_us : 0;
  series_t *s = series_for(c, device, pt->total, duration);
  if (!s) {
    c->oom = true;
    return;
  }
  uint64_t b;
  if (duration) /* time_us <= duration_us: the reader checks it */
    b = (uint64_t)((double)pt->time_us / (double)duration * BINS);
  else
    b = pt->total ? (pt->index ? pt->index - 1 : 0) * BINS / pt->total : 0;
  if (b >= BINS) b = BINS - 1;
#define KEEP_MAX_(field, v)                                                                        \
  if (!s->used[b] || (v) > s->field[b]) s->field[b] = (v);
  KEEP_MAX_(live, pt->live)
  KEEP_MAX_(reserved, pt->reserved)
  KEEP_MAX_(pytorch, pt->pytorch_reserved)
#undef KEEP_MAX_
  s->used[b] = true;
}

/* ---- output ------------------------------------------------------------- */

typedef struct row {
  const char *trace;
  hr_replay_result_t res[MAX_CONFS]; /* by configuration */
  bool have[MAX_CONFS];
} row_t;

static double gib(uint64_t b) {
  return (double)b / (double)(1ull << 30);
}

static void print_json(const char *trace, const char *conf, const hr_replay_result_t *r) {
  printf("{\"trace\": ");
  hr_cli_json_str(stdout, trace);
  printf(", \"device\": %d, \"config\": ", r->device);
  hr_cli_json_str(stdout, conf);
  printf(", \"events\": %" PRIu64 ", \"peak_live_bytes\": %" PRIu64
         ", \"peak_reserved_bytes\": %" PRIu64 ", \"ratio\": %.6f",
         r->events, r->peak_live_bytes, r->peak_reserved_bytes, r->ratio);
  if (r->has_pytorch)
    printf(", \"pytorch_peak_reserved_bytes\": %" PRIu64 ", \"pytorch_peak_live_bytes\": %" PRIu64
           ", \"pytorch_ratio\": %.6f"
           ", \"pytorch_ooms\": %" PRIu64,
           r->pytorch_peak_reserved_bytes, r->pytorch_peak_live_bytes, r->pytorch_ratio,
           r->pytorch_ooms);
  else
    printf(", \"pytorch_peak_reserved_bytes\": null, \"pytorch_ratio\": null"
           ", \"pytorch_ooms\": null");
  printf(", \"ooms\": %" PRIu64 ", \"device_calls\": %" PRIu64 ", \"capacity_bytes\": %" PRIu64
         ", \"ns_per_op_median\": %.1f, \"ns_per_op_p99\": %.1f, \"seconds\": %.6f"
         ", \"events_per_second\": %.0f",
         r->ooms, r->device_calls, r->capacity, r->ns_per_op_median, r->ns_per_op_p99, r->seconds,
         r->seconds > 0 ? (double)r->events / r->seconds : 0);
  if (r->has_times)
    printf(", \"duration_seconds\": %.6f}\n", r->duration_seconds);
  else
    printf(", \"duration_seconds\": null}\n");
}

static void print_table(hr_cli_t *cli, row_t *rows, size_t n_rows, const char *const *confs,
                        int n_confs) {
  char b[64], p[96];
  printf("%-34s %3s %8s %10s | %-22s", "", "", "", "", "PyTorch (recorded)");
  for (int c = 0; c < n_confs; c++) printf(" | %-32.32s", confs[c]);
  printf("\n%-34s %3s %8s %10s | %10s %6s %4s", "trace", "dev", "events", "peak live", "reserved",
         "ratio", "OOMs");
  for (int c = 0; c < n_confs; c++)
    printf(" | %10s %6s %4s %9s", "reserved", "ratio", "OOMs", "ns p50/99");
  printf("\n");
  for (size_t i = 0; i < n_rows; i++) {
    const hr_replay_result_t *r0 = NULL;
    for (int c = 0; c < n_confs && !r0; c++)
      if (rows[i].have[c]) r0 = &rows[i].res[c];
    if (!r0) continue;
    printf("%-34.34s %3d %8" PRIu64 " %6.2f GiB |", rows[i].trace, r0->device, r0->events,
           gib(r0->peak_live_bytes));
    if (r0->has_pytorch)
      printf(" %6.2f GiB %6.3f %4" PRIu64, gib(r0->pytorch_peak_reserved_bytes), r0->pytorch_ratio,
             r0->pytorch_ooms);
    else
      printf(" %10s %6s %4s", "-", "-", "-");
    for (int c = 0; c < n_confs; c++) {
      const hr_replay_result_t *r = &rows[i].res[c];
      if (!rows[i].have[c]) {
        printf(" | %32s", "(failed)");
        continue;
      }
      snprintf(b, sizeof b, "%6.3f", r->ratio);
      /* Green where we reserve no more than PyTorch did, red where more. */
      const char *col = !r->has_pytorch ? "" : r->ratio <= r->pytorch_ratio ? "green" : "red";
      snprintf(b + 20, sizeof b - 20, "%.0f/%.0f", r->ns_per_op_median, r->ns_per_op_p99);
      printf(" | %6.2f GiB %s %4" PRIu64 " %9s", gib(r->peak_reserved_bytes),
             *col ? hr_cli_paint(cli, p, sizeof p, col, b) : b, r->ooms, b + 20);
    }
    printf("\n");
  }
}

/* ---- the chart ---------------------------------------------------------- */

/* A step of 1, 2, 2.5 or 5 times a power of ten that cuts `range` into at
 * most `max` parts. */
static double nice_step(double range, int max) {
  static const double m[] = {1, 2, 2.5, 5};
  for (double p = 1e-3; p < 1e18; p *= 10)
    for (size_t i = 0; i < sizeof m / sizeof m[0]; i++)
      if (range / (m[i] * p) <= max) return m[i] * p;
  return range;
}

/* Writes the points of one quantity, a point per used bin. Across empty bins
 * (a quiet stretch of a timed trace) the value holds until the next event,
 * so the line steps there instead of sloping. */
static void svg_points(FILE *f, const uint64_t *v, const bool *used, double x0, double w, double y0,
                       double h, double ymax) {
  int prev = -1;
  for (int i = 0; i < BINS; i++) {
    if (!used[i]) continue;
    if (prev >= 0 && i > prev + 1)
      fprintf(f, "%.1f,%.1f ", x0 + w * i / BINS, y0 + h - h * gib(v[prev]) / ymax);
    fprintf(f, "%.1f,%.1f ", x0 + w * (i + 0.5) / BINS, y0 + h - h * gib(v[i]) / ymax);
    prev = i;
  }
}

static void svg_polyline(FILE *f, const uint64_t *v, const bool *used, double x0, double w,
                         double y0, double h, double ymax, const char *style) {
  fprintf(f, "<polyline fill=\"none\" %s points=\"", style);
  svg_points(f, v, used, x0, w, y0, h, ymax);
  fprintf(f, "\"/>\n");
}

static const char *conf_colors[] = {"#1f77b4", "#2ca02c", "#9467bd", "#17becf",
                                    "#8c564b", "#e377c2", "#bcbd22", "#7f7f7f"};

/* Writes one panel per trace and device: live (shaded), PyTorch's recorded
 * reserved (dashed orange) and each configuration's reserved. */
static int write_svg(const char *path, replay_ctx_t *c, char **trace_names, const char **confs,
                     int n_confs) {
  const double W = 960, PH = 360, ML = 70, MR = 20, MT = 40, MB = 80;
  size_t n_panels = 0;
  for (size_t i = 0; i < c->n_series; i++)
    if (c->series[i].conf == 0) n_panels++;
  FILE *f = fopen(path, "w");
  if (!f) return -1;
  fprintf(f,
          "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
          "font-family=\"sans-serif\" font-size=\"12\">\n"
          "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n",
          W, PH * (double)n_panels);
  size_t panel = 0;
  for (size_t i = 0; i < c->n_series; i++) {
    const series_t *s0 = &c->series[i];
    if (s0->conf != 0) continue;
    const series_t *all[MAX_CONFS] = {0};
    for (size_t j = 0; j < c->n_series; j++)
      if (c->series[j].trace == s0->trace && c->series[j].device == s0->device)
        all[c->series[j].conf] = &c->series[j];
    double ymax = 0;
    for (int k = 0; k < n_confs; k++)
      for (int b = 0; all[k] && b < BINS; b++) {
        if (!all[k]->used[b]) continue;
        double m = gib(all[k]->reserved[b]);
        if (gib(all[k]->pytorch[b]) > m) m = gib(all[k]->pytorch[b]);
        if (gib(all[k]->live[b]) > m) m = gib(all[k]->live[b]);
        if (m > ymax) ymax = m;
      }
    double step = nice_step(ymax > 0 ? ymax : 1, 8);
    ymax = step * (double)((int)(ymax / step) + 1);
    double x0 = ML, y0 = PH * (double)panel + MT, w = W - ML - MR, h = PH - MT - MB;
    fprintf(f,
            "<text x=\"%.0f\" y=\"%.0f\" font-size=\"14\" font-weight=\"bold\">%s, device %d: "
            "live and reserved memory</text>\n",
            x0, y0 - 16, trace_names[s0->trace], s0->device);
    for (double y = 0; y <= ymax + step / 2; y += step) {
      double py = y0 + h - h * y / ymax;
      fprintf(f, "<line x1=\"%.0f\" x2=\"%.0f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>\n", x0,
              x0 + w, py, py);
      fprintf(f, "<text x=\"%.0f\" y=\"%.1f\" text-anchor=\"end\">%g</text>\n", x0 - 6, py + 4, y);
    }
    /* The x axis: seconds when the trace keeps times, else the events' order. */
    bool timed = s0->duration_us > 0;
    double total = timed ? (double)s0->duration_us / 1e6 : s0->total ? (double)s0->total : 1;
    double xstep = nice_step(total, 8);
    for (int k = 0; (double)k * xstep <= total * (1 + 1e-9); k++) {
      double t = (double)k * xstep, px = x0 + w * t / total;
      fprintf(f,
              "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.0f\" y2=\"%.0f\" stroke=\"#888\"/>"
              "<text x=\"%.1f\" y=\"%.0f\" text-anchor=\"middle\">%g</text>\n",
              px, px, y0 + h, y0 + h + 4, px, y0 + h + 16, t);
    }
    fprintf(f, "<text x=\"%.0f\" y=\"%.0f\" text-anchor=\"middle\">%s</text>\n", x0 + w / 2,
            y0 + h + 36,
            timed ? "seconds from the start of the recorded window"
                  : "events (allocations and frees) of the recorded window, in order: the trace "
                    "keeps no times");
    fprintf(f,
            "<text transform=\"translate(%.0f,%.0f) rotate(-90)\" "
            "text-anchor=\"middle\">GiB</text>\n"
            "<rect x=\"%.0f\" y=\"%.0f\" width=\"%.0f\" height=\"%.0f\" fill=\"none\" "
            "stroke=\"#888\"/>\n",
            x0 - 48, y0 + h / 2, x0, y0, w, h);
    /* Live bytes as a shaded area under their line. */
    fprintf(f, "<polygon fill=\"#d9d9d9\" points=\"");
    svg_points(f, s0->live, s0->used, x0, w, y0, h, ymax);
    int first = -1, last = -1;
    for (int b = 0; b < BINS; b++) {
      if (!s0->used[b]) continue;
      if (first < 0) first = b;
      last = b;
    }
    if (first >= 0)
      fprintf(f, "%.1f,%.1f %.1f,%.1f", x0 + w * (last + 0.5) / BINS, y0 + h,
              x0 + w * (first + 0.5) / BINS, y0 + h);
    fprintf(f, "\"/>\n");
    for (int k = 0; k < n_confs; k++) {
      if (!all[k]) continue;
      char style[96];
      snprintf(style, sizeof style, "stroke=\"%s\" stroke-width=\"1.6\"", conf_colors[k]);
      svg_polyline(f, all[k]->reserved, all[k]->used, x0, w, y0, h, ymax, style);
    }
    /* PyTorch's line last: dashed, it stays visible where ours lies on it. */
    svg_polyline(f, s0->pytorch, s0->used, x0, w, y0, h, ymax,
                 "stroke=\"#ff7f0e\" stroke-width=\"2\" stroke-dasharray=\"6,4\"");
    /* The legend, in one row under the axis title, where it hides no data. */
    double lx = x0, ly = y0 + h + 62;
    fprintf(f,
            "<rect x=\"%.0f\" y=\"%.0f\" width=\"24\" height=\"10\" fill=\"#d9d9d9\"/>"
            "<text x=\"%.0f\" y=\"%.0f\">live</text>\n",
            lx, ly - 9, lx + 30, ly);
    lx += 80;
    fprintf(f,
            "<line x1=\"%.0f\" x2=\"%.0f\" y1=\"%.0f\" y2=\"%.0f\" stroke=\"#ff7f0e\" "
            "stroke-width=\"2\" stroke-dasharray=\"6,4\"/>"
            "<text x=\"%.0f\" y=\"%.0f\">PyTorch reserved (recorded)</text>\n",
            lx, lx + 24, ly - 4, ly - 4, lx + 30, ly);
    lx += 210;
    for (int k = 0; k < n_confs; k++) {
      fprintf(f,
              "<line x1=\"%.0f\" x2=\"%.0f\" y1=\"%.0f\" y2=\"%.0f\" stroke=\"%s\" "
              "stroke-width=\"2\"/><text x=\"%.0f\" y=\"%.0f\">headroom reserved, ",
              lx, lx + 24, ly - 4, ly - 4, conf_colors[k], lx + 30, ly);
      size_t len = 0;
      for (const char *q = confs[k]; *q && len < 24; q++, len++) {
        if (*q == '<')
          fputs("&lt;", f);
        else if (*q == '&')
          fputs("&amp;", f);
        else if (*q == '>')
          fputs("&gt;", f);
        else
          fputc(*q, f);
      }
      fprintf(f, "</text>\n");
      lx += 170 + 7.0 * (double)len;
    }
    panel++;
  }
  fprintf(f, "</svg>\n");
  return fclose(f) == 0 ? 0 : -1;
}

/* ---- the command -------------------------------------------------------- */

static int replay_run(hr_cli_t *cli, int argc, char **argv) {
  static const struct option longopts[] = {{"conf", required_argument, NULL, 'c'},
                                           {"capacity", required_argument, NULL, 'C'},
                                           {"backend", required_argument, NULL, 'b'},
                                           {"json", no_argument, NULL, 'j'},
                                           {"svg", required_argument, NULL, 's'},
                                           {"help", no_argument, NULL, 'h'},
                                           {NULL, 0, NULL, 0}};
  const char *confs[MAX_CONFS];
  int n_confs = 0, status = 0, opt;
  bool json = false;
  const char *svg = NULL;
  hr_replay_opts_t o = {0};
  while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
    switch (opt) {
    case 'c':
      if (n_confs == MAX_CONFS) {
        hr_cli_error("replay: at most %d --conf values", MAX_CONFS);
        return 2;
      }
      confs[n_confs++] = optarg;
      break;
    case 'C':
      if (hr_parse_size(optarg, &o.capacity) != 0 || o.capacity == 0) {
        hr_cli_error("replay: --capacity '%s' is not a size (bytes, or with K/M/G/T)", optarg);
        return 2;
      }
      break;
    case 'b':
      if (strcmp(optarg, "sim") != 0 && strcmp(optarg, "host") != 0) {
        hr_cli_error("replay: --backend must be sim or host, not '%s'", optarg);
        return 2;
      }
      o.backend = optarg;
      break;
    case 'j':
      json = true;
      break;
    case 's':
      svg = optarg;
      break;
    case 'h':
      replay_usage(stdout);
      return 0;
    default:
      replay_usage(stderr);
      return 2;
    }
  }
  if (optind >= argc) {
    hr_cli_error("replay: no trace given (see 'headroom replay --help')");
    return 2;
  }
  if (n_confs == 0) confs[n_confs++] = "default";
  int n_traces = argc - optind;
  char **traces = argv + optind;
  row_t *rows = calloc((size_t)n_traces * MAX_DEVICES, sizeof *rows);
  char **names = calloc((size_t)n_traces, sizeof *names);
  replay_ctx_t ctx = {.bar = isatty(STDERR_FILENO) &&
                             !hr_options_get_bool(cli->opts, HR_OPTION_no_progress)};
  size_t n_rows = 0;
  if (!rows || !names) {
    hr_cli_error("out of memory");
    status = 1;
    goto out;
  }
  o.progress = progress, o.progress_arg = &ctx;
  if (svg) o.sample = on_sample, o.sample_arg = &ctx;
  for (int t = 0; t < n_traces; t++) {
    names[t] = (char *)base_name(traces[t]);
    size_t first_row = n_rows, n_dev = 0;
    for (int c = 0; c < n_confs; c++) {
      hr_replay_result_t res[MAX_DEVICES];
      size_t n = 0;
      char err[512];
      ctx.trace = t, ctx.conf = c, ctx.trace_name = names[t], ctx.conf_name = confs[c];
      o.conf = confs[c];
      int rc = hr_replay_file(traces[t], &o, res, MAX_DEVICES, &n, err, sizeof err);
      if (ctx.bar) fprintf(stderr, "\r%78s\r", "");
      if (rc) {
        hr_cli_error("replay: %s", err);
        status = 1;
        continue;
      }
      if (n > MAX_DEVICES) n = MAX_DEVICES;
      if (n > n_dev) n_dev = n;
      for (size_t d = 0; d < n; d++) {
        row_t *row = &rows[first_row + d];
        row->trace = names[t];
        row->res[c] = res[d];
        row->have[c] = true;
        if (json) print_json(names[t], confs[c], &res[d]);
      }
    }
    n_rows += n_dev;
  }
  if (!json && n_rows) print_table(cli, rows, n_rows, confs, n_confs);
  if (svg) {
    if (ctx.oom) hr_cli_error("replay: out of memory for the chart; some series are missing");
    if (write_svg(svg, &ctx, names, confs, n_confs) != 0) {
      hr_cli_error("replay: cannot write %s", svg);
      status = 1;
    } else if (!json) {
      printf("chart: %s\n", svg);
    }
  }
out:
  free(ctx.series);
  free(rows);
  free(names);
  return status;
}

const hr_cli_command_t hr_cmd_replay = {"replay", "replay allocation traces through the pool",
                                        replay_run, replay_usage};
