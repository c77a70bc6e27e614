/* watch_bench: CPU time per watch sample (probe + decisions), median over
 * many samples, beside `ps` reading the same /proc in the same run.
 *
 * Three settings: this machine as it is; this machine with 1,000 extra real
 * processes (children that sleep), where `ps -e` sees them too; and a
 * generated fixture tree of 1,000 processes read through --root (ps cannot
 * be pointed at a fixture, so that row has no ps column). CPU time is the
 * process's own (CLOCK_PROCESS_CPUTIME_ID) around one snapshot +
 * hr_watch_feed(), the snapshot taken three ways (a full read, a context
 * reading in full, watch's brief reads with held files); ps's is its user +
 * system time from wait4().
 *
 * Then the loop as `headroom watch` runs it, at 1 Hz for --loop seconds:
 * with proc_budget (1 % of a core) processes are read less often than
 * every second when reading them costs more, and the table says how often.
 *
 *   watch_bench [--samples N] [--loop S] [--out FILE]
 *   (defaults 40, 20, bench/results/watch.md) */
#include <headroom/daemon.h>

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double cpu_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmp_d(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof *v, cmp_d);
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

typedef struct result {
  double watch_ms, feed_ms, ps_ms;
  double full_ms;   /* hr_snapshot_take() (every process read in full) + the feed */
  double before_ms; /* through a context reading every process in full + the feed */
  size_t procs;
  double loop_ms, loop_pct; /* hr_watch_run at 1 Hz: CPU per sample, share of a core */
  int loop_reads, loop_samples;
} result_t;

typedef struct counter {
  int samples, reads;
} counter_t;

static void count_event(const hr_watch_event_t *e, void *arg) {
  counter_t *c = arg;
  if (e->kind != HR_EVENT_SAMPLE) return;
  c->samples++;
  c->reads += e->sample.processes_read;
}

/* hr_watch_run() as `headroom watch` runs it (default sampler, proc_budget
 * at its default) for `seconds` at 1 Hz: CPU per sample and share of a core,
 * from the process's CPU clock over the wall time. */
static int bench_loop(const char *root, int seconds, result_t *r) {
  hr_options_t *o = NULL;
  hr_watch_t *w = NULL;
  char err[256];
  int rc = hr_options_create(&o);
  if (!rc) rc = hr_options_set(o, "root", root, HR_SRC_CLI, err, sizeof err);
  if (!rc) rc = hr_watch_create(o, &w, err, sizeof err);
  if (rc) {
    hr_options_destroy(o);
    return rc;
  }
  counter_t c = {0};
  hr_watch_on_event(w, count_event, &c);
  double c0 = cpu_now();
  rc = hr_watch_run(w, NULL, (uint64_t)seconds);
  double cpu = cpu_now() - c0;
  /* The loop does not sleep after its last sample: the wall time of n
   * samples at 1 Hz is n seconds. */
  r->loop_ms = c.samples ? cpu / c.samples * 1e3 : 0;
  r->loop_pct = cpu / seconds * 100;
  r->loop_reads = c.reads, r->loop_samples = c.samples;
  hr_watch_destroy(w);
  hr_options_destroy(o);
  return rc;
}

/* What watch keeps open: half the soft limit on open files, at most 65536. */
static size_t held_files(void) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return 0;
  rlim_t half = rl.rlim_cur == RLIM_INFINITY ? 65536 : rl.rlim_cur / 2;
  return half > 65536 ? 65536 : (size_t)half;
}

