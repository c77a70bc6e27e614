/* Benchmark of `headroom status`: its wall time on this machine, and the
 * time to parse a 1,000-process fixture tree, side by side with
 * `ps -eo pid,rss,comm` run in the same loop, so the ratio is measured under
 * the same load. Medians (and the 90th percentile) of repeated runs.
 *
 * usage: status_bench HEADROOM_CLI FIXTURE_DIR OUT.md [ROUNDS]
 * FIXTURE_DIR is created (1,000 processes with stat, status, cmdline, cgroup
 * and smaps_rollup, plus meminfo and a cgroup v2 tree); it belongs under
 * build/, never in the source tree. */
#include <headroom/headroom.h>

#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

#define N_FIXTURE_PROCS 1000

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static int write_file(const char *dir, const char *name, const char *text, size_t len) {
  char path[4096];
  int w = snprintf(path, sizeof path, "%s/%s", dir, name);
  if (w < 0 || (size_t)w >= sizeof path) return -1;
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) return -1;
  ssize_t n = write(fd, text, len);
  close(fd);
  return n == (ssize_t)len ? 0 : -1;
}

static int mkdirs(const char *path) {
  char p[4096];
  snprintf(p, sizeof p, "%s", path);
  for (char *s = p + 1; *s; s++) {
    if (*s != '/') continue;
    *s = '\0';
    if (mkdir(p, 0755) && errno != EEXIST) return -1;
    *s = '/';
  }
  return mkdir(p, 0755) && errno != EEXIST ? -1 : 0;
}

