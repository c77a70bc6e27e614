/* headroom doctor: checks what headroom needs on this machine and says how to
 * fix what is missing: the NVIDIA driver and NVML, the memory cgroup it reads,
 * whose processes /proc shows, the exporter's address and the history
 * database. Each check ends ok, warn (headroom runs, with less to go on) or
 * fail (a part of headroom cannot work); any fail makes the exit status 1.
 *
 * Doctor changes nothing: the port is bound and released at once, and the
 * database is opened read-only with SQLite itself (opening it through the
 * history module would migrate its schema). */
#include "cli.h"

#include <errno.h>
#include <netdb.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

typedef enum { CHECK_OK, CHECK_WARN, CHECK_FAIL } check_status_t;

typedef struct check {
  const char *name;
  check_status_t status;
  char detail[640];
  char fix[480];
} check_t;

typedef struct doctor {
  check_t checks[8];
  size_t n;
} doctor_t;

typedef struct doctor_args {
  bool json;
} doctor_args_t;

static const hr_cli_opt_t doctor_opts[] = {
    {"json", HR_CLI_FLAG, HR_CLI_AT(doctor_args_t, json),
     .help = "one JSON object: {\"checks\": [{\"name\", \"status\", \"detail\", \"fix\"}, ...], "
             "\"ok\", \"warn\", \"fail\"}"},
    HR_CLI_OPTION_AS(NULL, listen, "ADDR", HR_CLI_COMPLETE_NONE),
    HR_CLI_OPTION_AS(NULL, db, "PATH", HR_CLI_COMPLETE_FILE),
};

/* Adds a check; `fix` may be NULL. The detail is formatted. */
static check_t *add(doctor_t *d, const char *name, check_status_t st, const char *fix,
                    const char *fmt, ...) HR_PRINTF(5, 6);
static check_t *add(doctor_t *d, const char *name, check_status_t st, const char *fix,
                    const char *fmt, ...) {
  check_t *c = &d->checks[d->n < sizeof d->checks / sizeof d->checks[0] ? d->n++ : d->n - 1];
  va_list ap;
  va_start(ap, fmt);
  c->name = name;
  c->status = st;
  vsnprintf(c->detail, sizeof c->detail, fmt, ap);
  snprintf(c->fix, sizeof c->fix, "%s", fix ? fix : "");
  va_end(ap);
  return c;
}

/* NVML loaded: the driver and each GPU, failing when the driver lost one. */
static void nvml_loaded(doctor_t *d, const hr_snapshot_t *s, const char *lib) {
  char list[400] = "", b[32];
  size_t used = 0, lost = 0;
  for (size_t i = 0; i < s->n_gpus; i++) {
    const hr_gpu_t *g = &s->gpus[i];
    if (g->state != HR_PROBE_OK) lost++;
    if (used < sizeof list)
      used += (size_t)snprintf(
          list + used, sizeof list - used, "%s%u %s (%s%s%s)", i ? ", " : "", g->index, g->name,
          g->total_bytes == HR_UNKNOWN ? "?" : hr_size_text(b, sizeof b, g->total_bytes),
          g->state == HR_PROBE_OK ? "" : ": ", g->state == HR_PROBE_OK ? "" : g->message);
  }
  if (lost)
    add(d, "nvml", CHECK_FAIL,
        "run 'nvidia-smi -q' for the failing GPU; a GPU the driver lost needs a reset "
        "(nvidia-smi -r) or a reboot",
        "NVML loaded (%s), driver %s, %zu GPU(s), %zu failing: %s", lib, s->driver_version,
        s->n_gpus, lost, list);
  else if (s->n_gpus == 0)
    add(d, "nvml", CHECK_WARN,
        "in a container, expose the GPUs (docker --gpus all; Kubernetes: the NVIDIA "
        "runtime class and an nvidia.com/gpu resource or NVIDIA_VISIBLE_DEVICES=all)",
        "NVML loaded (%s), driver %s, but it shows no GPU", lib, s->driver_version);
  else
    add(d, "nvml", CHECK_OK, NULL, "NVML loaded (%s), driver %s, %zu GPU(s): %s", lib,
        s->driver_version, s->n_gpus, list);
}

