/* The memory cgroup of the process that reads root/proc/self (or of another
 * process, or a directory the operator names, so that a watcher on the host
 * sees a container's limit): which
 * hierarchy it is in (from /proc/self/cgroup), where that hierarchy is
 * mounted (from /proc/self/mountinfo), then its limit, usage, statistics,
 * OOM events and pressure.
 *
 * v1 is preferred when the memory controller is on a v1 hierarchy (a hybrid
 * machine has the unified hierarchy mounted too, but without the memory
 * controller); pressure then still comes from the unified hierarchy when it
 * has a memory.pressure file. The effective limit is the smallest limit on
 * the path from the cgroup up to its mount's root, because a parent's limit
 * binds every child. */
#include "probe/probe_int.h"

#include <string.h>
#include <sys/stat.h>

typedef struct mount_pt {
  char root[512];  /* the mount's root inside the hierarchy */
  char point[512]; /* where it is mounted, without the probe's root */
  bool found;
} mount_pt_t;

/* Sets cg->state and a message. */
static void cg_fail(hr_cgroup_mem_t *cg, hr_probe_state_t st, const char *fmt, ...) HR_PRINTF(3, 4);
static void cg_fail(hr_cgroup_mem_t *cg, hr_probe_state_t st, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  cg->state = st;
  vsnprintf(cg->message, sizeof cg->message, fmt, ap);
  va_end(ap);
}

/* True when the comma-separated list has `item`. */
static bool list_has(const char *list, size_t len, const char *item) {
  size_t n = strlen(item);
  for (size_t i = 0; i < len;) {
    size_t j = i;
    while (j < len && list[j] != ',') j++;
    if (j - i == n && strncmp(list + i, item, n) == 0) return true;
    i = j + 1;
  }
  return false;
}

/* Copies a mountinfo field, undoing its octal escapes ("\040" is a space). */
static void unescape(char *dst, size_t n, const char *src, size_t len) {
  size_t o = 0;
  for (size_t i = 0; i < len && o + 1 < n; i++) {
    if (src[i] == '\\' && i + 3 < len && src[i + 1] >= '0' && src[i + 1] <= '3') {
      dst[o++] = (char)((src[i + 1] - '0') * 64 + (src[i + 2] - '0') * 8 + (src[i + 3] - '0'));
      i += 3;
    } else {
      dst[o++] = src[i];
    }
  }
  dst[o] = '\0';
}

/* Finds the v1 mount carrying the memory controller and the cgroup2 mount. */
static void find_mounts(const char *text, mount_pt_t *v1, mount_pt_t *v2) {
  for (const char *line = text; *line;) {
    const char *nl = strchr(line, '\n');
    size_t len = nl ? (size_t)(nl - line) : strlen(line);
    const char *f[6];
    size_t fl[6], nf = 0;
    for (size_t i = 0; i < len && nf < 6;) {
      while (i < len && line[i] == ' ') i++;
      size_t j = i;
      while (j < len && line[j] != ' ') j++;
      if (j > i) f[nf] = line + i, fl[nf++] = j - i;
      i = j;
    }
    const char *dash = strstr(line, " - ");
    if (nf >= 5 && dash && dash < line + len) {
      const char *fs = dash + 3;
      size_t fsl = strcspn(fs, " \n");
      const char *opts = fs + fsl;
      if (*opts == ' ') opts += 1 + strcspn(opts + 1, " \n"); /* skip the source */
      if (*opts == ' ') opts++;
      size_t optl = strcspn(opts, " \n");
      mount_pt_t *m = NULL;
      if (fsl == 7 && strncmp(fs, "cgroup2", 7) == 0)
        m = v2;
      else if (fsl == 6 && strncmp(fs, "cgroup", 6) == 0 && list_has(opts, optl, "memory"))
        m = v1;
      if (m && !m->found) {
        unescape(m->root, sizeof m->root, f[3], fl[3]);
        unescape(m->point, sizeof m->point, f[4], fl[4]);
        m->found = true;
      }
    }
    if (!nl) break;
    line = nl + 1;
  }
}

/* Reads a one-value cgroup file: a number, or "max" (HR_UNLIMITED). Returns
 * 0, HR_ENOENT, HR_EPERM, HR_EIO, or HR_EPARSE for an empty or malformed
 * file. */
