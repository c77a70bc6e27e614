/* A fixture tree of processes for the probe and watch tests: /proc/meminfo,
 * /proc/self/{cgroup,mountinfo}, and processes with stat, status, statm,
 * cmdline and cgroup as the kernel writes them, changed between snapshots;
 * and what the live tests read of real processes. Include after hr_test.h
 * and probe/probe_int.h; a test file has one tree at a time. */
#ifndef HR_FAKE_PROC_H
#define HR_FAKE_PROC_H

#include <sys/stat.h>
#include <unistd.h>

static char tree[] = "/tmp/hr-test-proc-XXXXXX";

static inline void put(const char *rel, const char *text, size_t len) {
  char path[512];
  snprintf(path, sizeof path, "%s/%s", tree, rel);
  FILE *f = fopen(path, "w");
  if (!f) {
    CHECK(!"cannot write a fixture file");
    return;
  }
  fwrite(text, 1, len, f);
  fclose(f);
}

static inline void put_str(const char *rel, const char *text) {
  put(rel, text, strlen(text));
}

/* Writes process `pid` with start time `start`, the command line `cmd` (one
 * argument per space: written NUL-separated), RSS as anon + file KiB and
 * swap KiB in status, and statm agreeing with it unless statm is false. Its
 * name (stat, status, comm) is "w<pid>". */
static inline void put_proc(int pid, uint64_t start, const char *cmd, unsigned anon_kb,
                            unsigned file_kb, unsigned swap_kb, bool statm) {
  char rel[128], text[1024];
  snprintf(rel, sizeof rel, "%s/proc/%d", tree, pid);
  mkdir(rel, 0755);
  snprintf(rel, sizeof rel, "proc/%d/stat", pid);
  snprintf(text, sizeof text,
           "%d (w%d) S 1 %d %d 0 -1 4194560 0 0 0 0 1 1 0 0 20 0 1 0 %llu 100000 10 "
           "18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n",
           pid, pid, pid, pid, (unsigned long long)start);
  put_str(rel, text);
  snprintf(rel, sizeof rel, "proc/%d/comm", pid);
  snprintf(text, sizeof text, "w%d\n", pid);
  put_str(rel, text);
  snprintf(rel, sizeof rel, "proc/%d/status", pid);
  snprintf(text, sizeof text,
           "Name:\tw%d\nPid:\t%d\nPPid:\t1\nUid:\t1000\t1000\t1000\t1000\nNSpid:\t%d\n"
           "VmRSS:\t%u kB\nRssAnon:\t%u kB\nRssFile:\t%u kB\nRssShmem:\t0 kB\nVmSwap:\t%u kB\n",
           pid, pid, pid, anon_kb + file_kb, anon_kb, file_kb, swap_kb);
  put_str(rel, text);
  snprintf(rel, sizeof rel, "proc/%d/statm", pid);
  char path[512];
  snprintf(path, sizeof path, "%s/%s", tree, rel);
  if (statm) {
    snprintf(text, sizeof text, "5000 %u %u 1 0 2000 0\n", (anon_kb + file_kb) / 4, file_kb / 4);
    put_str(rel, text);
  } else {
    unlink(path);
  }
  snprintf(rel, sizeof rel, "proc/%d/cmdline", pid);
  size_t n = strlen(cmd);
  char args[256];
  memcpy(args, cmd, n + 1);
  for (size_t i = 0; i < n; i++)
    if (args[i] == ' ') args[i] = '\0';
  put(rel, args, n + 1);
  snprintf(rel, sizeof rel, "proc/%d/cgroup", pid);
  put_str(rel, "0::/user.slice\n");
}

static inline void remove_proc(int pid) {
  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -rf '%s/proc/%d'", tree, pid);
  CHECK(system(cmd) == 0);
}

static inline void make_tree(void) {
  char path[512];
  CHECK(mkdtemp(tree) != NULL);
  snprintf(path, sizeof path, "%s/proc", tree);
  mkdir(path, 0755);
  snprintf(path, sizeof path, "%s/proc/self", tree);
  mkdir(path, 0755);
  put_str("proc/meminfo", "MemTotal: 1000000 kB\nMemFree: 500000 kB\nMemAvailable: 600000 kB\n");
  put_str("proc/self/cgroup", "0::/\n");
  put_str("proc/self/mountinfo", "");
}

static inline void drop_tree(void) {
  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", tree);
  CHECK(system(cmd) == 0);
}

/* Two readings of one process agree on every field. */
static inline void same_proc(const hr_proc_t *x, const hr_proc_t *y) {
  CHECK(x && y);
  CHECK_EQ_INT(x->pid, y->pid);
  CHECK_EQ_INT(x->brief, y->brief);
  CHECK_EQ_INT(x->ppid, y->ppid);
  CHECK_EQ_INT(x->nspid, y->nspid);
  CHECK_EQ_U64(x->uid, y->uid);
  CHECK_EQ_U64(x->start_ticks, y->start_ticks);
  CHECK_EQ_INT(x->state, y->state);
  CHECK_EQ_INT(x->kernel_thread, y->kernel_thread);
  CHECK_STR(x->name, y->name);
  CHECK_STR(x->cmdline, y->cmdline);
  CHECK_STR(x->container_id, y->container_id);
  CHECK_STR(x->pod_uid, y->pod_uid);
  CHECK_EQ_U64(x->rss_bytes, y->rss_bytes);
  CHECK_EQ_U64(x->rss_anon_bytes, y->rss_anon_bytes);
  CHECK_EQ_U64(x->rss_file_bytes, y->rss_file_bytes);
  CHECK_EQ_U64(x->rss_shmem_bytes, y->rss_shmem_bytes);
  CHECK_EQ_U64(x->swap_bytes, y->swap_bytes);
  CHECK_EQ_U64(x->pss_bytes, y->pss_bytes);
  CHECK_EQ_U64(x->gpu_bytes, y->gpu_bytes);
}

/* A key of /proc/PID/status in bytes ("VmRSS"), as the kernel says it. */
static inline uint64_t status_bytes(int pid, const char *key) {
  char path[64], buf[8192];
  snprintf(path, sizeof path, "/proc/%d/status", pid);
  if (hr__read_file(path, buf, sizeof buf) < 0) return HR_UNKNOWN;
  uint64_t v = HR_UNKNOWN;
  hr__kv_t k = {key, &v, 0};
  hr__kv_scan(buf, ':', &k, 1);
  return v;
}

/* Waits until the killed, unreaped child `pid` is a zombie; returns its
 * state ('Z', or what it was at the deadline, far past the usual time on a
 * loaded machine). */
static inline char wait_zombie(int pid) {
  char st = 0;
  for (int i = 0; i < 6000 && st != 'Z'; i++) {
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    const char *paren = hr__read_file(path, buf, sizeof buf) > 0 ? strrchr(buf, ')') : NULL;
    st = paren ? paren[2] : 0;
    if (st != 'Z') usleep(10000);
  }
  return st;
}

#endif /* HR_FAKE_PROC_H */