static void check_nvml(doctor_t *d, const hr_snapshot_t *s, const char *nvml) {
  const char *lib = *nvml ? nvml : "libnvidia-ml.so.1";
  if (s->gpu_state == HR_PROBE_OK) {
    nvml_loaded(d, s, lib);
    return;
  }
  bool devices = access("/dev/nvidiactl", F_OK) == 0;
  if (s->gpu_state == HR_PROBE_ABSENT && !devices)
    add(d, "nvml", CHECK_WARN,
        "on a GPU machine install the NVIDIA driver (Debian: nvidia-driver); set "
        "nvml_library when libnvidia-ml.so.1 is elsewhere",
        "NVML not usable (%s) and no /dev/nvidiactl: no NVIDIA GPU here, GPU memory is not watched",
        s->gpu_message);
  else if (s->gpu_state == HR_PROBE_ABSENT)
    add(d, "nvml", CHECK_FAIL,
        "install the driver's user-space library (Debian: libnvidia-ml1); in a container "
        "run with the NVIDIA runtime (docker --gpus all; Kubernetes runtimeClassName: "
        "nvidia), or set nvml_library to the library's path",
        "/dev/nvidiactl is there but NVML is not: %s", s->gpu_message);
  else if (s->gpu_state == HR_PROBE_DENIED)
    add(d, "nvml", CHECK_FAIL,
        "give the user read and write access to /dev/nvidia* (the group those devices "
        "belong to, often video), or run as root",
        "NVML refused: %s", s->gpu_message);
  else
    add(d, "nvml", CHECK_FAIL,
        "run 'nvidia-smi': if it fails the same way, the driver is broken or does not "
        "match its library (after a driver upgrade, reboot)",
        "NVML failed: %s", s->gpu_message);
}

static void check_cgroup(doctor_t *d, const hr_cli_t *cli, const hr_snapshot_t *s) {
  const hr_cgroup_mem_t *c = &s->cgroup;
  const char *named = hr_options_get_str(cli->opts, HR_OPTION_cgroup);
  int64_t pid = hr_options_get_int(cli->opts, HR_OPTION_cgroup_pid);
  char which[64], lim[32], use[32], b[32];
  if (*named)
    snprintf(which, sizeof which, "the cgroup named by --cgroup");
  else if (pid > 0)
    snprintf(which, sizeof which, "the cgroup of pid %lld", (long long)pid);
  else
    snprintf(which, sizeof which, "headroom's own cgroup");
  if (c->state == HR_PROBE_OK) {
    bool known = c->limit_bytes != HR_UNKNOWN;
    snprintf(lim, sizeof lim, "%s",
             c->limit_bytes == HR_UNLIMITED ? "none"
             : known                        ? hr_size_text(b, sizeof b, c->limit_bytes)
                                            : "unreadable");
    snprintf(use, sizeof use, "%s",
             c->usage_bytes == HR_UNKNOWN ? "unknown" : hr_size_text(b, sizeof b, c->usage_bytes));
    add(d, "cgroup", known ? CHECK_OK : CHECK_FAIL,
        known ? NULL : "give the user read access to the cgroup's memory.max (or run as root)",
        "%s: cgroup v%d %s, limit %s, usage %s", which, c->version, c->path, lim, use);
    return;
  }
  bool own = !*named && pid <= 0;
  const char *fix =
      c->state == HR_PROBE_DENIED  ? "give the user read access to /proc/PID/cgroup and the "
                                     "cgroup's memory.* files (or run as root)"
      : c->state == HR_PROBE_ERROR ? "read the named file by hand: a kernel without the memory "
                                     "controller or a changed file format shows here"
      : own ? "mount the cgroup filesystem at /sys/fs/cgroup (in a container, mount the host's "
              "/sys read-only and pass --root)"
            : "check the path or pid (ls /sys/fs/cgroup/...; cat /proc/PID/cgroup): the process "
              "may have exited, or /sys is not mounted under --root";
  add(d, "cgroup", own && c->state == HR_PROBE_ABSENT ? CHECK_WARN : CHECK_FAIL, fix, "%s: %s (%s)",
      which, hr_probe_state_name(c->state), c->message);
}

/* The hidepid setting of the proc mount at root/proc, or "" when it has none
 * or the mount table cannot be read. */
