/* Reading one process under /proc, in two steps (see probe.h, HR_PROBE_BRIEF).
 *
 * The brief read ranks: what it reads is statm (resident and shared pages,
 * so VmRSS and RssAnon exactly), and with a filter the name (comm, or stat
 * through a context) and, when the name does not match, the command line.
 * Through a context a process is also identified: stat once when it is
 * first seen (start time, name, state, kernel thread), again when its
 * resident memory falls to zero (a zombie) or its code size changes (an
 * exec), and at most every HR__STATUS_EVERY snapshots. A kernel thread, or
 * a zombie the context already knows, is not read at all: neither has
 * memory, and on procfs the same /proc/PID inode is the same task.
 *
 * Completing reads the rest for the processes that will be shown or
 * recorded: stat (when the brief read did not), status (RssFile, RssShmem,
 * VmSwap, uid, NSpid), the command line and the cgroup (container, pod).
 * Through a context the command line, cgroup, uid and NSpid are read once
 * per process lifetime, and status only when statm moved since status was
 * last read or every HR__STATUS_EVERY snapshots; a process whose record is
 * still good is complete without a read.
 *
 * A context may keep statm open between snapshots (hr_probe_hold_files):
 * reading an open /proc file again with pread costs a fraction of opening
 * it (the path walk, the file and its seq buffer). The open file belongs to
 * the process it was opened for: once that process is reaped, a read fails
 * with ESRCH even if its pid is reused, so a held file never reads another
 * process. Only procfs files are held; a fixture tree is reopened. */
#include "probe/probe_int.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PF_KTHREAD_ 0x00200000u /* task flag of kernel threads (linux/sched.h) */

/* Maps errno after a failed open or read: a process that exits mid-read
 * gives ESRCH, and one already gone ENOENT. */
static int err_of(int e) {
  return e == EACCES || e == EPERM ? HR_EPERM : e == ENOENT || e == ESRCH ? HR_ENOENT : HR_EIO;
}

/* Reads fd from offset 0 into buf, terminated; returns the length or a
 * negative HR_E* code. /proc files are generated whole on each read, and a
 * regular file (a fixture) gives less than asked only at its end: a short
 * read is the end, and the read(2) that would return 0 is saved. */
static ssize_t read_whole(int fd, char *buf, size_t n) {
  size_t len = 0;
  for (;;) {
    size_t want = n - 1 - len;
    ssize_t r = pread(fd, buf + len, want, (off_t)len);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      buf[len] = '\0';
      return err_of(errno);
    }
    len += (size_t)r;
    if (r == 0 || (size_t)r < want || len == n - 1) break;
  }
  buf[len] = '\0';
  return (ssize_t)len;
}

/* Points r->path at the process's directory ("PID/"), when a file is
 * first opened: a process read through its held statm opens none. */
static void at_pid(hr__proc_read_t *r) {
  int n = snprintf(r->path, sizeof r->path, "%d/", r->pid);
  r->file = r->path + (n > 0 ? n : 0);
}

/* Opens the process's file `f` ("PID/f" under procfd: opening the pid's
 * directory too would cost a second path walk); the fd or a negative HR_E*. */
static int open_pid_file(hr__proc_read_t *r, const char *f) {
  if (!r->file) at_pid(r);
  size_t room = sizeof r->path - (size_t)(r->file - r->path);
  hr__strlcpy(r->file, f, room);
  int fd = openat(r->procfd, r->path, O_RDONLY | O_CLOEXEC);
  return fd < 0 ? err_of(errno) : fd;
}

/* Reads the process's file `f` into r->buf; the length or a negative HR_E*. */
static ssize_t read_pid_file(hr__proc_read_t *r, const char *f) {
  int fd = open_pid_file(r, f);
  if (fd < 0) {
    r->buf[0] = '\0';
    return fd;
  }
  ssize_t len = read_whole(fd, r->buf, r->bufsz);
  int e = errno;
  close(fd);
  errno = e;
  return len;
}

/* Parses statm ("size resident shared text lib data dt", in pages) into
 * v[0..3]. Returns 0 or HR_EPARSE. */
static int parse_statm(const char *text, uint64_t v[4]) {
  const char *s = text;
  for (int i = 0; i < 4; i++) {
    while (*s == ' ') s++;
    if (*s < '0' || *s > '9') return HR_EPARSE;
    char *end;
    errno = 0;
    unsigned long long x = strtoull(s, &end, 10);
    if (errno || (*end != ' ' && *end != '\n' && *end != '\0')) return HR_EPARSE;
    v[i] = x, s = end;
  }
  return v[2] > v[1] ? HR_EPARSE : 0;
}

/* ---- held statm files --------------------------------------------------- */