/* Median CPU ms per sample of watch over `root`. */
static int bench_watch(const char *root, int samples, result_t *r) {
  hr_options_t *o = NULL;
  hr_watch_t *w = NULL;
  char err[256];
  int rc = hr_options_create(&o);
  if (!rc) rc = hr_options_set(o, "root", root, HR_SRC_CLI, err, sizeof err);
  if (!rc) rc = hr_watch_create(o, &w, err, sizeof err);
  if (rc) {
    fprintf(stderr, "watch_bench: %s\n", err);
    hr_options_destroy(o);
    return rc;
  }
  hr_probe_options_t po = {
      .root = root, .what = HR_PROBE_HOST | HR_PROBE_CGROUP | HR_PROBE_PROCS | HR_PROBE_GPUS};
  /* As watch samples: every process briefly, the selection (watch's top)
   * in full, statm files held open. */
  hr_probe_options_t pb = po;
  pb.what |= HR_PROBE_BRIEF;
  pb.top = 10;
  hr_probe_t *ctx = NULL, *old = NULL;
  if (!rc) rc = hr_probe_create(&ctx);
  if (!rc) rc = hr_probe_create(&old);
  if (!rc) hr_probe_hold_files(ctx, held_files());
  double *t = calloc((size_t)samples, sizeof *t), *f = calloc((size_t)samples, sizeof *f);
  double *full = calloc((size_t)samples, sizeof *full), *bef = calloc((size_t)samples, sizeof *bef);
  for (int i = 0; i < samples + 3 && rc == 0; i++) {
    /* The same sample three ways, one after the other: a full read without
     * a context; through a context reading every process in full (watch
     * before brief reads); through watch's context as it samples now. */
    double c0 = cpu_now();
    hr_snapshot_t *s = NULL;
    if ((rc = hr_snapshot_take(&po, &s)) != 0) break;
    double dfull = cpu_now() - c0;
    hr_snapshot_free(s);
    c0 = cpu_now();
    if ((rc = hr_probe_snapshot(old, &po, &s)) != 0) break;
    double dbef = cpu_now() - c0;
    hr_snapshot_free(s);
    c0 = cpu_now();
    if ((rc = hr_probe_snapshot(ctx, &pb, &s)) != 0) break;
    size_t n = s->n_procs;
    if ((rc = hr_watch_feed(w, s)) != 0) break;
    double dt = cpu_now() - c0;
    hr_watch_view_t v;
    hr_watch_get_view(w, &v);
    if (i >= 3) {
      t[i - 3] = dt * 1e3, f[i - 3] = v.cpu_s_last * 1e3, r->procs = n;
      full[i - 3] = (dfull + v.cpu_s_last) * 1e3;
      bef[i - 3] = (dbef + v.cpu_s_last) * 1e3;
    }
    usleep(20000);
  }
  if (!rc) {
    r->watch_ms = median(t, samples), r->feed_ms = median(f, samples);
    r->full_ms = median(full, samples), r->before_ms = median(bef, samples);
  }
  free(t), free(f), free(full), free(bef);
  hr_probe_destroy(ctx);
  hr_probe_destroy(old);
  hr_watch_destroy(w);
  hr_options_destroy(o);
  return rc;
}

