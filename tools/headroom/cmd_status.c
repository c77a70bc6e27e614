/* headroom status: one snapshot as a table a person reads in two seconds
 * (host, cgroup, GPUs, then processes), or as one JSON object.
 *
 * Processes are the ones the probe selected for the snapshot, as for watch,
 * history and the exporter (hr_snapshot_t's selection): every process that
 * holds GPU memory (largest first), then the --top N largest by RSS among
 * the others, after --filter; kernel threads and processes holding nothing
 * are left out. The JSON's "processes" array is that list in that order.
 * The snapshot is taken without PSS. With --pss it is then read for the
 * chosen processes only: smaps_rollup walks a process's page tables, and for
 * one large inference process that costs more than the whole rest of the
 * snapshot, so it is not done by default. */
#include "cli.h"

#include <getopt.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

static void status_usage(FILE *f) {
  fprintf(f, "usage: headroom status [--json] [--top N] [--filter NAMES] [--pss]\n\n"
             "Shows host memory, the cgroup's limit and usage, each GPU, and the processes\n"
             "that hold GPU memory followed by the largest by resident memory.\n\n"
             "  --json          one JSON object (schema: docs/status-schema.json); sizes in\n"
             "                  bytes under keys ending in _bytes\n"
             "  --top N         processes shown besides those holding GPU memory: the N\n"
             "                  largest by resident memory after --filter (HEADROOM_TOP; 10)\n"
             "  --filter NAMES  comma-separated words; only processes whose name or command\n"
             "                  line contains one of them (HEADROOM_FILTER)\n"
             "  --pss           read each shown process's PSS from smaps_rollup (HEADROOM_PSS;\n"
             "                  costs milliseconds per large process)\n\n"
             "Exit status: 0 when the snapshot was taken (with or without a GPU), 1 when it\n"
             "could not be, 2 on a usage error.\n");
}

/* The snapshot with its selected processes as one JSON object. */
static int print_json(const hr_snapshot_t *s) {
  char *json = NULL;
  int rc = hr_snapshot_json_selected(s, &json);
  if (rc) return rc;
  puts(json);
  free(json);
  return 0;
}

/* Percent of `part` in `whole`, or -1 when either is not known. */
static double pct(uint64_t part, uint64_t whole) {
  if (part == HR_UNKNOWN || whole == HR_UNKNOWN || whole == HR_UNLIMITED || whole == 0) return -1;
  return 100.0 * (double)part / (double)whole;
}

/* Formats a size, "-" when unknown, "unlimited" when not set. */
static const char *size_or(char *buf, size_t n, uint64_t v) {
  if (v == HR_UNKNOWN) return snprintf(buf, n, "-"), buf;
  if (v == HR_UNLIMITED) return snprintf(buf, n, "unlimited"), buf;
  return hr_size_text(buf, n, v);
}

/* A percentage coloured by the warn and critical thresholds. */
static const char *level_pct(const hr_cli_t *cli, char *buf, size_t n, double p,
                             hr_option_id_t warn, hr_option_id_t crit) {
  char t[32];
  if (p < 0) return snprintf(buf, n, "-"), buf;
  snprintf(t, sizeof t, "%.0f%%", p);
  const char *color = p >= hr_options_get_double(cli->opts, crit)   ? "red"
                      : p >= hr_options_get_double(cli->opts, warn) ? "yellow"
                                                                    : "green";
  return hr_cli_paint(cli, buf, n, color, t);
}

static void print_host(const hr_cli_t *cli, const hr_snapshot_t *s) {
  const hr_host_mem_t *h = &s->host;
  char a[32], b[32], c[32], d[32], e[32], lab[32], p[64];
  uint64_t used = h->available_bytes != HR_UNKNOWN && h->available_bytes <= h->total_bytes
                      ? h->total_bytes - h->available_bytes
                      : HR_UNKNOWN;
  uint64_t swap_used = h->swap_total_bytes != HR_UNKNOWN && h->swap_free_bytes != HR_UNKNOWN &&
                               h->swap_free_bytes <= h->swap_total_bytes
                           ? h->swap_total_bytes - h->swap_free_bytes
                           : HR_UNKNOWN;
  printf("%s used %s of %s (%s)  available %s  swap %s of %s\n",
         hr_cli_paint(cli, lab, sizeof lab, "bold", "host    "), size_or(a, sizeof a, used),
         size_or(b, sizeof b, h->total_bytes),
         level_pct(cli, p, sizeof p, pct(used, h->total_bytes), HR_OPTION_ram_warn,
                   HR_OPTION_ram_critical),
         size_or(c, sizeof c, h->available_bytes), size_or(d, sizeof d, swap_used),
         size_or(e, sizeof e, h->swap_total_bytes));
}

