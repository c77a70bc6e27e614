/* The exporter's own process metrics, named and computed as the Prometheus
 * Go and Python clients do, so the dashboards and alerts written for any
 * exporter (restarts, CPU, memory, file descriptors) work on this one too.
 *
 * Read from /proc/self/stat (CPU ticks, start ticks, virtual size, resident
 * pages), /proc/stat (boot time), /proc/self/fd (open descriptors) and
 * getrlimit. Always the real /proc: --root names the machine watched, these
 * describe headroom itself. */
#include "export/export.h"

#include <dirent.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

static void family(hr__buf_t *b, const char *name, const char *type, const char *help) {
  hr__buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* Boot time in seconds since the epoch (the btime line of /proc/stat), or 0. */
static double boot_time(void) {
  char buf[16384];
  ssize_t n = hr__read_file("/proc/stat", buf, sizeof buf);
  const char *p = n > 0 ? strstr(buf, "\nbtime ") : NULL;
  return p ? strtod(p + 7, NULL) : 0;
}

static int open_fds(void) {
  DIR *d = opendir("/proc/self/fd");
  if (!d) return -1;
  int n = 0;
  for (struct dirent *e; (e = readdir(d));)
    if (e->d_name[0] != '.') n++;
  closedir(d);
  return n - 1; /* the directory stream's own descriptor */
}

void hr__prom_self(hr__buf_t *b) {
  char buf[1024];
  ssize_t n = hr__read_file("/proc/self/stat", buf, sizeof buf);
  /* The fields after the command name, which may hold spaces and ')'. */
  const char *p = n > 0 ? strrchr(buf, ')') : NULL;
  unsigned long long f[40] = {0};
  int got = 0;
  if (p) {
    p += 2; /* ") " then the state, field 3 */
    while (*p && *p != ' ') p++;
    for (char *end; got < 40 && *p; got++, p = end) {
      f[got] = strtoull(p, &end, 10);
      if (end == p) break;
    }
  }
  double tick = (double)sysconf(_SC_CLK_TCK), page = (double)sysconf(_SC_PAGESIZE);
  /* f[0] is field 4 (ppid): utime is field 14, starttime 22, vsize 23, rss 24. */
  if (got >= 21 && tick > 0) {
    family(b, "process_cpu_seconds_total", "counter",
           "Total user and system CPU time spent in seconds.");
    hr__buf_printf(b, "process_cpu_seconds_total %.2f\n", (double)(f[10] + f[11]) / tick);
    double bt = boot_time();
    if (bt > 0) {
      family(b, "process_start_time_seconds", "gauge",
             "Start time of the process since unix epoch in seconds.");
      hr__buf_printf(b, "process_start_time_seconds %.2f\n", bt + (double)f[18] / tick);
    }
    family(b, "process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.");
    hr__buf_printf(b, "process_virtual_memory_bytes %llu\n", f[19]);
    family(b, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.");
    hr__buf_printf(b, "process_resident_memory_bytes %.0f\n", (double)f[20] * page);
  }
  int fds = open_fds();
  if (fds >= 0) {
    family(b, "process_open_fds", "gauge", "Number of open file descriptors.");
    hr__buf_printf(b, "process_open_fds %d\n", fds);
  }
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
    family(b, "process_max_fds", "gauge", "Maximum number of open file descriptors.");
    hr__buf_printf(b, "process_max_fds %llu\n", (unsigned long long)rl.rlim_cur);
  }
}