static void proc_hidepid(const char *root, char *out, size_t n) {
  char path[1100], line[2048];
  out[0] = '\0';
  snprintf(path, sizeof path, "%s/proc/self/mountinfo", strcmp(root, "/") ? root : "");
  FILE *f = fopen(path, "r");
  if (!f) return;
  while (fgets(line, sizeof line, f)) {
    char point[512], fstype[64], opts[1024];
    const char *dash = strstr(line, " - ");
    if (!dash || sscanf(line, "%*s %*s %*s %*s %511s", point) != 1 ||
        sscanf(dash + 3, "%63s %*s %1023s", fstype, opts) != 2)
      continue;
    if (strcmp(point, "/proc") != 0 || strcmp(fstype, "proc") != 0) continue;
    const char *h = strstr(opts, "hidepid=");
    if (h) snprintf(out, n, "%.*s", (int)strcspn(h + 8, ","), h + 8);
    break;
  }
  fclose(f);
}

static void check_procs(doctor_t *d, const hr_cli_t *cli, const hr_snapshot_t *s) {
  const char *root = hr_options_get_str(cli->opts, HR_OPTION_root);
  char hide[32];
  proc_hidepid(root, hide, sizeof hide);
  size_t others = 0, unmapped = 0;
  uid_t me = getuid();
  for (size_t i = 0; i < s->n_procs; i++)
    if (s->procs[i].uid != me) others++;
  for (size_t i = 0; i < s->n_gpu_procs; i++)
    if (!s->gpu_procs[i].local_pid) unmapped++;
  bool hidden = *hide && strcmp(hide, "0") != 0 && strcmp(hide, "off") != 0;
  if (hidden)
    add(d, "procs", CHECK_WARN,
        "run headroom as root or with CAP_SYS_PTRACE, add its user to the group named by the "
        "mount's gid= option, or remount /proc with hidepid=0",
        "%s/proc is mounted with hidepid=%s: other users' processes are hidden or unreadable "
        "(%zu processes visible, %zu of other users)",
        strcmp(root, "/") ? root : "", hide, s->n_procs, others);
  else if (unmapped)
    add(d, "procs", CHECK_WARN,
        "share the host PID namespace (docker --pid=host; Kubernetes hostPID: true) and read "
        "the host's /proc through --root",
        "%zu of %zu GPU processes have no pid in this /proc: they belong to another PID "
        "namespace (%zu processes visible)",
        unmapped, s->n_gpu_procs, s->n_procs);
  else if (me != 0 && others == 0 && s->n_procs > 0)
    add(d, "procs", CHECK_WARN,
        "run as root to see every user's processes; as a user headroom sees only its own",
        "%zu processes visible, all of this user", s->n_procs);
  else
    add(d, "procs", CHECK_OK, NULL, "%zu processes visible (%zu of other users), %zu on GPUs",
        s->n_procs, others, s->n_gpu_procs);
}

/* Splits "host:port", "[v6]:port" or ":port" at the last colon. */
static bool split_listen(const char *listen, char *host, size_t hn, char *port, size_t pn) {
  const char *colon = strrchr(listen, ':');
  if (!colon || !colon[1]) return false;
  const char *h = listen;
  size_t len = (size_t)(colon - listen);
  if (len >= 2 && h[0] == '[' && h[len - 1] == ']') h++, len -= 2;
  if (len >= hn || strlen(colon + 1) >= pn) return false;
  memcpy(host, h, len), host[len] = '\0';
  snprintf(port, pn, "%s", colon + 1);
  return true;
}