void hr__proc_release(hr__pcache_t *c, hr__pcache_ent_t *e) {
  if (e->fd < 0) return;
  close(e->fd);
  e->fd = -1;
  if (c && c->n_held > 0) c->n_held--;
}

/* Reads statm into v: through the file held for the process, else opened
 * (and kept when the context has room). Returns 0, HR_ENOENT (gone),
 * HR_EPARSE, or another negative HR_E* (no statm: the caller reads status). */
static int read_statm(hr__proc_read_t *r, hr__pcache_ent_t *e, uint64_t v[4]) {
  ssize_t len;
  if (e->fd >= 0) {
    len = read_whole(e->fd, r->buf, r->bufsz);
    /* ESRCH: the process was reaped. A lowered limit closes files as they
     * are read. */
    if (len < 0 || r->cache->n_held > r->cache->max_held) hr__proc_release(r->cache, e);
  } else {
    int fd = open_pid_file(r, "statm");
    if (fd < 0) return fd;
    len = read_whole(fd, r->buf, r->bufsz);
    bool hold = len > 0 && r->procfs && r->cache && r->cache->n_held < r->cache->max_held;
    if (hold)
      e->fd = fd, r->cache->n_held++;
    else
      close(fd);
  }
  if (len < 0) return (int)len;
  return parse_statm(r->buf, v);
}

/* ---- the reads ---------------------------------------------------------- */

/* stat: ppid, state, name, start time, kernel thread. Returns 0, HR_ENOENT
 * (gone or unreadable: skipped like a vanished process) or HR_EPARSE. */
static int read_stat(hr__proc_read_t *r, hr__pcache_ent_t *e) {
  uint64_t flags = 0;
  if (read_pid_file(r, "stat") < 0) return HR_ENOENT;
  if (hr__proc_parse_stat(r->buf, &e->p, &flags)) return HR_EPARSE;
  e->pf_kthread = (flags & PF_KTHREAD_) != 0;
  e->p.kernel_thread = e->pf_kthread || r->pid == 2 || e->p.ppid == 2;
  /* Processes first seen together are due again at different snapshots. */
  e->since_stat = e->have_stat ? 0 : (unsigned)r->pid % HR__STATUS_EVERY;
  e->have_stat = e->stat_now = true;
  return 0;
}

/* status: the memory fields, uid and NSpid. A kernel thread or a zombie has
 * no Vm lines, and that is a zero, not an unknown. Remembers the status
 * figures and the statm pages they match. Returns 0 or HR_ENOENT (gone). */
static int read_status(hr__proc_read_t *r, hr__pcache_ent_t *e) {
  hr_proc_t *p = &e->p;
  ssize_t len = read_pid_file(r, "status");
  if (len == HR_ENOENT) return HR_ENOENT;
  p->rss_bytes = p->rss_anon_bytes = p->rss_file_bytes = HR_UNKNOWN;
  p->rss_shmem_bytes = p->swap_bytes = HR_UNKNOWN;
  hr__proc_parse_status(len > 0 ? r->buf : "", p);
  uint64_t *f[] = {&p->rss_bytes, &p->rss_anon_bytes, &p->rss_file_bytes, &p->rss_shmem_bytes,
                   &p->swap_bytes};
  for (size_t i = 0; (p->kernel_thread || p->state == 'Z') && len >= 0 && i < HR_ARRAY_LEN(f); i++)
    if (*f[i] == HR_UNKNOWN) *f[i] = 0;
  e->file_bytes = p->rss_file_bytes, e->shmem_bytes = p->rss_shmem_bytes;
  e->swap_bytes = p->swap_bytes;
  uint64_t page = (uint64_t)r->page;
  bool known = p->rss_bytes != HR_UNKNOWN && p->rss_file_bytes != HR_UNKNOWN &&
               p->rss_shmem_bytes != HR_UNKNOWN;
  e->status_res = known ? p->rss_bytes / page : HR_UNKNOWN;
  e->status_shared = known ? (p->rss_file_bytes + p->rss_shmem_bytes) / page : HR_UNKNOWN;
  e->since_status = e->status_now || e->have_ident ? 0 : (unsigned)r->pid % HR__STATUS_EVERY;
  e->status_now = true;
  return 0;
}

/* The command line, arguments joined by spaces. */
static void read_cmdline(hr__proc_read_t *r, hr__pcache_ent_t *e) {
  ssize_t len = read_pid_file(r, "cmdline");
  char *buf = r->buf;
  for (ssize_t i = 0; i < len; i++)
    if (buf[i] == '\0' || buf[i] == '\n') buf[i] = ' ';
  while (len > 0 && buf[len - 1] == ' ') buf[--len] = '\0';
  if (len > 0) hr__strlcpy(e->p.cmdline, buf, sizeof e->p.cmdline);
  e->have_cmdline = true;
}

