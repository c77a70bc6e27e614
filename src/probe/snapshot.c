/* hr_snapshot_take: host memory, cgroup, processes and GPUs, read in that
 * order, then GPU processes are matched to /proc entries and the processes
 * that matter are selected (select.c). The snapshot is one allocation for
 * the struct plus one array per list; hr_snapshot_free releases them all. */
#include "probe/probe_int.h"

#include <stdlib.h>
#include <string.h>

const char *hr_probe_state_name(hr_probe_state_t state) {
  static const char *const names[] = {[HR_PROBE_OK] = "ok",
                                      [HR_PROBE_ABSENT] = "absent",
                                      [HR_PROBE_DENIED] = "denied",
                                      [HR_PROBE_ERROR] = "error"};
  return hr__enum_name(names, HR_ARRAY_LEN(names), (int)state, "error");
}

static int cmp_pid_key(const void *key, const void *elem) {
  int pid = *(const int *)key;
  const hr_proc_t *p = elem;
  return (pid > p->pid) - (pid < p->pid);
}

/* NVML names processes by their pid in the host's namespace. Read through the
 * host's /proc (headroom on the host, or a container given the host's /proc
 * as its root) that is the pid of a /proc entry, whose NSpid then tells the
 * pid the process sees inside its container. Through a container's own
 * /proc, host pids are not visible and local_pid stays 0. */
static void map_gpu_procs(hr_snapshot_t *s) {
  if (s->n_procs == 0) return; /* processes not read */
  for (size_t i = 0; i < s->n_gpu_procs; i++) {
    hr_gpu_proc_t *g = &s->gpu_procs[i];
    hr_proc_t *p = bsearch(&g->pid, s->procs, s->n_procs, sizeof *s->procs, cmp_pid_key);
    g->local_pid = p ? p->pid : 0;
    g->proc = p;
    if (p && g->used_bytes != HR_UNKNOWN) p->gpu_bytes += g->used_bytes;
  }
}

struct hr_probe {
  hr__pcache_t procs;
};

int hr_probe_create(hr_probe_t **out) {
  if (!out) return HR_EINVAL;
  *out = calloc(1, sizeof **out);
  return *out ? 0 : HR_ENOMEM;
}

void hr_probe_hold_files(hr_probe_t *ctx, size_t max) {
  if (ctx) ctx->procs.max_held = max;
}

size_t hr_probe_held(const hr_probe_t *ctx) {
  return ctx ? ctx->procs.n_held : 0;
}

void hr_probe_destroy(hr_probe_t *ctx) {
  if (!ctx) return;
  hr__pcache_clear(&ctx->procs);
  free(ctx);
}

size_t hr_probe_cached(const hr_probe_t *ctx) {
  return ctx ? ctx->procs.n : 0;
}

int hr_snapshot_take(const hr_probe_options_t *opts, hr_snapshot_t **out) {
  /* Without a context every process is read in full, which is what a
   * context's first snapshot does too. */
  return hr_probe_snapshot(NULL, opts, out);
}

/* Host memory: the one part whose failure fails the snapshot. */
static int read_host(const hr_probe_options_t *opts, const char *root, unsigned what,
                     hr_snapshot_t *s) {
  s->host_state = HR_PROBE_ABSENT;
  memset(&s->host, 0xff, sizeof s->host); /* every field HR_UNKNOWN */
  if (!(what & HR_PROBE_HOST)) return 0;
  int rc = hr__meminfo_read(root, &s->host, s->host_message, sizeof s->host_message);
  if (rc) {
    hr__err(opts->err, opts->errlen, rc, "%s", s->host_message);
    hr__log(HR_LOG_DEBUG, "snapshot: %s", s->host_message);
    return rc;
  }
  hr__host_pressure_read(root, &s->host);
  s->host_state = HR_PROBE_OK;
  return 0;
}

/* The processes; a /proc that cannot be listed is a warning, not a failure. */
static int read_procs(hr_probe_t *ctx, const hr_probe_options_t *opts, const char *root,
                      unsigned what, hr_snapshot_t *s) {
  if (!(what & HR_PROBE_PROCS)) return 0;
  hr__procs_how_t how = {.pss = (what & HR_PROBE_PSS) != 0,
                         .brief = (what & HR_PROBE_BRIEF) != 0,
                         .filter = opts->filter ? opts->filter : ""};
  int rc = hr__procs_read(ctx ? &ctx->procs : NULL, root, &how, &s->procs, &s->n_procs,
                          &s->n_procs_unreadable);
  if (rc == HR_ENOMEM) return hr__err(opts->err, opts->errlen, rc, "processes: out of memory");
  if (rc) hr__log(HR_LOG_WARN, "%s/proc: cannot list processes: %s", root, hr_strerror(rc));
  return 0;
}

/* The GPUs, and which process holds what on them. */
static int read_gpus(const hr_probe_options_t *opts, unsigned what, hr_snapshot_t *s) {
  s->gpu_state = HR_PROBE_ABSENT;
  if (!(what & HR_PROBE_GPUS)) {
    snprintf(s->gpu_message, sizeof s->gpu_message, "not read");
    return 0;
  }
  int rc = hr__nvml_read(opts->nvml_path, s);
  if (rc) return hr__err(opts->err, opts->errlen, rc, "gpus: %s", hr_strerror(rc));
  map_gpu_procs(s);
  return 0;
}

