/* headroom replay: replays allocation traces through the pool and shows what
 * each configuration reserves against what PyTorch reserved for the same
 * trace. Several --conf values replay the same trace side by side; --json
 * prints one object per trace, device and configuration; --svg draws live
 * and reserved memory over each trace, over seconds where the trace keeps
 * times and over the order of its events where it does not. */
#include "cli.h"

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

typedef struct replay_args {
  hr_cli_list_t confs;
  uint64_t capacity;
  const char *backend;
  bool json;
  const char *svg;
} replay_args_t;

static const hr_cli_opt_t replay_opts[] = {
    {"conf", HR_CLI_LIST, HR_CLI_AT(replay_args_t, confs), .meta = "CONF", .deflt = "default",
     .max = MAX_CONFS,
     .help = "'default' (headroom's default), 'pytorch' (PyTorch's policy with the settings the "
             "trace was recorded with), 'pytorch-expandable' (the same with "
             "expandable_segments:True: 2 MiB or 20 MiB pages mapped into a growing segment), or "
             "a PYTORCH_CUDA_ALLOC_CONF string; repeat to compare side by side"},
    {"capacity", HR_CLI_SIZE, HR_CLI_AT(replay_args_t, capacity), .meta = "BYTES", .min = 1,
     .max = 1125899906842624.0,
     .help = "device memory for the replay, K/M/G suffixes (default: PyTorch's recorded peak "
             "reserved of each device; 1 TiB for a trace without one, such as an RMM log)"},
    {"backend", HR_CLI_CHOICE, HR_CLI_AT(replay_args_t, backend), .meta = "KIND", .deflt = "sim",
     .choices = "sim|host", .help = "sim: address space only; host: real memory"},
    {"json", HR_CLI_FLAG, HR_CLI_AT(replay_args_t, json),
     .help = "one JSON object per line: trace, device, config, events, peak_live_bytes, "
             "peak_reserved_bytes, ratio, pytorch_peak_reserved_bytes, pytorch_peak_live_bytes, "
             "pytorch_ratio, ooms, device_calls, pytorch_ooms, capacity_bytes, ns_per_op_median, "
             "ns_per_op_p99, seconds, events_per_second, duration_seconds (the recorded window; "
             "null when the trace keeps no times)"},
    {"svg", HR_CLI_STRING, HR_CLI_AT(replay_args_t, svg), .meta = "FILE",
     .complete = HR_CLI_COMPLETE_FILE,
     .help = "chart of live and reserved memory over each trace, ours and PyTorch's, over "
             "seconds (or over events for a trace without times)"},
};

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
    char sz[32];
    printf("%-34.34s %3d %8" PRIu64 " %10s |", rows[i].trace, r0->device, r0->events,
           hr_size_text(sz, sizeof sz, r0->peak_live_bytes));
    if (r0->has_pytorch)
      printf(" %10s %6.3f %4" PRIu64, hr_size_text(sz, sizeof sz, r0->pytorch_peak_reserved_bytes),
             r0->pytorch_ratio, r0->pytorch_ooms);
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
      printf(" | %10s %s %4" PRIu64 " %9s", hr_size_text(sz, sizeof sz, r->peak_reserved_bytes),
             *col ? hr_cli_paint(cli, p, sizeof p, col, b) : b, r->ooms, b + 20);
    }
    printf("\n");
  }
}

/* ---- the chart ---------------------------------------------------------- */

static const char *conf_colors[] = {"#1f77b4", "#2ca02c", "#9467bd", "#17becf",
                                    "#8c564b", "#e377c2", "#bcbd22", "#7f7f7f"};

/* The points of one quantity, a point per used bin at its middle. Across
 * empty bins (a quiet stretch of a timed trace) the value holds until the
 * next event, so the line steps there instead of sloping. x and y hold
 * 2 * BINS points; returns how many were written. */
static size_t bin_points(const uint64_t *v, const bool *used, double total, double *x, double *y) {
  size_t n = 0;
  int prev = -1;
  for (int i = 0; i < BINS; i++) {
    if (!used[i]) continue;
    if (prev >= 0 && i > prev + 1) x[n] = total * i / BINS, y[n++] = (double)v[prev];
    x[n] = total * (i + 0.5) / BINS, y[n++] = (double)v[i];
    prev = i;
  }
  return n;
}