static void print_cgroup(const hr_cli_t *cli, const hr_cgroup_mem_t *cg) {
  char a[32], b[32], lab[32], p[64], msg[256];
  hr_cli_paint(cli, lab, sizeof lab, "bold", "cgroup  ");
  if (cg->state != HR_PROBE_OK && cg->version == 0) {
    printf("%s %s\n", lab, hr_cli_paint(cli, msg, sizeof msg, "dim", cg->message));
    return;
  }
  printf("%s v%d %s  usage %s of %s", lab, cg->version, cg->path,
         size_or(a, sizeof a, cg->usage_bytes), size_or(b, sizeof b, cg->limit_bytes));
  double up = pct(cg->usage_bytes, cg->limit_bytes);
  if (up >= 0)
    printf(" (%s)", level_pct(cli, p, sizeof p, up, HR_OPTION_ram_warn, HR_OPTION_ram_critical));
  if (cg->oom_kill_events != HR_UNKNOWN) {
    char n[32];
    snprintf(n, sizeof n, "%" PRIu64, cg->oom_kill_events);
    printf("  oom kills %s",
           hr_cli_paint(cli, p, sizeof p, cg->oom_kill_events ? "red" : "green", n));
  }
  if (cg->has_pressure)
    printf("  pressure some %.2f full %.2f", cg->pressure_some.avg10, cg->pressure_full.avg10);
  if (cg->state != HR_PROBE_OK)
    printf("  %s", hr_cli_paint(cli, msg, sizeof msg, "yellow", cg->message));
  printf("\n");
}

static void print_gpus(const hr_cli_t *cli, const hr_snapshot_t *s) {
  char lab[32], msg[256];
  if (s->gpu_state != HR_PROBE_OK || s->n_gpus == 0) {
    printf("%s %s\n", hr_cli_paint(cli, lab, sizeof lab, "bold", "gpu     "),
           hr_cli_paint(cli, msg, sizeof msg, "dim",
                        s->gpu_state != HR_PROBE_OK ? s->gpu_message : "nvml: no GPUs"));
    return;
  }
  for (size_t i = 0; i < s->n_gpus; i++) {
    const hr_gpu_t *g = &s->gpus[i];
    char head[16], a[32], b[32], p[64];
    snprintf(head, sizeof head, "gpu %-4u", g->index);
    printf("%s %s", hr_cli_paint(cli, lab, sizeof lab, "bold", head), g->name);
    if (g->state != HR_PROBE_OK) {
      printf("  %s\n", hr_cli_paint(cli, msg, sizeof msg, "red", g->message));
      continue;
    }
    printf("  %s of %s (%s)", size_or(a, sizeof a, g->used_bytes),
           size_or(b, sizeof b, g->total_bytes),
           level_pct(cli, p, sizeof p, pct(g->used_bytes, g->total_bytes), HR_OPTION_vram_warn,
                     HR_OPTION_vram_critical));
    if (g->util_gpu >= 0) printf("  util %d%%", g->util_gpu);
    if (g->temperature_c >= 0) printf("  %d C", g->temperature_c);
    if (g->power_mw >= 0) printf("  %.0f W", g->power_mw / 1000.0);
    printf("\n");
  }
}