static int read_value(const char *dir, const char *file, uint64_t *out) {
  char path[1200], buf[128];
  int w = snprintf(path, sizeof path, "%s/%s", dir, file);
  if (w < 0 || (size_t)w >= sizeof path) return HR_ERANGE;
  ssize_t len = hr__read_file(path, buf, sizeof buf);
  if (len < 0) return (int)len;
  while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == ' ')) buf[--len] = '\0';
  if (len == 0) return HR_EPARSE;
  if (strcmp(buf, "max") == 0) return *out = HR_UNLIMITED, 0;
  uint64_t v;
  int rc = hr__parse_u64(buf, &v, NULL);
  if (rc == HR_ERANGE) v = HR_UNLIMITED, rc = 0; /* beyond 64 bits is no limit either */
  if (rc) return rc;
  *out = v >= HR__LIMIT_HUGE ? HR_UNLIMITED : v;
  return 0;
}

/* Reads a whole cgroup file into buf; returns its length or an HR_E* code. */
static ssize_t read_text(const char *dir, const char *file, char *buf, size_t n) {
  char path[1200];
  int w = snprintf(path, sizeof path, "%s/%s", dir, file);
  if (w < 0 || (size_t)w >= sizeof path) return HR_ERANGE;
  return hr__read_file(path, buf, n);
}

/* The smallest limit from dir up to the mount directory `top`. */
static uint64_t walk_limit(const char *dir, const char *top, const char *file) {
  char d[1200];
  hr__strlcpy(d, dir, sizeof d);
  size_t toplen = strlen(top);
  uint64_t best = HR_UNLIMITED;
  for (;;) {
    uint64_t v;
    if (read_value(d, file, &v) == 0 && v < best) best = v;
    size_t len = strlen(d);
    if (len <= toplen) break;
    char *slash = strrchr(d, '/');
    if (!slash || (size_t)(slash - d) < toplen) break;
    *slash = '\0';
  }
  return best;
}

static void read_v2(hr_cgroup_mem_t *cg, const char *dir, const char *top) {
  char buf[8192];
  int rc = read_value(dir, "memory.max", &cg->own_limit_bytes);
  /* The root cgroup has no memory.max: it is not limited. */
  if (rc == HR_ENOENT)
    cg->own_limit_bytes = HR_UNLIMITED;
  else if (rc)
    cg_fail(cg, HR_PROBE_ERROR, "%s/memory.max: %s", dir, hr_strerror(rc));
  cg->limit_bytes = HR_MIN(cg->own_limit_bytes, walk_limit(dir, top, "memory.max"));
  /* An unreadable own limit with no parent limit above it is unknown, not
   * "no limit". */
  if (cg->own_limit_bytes == HR_UNKNOWN && cg->limit_bytes == HR_UNLIMITED)
    cg->limit_bytes = HR_UNKNOWN;
  if (read_value(dir, "memory.high", &cg->high_bytes)) cg->high_bytes = HR_UNKNOWN;
  rc = read_value(dir, "memory.current", &cg->current_bytes);
  if (rc || cg->current_bytes == HR_UNLIMITED) {
    cg->current_bytes = HR_UNKNOWN;
    if (rc != HR_ENOENT && cg->state == HR_PROBE_OK)
      cg_fail(cg, HR_PROBE_ERROR, "%s/memory.current: %s", dir, hr_strerror(rc ? rc : HR_EPARSE));
  }
  ssize_t len = read_text(dir, "memory.stat", buf, sizeof buf);
  hr__kv_t st[] = {{"anon", &cg->anon_bytes, 0},
                   {"file", &cg->file_bytes, 0},
                   {"inactive_file", &cg->inactive_file_bytes, 0},
                   {"shmem", &cg->shmem_bytes, 0}};
  hr__kv_scan(len > 0 ? buf : "", ' ', st, HR_ARRAY_LEN(st));
  len = read_text(dir, "memory.events", buf, sizeof buf);
  hr__kv_t ev[] = {{"oom", &cg->oom_events, 0}, {"oom_kill", &cg->oom_kill_events, 0}};
  hr__kv_scan(len > 0 ? buf : "", ' ', ev, HR_ARRAY_LEN(ev));
  len = read_text(dir, "memory.pressure", buf, sizeof buf);
  cg->has_pressure = len > 0 && hr__pressure_parse(buf, &cg->pressure_some, &cg->pressure_full);
}

/* memory.stat of a v1 cgroup: the total_ keys include the children, as
 * memory.usage_in_bytes does (the plain ones stand in where they are
 * missing); a hierarchical limit under the walked one lowers it. */