/* The series of one panel (a trace and device): live (shaded), each
 * configuration's reserved, and PyTorch's recorded reserved last (dashed
 * orange: it stays visible where ours lies on it). */
typedef struct panel_data {
  hr_chart_series_t series[MAX_CONFS + 2];
  char labels[MAX_CONFS][64];
  char title[256];
  double *pts; /* (MAX_CONFS + 2) * 4 * BINS doubles */
} panel_data_t;

static void fill_panel(panel_data_t *d, hr_chart_panel_t *p, const series_t *const *all,
                       const char *trace_name, const char *const *confs, int n_confs) {
  const series_t *s0 = all[0];
  bool timed = s0->duration_us > 0;
  double total = timed ? (double)s0->duration_us / 1e6 : s0->total ? (double)s0->total : 1;
  size_t ns = 0;
  double *x = d->pts;
#define ADD_(src, values, lab, colour, sty, wid)                                                   \
  do {                                                                                             \
    double *y = x + 2 * BINS;                                                                      \
    size_t n = bin_points((src)->values, (src)->used, total, x, y);                                \
    d->series[ns++] = (hr_chart_series_t){.label = (lab),                                          \
                                          .x = x,                                                  \
                                          .y = y,                                                  \
                                          .n = n,                                                  \
                                          .color = (colour),                                       \
                                          .style = (sty),                                          \
                                          .width = (wid)};                                         \
    x += 4 * BINS;                                                                                 \
  } while (0)
  ADD_(s0, live, "live", "#d9d9d9", HR_CHART_AREA, 0);
  for (int k = 0; k < n_confs; k++) {
    if (!all[k]) continue;
    snprintf(d->labels[k], sizeof d->labels[k], "headroom reserved, %.24s", confs[k]);
    ADD_(all[k], reserved, d->labels[k], conf_colors[k], HR_CHART_LINE, 1.6);
  }
  ADD_(s0, pytorch, "PyTorch reserved (recorded)", "#ff7f0e", HR_CHART_DASHED, 2);
#undef ADD_
  snprintf(d->title, sizeof d->title, "%s, device %d: live and reserved memory", trace_name,
           s0->device);
  *p = (hr_chart_panel_t){
      .title = d->title,
      .x_title = timed ? "seconds from the start of the recorded window"
                       : "events (allocations and frees) of the recorded window, in order: the "
                         "trace keeps no times",
      .y_title = "memory",
      .x_scale = HR_CHART_NUMBER,
      .y_scale = HR_CHART_BYTES,
      .x_min = 0,
      .x_max = total,
      .series = d->series,
      .n_series = ns,
  };
}

/* Writes one panel per trace and device through the chart writer. */
static int write_svg(const char *path, replay_ctx_t *c, char **trace_names,
                     const char *const *confs, int n_confs) {
  int rc = -1;
  size_t n_panels = 0;
  for (size_t i = 0; i < c->n_series; i++)
    if (c->series[i].conf == 0) n_panels++;
  panel_data_t *data = calloc(n_panels ? n_panels : 1, sizeof *data);
  hr_chart_panel_t *panels = calloc(n_panels ? n_panels : 1, sizeof *panels);
  char *svg = NULL;
  if (!data || !panels) goto out;
  size_t k = 0;
  for (size_t i = 0; i < c->n_series; i++) {
    const series_t *s0 = &c->series[i];
    if (s0->conf != 0) continue;
    const series_t *all[MAX_CONFS] = {0};
    for (size_t j = 0; j < c->n_series; j++)
      if (c->series[j].trace == s0->trace && c->series[j].device == s0->device)
        all[c->series[j].conf] = &c->series[j];
    if (!(data[k].pts = malloc((MAX_CONFS + 2) * 4 * BINS * sizeof(double)))) goto out;
    fill_panel(&data[k], &panels[k], all, trace_names[s0->trace], confs, n_confs);
    k++;
  }
  hr_chart_t chart = {.panels = panels,
                      .n_panels = n_panels,
                      .legend_below = true,
                      .width = 960,
                      .plot_height = 240};
  if (hr_chart_svg(&chart, &svg) == 0) rc = hr_cli_write_file(path, svg);
out:
  for (size_t i = 0; data && i < n_panels; i++) free(data[i].pts);
  free(data);
  free(panels);
  free(svg);
  return rc;
}