static void check_exporter(doctor_t *d, const hr_cli_t *cli) {
  const char *listen = hr_options_get_str(cli->opts, HR_OPTION_listen);
  char host[256], port[16];
  if (strcmp(listen, "none") == 0 || !*listen) {
    add(d, "exporter", CHECK_OK, NULL, "exporter off (listen = none)");
    return;
  }
  if (!split_listen(listen, host, sizeof host, port, sizeof port)) {
    add(d, "exporter", CHECK_FAIL, "set listen to HOST:PORT, for example 127.0.0.1:10460",
        "listen '%s' is not HOST:PORT", listen);
    return;
  }
  struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *ai = NULL;
  int gai = getaddrinfo(*host ? host : NULL, port, &hints, &ai);
  if (gai != 0) {
    add(d, "exporter", CHECK_FAIL, "give an address of this machine, for example 127.0.0.1",
        "listen '%s': %s", listen, gai_strerror(gai));
    return;
  }
  int e = 0, fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
  if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
      bind(fd, ai->ai_addr, ai->ai_addrlen) != 0)
    e = errno;
  if (fd >= 0) close(fd);
  freeaddrinfo(ai);
  if (e == EADDRINUSE)
    add(d, "exporter", CHECK_FAIL,
        "if a 'headroom watch' already serves there, 'curl http://ADDR/metrics' answers; "
        "otherwise find the owner with 'ss -ltnp' and choose another --listen",
        "%s is in use", listen);
  else if (e == EACCES)
    add(d, "exporter", CHECK_FAIL, "choose a port above 1023, or grant CAP_NET_BIND_SERVICE",
        "%s: binding is not allowed: %s", listen, strerror(e));
  else if (e)
    add(d, "exporter", CHECK_FAIL, "give an address of this machine (ip addr)", "%s: %s", listen,
        strerror(e));
  else
    add(d, "exporter", CHECK_OK, NULL, "%s is free%s", listen,
        !*host || strcmp(host, "0.0.0.0") == 0 || strcmp(host, "::") == 0
            ? " (every interface: keep the port behind a firewall or a NetworkPolicy)"
            : "");
}

/* Runs PRAGMA quick_check on a read-only connection; writes the first
 * problem into msg and returns false when the file is not intact. */
static bool db_intact(const char *path, char *msg, size_t n) {
  sqlite3 *db = NULL;
  sqlite3_stmt *st = NULL;
  bool ok = false;
  int rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL);
  if (rc == SQLITE_OK) rc = sqlite3_prepare_v2(db, "PRAGMA quick_check", -1, &st, NULL);
  if (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
    const char *r = (const char *)sqlite3_column_text(st, 0);
    ok = r && strcmp(r, "ok") == 0;
    snprintf(msg, n, "%s", r ? r : "no answer");
  } else {
    snprintf(msg, n, "%s", db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
  }
  sqlite3_finalize(st);
  sqlite3_close(db);
  return ok;
}

/* The nearest folder of `path` that exists (path's own folder, or a parent
 * watch would create the rest under). */
static void existing_parent(const char *path, char *out, size_t n) {
  snprintf(out, n, "%s", path);
  for (;;) {
    char *slash = strrchr(out, '/');
    if (!slash) {
      snprintf(out, n, ".");
      return;
    }
    if (slash == out) {
      out[1] = '\0';
      return;
    }
    *slash = '\0';
    struct stat st;
    if (stat(out, &st) == 0) return;
  }
}

static void check_history(doctor_t *d, const hr_cli_t *cli) {
  const char *db = hr_options_get_str(cli->opts, HR_OPTION_db);
  char path[512], dir[512], msg[256];
  if (strcmp(db, "none") == 0) {
    add(d, "history", CHECK_OK, NULL, "history off (db = none)");
    return;
  }
  if (*db)
    snprintf(path, sizeof path, "%s", db);
  else if (hr_history_default_path(path, sizeof path) != 0) {
    add(d, "history", CHECK_FAIL, "set db (--db PATH), XDG_STATE_HOME or HOME",
        "no database path: db, XDG_STATE_HOME and HOME are all unset");
    return;
  }
  struct stat st;
  if (stat(path, &st) != 0) {
    existing_parent(path, dir, sizeof dir);
    if (access(dir, W_OK) == 0)
      add(d, "history", CHECK_OK, NULL, "%s does not exist yet; watch creates it (under %s)", path,
          dir);
    else
      add(d, "history", CHECK_FAIL,
          "create the folder for headroom's user (systemd: StateDirectory=headroom), or set "
          "--db to a writable path",
          "%s cannot be created: %s is not writable", path, dir);
    return;
  }
  if (!S_ISREG(st.st_mode)) {
    add(d, "history", CHECK_FAIL, "set --db to a file path", "%s is not a file", path);
    return;
  }
  existing_parent(path, dir, sizeof dir);
  if (access(path, R_OK | W_OK) != 0 || access(dir, W_OK) != 0) {
    add(d, "history", CHECK_FAIL,
        "give headroom's user write access to the file and its folder (SQLite writes a "
        "journal beside it), or set --db elsewhere",
        "%s: %s is not writable", path, access(path, W_OK) != 0 ? "the file" : "its folder");
    return;
  }
  if (!db_intact(path, msg, sizeof msg))
    add(d, "history", CHECK_FAIL,
        "move the file aside (watch starts a new one); 'sqlite3 FILE .recover' may save "
        "what it holds",
        "%s is damaged: %s", path, msg);
  else
    add(d, "history", CHECK_OK, NULL, "%s: writable, intact (%.1f MiB)", path,
        (double)st.st_size / (1024.0 * 1024.0));
}