static void read_v1_stat(hr_cgroup_mem_t *cg, const char *dir) {
  char buf[8192];
  ssize_t len = read_text(dir, "memory.stat", buf, sizeof buf);
  uint64_t hier, rss, cache, inact, shmem;
  hr__kv_t st[] = {{"total_rss", &cg->anon_bytes, 0},
                   {"total_cache", &cg->file_bytes, 0},
                   {"total_inactive_file", &cg->inactive_file_bytes, 0},
                   {"total_shmem", &cg->shmem_bytes, 0},
                   {"hierarchical_memory_limit", &hier, 0},
                   {"rss", &rss, 0},
                   {"cache", &cache, 0},
                   {"inactive_file", &inact, 0},
                   {"shmem", &shmem, 0}};
  hr__kv_scan(len > 0 ? buf : "", ' ', st, HR_ARRAY_LEN(st));
  if (st[0].rc) cg->anon_bytes = rss;
  if (st[1].rc) cg->file_bytes = cache;
  if (st[2].rc) cg->inactive_file_bytes = inact;
  if (st[3].rc) cg->shmem_bytes = shmem;
  if (st[4].rc == 0 && hier < HR__LIMIT_HUGE) cg->limit_bytes = HR_MIN(cg->limit_bytes, hier);
}

static void read_v1(hr_cgroup_mem_t *cg, const char *dir, const char *top) {
  char buf[8192];
  int rc = read_value(dir, "memory.limit_in_bytes", &cg->own_limit_bytes);
  if (rc) {
    cg->own_limit_bytes = HR_UNKNOWN;
    cg_fail(cg, HR_PROBE_ERROR, "%s/memory.limit_in_bytes: %s", dir, hr_strerror(rc));
  }
  cg->limit_bytes = walk_limit(dir, top, "memory.limit_in_bytes");
  if (cg->own_limit_bytes == HR_UNKNOWN && cg->limit_bytes == HR_UNLIMITED)
    cg->limit_bytes = HR_UNKNOWN;
  cg->high_bytes = HR_UNKNOWN; /* v1 has soft limits, not memory.high */
  rc = read_value(dir, "memory.usage_in_bytes", &cg->current_bytes);
  if (rc || cg->current_bytes == HR_UNLIMITED) {
    cg->current_bytes = HR_UNKNOWN;
    if (cg->state == HR_PROBE_OK)
      cg_fail(cg, HR_PROBE_ERROR, "%s/memory.usage_in_bytes: %s", dir,
              hr_strerror(rc ? rc : HR_EPARSE));
  }
  read_v1_stat(cg, dir);
  ssize_t len = read_text(dir, "memory.oom_control", buf, sizeof buf);
  hr__kv_t ev[] = {{"oom_kill", &cg->oom_kill_events, 0}};
  hr__kv_scan(len > 0 ? buf : "", ' ', ev, 1);
  cg->oom_events = HR_UNKNOWN; /* v1 counts kills only */
}

/* Joins root, the mount point and the cgroup path relative to the mount's
 * root. A path outside the mount's root (a cgroup namespace shows "/" or
 * "/.." paths) is taken as the mount's own directory. */
static int cgroup_dir(char *out, size_t n, const char *root, const mount_pt_t *m, const char *path,
                      char *top, size_t topn) {
  size_t rl = strlen(m->root);
  const char *rel = path;
  if (strcmp(m->root, "/") == 0)
    rel = path;
  else if (strncmp(path, m->root, rl) == 0 && (path[rl] == '/' || path[rl] == '\0'))
    rel = path + rl;
  else
    rel = "";
  if (strstr(rel, "/..")) rel = "";
  if (strcmp(rel, "/") == 0) rel = "";
  if (hr__path(top, topn, root, m->point)) return HR_ERANGE;
  int w = snprintf(out, n, "%s%s", top, rel);
  return (w < 0 || (size_t)w >= n) ? HR_ERANGE : 0;
}

/* Finds this process's v1 memory and v2 paths in a /proc/PID/cgroup text. */
static void parse_proc_cgroup(const char *buf, char *v1path, char *v2path, size_t n, bool *has_v1,
                              bool *has_v2) {
  for (const char *line = buf; *line;) {
    const char *nl = strchr(line, '\n');
    const char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
    if (c2 && (!nl || c2 < nl)) {
      size_t plen = nl ? (size_t)(nl - c2 - 1) : strlen(c2 + 1);
      if (plen >= n) plen = n - 1;
      if (strncmp(line, "0::", 3) == 0) {
        memcpy(v2path, c2 + 1, plen), v2path[plen] = '\0', *has_v2 = true;
      } else if (list_has(c1 + 1, (size_t)(c2 - c1 - 1), "memory")) {
        memcpy(v1path, c2 + 1, plen), v1path[plen] = '\0', *has_v1 = true;
      }
    }
    if (!nl) break;
    line = nl + 1;
  }
}