/* ---- the command -------------------------------------------------------- */

/* Replays trace t under each configuration; its devices become rows from
 * rows[*n_rows] on. Returns 0, or 1 when a replay failed (said on stderr). */
static int replay_trace(const replay_args_t *a, const char *trace, int t, replay_ctx_t *ctx,
                        hr_replay_opts_t *o, row_t *rows, size_t *n_rows) {
  size_t n_dev = 0;
  int status = 0;
  for (size_t c = 0; c < a->confs.n; c++) {
    hr_replay_result_t res[MAX_DEVICES];
    size_t n = 0;
    char err[512];
    ctx->trace = t, ctx->conf = (int)c, ctx->conf_name = a->confs.v[c];
    o->conf = a->confs.v[c];
    int rc = hr_replay_file(trace, o, res, MAX_DEVICES, &n, err, sizeof err);
    if (ctx->bar) fprintf(stderr, "\r%78s\r", "");
    if (rc) {
      hr_cli_error("replay: %s", err);
      status = 1;
      continue;
    }
    if (n > MAX_DEVICES) n = MAX_DEVICES;
    if (n > n_dev) n_dev = n;
    for (size_t d = 0; d < n; d++) {
      row_t *row = &rows[*n_rows + d];
      row->trace = ctx->trace_name;
      row->res[c] = res[d];
      row->have[c] = true;
      if (a->json) print_json(ctx->trace_name, a->confs.v[c], &res[d]);
    }
  }
  *n_rows += n_dev;
  return status;
}

/* The chart, when asked for. Returns 0 or 1. */
static int chart(const replay_args_t *a, replay_ctx_t *ctx, char **names) {
  if (ctx->oom) hr_cli_error("replay: out of memory for the chart; some series are missing");
  if (write_svg(a->svg, ctx, names, a->confs.v, (int)a->confs.n) != 0) {
    hr_cli_error("replay: cannot write %s", a->svg);
    return 1;
  }
  if (!a->json) printf("chart: %s\n", a->svg);
  return 0;
}

static int replay_run(hr_cli_t *cli, const void *args, int argc, char **argv) {
  const replay_args_t *a = args;
  int status = 0;
  row_t *rows = calloc((size_t)argc * MAX_DEVICES, sizeof *rows);
  char **names = calloc((size_t)argc, sizeof *names);
  replay_ctx_t ctx = {.bar = isatty(STDERR_FILENO) &&
                             !hr_options_get_bool(cli->opts, HR_OPTION_no_progress)};
  hr_replay_opts_t o = {
      .capacity = a->capacity, .backend = a->backend, .progress = progress, .progress_arg = &ctx};
  size_t n_rows = 0;
  if (!rows || !names) {
    hr_cli_error("out of memory");
    status = 1;
    goto out;
  }
  if (a->svg) o.sample = on_sample, o.sample_arg = &ctx;
  for (int t = 0; t < argc; t++) {
    names[t] = (char *)base_name(argv[t]);
    ctx.trace_name = names[t];
    status |= replay_trace(a, argv[t], t, &ctx, &o, rows, &n_rows);
  }
  if (!a->json && n_rows) print_table(cli, rows, n_rows, a->confs.v, (int)a->confs.n);
  if (a->svg) status |= chart(a, &ctx, names);
out:
  free(ctx.series);
  free(rows);
  free(names);
  return status;
}

HR_CLI_COMMAND(
    replay, "replay allocation traces through the pool", .operands = "TRACE...", .min_operands = 1,
    .max_operands = -1, .missing = "no trace given",
    .about = "Replays allocation traces (import PyTorch snapshots first with 'python3 -m "
             "headroom.trace import SNAPSHOT.pickle -o TRACE') through the pool and prints, per "
             "trace and device: events, peak live, peak reserved, their ratio beside PyTorch's "
             "recorded one, OOMs at the capacity, and the median and p99 time of a pool call.");