/* Median CPU ms of one `ps -e -o pid,ppid,rss,vsz,stat,comm,args`. */
static double bench_ps(int samples) {
  double *t = calloc((size_t)samples, sizeof *t);
  for (int i = 0; i < samples; i++) {
    pid_t pid = fork();
    if (pid == 0) {
      if (!freopen("/dev/null", "w", stdout)) _exit(126);
      execlp("ps", "ps", "-e", "-o", "pid,ppid,rss,vsz,stat,comm,args", (char *)NULL);
      _exit(127);
    }
    int st;
    struct rusage ru;
    if (wait4(pid, &st, 0, &ru) < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
      free(t);
      return -1;
    }
    t[i] = (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e3 +
           (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e3;
  }
  double m = median(t, samples);
  free(t);
  return m;
}

static int write_file(const char *path, const char *text) {
  FILE *f = fopen(path, "w");
  if (!f) return -1;
  fputs(text, f);
  return fclose(f);
}

/* A fixture tree: /proc/meminfo, /proc/self/{cgroup,mountinfo} and n
 * processes with stat, statm, status, cmdline and cgroup, as the kernel writes
 * them (statm's resident and shared agree with status's VmRSS, RssFile and
 * RssShmem, in 4 KiB pages). */
static int make_fixture(const char *dir, int n) {
  char p[512], text[2048];
  snprintf(p, sizeof p, "%s/proc", dir);
  mkdir(p, 0755);
  snprintf(p, sizeof p, "%s/proc/self", dir);
  mkdir(p, 0755);
  snprintf(p, sizeof p, "%s/proc/meminfo", dir);
  write_file(p, "MemTotal:       65536000 kB\nMemFree:        30000000 kB\n"
                "MemAvailable:   40000000 kB\nBuffers:          100000 kB\n"
                "Cached:         9000000 kB\nSwapTotal:             0 kB\nSwapFree:              "
                "0 kB\nShmem:            20000 kB\n");
  snprintf(p, sizeof p, "%s/proc/self/cgroup", dir);
  write_file(p, "0::/\n");
  snprintf(p, sizeof p, "%s/proc/self/mountinfo", dir);
  write_file(p, "");
  for (int i = 0; i < n; i++) {
    int pid = 1000 + i;
    snprintf(p, sizeof p, "%s/proc/%d", dir, pid);
    if (mkdir(p, 0755) != 0 && errno != EEXIST) return -1;
    snprintf(p, sizeof p, "%s/proc/%d/stat", dir, pid);
    snprintf(text, sizeof text,
             "%d (worker%d) S 1 %d %d 0 -1 4194560 1000 0 0 0 10 5 0 0 20 0 4 0 %d 1000000000 "
             "%d 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0 0 0 0 0 0 0 0 0\n",
             pid, i, pid, pid, 5000 + i, 20000 + i);
    write_file(p, text);
    snprintf(p, sizeof p, "%s/proc/%d/status", dir, pid);
    snprintf(text, sizeof text,
             "Name:\tworker%d\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t%d\nNgid:\t0\n"
             "Pid:\t%d\nPPid:\t1\nTracerPid:\t0\nUid:\t1000\t1000\t1000\t1000\n"
             "Gid:\t1000\t1000\t1000\t1000\nNSpid:\t%d\nVmPeak:\t  200000 kB\n"
             "VmSize:\t  190000 kB\nVmRSS:\t   %d kB\nRssAnon:\t   %d kB\nRssFile:\t    8000 kB\n"
             "RssShmem:\t       0 kB\nVmSwap:\t       0 kB\nThreads:\t4\n",
             i, pid, pid, pid, 20000 + i * 10, 12000 + i * 10);
    write_file(p, text);
    snprintf(p, sizeof p, "%s/proc/%d/statm", dir, pid);
    snprintf(text, sizeof text, "47500 %d %d 1 0 30000 0\n", (20000 + i * 10) / 4, 8000 / 4);
    write_file(p, text);
    snprintf(p, sizeof p, "%s/proc/%d/cmdline", dir, pid);
    int len = snprintf(text, sizeof text, "/usr/bin/python3%cworker.py%c--id%c%d", 0, 0, 0, i);
    FILE *f = fopen(p, "w");
    if (!f) return -1;
    fwrite(text, 1, (size_t)len, f);
    fclose(f);
    snprintf(p, sizeof p, "%s/proc/%d/cgroup", dir, pid);
    write_file(p, "0::/user.slice/user-1000.slice/session-1.scope\n");
  }
  return 0;
}

static pid_t *spawn_sleepers(int n) {
  pid_t *pids = calloc((size_t)n, sizeof *pids);
  for (int i = 0; i < n; i++) {
    pids[i] = fork();
    if (pids[i] == 0) {
      for (;;) pause();
    }
  }
  return pids;
}

static void reap(pid_t *pids, int n) {
  for (int i = 0; i < n; i++)
    if (pids[i] > 0) kill(pids[i], SIGKILL);
  for (int i = 0; i < n; i++)
    if (pids[i] > 0) waitpid(pids[i], NULL, 0);
  free(pids);
}

int main(int argc, char **argv) {
  int samples = 40, loop_s = 20;
  const char *out = "bench/results/watch.md";
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--samples") == 0 && i + 1 < argc)
      samples = atoi(argv[++i]);
    else if (strcmp(argv[i], "--out") == 0 && i + 1 < argc)
      out = argv[++i];
    else if (strcmp(argv[i], "--loop") == 0 && i + 1 < argc)
      loop_s = atoi(argv[++i]);
    else {
      fprintf(stderr, "usage: watch_bench [--samples N] [--loop SECONDS] [--out FILE]\n");
      return 2;
    }
  }
  if (samples < 5) samples = 5;
  if (loop_s < 3) loop_s = 3;
  char dir[] = "/tmp/hr-bench-watch-XXXXXX";
  if (!mkdtemp(dir) || make_fixture(dir, 1000) != 0) {
    fprintf(stderr, "watch_bench: cannot build the fixture tree\n");
    return 1;
  }
  result_t live = {0}, many = {0}, fix = {0};
  fprintf(stderr, "watch_bench: this machine...\n");
  if (bench_watch("/", samples, &live) != 0 || bench_loop("/", loop_s, &live) != 0) return 1;
  live.ps_ms = bench_ps(samples);
  fprintf(stderr, "watch_bench: this machine with 1,000 more processes...\n");
  pid_t *kids = spawn_sleepers(1000);
  usleep(300000);
  int rc = bench_watch("/", samples, &many);
  if (!rc) rc = bench_loop("/", loop_s, &many);
  many.ps_ms = bench_ps(samples);
  reap(kids, 1000);
  if (rc) return 1;
  fprintf(stderr, "watch_bench: fixture tree of 1,000 processes...\n");
  if (bench_watch(dir, samples, &fix) != 0 || bench_loop(dir, loop_s, &fix) != 0) return 1;
  char cmd[300];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  if (system(cmd) != 0) fprintf(stderr, "watch_bench: could not remove %s\n", dir);

  FILE *f = fopen(out, "w");
  if (!f) {
    fprintf(stderr, "watch_bench: cannot write %s\n", out);
    return 1;
  }
  time_t now = time(NULL);
  char when[64];
  strftime(when, sizeof when, "%Y-%m-%d %H:%M UTC", gmtime(&now));
  fprintf(
      f,
      "# watch: CPU time per sample\n\n"
      "Measured %s by `build/release/bench/watch_bench --samples %d --loop %d` (Release build), "
      "%ld CPUs. One sample is a snapshot (host, cgroup, every process, GPUs) plus "
      "`hr_watch_feed()` (levels, the leak detector on every process, idle hogs, views; no "
      "history, no exporter). The same sample is taken three ways, one after the other, in "
      "the same run: *full read*, `hr_snapshot_take()` (stat, status, cmdline and cgroup of "
      "every process); *context, full*, `hr_probe_snapshot()` through a context reading "
      "every process in full (watch before brief reads: statm, and status when memory moved "
      "or every 16 samples); *watch now*, through watch's context with `HR_PROBE_BRIEF` and "
      "statm files held open (`hr_probe_hold_files`, half the open-file limit): statm of "
      "every process by `pread`, the rest only for the 10 shown and the GPU holders (see "
      "include/headroom/probe.h). Medians of %d samples after 3 warm-up samples. `ps` is "
      "`ps -e -o pid,ppid,rss,vsz,stat,comm,args` run in the same process, between the same "
      "samples; its CPU is user + system from `wait4()`. No GPU on this machine: NVML is "
      "absent, its failed load remembered and tried again once a minute.\n\n"
      "| setting | processes | full read CPU/sample (ms) | context, full (ms) | watch now "
      "(ms) | context full / now | of which decisions (ms) | ps CPU/run (ms) | now / ps | now "
      "every sample, 1 Hz (%% of a core) |\n"
      "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
      when, samples, loop_s, sysconf(_SC_NPROCESSORS_ONLN), samples);
  const struct {
    const char *name;
    result_t *r;
  } rows[] = {{"this machine", &live},
              {"this machine + 1,000 sleeping processes", &many},
              {"fixture tree, 1,000 processes (`--root`)", &fix}};
  for (size_t i = 0; i < 3; i++) {
    result_t *r = rows[i].r;
    fprintf(f, "| %s | %zu | %.2f | %.2f | %.2f | %.2f | %.3f | ", rows[i].name, r->procs,
            r->full_ms, r->before_ms, r->watch_ms, r->before_ms / r->watch_ms, r->feed_ms);
    if (r->ps_ms > 0)
      fprintf(f, "%.2f | %.2f | ", r->ps_ms, r->watch_ms / r->ps_ms);
    else
      fprintf(f, "n/a | n/a | ");
    fprintf(f, "%.2f |\n", r->watch_ms / 10.0);
  }
  fprintf(f,
          "\nTarget: at most 10 ms of CPU per sample at 1,000 processes (1 %% of a core at "
          "1 Hz).\n\n"
          "## The loop at 1 Hz, as `headroom watch` runs\n\n"
          "`hr_watch_run()` with the default sampler for %d samples at `--interval 1s`; CPU "
          "of the whole process over the wall time. With `--proc-budget 1` (the default) "
          "the process table is read only as often as its cost allows; between reads the "
          "host, cgroup and GPUs are still sampled every second and the last process "
          "table is carried over.\n\n"
          "| setting | samples | samples that read processes | CPU per sample (ms) | %% of a "
          "core |\n| --- | ---: | ---: | ---: | ---: |\n",
          loop_s);
  for (size_t i = 0; i < 3; i++) {
    result_t *r = rows[i].r;
    fprintf(f, "| %s | %d | %d | %.2f | %.2f |\n", rows[i].name, r->loop_samples, r->loop_reads,
            r->loop_ms, r->loop_pct);
  }
  /* The text follows the numbers: whether a read at 1,000 processes fits
   * the budget every second. */
  fprintf(f,
          "\nAt %zu live processes a read through watch's context costs %.2f ms (%.2f ms "
          "reading every process in full through a context, as watch did before), %s the "
          "10 ms target; in the loop above processes were read in %d of %d samples at this "
          "size (the first read identifies every process with stat, and a read that costs "
          "over 10 ms postpones the next).\n",
          many.procs, many.watch_ms, many.before_ms, many.watch_ms <= 10 ? "within" : "over",
          many.loop_reads, many.loop_samples);
  fclose(f);
  fprintf(stderr, "watch_bench: wrote %s\n", out);
  return 0;
}