/* True when `path` starts with the directory `dir` ("/sys/fs/cgroup" holds
 * "/sys/fs/cgroup/a" but not "/sys/fs/cgroupx"); *rest is what follows. */
static bool under(const char *path, const char *dir, const char **rest) {
  size_t n = strlen(dir);
  while (n > 1 && dir[n - 1] == '/') n--;
  if (strncmp(path, dir, n) != 0 || (path[n] != '/' && path[n] != '\0')) return false;
  *rest = path + n;
  return true;
}

/* `path` without trailing slashes, in out[1024]; false (with the reason in
 * cg) when it is too long, not absolute, or has a '..' or '.' part. */
static bool clean_path(hr_cgroup_mem_t *cg, const char *path, char out[1024]) {
  size_t len = strlen(path);
  if (len >= 1024) {
    cg_fail(cg, HR_PROBE_ERROR, "cgroup path too long");
    return false;
  }
  while (len > 1 && path[len - 1] == '/') len--; /* "dir/" is "dir" */
  memcpy(out, path, len), out[len] = '\0';
  if (out[0] != '/' || strstr(out, "/../") || strstr(out, "/./") ||
      (len >= 3 && strcmp(out + len - 3, "/..") == 0)) {
    cg_fail(cg, HR_PROBE_ERROR, "cgroup '%.100s': not an absolute path without '..'", out);
    return false;
  }
  return true;
}

/* A path under the mount point m (`rest` after it): the directory is the
 * path itself, and the cgroup's path its place in the hierarchy (the mount
 * shows m->root of it). False when too long. */
static bool dir_under_mount(hr_cgroup_mem_t *cg, const char *root, const char *path,
                            const mount_pt_t *m, const char *rest, char *dir, size_t n, char *top,
                            size_t topn) {
  int w = snprintf(cg->path, sizeof cg->path, "%s%s", strcmp(m->root, "/") ? m->root : "",
                   *rest ? rest : (strcmp(m->root, "/") ? "" : "/"));
  return !hr__path(top, topn, root, m->point) && w >= 0 && (size_t)w < sizeof cg->path &&
         !hr__path(dir, n, root, path);
}

/* Resolves a cgroup named by the operator: a directory under a cgroup mount
 * ("/sys/fs/cgroup/kubepods.slice/...") or a hierarchy path as
 * /proc/PID/cgroup shows it ("/kubepods.slice/..."). The v1 memory mount is
 * tried first: on a hybrid machine the unified mount has no memory files.
 * Sets cg->version and cg->path; returns false after cg_fail. */
static bool named_dir(hr_cgroup_mem_t *cg, const char *root, const char *name, const mount_pt_t *m1,
                      const mount_pt_t *m2, char *dir, size_t n, char *top, size_t topn) {
  const char *rest = NULL;
  char path[1024];
  if (!clean_path(cg, name, path)) return false;
  const mount_pt_t *m = m1->found && under(path, m1->point, &rest)   ? m1
                        : m2->found && under(path, m2->point, &rest) ? m2
                                                                     : NULL;
  bool ok;
  if (m) {
    cg->version = m == m1 ? 1 : 2;
    ok = dir_under_mount(cg, root, path, m, rest, dir, n, top, topn);
  } else {
    /* A path in the hierarchy: under the mount of the memory cgroup. */
    m = m1->found ? m1 : m2->found ? m2 : NULL;
    if (!m) {
      cg_fail(cg, HR_PROBE_ABSENT, "cgroup: no memory cgroup mounted");
      return false;
    }
    cg->version = m == m1 ? 1 : 2;
    hr__strlcpy(cg->path, path, sizeof cg->path);
    ok = !cgroup_dir(dir, n, root, m, path, top, topn);
  }
  if (!ok) {
    cg_fail(cg, HR_PROBE_ERROR, "cgroup path too long");
    return false;
  }
  /* A v2 directory without memory.max reads as the unlimited root, so a
   * cgroup that is not there (a pod that went away) must be caught here. */
  struct stat st;
  if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
    cg_fail(cg, HR_PROBE_ABSENT, "cgroup %.100s: no such directory", dir);
    return false;
  }
  return true;
}

/* Reads the usage from the cgroup's directory and the pressure on a hybrid
 * machine, once the directory is known. */