/* The name alone, for a filter, where stat is not read: comm costs what
 * statm does, stat half as much again. */
static void read_comm(hr__proc_read_t *r, hr__pcache_ent_t *e) {
  ssize_t len = read_pid_file(r, "comm");
  while (len > 0 && r->buf[len - 1] == '\n') r->buf[--len] = '\0';
  if (len > 0) hr__strlcpy(e->p.name, r->buf, sizeof e->p.name);
}

static void read_cgroup(hr__proc_read_t *r, hr__pcache_ent_t *e) {
  if (read_pid_file(r, "cgroup") > 0)
    hr__proc_parse_cgroup(r->buf, e->p.container_id, sizeof e->p.container_id, e->p.pod_uid,
                          sizeof e->p.pod_uid);
}

/* ---- the brief read ----------------------------------------------------- */

/* Whether status must be read to complete e: never read, read for another
 * statm, or too old. */
static bool status_due(const hr__pcache_ent_t *e) {
  if (e->status_now) return false;
  return !e->have_ident || e->status_res == HR_UNKNOWN || e->res_pages != e->status_res ||
         e->shared_pages != e->status_shared || e->since_status >= HR__STATUS_EVERY;
}

/* Whether stat must be read again to complete e: its name, state and ppid
 * are shown, so they are at most HR__STATUS_EVERY snapshots old. */
static bool stat_due(const hr__pcache_ent_t *e) {
  return !e->have_stat || (!e->stat_now && e->since_stat >= HR__STATUS_EVERY);
}

/* A fresh entry for the process r names. */
static void ent_init(hr__proc_read_t *r, hr__pcache_ent_t *e) {
  memset(e, 0, sizeof *e);
  e->p.pid = e->p.nspid = r->pid;
  e->p.rss_bytes = e->p.rss_anon_bytes = e->p.rss_file_bytes = HR_UNKNOWN;
  e->p.rss_shmem_bytes = e->p.swap_bytes = e->p.pss_bytes = HR_UNKNOWN;
  e->res_pages = e->shared_pages = e->text_pages = HR_UNKNOWN;
  e->status_res = e->status_shared = HR_UNKNOWN;
  e->file_bytes = e->shmem_bytes = e->swap_bytes = HR_UNKNOWN;
  e->ino = r->ino;
  e->fd = -1;
  e->p.brief = true;
}

/* What the last snapshot knew of the same process: identity and the status
 * memo; this snapshot's memory is read afresh, and stat's fields are kept
 * when stat was read this time. The held statm file moves to the new entry. */
static void carry(hr__pcache_ent_t *old, hr__pcache_ent_t *e) {
  hr_proc_t fresh = e->p;
  bool stat_now = e->stat_now;
  uint64_t ino = e->ino;
  *e = *old;
  e->ino = ino;
  e->status_now = e->stat_now = false;
  e->since_status++, e->since_stat++;
  hr_proc_t *p = &e->p;
  p->rss_bytes = p->rss_anon_bytes = p->rss_file_bytes = HR_UNKNOWN;
  p->rss_shmem_bytes = p->swap_bytes = p->pss_bytes = HR_UNKNOWN;
  p->gpu_bytes = 0;
  p->brief = true;
  if (stat_now) {
    p->ppid = fresh.ppid, p->state = fresh.state, p->kernel_thread = fresh.kernel_thread;
    memcpy(p->name, fresh.name, sizeof p->name);
    e->since_stat = 0;
    e->stat_now = true;
  }
  old->fd = -1; /* now e's */
}

/* Memory from statm (or, where there is no statm, a fixture tree, from a
 * full read), and stat again where statm says it is due. Returns 0,
 * HR_ENOENT or HR_EPARSE. */
static int read_memory(hr__proc_read_t *r, hr__pcache_ent_t *e) {
  uint64_t v[4] = {0}, old_res = e->res_pages, old_text = e->text_pages;
  int rc = read_statm(r, e, v);
  if (rc == HR_ENOENT && r->procfs) return HR_ENOENT;
  if (rc) { /* no statm (a fixture tree): read in full, status for memory */
    e->res_pages = e->shared_pages = e->text_pages = HR_UNKNOWN;
    return hr__proc_complete(r, e);
  }
  e->res_pages = v[1], e->shared_pages = v[2], e->text_pages = v[3];
  e->p.rss_bytes = v[1] * (uint64_t)r->page;
  e->p.rss_anon_bytes = (v[1] - v[2]) * (uint64_t)r->page;
  /* A known process whose memory fell to nothing (a zombie?) or whose code
   * changed (an exec: another name). */
  bool known = r->cache && e->have_stat && !e->stat_now && old_res != HR_UNKNOWN;
  bool restat = known && ((v[1] == 0 && old_res != 0) || v[3] != old_text);
  return restat ? read_stat(r, e) : 0;
}