/* Builds the fixture: what a busy inference host's /proc looks like. */
static int make_fixture(const char *root) {
  char dir[4096], buf[4096];
  snprintf(dir, sizeof dir, "%s/proc/self", root);
  if (mkdirs(dir)) return -1;
  snprintf(dir, sizeof dir, "%s/proc", root);
  const char *meminfo = "MemTotal:       65536000 kB\nMemFree:        30000000 kB\n"
                        "MemAvailable:   50000000 kB\nBuffers:          100000 kB\n"
                        "Cached:         18000000 kB\nSwapTotal:       8000000 kB\n"
                        "SwapFree:        8000000 kB\nShmem:            500000 kB\n";
  if (write_file(dir, "meminfo", meminfo, strlen(meminfo))) return -1;
  snprintf(dir, sizeof dir, "%s/proc/self", root);
  const char *cg = "0::/system.slice/inference.service\n";
  const char *mi = "30 24 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 "
                   "cgroup2 rw,nsdelegate\n";
  if (write_file(dir, "cgroup", cg, strlen(cg)) || write_file(dir, "mountinfo", mi, strlen(mi)))
    return -1;
  snprintf(dir, sizeof dir, "%s/sys/fs/cgroup/system.slice/inference.service", root);
  if (mkdirs(dir)) return -1;
  const char *files[][2] = {
      {"memory.max", "34359738368\n"},
      {"memory.high", "max\n"},
      {"memory.current", "12884901888\n"},
      {"memory.stat", "anon 10737418240\nfile 2147483648\ninactive_file 1073741824\nshmem 0\n"},
      {"memory.events", "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n"},
      {"memory.pressure", "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"
                          "full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"}};
  for (size_t i = 0; i < sizeof files / sizeof files[0]; i++)
    if (write_file(dir, files[i][0], files[i][1], strlen(files[i][1]))) return -1;
  for (int i = 0; i < N_FIXTURE_PROCS; i++) {
    int pid = 1000 + i * 7;
    unsigned rss = 4096 + (unsigned)(i * 977) % 4000000;
    snprintf(dir, sizeof dir, "%s/proc/%d", root, pid);
    if (mkdirs(dir)) return -1;
    int n = snprintf(buf, sizeof buf,
                     "%d (worker-%d) S 1 %d %d 0 -1 4194560 1000 0 0 0 50 30 0 0 20 0 4 0 %d "
                     "1073741824 %u 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0\n",
                     pid, i, pid, pid, 100000 + i, rss / 4);
    if (write_file(dir, "stat", buf, (size_t)n)) return -1;
    n = snprintf(buf, sizeof buf,
                 "Name:\tworker-%d\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t%d\nNgid:\t0\n"
                 "Pid:\t%d\nPPid:\t1\nTracerPid:\t0\nUid:\t1000\t1000\t1000\t1000\n"
                 "Gid:\t1000\t1000\t1000\t1000\nFDSize:\t64\nGroups:\t1000\nNStgid:\t%d\n"
                 "NSpid:\t%d\nNSpgid:\t%d\nNSsid:\t%d\nVmPeak:\t 2097152 kB\nVmSize:\t 1048576 kB\n"
                 "VmLck:\t       0 kB\nVmPin:\t       0 kB\nVmHWM:\t %8u kB\nVmRSS:\t %8u kB\n"
                 "RssAnon:\t %8u kB\nRssFile:\t %8u kB\nRssShmem:\t       0 kB\n"
                 "VmData:\t  500000 kB\nVmStk:\t     132 kB\nVmExe:\t    2000 kB\n"
                 "VmLib:\t   50000 kB\nVmPTE:\t     400 kB\nVmSwap:\t       0 kB\n"
                 "HugetlbPages:\t       0 kB\nThreads:\t4\nSigQ:\t0/63000\n"
                 "voluntary_ctxt_switches:\t100\nnonvoluntary_ctxt_switches:\t10\n",
                 i, pid, pid, pid, pid, pid, pid, rss, rss, rss * 3 / 4, rss / 4);
    if (write_file(dir, "status", buf, (size_t)n)) return -1;
    n = snprintf(buf, sizeof buf, "python3%c-m%cworker%c--id%c%d%c", 0, 0, 0, 0, i, 0);
    if (write_file(dir, "cmdline", buf, (size_t)n)) return -1;
    n = snprintf(buf, sizeof buf, "0::/system.slice/inference.service\n");
    if (write_file(dir, "cgroup", buf, (size_t)n)) return -1;
    n = snprintf(buf, sizeof buf,
                 "55d0c0000000-7ffd00000000 ---p 00000000 00:00 0 [rollup]\nRss: %u kB\n"
                 "Pss: %u kB\nPss_Anon: %u kB\nPss_File: %u kB\nPss_Shmem: 0 kB\n"
                 "Shared_Clean: 0 kB\nPrivate_Dirty: %u kB\nSwap: 0 kB\n",
                 rss, rss * 9 / 10, rss * 3 / 4, rss / 8, rss * 3 / 4);
    if (write_file(dir, "smaps_rollup", buf, (size_t)n)) return -1;
  }
  return 0;
}

/* Runs argv with stdout and stderr to /dev/null; returns seconds, or -1. */
static double run(char *const argv[]) {
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
  pid_t pid;
  double t0 = now();
  int rc = posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc) return -1;
  int st;
  if (waitpid(pid, &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) return -1;
  return now() - t0;
}

static double snap(const char *root, unsigned what, size_t *n_procs) {
  hr_probe_options_t o = {.root = root, .what = what, .top = 10};
  hr_snapshot_t *s;
  double t0 = now();
  if (hr_snapshot_take(&o, &s)) return -1;
  double t = now() - t0;
  *n_procs = s->n_procs;
  hr_snapshot_free(s);
  return t;
}

/* The same through a context kept across rounds, as watch samples. */
static double snap_ctx(hr_probe_t *ctx, const char *root, unsigned what) {
  hr_probe_options_t o = {.root = root, .what = what, .top = 10};
  hr_snapshot_t *s;
  double t0 = now();
  if (hr_probe_snapshot(ctx, &o, &s)) return -1;
  double t = now() - t0;
  hr_snapshot_free(s);
  return t;
}