static void read_dir(hr_cgroup_mem_t *cg, const char *root, const char *dir, const char *top,
                     const mount_pt_t *m2, const char *v2path, bool has_v2) {
  if (cg->version == 1) {
    char buf[4096], d2[1200], t2[1024];
    read_v1(cg, dir, top);
    /* On a hybrid machine the unified hierarchy still has the pressure. */
    if (has_v2 && m2->found && !cgroup_dir(d2, sizeof d2, root, m2, v2path, t2, sizeof t2) &&
        read_text(d2, "memory.pressure", buf, sizeof buf) > 0)
      cg->has_pressure = hr__pressure_parse(buf, &cg->pressure_some, &cg->pressure_full);
  } else {
    read_v2(cg, dir, top);
  }
  if (cg->current_bytes != HR_UNKNOWN) {
    uint64_t inact = cg->inactive_file_bytes == HR_UNKNOWN ? 0 : cg->inactive_file_bytes;
    cg->usage_bytes = cg->current_bytes > inact ? cg->current_bytes - inact : 0;
  }
}

/* Every figure unknown until read. */
static void cg_reset(hr_cgroup_mem_t *cg) {
  memset(cg, 0, sizeof *cg);
  cg->limit_bytes = cg->own_limit_bytes = cg->high_bytes = HR_UNKNOWN;
  cg->current_bytes = cg->usage_bytes = HR_UNKNOWN;
  cg->anon_bytes = cg->file_bytes = cg->inactive_file_bytes = cg->shmem_bytes = HR_UNKNOWN;
  cg->oom_events = cg->oom_kill_events = HR_UNKNOWN;
}

/* The cgroup paths of process pid (0: this one) in each hierarchy, from
 * /proc/PID/cgroup; false after cg_fail. */
static bool own_paths(hr_cgroup_mem_t *cg, const char *root, int pid, char *v1path, char *v2path,
                      size_t n, bool *has_v1, bool *has_v2) {
  char file[64], path[1024], buf[16384];
  if (pid > 0)
    snprintf(file, sizeof file, "/proc/%d/cgroup", pid);
  else
    snprintf(file, sizeof file, "/proc/self/cgroup");
  hr__path(path, sizeof path, root, file);
  ssize_t len = hr__read_file(path, buf, sizeof buf);
  if (len < 0) {
    cg_fail(cg, len == HR_EPERM ? HR_PROBE_DENIED : HR_PROBE_ABSENT, "%s: %s", path,
            hr_strerror((int)len));
    return false;
  }
  parse_proc_cgroup(buf, v1path, v2path, n, has_v1, has_v2);
  return true;
}

/* The directory of the cgroup at `path` of hierarchy `version`, under its
 * mount m; false after cg_fail. */
static bool own_dir(hr_cgroup_mem_t *cg, const char *root, const mount_pt_t *m, int version,
                    const char *path, char *dir, size_t n, char *top, size_t topn) {
  cg->version = version;
  hr__strlcpy(cg->path, path, sizeof cg->path);
  if (cgroup_dir(dir, n, root, m, path, top, topn)) {
    cg_fail(cg, HR_PROBE_ERROR, "cgroup path too long");
    return false;
  }
  return true;
}

void hr__cgroup_read_at(const char *root, const char *named, int pid, hr_cgroup_mem_t *cg) {
  char path[1024], buf[16384], dir[1200], top[1024];
  char v1path[512] = "", v2path[512] = "";
  bool has_v1 = false, has_v2 = false;
  cg_reset(cg);
  if (named && !*named) named = NULL;
  if (named && pid > 0) {
    cg_fail(cg, HR_PROBE_ERROR, "cgroup and cgroup_pid are both set: give one");
    return;
  }
  if (!named && !own_paths(cg, root, pid, v1path, v2path, sizeof v1path, &has_v1, &has_v2)) return;
  mount_pt_t m1 = {0}, m2 = {0};
  hr__path(path, sizeof path, root, "/proc/self/mountinfo");
  ssize_t len = hr__read_file(path, buf, sizeof buf);
  if (len < 0) {
    cg_fail(cg, HR_PROBE_ABSENT, "%s: %s", path, hr_strerror((int)len));
    return;
  }
  find_mounts(buf, &m1, &m2);
  bool ok;
  if (named)
    ok = named_dir(cg, root, named, &m1, &m2, dir, sizeof dir, top, sizeof top);
  else if (has_v1 && m1.found)
    ok = own_dir(cg, root, &m1, 1, v1path, dir, sizeof dir, top, sizeof top);
  else if (has_v2 && m2.found)
    ok = own_dir(cg, root, &m2, 2, v2path, dir, sizeof dir, top, sizeof top);
  else
    ok = false, cg_fail(cg, HR_PROBE_ABSENT, "cgroup: no memory cgroup mounted");
  if (ok) read_dir(cg, root, dir, top, &m2, v2path, has_v2);
}