/* With a filter: the name and, when it does not match, the command line
 * (read once per process lifetime through a context). True when the
 * process matches. */
static bool read_for_filter(hr__proc_read_t *r, hr__pcache_ent_t *e) {
  if (!e->have_stat) read_comm(r, e);
  if (hr_proc_matches(&e->p, r->filter)) return true;
  if (!e->have_cmdline) read_cmdline(r, e);
  return hr_proc_matches(&e->p, r->filter);
}

/* The memory fields of a process without memory (a kernel thread, a known
 * zombie), as status would give them. */
static void no_memory(hr__pcache_ent_t *e) {
  e->p.rss_bytes = e->p.rss_anon_bytes = e->p.rss_file_bytes = 0;
  e->p.rss_shmem_bytes = e->p.swap_bytes = 0;
  e->res_pages = e->shared_pages = 0;
}

/* Fills the status fields from the memo and marks e complete, when its
 * record is still good (not with PSS, which is read each time). */
static void complete_if_current(hr__proc_read_t *r, hr__pcache_ent_t *e) {
  if (r->pss || !e->have_stat || stat_due(e) || status_due(e)) return;
  e->p.rss_file_bytes = e->file_bytes, e->p.rss_shmem_bytes = e->shmem_bytes;
  e->p.swap_bytes = e->swap_bytes;
  e->p.brief = false;
}

/* Identifies the process: by its inode on procfs when the context knows it
 * (*by_ino), else through stat (no stat without a context in a brief
 * read). Returns 0, HR_ENOENT or HR_EPARSE. */
static int identify(hr__proc_read_t *r, hr__pcache_ent_t *e, bool *by_ino) {
  hr__pcache_ent_t *old = r->old;
  *by_ino = old && old->have_stat && r->procfs && old->ino == r->ino;
  if (*by_ino) {
    carry(old, e);
    return 0;
  }
  /* Another process, or the same one under a new dentry: its file goes. */
  if (old) hr__proc_release(r->cache, old);
  if (!r->cache && r->brief) return 0;
  int rc = read_stat(r, e);
  if (rc == 0 && old && old->have_stat && old->p.start_ticks == e->p.start_ticks) carry(old, e);
  return rc;
}

int hr__proc_read(hr__proc_read_t *r, hr__pcache_ent_t *e) {
  ent_init(r, e);
  r->file = NULL;
  bool by_ino;
  int rc = identify(r, e, &by_ino);
  if (rc) return rc;
  bool over = r->cache && r->cache->n_held > r->cache->max_held;
  if (r->brief && *r->filter && !read_for_filter(r, e)) {
    if (over) hr__proc_release(r->cache, e); /* a lowered limit */
    return 0;                                /* not wanted: not read */
  }
  if (e->pf_kthread || (by_ino && e->p.state == 'Z')) {
    no_memory(e);
    hr__proc_release(r->cache, e); /* a zombie's statm is never read again */
  } else if ((r->cache || r->brief) && (rc = read_memory(r, e)) != 0)
    return rc; /* without a context a full read has status for memory */
  if (!r->brief) return hr__proc_complete(r, e);
  complete_if_current(r, e);
  return 0;
}

/* ---- completing --------------------------------------------------------- */

int hr__proc_complete(hr__proc_read_t *r, hr__pcache_ent_t *e) {
  int rc = stat_due(e) ? read_stat(r, e) : 0;
  if (rc) return rc;
  if (status_due(e) || e->p.rss_bytes == HR_UNKNOWN) { /* no memory read yet: a filtered-out one */
    if (read_status(r, e) == HR_ENOENT) return HR_ENOENT;
  } else if (!e->status_now) {
    e->p.rss_file_bytes = e->file_bytes, e->p.rss_shmem_bytes = e->shmem_bytes;
    e->p.swap_bytes = e->swap_bytes;
  }
  if (!e->have_ident) {
    if (!e->have_cmdline) read_cmdline(r, e);
    read_cgroup(r, e);
    e->have_ident = true;
  }
  if (r->pss && !e->p.kernel_thread && e->p.state != 'Z' && read_pid_file(r, "smaps_rollup") > 0) {
    hr__kv_t k = {"Pss", &e->p.pss_bytes, 0};
    hr__kv_scan(r->buf, ':', &k, 1);
  }
  e->p.brief = false;
  return 0;
}
