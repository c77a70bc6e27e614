/* Every process under root/proc: identity (pid, ppid, uid, start time, name,
 * command line, container), memory (VmRSS and its anon/file/shmem parts,
 * swap, PSS) and the innermost pid from NSpid.
 *
 * Processes come and go while the directory is read, so a process whose
 * files vanish (ENOENT, ESRCH) is skipped without a word. A process whose
 * stat is malformed is skipped too, but counted, so a broken tree shows up.
 * A malformed field in status only makes that field HR_UNKNOWN. */
#include "probe/probe_int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>

#define PF_KTHREAD_ 0x00200000u /* task flag of kernel threads (linux/sched.h) */

int hr__proc_parse_stat(const char *text, hr_proc_t *p, uint64_t *flags) {
  /* The name may hold spaces and parentheses: it ends at the last ')'. */
  const char *open = strchr(text, '('), *close = strrchr(text, ')');
  if (!open || !close || close < open) return HR_EPARSE;
  size_t nl = (size_t)(close - open - 1);
  if (nl >= sizeof p->name) nl = sizeof p->name - 1;
  memcpy(p->name, open + 1, nl);
  p->name[nl] = '\0';
  const char *s = close + 1;
  while (*s == ' ') s++;
  if (!*s || *s == '\n') return HR_EPARSE;
  p->state = *s++;
  /* Fields after the state: ppid is the first, flags the sixth, starttime the
   * nineteenth. Some fields (tty, priority, nice) may be negative. */
  long long v[19];
  for (int i = 0; i < 19; i++) {
    while (*s == ' ') s++;
    char *end;
    if (!((*s >= '0' && *s <= '9') || *s == '-')) return HR_EPARSE;
    v[i] = strtoll(s, &end, 10);
    if (end == s || (*end != ' ' && *end != '\n' && *end != '\0')) return HR_EPARSE;
    s = end;
  }
  if (v[0] < 0 || v[18] < 0) return HR_EPARSE;
  p->ppid = (int)v[0];
  *flags = (uint64_t)v[5];
  p->start_ticks = (uint64_t)v[18];
  return 0;
}

void hr__proc_parse_status(const char *text, hr_proc_t *p) {
  hr__kv_t keys[] = {{"VmRSS", &p->rss_bytes, 0},
                     {"RssAnon", &p->rss_anon_bytes, 0},
                     {"RssFile", &p->rss_file_bytes, 0},
                     {"RssShmem", &p->rss_shmem_bytes, 0},
                     {"VmSwap", &p->swap_bytes, 0}};
  hr__kv_scan(text, ':', keys, HR_ARRAY_LEN(keys));
  /* Uid: real effective saved fs; NSpid: outermost ... innermost. */
  const char *uid = strstr(text, "\nUid:");
  if (uid) {
    char *end;
    unsigned long long u = strtoull(uid + 5, &end, 10);
    if (end != uid + 5 && u <= UINT32_MAX) p->uid = (uint32_t)u;
  }
  const char *ns = strstr(text, "\nNSpid:");
  if (ns) {
    const char *s = ns + 7, *eol = strchr(s, '\n');
    if (!eol) eol = s + strlen(s);
    while (s < eol) {
      char *end;
      long v = strtol(s, &end, 10);
      if (end == s) break;
      if (v > 0 && v <= INT32_MAX) p->nspid = (int)v;
      s = end;
    }
  }
}

/* Finds a 64-hex-digit id in /proc/PID/cgroup: docker, containerd, CRI-O and
 * podman name a container's cgroup after its id ("/docker/<id>",
 * "cri-containerd-<id>.scope", "libpod-<id>"). */
static void container_id(const char *text, char *out, size_t n) {
  size_t run = 0;
  for (const char *s = text;; s++) {
    bool hex = (*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'f');
    if (hex) {
      run++;
      continue;
    }
    if (run == 64) {
      hr__strlcpy(out, s - 64, HR_MIN(n, 65));
      return;
    }
    run = 0;
    if (!*s) break;
  }
  out[0] = '\0';
}

/* Reads <pid dir>/<file> into buf, terminated; returns the length or
 * HR_ENOENT (gone), HR_EPERM, HR_EIO. Files are opened relative to the pid's
 * directory: resolving a full path for each of five files per process costs
 * more than reading them. */
static ssize_t read_at(int dirfd, const char *file, char *buf, size_t n) {
  int fd = openat(dirfd, file, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    buf[0] = '\0';
    return errno == EACCES || errno == EPERM   ? HR_EPERM
           : errno == ENOENT || errno == ESRCH ? HR_ENOENT
                                               : HR_EIO;
  }
  size_t len = 0;
  ssize_t r = 0;
  while (len < n - 1) {
    size_t want = n - 1 - len;
    r = read(fd, buf + len, want);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    len += (size_t)r;
    /* /proc/PID files are generated whole on each read, and a regular file
     * (a fixture) gives less than asked only at its end: a short read is the
     * end, and the second read(2) that would return 0 is saved. */
    if ((size_t)r < want) break;
  }
  int e = errno;
  close(fd);
  buf[len] = '\0';
  /* A process that exits mid-read gives ESRCH: it is gone. */
  if (r < 0) return e == ESRCH ? HR_ENOENT : e == EACCES || e == EPERM ? HR_EPERM : HR_EIO;
  return (ssize_t)len;
}

