/* Internal contract between the probe's readers (meminfo.c, cgroup.c,
 * procs.c, nvml.c) and snapshot.c, which calls them in turn and owns the
 * result. Each reader takes the root directory that /proc and /sys are read
 * under, so tests point it at a fixture tree. Not part of the public API. */
#ifndef HR_PROBE_INT_H
#define HR_PROBE_INT_H

#include "util/util.h"

/* One key of a "Key: value [kB]" or "key value" file. hr__kv_scan() sets
 * *out to the value in bytes (times 1024 when the value ends in "kB") and rc
 * to 0; a key that is not there keeps rc HR_ENOENT and *out HR_UNKNOWN; a
 * malformed or overflowing value gets rc HR_EPARSE or HR_ERANGE and *out
 * HR_UNKNOWN. */
typedef struct hr__kv {
  const char *key;
  uint64_t *out;
  int rc;
} hr__kv_t;

/* Scans `text` once, line by line, for the keys. `sep` is ':' for /proc
 * files ("VmRSS:  12 kB") and ' ' for cgroup files ("anon 4096"). */
HR_INTERNAL void hr__kv_scan(const char *text, char sep, hr__kv_t *keys, size_t n);

/* Parses /proc/meminfo text. MemTotal and MemFree are required: without them
 * returns HR_EPARSE or HR_ERANGE with a message naming the key; the other
 * fields are HR_UNKNOWN when missing or malformed. */
HR_INTERNAL int hr__meminfo_parse(const char *text, hr_host_mem_t *m, char *err, size_t errlen);
/* Reads root/proc/meminfo; errors name the file. Leaves the pressure alone. */
HR_INTERNAL int hr__meminfo_read(const char *root, hr_host_mem_t *m, char *err, size_t errlen);
/* Reads root/proc/pressure/memory into m's pressure; has_pressure is false
 * where there is none (no PSI), which is no error. */
HR_INTERNAL void hr__host_pressure_read(const char *root, hr_host_mem_t *m);

/* Parses PSI text ("some avg10=0.00 avg60=0.00 avg300=0.00 total=0", then
 * a "full" line) into *some and *full; returns whether either line was
 * there. Shared by the host's /proc/pressure/memory and a cgroup's
 * memory.pressure. */
HR_INTERNAL bool hr__pressure_parse(const char *text, hr_pressure_t *some, hr_pressure_t *full);

/* Parses the text of /proc/PID/cgroup into the container id and the
 * Kubernetes pod UID its paths show (each empty when none); see procs.c. */
HR_INTERNAL void hr__proc_parse_cgroup(const char *text, char *container, size_t cn, char *pod,
                                       size_t pn);

/* Fills *cg for a memory cgroup read under root: with `path` (not NULL or "")
 * that directory (root + a path under a cgroup mount, or a hierarchy path as
 * /proc/PID/cgroup shows it), with pid > 0 the cgroup of root/proc/PID, else
 * that of the process reading root/proc/self. Both at once is HR_PROBE_ERROR.
 * Never fails: a missing mount is HR_PROBE_ABSENT, a broken file
 * HR_PROBE_ERROR, each with cg->message. */
HR_INTERNAL void hr__cgroup_read_at(const char *root, const char *path, int pid,
                                    hr_cgroup_mem_t *cg);

/* A process as the last read left it, and what the next read compares with
 * (proc_read.c). */
typedef struct hr__pcache_ent {
  hr_proc_t p;
  uint64_t ino; /* d_ino of /proc/PID on procfs; 0 elsewhere */
  /* statm's resident, shared and text pages as last read (HR_UNKNOWN: not
   * read), and resident and shared when status was last read (from its
   * VmRSS and RssFile + RssShmem; HR_UNKNOWN: never, or no such lines). */
  uint64_t res_pages, shared_pages, text_pages;
  uint64_t status_res, status_shared;
  uint64_t file_bytes, shmem_bytes, swap_bytes; /* status's RssFile, RssShmem, VmSwap */
  unsigned since_status, since_stat;            /* snapshots since each was read */
  int fd;                                       /* statm held open (procfs), or -1 */
  bool pf_kthread;           /* stat's flags say kernel thread: it never has memory */
  bool have_stat;            /* ppid, state, name, start time and kernel_thread read */
  bool have_cmdline;         /* the command line read */
  bool have_ident;           /* uid, NSpid, command line and container read */
  bool stat_now, status_now; /* read during this snapshot */
} hr__pcache_ent_t;

/* What hr__procs_read() read last time under `root`, sorted by pid: only the
 * processes of the last read, so an exited process drops out at the next.
 * Up to max_held statm files stay open between reads (n_held now). */
typedef struct hr__pcache {
  char *root;
  hr__pcache_ent_t *ents, *spare; /* spare: the array before, reused */
  size_t n, cap, cap_spare;
  size_t max_held, n_held;
} hr__pcache_t;

/* status is read at least this often (in samples) for a known process
 * whose statm did not move, so RssFile, RssShmem and VmSwap are never older;
 * stat too, for a known process's name, state and ppid. */
#define HR__STATUS_EVERY 16u
/* One read buffer for every /proc file of a read (cmdline is cut to fit). */
#define HR__PROC_BUF 8192

