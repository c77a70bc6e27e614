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
/* Reads root/proc/meminfo; errors name the file. */
HR_INTERNAL int hr__meminfo_read(const char *root, hr_host_mem_t *m, char *err, size_t errlen);

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

/* A known process and what its next read is compared with. */
typedef struct hr__pcache_ent {
  hr_proc_t p;
  /* statm's resident and shared pages when status was last read (from
   * status's VmRSS and RssFile + RssShmem); HR_UNKNOWN: read status next. */
  uint64_t res_pages, shared_pages;
  unsigned since_status; /* samples since status was read */
  uint64_t ino;          /* d_ino of /proc/PID on procfs; 0 elsewhere */
} hr__pcache_ent_t;

/* What hr__procs_read() read last time under `root`, sorted by pid: only the
 * processes of the last read, so an exited process drops out at the next. */
typedef struct hr__pcache {
  char *root;
  hr__pcache_ent_t *ents, *spare; /* spare: the array before, reused */
  size_t n, cap, cap_spare;
} hr__pcache_t;

/* status is read at least this often (in samples) for a known process
 * whose statm did not move, so RssFile, RssShmem and VmSwap are never older. */
#define HR__STATUS_EVERY 16u
/* One read buffer for every /proc file of a read (cmdline is cut to fit). */
#define HR__PROC_BUF 8192

/* Reads every process under root/proc into a malloc'd array sorted by pid.
 * `pss` reads smaps_rollup too. Processes that vanish are skipped; those
 * whose stat is malformed are skipped and counted in *unreadable. With a
 * cache (NULL: none), known processes are read the short way (see procs.c)
 * and the cache then holds this read; a cache of another root is emptied
 * first. Returns 0, HR_ENOENT/HR_EPERM (no root/proc directory) or
 * HR_ENOMEM (the cache is then left as it was). */
HR_INTERNAL int hr__procs_read(hr__pcache_t *cache, const char *root, bool pss, hr_proc_t **procs,
                               size_t *n, size_t *unreadable);
/* Frees what the cache holds and zeroes it. */
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