/* Reads one process from its directory `name` under procfd. Returns 0,
 * HR_ENOENT (gone: skip) or HR_EPARSE (malformed stat: skip and count). */
static int read_proc(int procfd, const char *name, int pid, bool pss, hr_proc_t *p) {
  char buf[8192];
  uint64_t flags = 0;
  int rc = 0;
  memset(p, 0, sizeof *p);
  p->pid = pid;
  p->nspid = pid;
  p->pss_bytes = HR_UNKNOWN;
  int dfd = openat(procfd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) return HR_ENOENT;
  ssize_t len = read_at(dfd, "stat", buf, sizeof buf);
  if (len < 0) {
    rc = HR_ENOENT;
    goto out;
  }
  if (hr__proc_parse_stat(buf, p, &flags)) {
    rc = HR_EPARSE;
    goto out;
  }
  p->kernel_thread = (flags & PF_KTHREAD_) || pid == 2 || p->ppid == 2;

  len = read_at(dfd, "status", buf, sizeof buf);
  if (len == HR_ENOENT) {
    rc = HR_ENOENT;
    goto out;
  }
  hr__proc_parse_status(len > 0 ? buf : "", p);
  /* Kernel threads and zombies have no memory of their own: their status has
   * no Vm lines, and that is a zero, not an unknown. */
  if (p->kernel_thread || p->state == 'Z') {
    uint64_t *f[] = {&p->rss_bytes, &p->rss_anon_bytes, &p->rss_file_bytes, &p->rss_shmem_bytes,
                     &p->swap_bytes};
    for (size_t i = 0; i < HR_ARRAY_LEN(f); i++)
      if (*f[i] == HR_UNKNOWN && len >= 0) *f[i] = 0;
  }

  len = read_at(dfd, "cmdline", buf, sizeof buf);
  if (len > 0) {
    for (ssize_t i = 0; i < len; i++)
      if (buf[i] == '\0' || buf[i] == '\n') buf[i] = ' ';
    while (len > 0 && buf[len - 1] == ' ') buf[--len] = '\0';
    hr__strlcpy(p->cmdline, buf, sizeof p->cmdline);
  }
  len = read_at(dfd, "cgroup", buf, sizeof buf);
  if (len > 0) container_id(buf, p->container_id, sizeof p->container_id);

  if (pss && !p->kernel_thread && p->state != 'Z') {
    len = read_at(dfd, "smaps_rollup", buf, sizeof buf);
    if (len > 0) {
      hr__kv_t k = {"Pss", &p->pss_bytes, 0};
      hr__kv_scan(buf, ':', &k, 1);
    }
  }
out:
  close(dfd);
  return rc;
}

int hr_proc_read_pss(const char *root, int pid, uint64_t *pss_bytes) {
  char rel[64], path[4096], buf[4096];
  if (!pss_bytes || pid <= 0) return HR_EINVAL;
  *pss_bytes = HR_UNKNOWN;
  snprintf(rel, sizeof rel, "/proc/%d/smaps_rollup", pid);
  if (hr__path(path, sizeof path, root, rel)) return HR_ERANGE;
  ssize_t len = hr__read_file(path, buf, sizeof buf);
  if (len < 0) return (int)len;
  hr__kv_t k = {"Pss", pss_bytes, 0};
  hr__kv_scan(buf, ':', &k, 1);
  return k.rc == HR_ENOENT ? HR_EPARSE : k.rc;
}

static int cmp_pid(const void *a, const void *b) {
  const hr_proc_t *x = a, *y = b;
  return (x->pid > y->pid) - (x->pid < y->pid);
}

int hr__procs_read(const char *root, bool pss, hr_proc_t **procs, size_t *n, size_t *unreadable) {
  char procdir[4096];
  hr_proc_t *arr = NULL;
  size_t len = 0, cap = 0;
  int rc = 0;
  *procs = NULL;
  *n = *unreadable = 0;
  if (hr__path(procdir, sizeof procdir, root, "/proc")) return HR_ERANGE;
  DIR *d = opendir(procdir);
  if (!d) return HR_ENOENT;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    const char *name = e->d_name;
    char *end;
    if (name[0] < '1' || name[0] > '9') continue;
    long pid = strtol(name, &end, 10);
    if (*end || pid <= 0 || pid > INT32_MAX) continue;
    if (len == cap) {
      size_t ncap = cap ? cap * 2 : 256;
      hr_proc_t *na = realloc(arr, ncap * sizeof *na);
      if (!na) {
        rc = HR_ENOMEM;
        goto out;
      }
      arr = na, cap = ncap;
    }
    int r = read_proc(dirfd(d), name, (int)pid, pss, &arr[len]);
    if (r == 0)
      len++;
    else if (r == HR_EPARSE) {
      (*unreadable)++;
      hr__log(HR_LOG_DEBUG, "%s/%ld/stat is malformed; process skipped", procdir, pid);
    }
  }
  if (len > 1) qsort(arr, len, sizeof *arr, cmp_pid);
out:
  closedir(d);
  if (rc) {
    free(arr);
    return rc;
  }
  *procs = arr;
  *n = len;
  return 0;
}
