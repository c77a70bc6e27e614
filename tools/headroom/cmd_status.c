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

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

typedef struct status_args {
  bool json;
} status_args_t;

static const hr_cli_opt_t status_opts[] = {
    {"json", HR_CLI_FLAG, HR_CLI_AT(status_args_t, json),
     .help = "one JSON object (schema: docs/status-schema.json); sizes in bytes under keys "
             "ending in _bytes"},
    HR_CLI_OPTION(top, "N"),
    HR_CLI_OPTION(filter, "NAMES"),
    HR_CLI_OPTION(pss, NULL),
};

/* The snapshot with its selected processes as one JSON object. */
static int print_json(const hr_snapshot_t *s) {
  char *json = NULL;
  int rc = hr_snapshot_json_selected(s, &json);
  if (rc) return rc;
  puts(json);
  free(json);
  return 0;
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
         hr_cli_paint(cli, lab, sizeof lab, "bold", "host    "), hr_cli_size(a, sizeof a, used),
         hr_cli_size(b, sizeof b, h->total_bytes),
         level_pct(cli, p, sizeof p, hr_cli_pct(used, h->total_bytes), HR_OPTION_ram_warn,
                   HR_OPTION_ram_critical),
         hr_cli_size(c, sizeof c, h->available_bytes), hr_cli_size(d, sizeof d, swap_used),
         hr_cli_size(e, sizeof e, h->swap_total_bytes));
}

static void print_cgroup(const hr_cli_t *cli, const hr_cgroup_mem_t *cg) {
  char a[32], b[32], lab[32], p[64], msg[256];
  hr_cli_paint(cli, lab, sizeof lab, "bold", "cgroup  ");
  if (cg->state != HR_PROBE_OK && cg->version == 0) {
    printf("%s %s\n", lab, hr_cli_paint(cli, msg, sizeof msg, "dim", cg->message));
    return;
  }
  printf("%s v%d %s  usage %s of %s", lab, cg->version, cg->path,
         hr_cli_size(a, sizeof a, cg->usage_bytes), hr_cli_size(b, sizeof b, cg->limit_bytes));
  double up = hr_cli_pct(cg->usage_bytes, cg->limit_bytes);
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
    printf("  %s of %s (%s)", hr_cli_size(a, sizeof a, g->used_bytes),
           hr_cli_size(b, sizeof b, g->total_bytes),
           level_pct(cli, p, sizeof p, hr_cli_pct(g->used_bytes, g->total_bytes),
                     HR_OPTION_vram_warn, HR_OPTION_vram_critical));
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
      snprintf(s, sizeof s, " %9s", hr_cli_size(v, sizeof v, p->pss_bytes));
    }
    int col =
        printf("%8d %9s %9s %9s%s %9s  %-15.15s ", p->pid, g,
               hr_cli_size(r, sizeof r, p->rss_bytes), hr_cli_size(a, sizeof a, p->rss_anon_bytes),
               s, hr_cli_size(w, sizeof w, p->swap_bytes), p->name);
    const char *cmd = p->cmdline[0] ? p->cmdline : (p->kernel_thread ? "[kernel]" : "");
    int room = width > col ? width - col : (width ? 0 : (int)strlen(cmd));
    printf("%.*s\n", room, cmd);
  }
}

/* The table a person reads: host, cgroup, GPUs, processes, and the GPU
 * processes whose pids this /proc does not show. */
static void print_table(const hr_cli_t *cli, const hr_snapshot_t *s, bool pss, const char *root) {
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
             hr_cli_size(b, sizeof b, g->used_bytes), g->gpu, root);
  }
  if (s->n_procs_unreadable)
    printf("(%zu processes left out: malformed /proc files)\n", s->n_procs_unreadable);
}

static int status_run(hr_cli_t *cli, const void *args, int argc, char **argv) {
  const status_args_t *a = args;
  char err[512] = "";
  (void)argc, (void)argv;
  /* Every process ranked by its statm; the rest read for the rows shown. */
  hr_probe_options_t po = hr_cli_probe_options(
      cli, (HR_PROBE_ALL & ~(unsigned)HR_PROBE_PSS) | HR_PROBE_BRIEF, err, sizeof err);
  po.filter = hr_options_get_str(cli->opts, HR_OPTION_filter);
  po.top = (size_t)hr_options_get_int(cli->opts, HR_OPTION_top);
  hr_snapshot_t *s = NULL;
  int rc = hr_snapshot_take(&po, &s), status = 0;
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
  if (a->json && (rc = print_json(s)) != 0) {
    hr_cli_error("status: %s", hr_strerror(rc));
    status = 1;
  } else if (!a->json) {
    print_table(cli, s, pss, po.root);
  }
  if (fflush(stdout) != 0 && status == 0) {
    hr_cli_error("status: cannot write the output");
    status = 1;
  }
  hr_snapshot_free(s);
  return status;
}

HR_CLI_COMMAND(
    status, "memory of the host, cgroup, GPUs and processes",
    .about = "Shows host memory, the cgroup's limit and usage, each GPU, and the processes that "
             "hold GPU memory followed by the --top N largest by resident memory, after "
             "--filter. --pss reads each shown process's PSS from smaps_rollup, which costs "
             "milliseconds per large process.",
    .notes = "Exit status: 0 when the snapshot was taken (with or without a GPU), 1 when it "
             "could not be, 2 on a usage error.");