/* One read of /proc: what every process shares, and the process at hand. */
typedef struct hr__proc_read {
  int procfd;         /* /proc, or a fixture tree's */
  bool procfs;        /* procfd is procfs: inodes name processes, files may be held */
  bool pss;           /* completing reads smaps_rollup too */
  bool brief;         /* read briefly; hr__proc_complete() reads the rest */
  const char *filter; /* the selection's filter ("" for none): brief reads skip the rest */
  long page;          /* bytes per page, for statm */
  char *buf;          /* scratch for one file */
  size_t bufsz;
  hr__pcache_t *cache; /* the context's, or NULL */
  /* the process */
  int pid;
  uint64_t ino;          /* its directory's inode on procfs; 0 elsewhere */
  hr__pcache_ent_t *old; /* what the cache holds for pid, or NULL */
  char path[32];         /* "PID/" and then a file name */
  char *file;            /* where the file name goes in path; NULL: not made yet */
} hr__proc_read_t;

/* Reads the process r->pid into *e (proc_read.c): briefly with r->brief, or
 * in full. Uses r->old where it is the same process (same inode on procfs,
 * same start time elsewhere), taking over its held statm file. Returns 0,
 * HR_ENOENT (gone: skip) or HR_EPARSE (malformed stat: skip and count). */
HR_INTERNAL int hr__proc_read(hr__proc_read_t *r, hr__pcache_ent_t *e);
/* Reads the rest of a brief e (r->pid is e's; r->file NULL, or set for that
 * pid); returns 0, HR_ENOENT or HR_EPARSE (e then stays brief). */
HR_INTERNAL int hr__proc_complete(hr__proc_read_t *r, hr__pcache_ent_t *e);
/* Closes e's held statm file, if any, counting it off c (NULL: none). */
HR_INTERNAL void hr__proc_release(hr__pcache_t *c, hr__pcache_ent_t *e);

/* How hr__procs_read() reads: see hr__proc_read_t. */
typedef struct hr__procs_how {
  bool pss, brief;
  const char *filter;
} hr__procs_how_t;

/* Reads every process under root/proc into a malloc'd array sorted by pid,
 * as `how` says. Processes that vanish are skipped; those whose stat or
 * statm is malformed are skipped and counted in *unreadable. With a cache
 * (NULL: none), known processes are read the short way (see proc_read.c)
 * and the cache then holds this read; a cache of another root is emptied
 * first. Returns 0, HR_ENOENT/HR_EPERM (no root/proc directory) or
 * HR_ENOMEM (the cache is then emptied). */
HR_INTERNAL int hr__procs_read(hr__pcache_t *cache, const char *root, const hr__procs_how_t *how,
                               hr_proc_t **procs, size_t *n, size_t *unreadable);
/* Completes the brief processes among procs[idx[0..n_idx)] (read under root,
 * through the cache when it holds that root's last read). One that is gone
 * stays brief; one with a malformed stat is counted in *unreadable too.
 * Returns 0, or HR_ENOENT when root/proc cannot be opened. */
HR_INTERNAL int hr__procs_complete(hr__pcache_t *cache, const char *root, bool pss,
                                   hr_proc_t *procs, const size_t *idx, size_t n_idx,
                                   size_t *unreadable);
/* Frees what the cache holds, closing its files, and zeroes it (max_held is
 * kept). */
HR_INTERNAL void hr__pcache_clear(hr__pcache_t *c);

/* Parses the text of /proc/PID/stat and /proc/PID/status into p (tests feed
 * them directly). Returns 0 or HR_EPARSE. */
HR_INTERNAL int hr__proc_parse_stat(const char *text, hr_proc_t *p, uint64_t *flags);
HR_INTERNAL void hr__proc_parse_status(const char *text, hr_proc_t *p);

/* Fills the GPU part of s (gpu_state, gpu_message, driver_version, gpus,
 * gpu_procs) through the NVML library at `path` (NULL: libnvidia-ml.so.1,
 * then libnvidia-ml.so). A missing library or symbol, no permission or a
 * lost GPU is a state, not a failure: returns 0, or HR_ENOMEM. */
HR_INTERNAL int hr__nvml_read(const char *path, hr_snapshot_t *s);

/* The memo of failed NVML loads (nvml_memo.c), keyed by the path asked for
 * (NULL: the default search); both need the NVML libraries' lock.
 * hr__nvml_memo_hit_locked() fills s's GPU state and message and returns
 * true when the library failed less than HR__NVML_RETRY_S ago and no retry
 * was asked for since; hr__nvml_memo_note_locked() records the outcome of a
 * load (loaded, or the failure in s), logging a failure once. */
HR_INTERNAL bool hr__nvml_memo_hit_locked(const char *path, hr_snapshot_t *s);
HR_INTERNAL void hr__nvml_memo_note_locked(const char *path, const hr_snapshot_t *s, bool loaded);
/* The memo's clock (tests); NULL restores hr__now_mono. */
HR_INTERNAL void hr__nvml_memo_clock(double (*now)(void));
#define HR__NVML_RETRY_S 60.0

/* The value that cgroup v1 writes for "no limit" is LONG_MAX rounded down to
 * a page; anything at or above 2^62 is taken as unlimited, which also keeps
 * huge values clear of the HR_UNKNOWN and HR_UNLIMITED sentinels. */
#define HR__LIMIT_HUGE (UINT64_C(1) << 62)

#endif /* HR_PROBE_INT_H */