/* Drops the processes that are still brief among procs[idx[0..n)] (they
 * exited before they could be read in full) and maps the GPU processes
 * again. */
static void drop_gone(hr_snapshot_t *s, const size_t *idx, size_t n) {
  for (size_t k = 0; k < n; k++)
    if (s->procs[idx[k]].brief) s->procs[idx[k]].pid = 0; /* no process has pid 0 */
  size_t j = 0;
  for (size_t i = 0; i < s->n_procs; i++) {
    if (s->procs[i].pid == 0) continue;
    s->procs[j] = s->procs[i];
    s->procs[j++].gpu_bytes = 0;
  }
  s->n_procs = j;
  map_gpu_procs(s);
}

/* The indexes of the selected processes and of every GPU holder, into idx
 * (room for n_procs + n_selected); returns how many. */
static size_t to_complete(const hr_snapshot_t *s, size_t *idx) {
  size_t n = 0;
  for (size_t k = 0; k < s->n_selected; k++) idx[n++] = s->selected[k];
  for (size_t i = 0; i < s->n_procs; i++)
    if (s->procs[i].gpu_bytes > 0) idx[n++] = i;
  return n;
}

/* Selects, and with HR_PROBE_BRIEF reads the selection and the GPU holders
 * in full; a process among them that exited meanwhile is dropped and the
 * selection made again. Returns 0 or HR_ENOMEM. */
static int select_complete(hr_probe_t *ctx, const hr_probe_options_t *opts, const char *root,
                           unsigned what, hr_snapshot_t *s) {
  bool brief = (what & HR_PROBE_BRIEF) && (what & HR_PROBE_PROCS);
  for (;;) {
    int rc = hr_snapshot_select(s, opts->top, opts->filter);
    if (rc || !brief || s->n_procs == 0) return rc;
    size_t *idx = malloc((s->n_procs + s->n_selected) * sizeof *idx);
    if (!idx) return HR_ENOMEM;
    size_t n = to_complete(s, idx), gone = 0;
    hr__procs_complete(ctx ? &ctx->procs : NULL, root, (what & HR_PROBE_PSS) != 0, s->procs, idx, n,
                       &s->n_procs_unreadable);
    for (size_t k = 0; k < n; k++) gone += s->procs[idx[k]].brief;
    if (gone) drop_gone(s, idx, n);
    free(idx);
    if (!gone) return 0;
  }
}

int hr_probe_complete(hr_probe_t *ctx, const hr_probe_options_t *opts, hr_snapshot_t *s,
                      const size_t *idx, size_t n) {
  static const hr_probe_options_t none = {0};
  if (!s || (n && !idx)) return HR_EINVAL;
  for (size_t k = 0; k < n; k++)
    if (idx[k] >= s->n_procs) return HR_EINVAL;
  if (!opts) opts = &none;
  const char *root = opts->root && *opts->root ? opts->root : "/";
  size_t unreadable = 0;
  hr__procs_complete(ctx ? &ctx->procs : NULL, root, (opts->what & HR_PROBE_PSS) != 0, s->procs,
                     idx, n, &unreadable);
  return 0;
}

int hr_probe_snapshot(hr_probe_t *ctx, const hr_probe_options_t *opts, hr_snapshot_t **out) {
  static const hr_probe_options_t none = {0};
  if (!out) return HR_EINVAL;
  *out = NULL;
  if (!opts) opts = &none;
  const char *root = opts->root && *opts->root ? opts->root : "/";
  unsigned what = opts->what ? opts->what : HR_PROBE_ALL;
  hr_snapshot_t *s = calloc(1, sizeof *s);
  if (!s) return hr__err(opts->err, opts->errlen, HR_ENOMEM, "snapshot: out of memory");
  s->time = hr__now_wall();
  int rc = read_host(opts, root, what, s);
  s->cgroup.state = HR_PROBE_ABSENT;
  if (rc == 0 && (what & HR_PROBE_CGROUP))
    hr__cgroup_read_at(root, opts->cgroup, opts->cgroup_pid, &s->cgroup);
  else
    snprintf(s->cgroup.message, sizeof s->cgroup.message, "not read");
  if (rc == 0) rc = read_procs(ctx, opts, root, what, s);
  if (rc == 0) rc = read_gpus(opts, what, s);
  if (rc == 0 && (rc = select_complete(ctx, opts, root, what, s)) != 0)
    hr__err(opts->err, opts->errlen, rc, "processes: out of memory");
  if (rc) hr_snapshot_free(s), s = NULL;
  *out = s;
  return rc;
}

void hr_snapshot_free(hr_snapshot_t *s) {
  if (!s) return;
  free(s->gpus), free(s->gpu_procs);
  free(s->procs), free(s->selected);
  free(s);
}
bool hr_proc_matches(const hr_proc_t *p, const char *filter) {
  if (!*filter) return true;
  char word[128];
  for (const char *s = filter; *s;) {
    size_t n = strcspn(s, ",");
    if (n > 0 && n < sizeof word) {
      memcpy(word, s, n);
      word[n] = '\0';
      if (strcasestr(p->name, word) || strcasestr(p->cmdline, word)) return true;
    }
    s += n;
    if (*s == ',') s++;
  }
  return false;
}