static const char *status_word(check_status_t s) {
  return s == CHECK_OK ? "ok" : s == CHECK_WARN ? "warn" : "fail";
}

static void print_json(const doctor_t *d, const size_t count[3]) {
  printf("{\"checks\": [");
  for (size_t i = 0; i < d->n; i++) {
    const check_t *c = &d->checks[i];
    printf("%s{\"name\": \"%s\", \"status\": \"%s\", \"detail\": ", i ? ", " : "", c->name,
           status_word(c->status));
    hr_cli_json_str(stdout, c->detail);
    printf(", \"fix\": ");
    if (*c->fix)
      hr_cli_json_str(stdout, c->fix);
    else
      printf("null");
    printf("}");
  }
  printf("], \"ok\": %zu, \"warn\": %zu, \"fail\": %zu}\n", count[0], count[1], count[2]);
}

static void print_text(const hr_cli_t *cli, const doctor_t *d, const size_t count[3]) {
  static const char *colors[] = {"green", "yellow", "red"};
  char b[64];
  for (size_t i = 0; i < d->n; i++) {
    const check_t *c = &d->checks[i];
    char word[8];
    snprintf(word, sizeof word, "%-4s", status_word(c->status));
    printf("%s  %-8s %s\n", hr_cli_paint(cli, b, sizeof b, colors[c->status], word), c->name,
           c->detail);
    if (*c->fix) printf("      %-8s fix: %s\n", "", c->fix);
  }
  printf("\n%zu ok, %zu warnings, %zu failed\n", count[0], count[1], count[2]);
}

static int doctor_run(hr_cli_t *cli, const void *args, int argc, char **argv) {
  const doctor_args_t *a = args;
  (void)argc, (void)argv;
  char err[512] = "";
  hr_probe_options_t po = hr_cli_probe_options(
      cli, HR_PROBE_HOST | HR_PROBE_CGROUP | HR_PROBE_PROCS | HR_PROBE_GPUS, err, sizeof err);
  hr_snapshot_t *s = NULL;
  int rc = hr_snapshot_take(&po, &s);
  if (rc) {
    hr_cli_error("doctor: %s/proc cannot be read: %s (check --root)", po.root,
                 err[0] ? err : hr_strerror(rc));
    return 1;
  }
  doctor_t d = {.n = 0};
  check_nvml(&d, s, po.nvml_path ? po.nvml_path : "");
  check_cgroup(&d, cli, s);
  check_procs(&d, cli, s);
  check_exporter(&d, cli);
  check_history(&d, cli);
  hr_snapshot_free(s);
  size_t count[3] = {0, 0, 0};
  for (size_t i = 0; i < d.n; i++) count[d.checks[i].status]++;
  if (a->json)
    print_json(&d, count);
  else
    print_text(cli, &d, count);
  if (fflush(stdout) != 0) {
    hr_cli_error("doctor: cannot write the output");
    return 1;
  }
  return count[CHECK_FAIL] ? 1 : 0;
}

HR_CLI_COMMAND(
    doctor, "check the driver, cgroup, /proc, port and history",
    .about = "Checks what headroom needs here and says how to fix what is missing:\n\n"
             "  nvml     the NVIDIA driver's NVML library: loaded, driver version, GPUs\n"
             "  cgroup   the memory cgroup read (--cgroup, --cgroup-pid): mounted, its limit\n"
             "           readable\n"
             "  procs    /proc: other users' processes visible (hidepid), GPU processes'\n"
             "           pids visible (the host PID namespace)\n"
             "  exporter the --listen address: free and bindable\n"
             "  history  the --db database: its folder writable, the file intact\n\n"
             "The global options (--root, --config, --cgroup, ...) apply as for watch.",
    .notes = "Exit status: 1 when a check fails, else 0; each check is ok, warn or fail.");
