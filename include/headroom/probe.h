/* probe: one snapshot of the machine's memory, read from a root directory.
 *
 * hr_snapshot_take() reads host memory (/proc/meminfo), this process's cgroup
 * (v1 or v2), every process under /proc, and the GPUs through NVML loaded with
 * dlopen. Everything is read under `root` ("/" normally; a fixture tree in
 * tests). A part that cannot be read (no cgroup mount, no NVML, no
 * permission) is a state the snapshot reports, not a failed snapshot.
 * Included by headroom/headroom.h; do not include it alone. */
#ifndef HEADROOM_PROBE_H
#define HEADROOM_PROBE_H

#ifdef __cplusplus
extern "C" {
#endif

/* A size that could not be read. */
#define HR_UNKNOWN UINT64_MAX
/* A limit that is not set ("max" in cgroup v2, the huge value in v1). */
#define HR_UNLIMITED (UINT64_MAX - 1)

typedef struct hr_pressure {
  double avg10, avg60, avg300; /* percent */
  uint64_t total_us;
} hr_pressure_t;

typedef struct hr_host_mem {
  uint64_t total_bytes, available_bytes, free_bytes, buffers_bytes, cached_bytes;
  uint64_t swap_total_bytes, swap_free_bytes, shmem_bytes;
  /* /proc/pressure/memory; has_pressure is false where the kernel has no
   * PSI (built without it, or booted with psi=0). */
  bool has_pressure;
  struct hr_pressure pressure_some, pressure_full;
} hr_host_mem_t;

typedef enum hr_probe_state {
  HR_PROBE_OK = 0,
  HR_PROBE_ABSENT = 1, /* not there: no cgroup mount, no NVML library */
  HR_PROBE_DENIED = 2, /* there but not readable */
  HR_PROBE_ERROR = 3,  /* there but broken: see the message */
} hr_probe_state_t;

typedef struct hr_cgroup_mem {
  hr_probe_state_t state;
  char message[160];        /* why, when state is not OK */
  int version;              /* 1 or 2; 0 when there is none */
  char path[512];           /* the cgroup's path inside its hierarchy, "/..." */
  uint64_t limit_bytes;     /* effective: smallest along the path; HR_UNLIMITED */
  uint64_t own_limit_bytes; /* this cgroup's own limit */
  uint64_t high_bytes;      /* v2 memory.high; HR_UNLIMITED or HR_UNKNOWN */
  uint64_t current_bytes;   /* memory.current / usage_in_bytes */
  uint64_t usage_bytes;     /* current minus inactive_file, as container tools show */
  uint64_t anon_bytes, file_bytes, inactive_file_bytes, shmem_bytes;
  uint64_t oom_events, oom_kill_events;
  bool has_pressure;
  hr_pressure_t pressure_some, pressure_full;
} hr_cgroup_mem_t;

typedef struct hr_proc {
  int pid, ppid;
  int nspid; /* innermost pid (NSpid's last field); = pid outside containers */
  uint32_t uid;
  uint64_t start_ticks; /* start time in clock ticks after boot: (pid, start) is unique */
  char state;           /* 'R', 'S', 'Z', ... */
  bool kernel_thread;
  char name[64];     /* comm */
  char cmdline[512]; /* arguments joined by spaces, truncated */
  /* Read briefly (HR_PROBE_BRIEF): a process outside the selection. It has
   * its pid, rss_bytes and rss_anon_bytes (statm), gpu_bytes, and the
   * fields of stat where a probe context read them (ppid, state, name,
   * start_ticks, kernel_thread); with a filter, the name and the command
   * line as far as matching needed them (a process the filter does not
   * match has no memory read: HR_UNKNOWN). Every other size is HR_UNKNOWN,
   * other fields zero or empty; hr_probe_complete() reads the rest. */
  bool brief;
  uint64_t rss_bytes, rss_anon_bytes, rss_file_bytes, rss_shmem_bytes, swap_bytes;
  uint64_t pss_bytes;    /* HR_UNKNOWN when smaps_rollup is not readable */
  uint64_t gpu_bytes;    /* summed over GPUs; 0 when none or unknown */
  char container_id[80]; /* empty when not in a container */
  char pod_uid[40];      /* Kubernetes pod UID from the cgroup path; empty when none */
} hr_proc_t;

typedef struct hr_gpu {
  unsigned index;
  char name[96], uuid[96], pci_bus_id[32];
  uint64_t total_bytes, reserved_bytes, free_bytes, used_bytes;
  int util_gpu, util_mem; /* percent; -1 when unknown */
  int temperature_c;      /* -1 when unknown */
  int power_mw;           /* -1 when unknown */
  hr_probe_state_t state; /* a lost GPU is reported, not dropped */
  char message[96];
} hr_gpu_t;

typedef struct hr_gpu_proc {
  unsigned gpu;        /* index into gpus */
  int pid;             /* as NVML reports it: a host pid */
  int local_pid;       /* the pid in our /proc, or 0 when not visible here */
  uint64_t used_bytes; /* HR_UNKNOWN when the driver does not say */
  /* The process of local_pid in the snapshot's procs, or NULL when it is not
   * visible here (or the processes were not read). */
  const hr_proc_t *proc;
} hr_gpu_proc_t;

typedef struct hr_snapshot {
  double time; /* seconds since the epoch */
  hr_probe_state_t host_state;
  char host_message[160];
  hr_host_mem_t host;
  hr_cgroup_mem_t cgroup;
  hr_probe_state_t gpu_state;
  char gpu_message[160]; /* "nvml: library not found" */
  char driver_version[32];
  size_t n_gpus;
  hr_gpu_t *gpus;
  size_t n_gpu_procs;
  hr_gpu_proc_t *gpu_procs;
  size_t n_procs;
  hr_proc_t *procs; /* sorted by pid */
  /* Processes left out because their /proc files were malformed (a process
   * that exited mid-read is left out without being counted). */
  size_t n_procs_unreadable;
  /* The processes that matter, picked once per snapshot by the probe
   * (hr_snapshot_select with the options' filter and top), which status,
   * watch, history, the exporter and the Python layer show without picking
   * again: indexes into procs, the n_selected_gpu processes holding GPU
   * memory first (most first), then the largest by RSS. A caller that shows
   * only the `top` largest besides the GPU holders takes the first
   * n_selected_gpu + min(top, n_selected - n_selected_gpu). NULL (and 0)
   * when no selection was made: a snapshot built by hand. */
  size_t *selected;
  size_t n_selected, n_selected_gpu;
} hr_snapshot_t;

/* What to read. */
enum {
  HR_PROBE_HOST = 1u << 0,
  HR_PROBE_CGROUP = 1u << 1,
  HR_PROBE_PROCS = 1u << 2,
  HR_PROBE_GPUS = 1u << 3,
  HR_PROBE_PSS = 1u << 4, /* smaps_rollup per process: slower */
  HR_PROBE_ALL = 0x1f,
  /* Not a part but a way to read the processes: every process briefly (see
   * hr_proc_t's brief), then in full only the selected ones and the GPU
   * holders. Without it every process is read in full. */
  HR_PROBE_BRIEF = 1u << 5,
};

typedef struct hr_probe_options {
  const char *root; /* NULL or "" means "/" */
  unsigned what;    /* HR_PROBE_* bits; 0 means HR_PROBE_ALL */
  /* The NVML library to dlopen instead of libnvidia-ml.so.1 (tests); NULL for
   * the default search. */
  const char *nvml_path;
  /* Optional: receives why hr_snapshot_take() failed ("/proc/meminfo: MemTotal
   * is not a number"). The pointer is copied, the buffer is written. */
  char *err;
  size_t errlen;
  /* The memory cgroup to read instead of the caller's own, so that a watcher
   * on the host reads a container's: `cgroup` (NULL or "" for none) is a
   * directory under a cgroup mount (read under root) or a hierarchy path as
   * /proc/PID/cgroup shows it; `cgroup_pid` (0 for none) names the cgroup of
   * root/proc/PID. Both at once is the cgroup's HR_PROBE_ERROR state. */
  const char *cgroup;
  int cgroup_pid;
  /* The selection the snapshot carries (hr_snapshot_t's selected): the
   * processes whose name or command line holds one of the comma-separated
   * words of `filter` (NULL or "" for every process), and of those, besides
   * every GPU holder, the `top` largest by RSS (0: the GPU holders alone). */
  const char *filter;
  size_t top;
} hr_probe_options_t;

/* Takes a snapshot and selects its processes (opts->filter, opts->top).
 * Returns 0 and a snapshot the caller frees with
 * hr_snapshot_free(), even when parts are absent (see their states); fails
 * only when the host memory cannot be read (HR_ENOENT, HR_EPERM, HR_EIO: the
 * file; HR_EPARSE, HR_ERANGE: MemTotal or MemFree missing, malformed or over
 * 64 bits) or on HR_ENOMEM, with the reason in opts->err. Thread-safe: holds
 * no global state besides the NVML libraries, each loaded and initialised
 * once per path and kept for the life of the process (a path that failed to
 * load is tried again at most once a minute: see hr_probe_retry_gpus). */
HR_API int hr_snapshot_take(const hr_probe_options_t *opts, hr_snapshot_t **out);
HR_API void hr_snapshot_free(hr_snapshot_t *s);

/* The host part of a snapshot alone, without taking one, for a caller that
 * wants only these figures and wants them often: reads root/proc/meminfo
 * (root NULL or "": "/") into *out, fields missing from the file
 * HR_UNKNOWN, and with `pressure` root/proc/pressure/memory too (without,
 * or without PSI, has_pressure is false). Returns 0 or the errors for which
 * hr_snapshot_take fails on the host (HR_ENOENT, HR_EPERM, HR_EIO, HR_EPARSE,
 * HR_ERANGE), or HR_EINVAL for a NULL out, with the reason in err (may be
 * NULL). */
HR_API int hr_host_mem_read(const char *root, bool pressure, hr_host_mem_t *out, char *err,
                            size_t errlen);

/* A probe context: for a caller that takes snapshots again and again (watch),
 * it remembers each process from one snapshot to the next, keyed by (pid,
 * start time), so a process that was already seen costs one small read
 * (statm) instead of four larger ones. What each snapshot taken through a
 * context holds:
 *   - fresh every snapshot: pid, rss_bytes and rss_anon_bytes (statm's
 *     resident and resident minus shared: the same counters status shows as
 *     VmRSS and RssAnon), pss_bytes (with HR_PROBE_PSS), gpu_bytes, which
 *     processes exist, and every non-process part (host, cgroup, GPUs);
 *   - read when the process is first seen, when its resident memory falls
 *     to zero (a zombie) or its code size changes (an exec), and otherwise
 *     at most 16 snapshots old: ppid, state, name (comm). On the host's
 *     procfs a known process is recognised by its /proc/PID inode (replaced
 *     when a process is reaped, before its pid can be reused); elsewhere (a
 *     fixture tree) stat is read every snapshot and these are fresh;
 *   - for a process read in full: rss_file_bytes, rss_shmem_bytes and
 *     swap_bytes from status, read again whenever statm's resident or
 *     shared pages moved since, and otherwise at most 16 snapshots old;
 *   - read once per process lifetime, when it is first read in full: uid,
 *     nspid, cmdline and container_id (a process that changes its command
 *     line or its uid afterwards keeps the first ones; a new process on a
 *     reused pid has another start time and is read afresh).
 * Kernel threads and zombies the context knows are not read again (they
 * have no memory). Where statm cannot be read, status is read every
 * snapshot. The context holds only the processes of its last snapshot
 * (bounded by the process table), and is emptied when a snapshot names
 * another root. A context is not thread-safe: one per thread; different
 * contexts are independent. hr_probe_create returns 0, HR_EINVAL or
 * HR_ENOMEM. */
typedef struct hr_probe hr_probe_t;
HR_API int hr_probe_create(hr_probe_t **out);
HR_API void hr_probe_destroy(hr_probe_t *ctx);
/* hr_snapshot_take() through ctx (NULL: no context, every process is read in
 * full); the same options, results and errors. */
HR_API int hr_probe_snapshot(hr_probe_t *ctx, const hr_probe_options_t *opts, hr_snapshot_t **out);
/* How many processes ctx remembers: those of its last snapshot that read
 * processes. */
HR_API size_t hr_probe_cached(const hr_probe_t *ctx);

/* Lets ctx keep up to `max` statm files open from one snapshot to the next
 * (0, the default: none; existing ones past the new limit close at the next
 * snapshot). Reading an open /proc file again costs about a quarter of
 * opening it, so a watcher of a large process table reads it several times
 * cheaper; the price is one descriptor and about 4 KiB of kernel memory (the
 * file's buffer) per process. An open file never reads another process: it
 * fails once its process is reaped. Only procfs files are kept. The caller
 * leaves room under RLIMIT_NOFILE for its other descriptors (watch keeps
 * half of its limit). */
HR_API void hr_probe_hold_files(hr_probe_t *ctx, size_t max);
/* How many statm files ctx holds open now. */
HR_API size_t hr_probe_held(const hr_probe_t *ctx);

/* Reads in full the processes of s at the indexes idx[0..n) that are brief
 * (s taken with HR_PROBE_BRIEF, which completes the selection and the GPU
 * holders itself: this is for others a caller records, such as watch's
 * leak suspects). Reads under opts->root (NULL: "/"), with smaps_rollup
 * when opts->what has HR_PROBE_PSS, through ctx when s was taken through
 * it (NULL: without a context). A process that exited since stays brief.
 * Returns 0 or HR_EINVAL (an index out of range). */
HR_API int hr_probe_complete(hr_probe_t *ctx, const hr_probe_options_t *opts, hr_snapshot_t *s,
                             const size_t *idx, size_t n);

/* Reads one process's PSS from root/proc/PID/smaps_rollup into *pss_bytes
 * (HR_UNKNOWN on failure). smaps_rollup walks the process's page tables, so
 * it costs milliseconds for a large process: a caller that shows a few
 * processes takes a snapshot without HR_PROBE_PSS and reads PSS for those.
 * Returns 0, HR_ENOENT (gone), HR_EPERM (another user's process), HR_EIO,
 * HR_EPARSE (no Pss line: a kernel thread or a malformed file), HR_ERANGE. */
HR_API int hr_proc_read_pss(const char *root, int pid, uint64_t *pss_bytes);

/* Makes the next snapshot try to load NVML again where a load failed (no
 * library, a symbol missing, nvmlInit failing). A failed load is otherwise
 * remembered and tried again at most once a minute, so that a host without
 * the driver does not search the library path on every sample. Thread-safe
 * and async-signal-safe: `headroom watch` calls it on SIGHUP. */
HR_API void hr_probe_retry_gpus(void);

/* Returns "ok", "absent", "denied" or "error"; a static string. */
HR_API const char *hr_probe_state_name(hr_probe_state_t state);

/* Writes the snapshot as one JSON object (the schema is docs/status-schema.json)
 * into a malloc'd string the caller frees. Sizes are bytes in keys ending in
 * _bytes; an unknown size is null, an unset limit is the string "max". The
 * processes are those read in full (every one, unless HR_PROBE_BRIEF).
 * Returns 0, HR_EINVAL or HR_ENOMEM. */
HR_API int hr_snapshot_json(const hr_snapshot_t *s, char **out);
/* The same object with only the selected processes under "processes", in
 * the selection's order (s->selected; what `status --json` and the
 * exporter's /api/snapshot show). HR_EINVAL when s has no selection. */
HR_API int hr_snapshot_json_selected(const hr_snapshot_t *s, char **out);

/* True when p's name or command line contains one of the comma-separated
 * words of `filter` (case-insensitive); an empty filter matches every
 * process. Words longer than 127 bytes are ignored. */
HR_API bool hr_proc_matches(const hr_proc_t *p, const char *filter);

/* Selects the processes that matter into s->selected, s->n_selected and
 * s->n_selected_gpu (malloc'd; hr_snapshot_free frees it; an earlier
 * selection is replaced): every process holding GPU memory (most first),
 * then the `top` largest by RSS among the others; kernel threads, processes
 * holding nothing and those `filter` does not match (see hr_proc_matches;
 * NULL or "" matches all) are left out, and a non-empty filter never matches
 * the calling process. hr_probe_snapshot() does this with its options; a
 * caller calls it only for a snapshot it built by hand. Returns 0, HR_EINVAL
 * or HR_ENOMEM (the snapshot is left without a selection). O(n log n) in the
 * processes. */
HR_API int hr_snapshot_select(hr_snapshot_t *s, size_t top, const char *filter);

/* The process `pid` of the snapshot (whose procs are sorted by pid), or NULL.
 * O(log n). */
HR_API const hr_proc_t *hr_snapshot_proc(const hr_snapshot_t *s, int pid);

#ifdef __cplusplus
}
#endif

#endif /* HEADROOM_PROBE_H */