static int cmp_d(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double quantile(double *v, int n, double q) {
  qsort(v, (size_t)n, sizeof *v, cmp_d);
  int i = (int)(q * (n - 1) + 0.5);
  return v[i];
}

enum {
  M_STATUS,
  M_STATUS_JSON,
  M_STATUS_PSS,
  M_PS,
  M_FIX_CLI,
  M_FIX_LIB,
  M_FIX_LIB_NOPSS,
  M_LIVE_LIB,
  M_LIVE_NOPSS,
  M_LIVE_BRIEF,
  M_LIVE_CTX,
  M_N
};

int main(int argc, char **argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: %s HEADROOM_CLI FIXTURE_DIR OUT.md [ROUNDS]\n", argv[0]);
    return 2;
  }
  const char *cli = argv[1], *fix = argv[2], *outp = argv[3];
  int rounds = argc > 4 ? atoi(argv[4]) : 50;
  if (rounds < 3) rounds = 3;
  if (make_fixture(fix)) {
    fprintf(stderr, "status_bench: cannot build the fixture under %s: %s\n", fix, strerror(errno));
    return 1;
  }
  static const char *names[M_N] = {
      "`headroom status` (live, process)",
      "`headroom status --json` (live, process)",
      "`headroom status --pss` (live, process)",
      "`ps -eo pid,rss,comm` (live, process)",
      "`headroom --root FIXTURE status` (1,000 processes, process)",
      "`hr_snapshot_take` on the fixture with PSS (1,000 processes, in process)",
      "`hr_snapshot_take` on the fixture without PSS (in process)",
      "`hr_snapshot_take` live, with PSS (in process)",
      "`hr_snapshot_take` live, without PSS (in process)",
      "`hr_snapshot_take` live, brief, as `status` reads (in process)",
      "`hr_probe_snapshot` live through a context, brief, statm held (in process, as watch)"};
  double *t[M_N];
  for (int m = 0; m < M_N; m++) t[m] = calloc((size_t)rounds, sizeof(double));
  char *a_status[] = {(char *)cli, "status", NULL};
  char *a_json[] = {(char *)cli, "status", "--json", NULL};
  char *a_pss[] = {(char *)cli, "status", "--pss", NULL};
  char *a_ps[] = {"ps", "-eo", "pid,rss,comm", NULL};
  char *a_fix[] = {(char *)cli, "--root", (char *)fix, "status", NULL};
  size_t n_fix = 0, n_live = 0;
  double load0[1] = {-1}, load1[1] = {-1};
  getloadavg(load0, 1);
  /* One warm-up round, then the measured ones, each method once per round in
   * the same order, so drift in machine load hits them alike. */
  hr_probe_t *ctx = NULL;
  if (hr_probe_create(&ctx)) return 1;
  hr_probe_hold_files(ctx, 4096);
  for (int r = -1; r < rounds; r++) {
    double v[M_N];
    v[M_STATUS] = run(a_status);
    v[M_STATUS_JSON] = run(a_json);
    v[M_STATUS_PSS] = run(a_pss);
    v[M_PS] = run(a_ps);
    v[M_FIX_CLI] = run(a_fix);
    v[M_FIX_LIB] = snap(fix, HR_PROBE_ALL, &n_fix);
    v[M_FIX_LIB_NOPSS] = snap(fix, HR_PROBE_ALL & ~(unsigned)HR_PROBE_PSS, &n_fix);
    v[M_LIVE_LIB] = snap("/", HR_PROBE_ALL, &n_live);
    v[M_LIVE_NOPSS] = snap("/", HR_PROBE_ALL & ~(unsigned)HR_PROBE_PSS, &n_live);
    v[M_LIVE_BRIEF] = snap("/", (HR_PROBE_ALL & ~(unsigned)HR_PROBE_PSS) | HR_PROBE_BRIEF, &n_live);
    v[M_LIVE_CTX] = snap_ctx(ctx, "/", (HR_PROBE_ALL & ~(unsigned)HR_PROBE_PSS) | HR_PROBE_BRIEF);
    for (int m = 0; m < M_N; m++) {
      if (v[m] < 0) {
        fprintf(stderr, "status_bench: %s failed\n", names[m]);
        return 1;
      }
      if (r >= 0) t[m][r] = v[m];
    }
  }
  getloadavg(load1, 1);
  hr_probe_destroy(ctx);
  if (n_fix != N_FIXTURE_PROCS) {
    fprintf(stderr, "status_bench: fixture parsed %zu processes, want %d\n", n_fix,
            N_FIXTURE_PROCS);
    return 1;
  }
  double med[M_N], p90[M_N];
  for (int m = 0; m < M_N; m++) {
    med[m] = quantile(t[m], rounds, 0.5);
    p90[m] = quantile(t[m], rounds, 0.9);
  }
  FILE *f = fopen(outp, "w");
  if (!f) {
    fprintf(stderr, "status_bench: %s: %s\n", outp, strerror(errno));
    return 1;
  }
  struct utsname u;
  uname(&u);
  time_t now_t = time(NULL);
  char when[64];
  strftime(when, sizeof when, "%Y-%m-%d %H:%M UTC", gmtime(&now_t));
  fprintf(f, "# `headroom status` benchmark\n\n");
  fprintf(f,
          "Measured %s on %s %s (%ld CPUs online), %d rounds after one warm-up round; each "
          "round runs every line once, in the order below. Release build. Live processes on "
          "the machine: %zu. Load average (1 min): %.2f before, %.2f after; the machine is "
          "shared, so absolute times move with the load, while the ratios are measured side by "
          "side.\n\n",
          when, u.sysname, u.release, sysconf(_SC_NPROCESSORS_ONLN), rounds, n_live, load0[0],
          load1[0]);
  fprintf(f, "| what | median (ms) | p90 (ms) | median / ps |\n| --- | ---: | ---: | ---: |\n");
  for (int m = 0; m < M_N; m++)
    fprintf(f, "| %s | %.2f | %.2f | %.2f |\n", names[m], med[m] * 1e3, p90[m] * 1e3,
            med[m] / med[M_PS]);
  fprintf(f,
          "\nTarget: `headroom status` at most 20 ms: %s (median %.2f ms).\n\n"
          "The fixture (built at bench time under build/, 1,000 processes with stat, status, "
          "cmdline, cgroup and smaps_rollup each) is read per process the same way as /proc; "
          "`headroom status` reads statm of every process and stat, status, cmdline and cgroup "
          "for the rows it shows (HR_PROBE_BRIEF; the fixture has no statm, so there it reads "
          "every process in full), and with --pss smaps_rollup for the rows it shows; the "
          "in-process fixture lines read every process in full, PSS for all 1,000 or for none. A "
          "process run includes fork, exec and dynamic loading; `ps` reads stat, status and "
          "cmdline per process, `headroom status` also meminfo, the cgroup tree and the NVML "
          "lookup (no driver here). The last four lines read the live /proc without PSS: in "
          "full with and without PSS, briefly as `status` does, and through a probe context kept "
          "across rounds with its statm files held open, as watch samples (see "
          "include/headroom/probe.h). For the same comparison at 1,000 live processes, with the "
          "statm floor and `ps aux`, see [status-live.md](status-live.md).\n\nReproduce: "
          "`bench/status.sh [ROUNDS]` (writes this file).\n",
          med[M_STATUS] <= 0.020 ? "met" : "NOT met", med[M_STATUS] * 1e3);
  fclose(f);
  for (int m = 0; m < M_N; m++) {
    printf("%-66s median %7.2f ms  p90 %7.2f ms  x ps %.2f\n", names[m], med[m] * 1e3, p90[m] * 1e3,
           med[m] / med[M_PS]);
    free(t[m]);
  }
  return 0;
}