/* The process table; the PSS column only when PSS was read. */
static void print_procs(const hr_cli_t *cli, const hr_snapshot_t *snap, bool pss) {
  int width = 0;
  struct winsize ws;
  if (cli->tty && ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) width = ws.ws_col;
  char head[160], buf[256];
  snprintf(head, sizeof head, "%8s %9s %9s %9s%s %9s  %-15s %s", "PID", "GPU", "RSS", "ANON",
           pss ? "       PSS" : "", "SWAP", "NAME", "COMMAND");
  printf("\n%s\n", hr_cli_paint(cli, buf, sizeof buf, "bold", head));
  for (size_t i = 0; i < snap->n_selected; i++) {
    const hr_proc_t *p = &snap->procs[snap->selected[i]];
    char g[32], r[32], a[32], s[32] = "", w[32];
    if (p->gpu_bytes)
      hr_size_text(g, sizeof g, p->gpu_bytes);
    else
      snprintf(g, sizeof g, "-");
    if (pss) {
      char v[24];
      snprintf(s, sizeof s, " %9s", size_or(v, sizeof v, p->pss_bytes));
    }
    int col = printf("%8d %9s %9s %9s%s %9s  %-15.15s ", p->pid, g,
                     size_or(r, sizeof r, p->rss_bytes), size_or(a, sizeof a, p->rss_anon_bytes), s,
                     size_or(w, sizeof w, p->swap_bytes), p->name);
    const char *cmd = p->cmdline[0] ? p->cmdline : (p->kernel_thread ? "[kernel]" : "");
    int room = width > col ? width - col : (width ? 0 : (int)strlen(cmd));
    printf("%.*s\n", room, cmd);
  }
}

static int status_run(hr_cli_t *cli, int argc, char **argv) {
  static const struct option longopts[] = {
      {"json", no_argument, NULL, 'j'},         {"top", required_argument, NULL, 't'},
      {"filter", required_argument, NULL, 'f'}, {"pss", no_argument, NULL, 'p'},
      {"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0}};
  bool json = false;
  int c, status;
  while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
    switch (c) {
    case 'j':
      json = true;
      break;
    case 't':
      if ((status = hr_cli_set(cli, "top", optarg)) != 0) return status;
      break;
    case 'f':
      if ((status = hr_cli_set(cli, "filter", optarg)) != 0) return status;
      break;
    case 'p':
      if ((status = hr_cli_set(cli, "pss", "true")) != 0) return status;
      break;
    case 'h':
      return status_usage(stdout), 0;
    default:
      return status_usage(stderr), 2;
    }
  }
  if (optind < argc) {
    hr_cli_error("status: unexpected argument '%s'", argv[optind]);
    return 2;
  }
  char err[512] = "";
  hr_probe_options_t po =
      hr_cli_probe_options(cli, HR_PROBE_ALL & ~(unsigned)HR_PROBE_PSS, err, sizeof err);
  po.filter = hr_options_get_str(cli->opts, HR_OPTION_filter);
  po.top = (size_t)hr_options_get_int(cli->opts, HR_OPTION_top);
  hr_snapshot_t *s = NULL;
  int rc = hr_snapshot_take(&po, &s);
  if (rc) {
    hr_cli_error("status: snapshot failed: %s", err[0] ? err : hr_strerror(rc));
    return 1;
  }
  /* PSS stays unknown where it cannot be read (another user's process). */
  bool pss = hr_options_get_bool(cli->opts, HR_OPTION_pss);
  for (size_t i = 0; pss && i < s->n_selected; i++) {
    hr_proc_t *p = &s->procs[s->selected[i]];
    if (!p->kernel_thread && p->state != 'Z') hr_proc_read_pss(po.root, p->pid, &p->pss_bytes);
  }
  status = 0;
  if (json) {
    if ((rc = print_json(s)) != 0) {
      hr_cli_error("status: %s", hr_strerror(rc));
      status = 1;
    }
  } else {
    print_host(cli, s);
    print_cgroup(cli, &s->cgroup);
    print_gpus(cli, s);
    print_procs(cli, s, pss);
    /* NVML's pids are host pids: through a container's own /proc some are
     * not visible, and they are listed rather than dropped. */
    for (size_t i = 0; i < s->n_gpu_procs; i++) {
      const hr_gpu_proc_t *g = &s->gpu_procs[i];
      char b[32];
      if (!g->local_pid)
        printf("%8d %9s  (gpu %u; host pid not visible under %s)\n", g->pid,
               size_or(b, sizeof b, g->used_bytes), g->gpu, po.root);
    }
    if (s->n_procs_unreadable)
      printf("(%zu processes left out: malformed /proc files)\n", s->n_procs_unreadable);
  }
  if (fflush(stdout) != 0 && status == 0) {
    hr_cli_error("status: cannot write the output");
    status = 1;
  }
  hr_snapshot_free(s);
  return status;
}

const hr_cli_command_t hr_cmd_status = {"status", "memory of the host, cgroup, GPUs and processes",
                                        status_run, status_usage};
