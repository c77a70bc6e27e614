/* Actions: hook commands and drop_caches, as the cleanup mode's row says
 * (hr_cleanup_modes), with a cooldown.
 *
 * A hook runs as `/bin/sh -c CMD` in a process group of its own, with the
 * event that caused it as JSON in HEADROOM_EVENT. The loop does not wait
 * for it: each sample reaps the hooks that ended and kills (the whole group)
 * those past their timeout, so a hung hook costs nothing but a slot. The
 * environment is built before fork(): between fork() and exec() in a
 * process with threads (the exporter's) only async-signal-safe calls are
 * allowed, and setenv() is not one. */
#include "event/event.h"
#include "watch/watch_int.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

int hr__hook_start(hr__hooks_t *hk, const char *name, const char *cmd, const char *event_json,
                   double timeout_s, double now) {
  if (hk->n == HR__MAX_HOOKS) return HR_EBUSY;
  size_t n_env = 0;
  while (environ && environ[n_env]) n_env++;
  char **envp = malloc((n_env + 2) * sizeof *envp);
  size_t elen = strlen("HEADROOM_EVENT=") + strlen(event_json) + 1;
  char *ev = malloc(elen);
  if (!envp || !ev) {
    free(envp), free(ev);
    return HR_ENOMEM;
  }
  snprintf(ev, elen, "HEADROOM_EVENT=%s", event_json);
  size_t k = 0;
  for (size_t i = 0; i < n_env; i++)
    if (strncmp(environ[i], "HEADROOM_EVENT=", 15) != 0) envp[k++] = environ[i];
  envp[k++] = ev;
  envp[k] = NULL;
  pid_t pid = fork();
  if (pid == 0) {
    setpgid(0, 0);
    int devnull = open("/dev/null", O_RDONLY);
    if (devnull >= 0) dup2(devnull, STDIN_FILENO);
    /* The hook's output must not mix into watch's JSON lines on stdout. */
    dup2(STDERR_FILENO, STDOUT_FILENO);
    execle("/bin/sh", "sh", "-c", cmd, (char *)NULL, envp);
    _exit(127);
  }
  int e = errno;
  free(envp), free(ev);
  if (pid < 0) return e == EAGAIN ? HR_EBUSY : HR_ENOMEM;
  setpgid(pid, pid); /* also from here, so a kill before the child runs finds the group */
  hr__hook_t *h = &hk->h[hk->n++];
  h->pid = pid;
  h->deadline = now + timeout_s;
  h->started = now;
  hr__strlcpy(h->name, name, sizeof h->name);
  return 0;
}

size_t hr__hooks_reap(hr__hooks_t *hk, double now, bool kill_all, hr__hook_result_t *out,
                      size_t max) {
  size_t n_out = 0;
  for (size_t i = 0; i < hk->n;) {
    hr__hook_t *h = &hk->h[i];
    int status = 0;
    pid_t r = waitpid(h->pid, &status, WNOHANG);
    bool timed_out = false;
    if (r == 0 && (kill_all || now >= h->deadline)) {
      kill(-h->pid, SIGKILL);
      kill(h->pid, SIGKILL);
      r = waitpid(h->pid, &status, 0);
      timed_out = !kill_all;
    }
    if (r == 0) {
      i++;
      continue;
    }
    if (n_out < max) {
      hr__hook_result_t *o = &out[n_out++];
      hr__strlcpy(o->name, h->name, sizeof o->name);
      o->pid = h->pid;
      o->seconds = now - h->started;
      o->timed_out = timed_out;
      o->exit_code = r < 0 ? -1 : WIFEXITED(status) ? WEXITSTATUS(status) : -1;
      o->signal = r > 0 && WIFSIGNALED(status) ? WTERMSIG(status) : 0;
    }
    hk->h[i] = hk->h[--hk->n];
  }
  return n_out;
}

int hr__drop_caches(char *err, size_t errlen) {
  if (geteuid() != 0) return hr__err(err, errlen, HR_EPERM, "drop_caches: needs root; not written");
  sync();
  int fd = open("/proc/sys/vm/drop_caches", O_WRONLY | O_CLOEXEC);
  if (fd < 0)
    return hr__err(err, errlen, errno == EACCES || errno == EROFS ? HR_EPERM : HR_EIO,
                   "drop_caches: /proc/sys/vm/drop_caches: %s", strerror(errno));
  /* 1: the page cache only. Clean page cache is already counted as
   * available, so this helps only where something reads "free" instead. */
  ssize_t w = write(fd, "1", 1);
  int e = errno;
  close(fd);
  if (w != 1) return hr__err(err, errlen, HR_EIO, "drop_caches: write: %s", strerror(e));
  return 0;
}

/* ---- the policy --------------------------------------------------------- */

static void action_event(hr_watch_t *w, const char *action, const char *result,
                         const char *detail) {
  hr_watch_event_t e = {.kind = HR_EVENT_ACTION, .time = w->snap->time};
  hr__strlcpy(e.action.action, action, sizeof e.action.action);
  hr__strlcpy(e.action.result, result, sizeof e.action.result);
  hr__strlcpy(e.action.detail, detail ? detail : "", sizeof e.action.detail);
  hr__watch_emit(w, &e);
}

static void reap_hooks(hr_watch_t *w, double now) {
  hr__hook_result_t res[HR__MAX_HOOKS];
  size_t n = hr__hooks_reap(&w->hooks, now, false, res, HR__MAX_HOOKS);
  for (size_t i = 0; i < n; i++) {
    char detail[96];
    if (res[i].timed_out)
      snprintf(detail, sizeof detail, "killed after %.1f s (action_timeout)", res[i].seconds);
    else if (res[i].signal)
      snprintf(detail, sizeof detail, "ended by signal %d", res[i].signal);
    else
      snprintf(detail, sizeof detail, "exit status %d", res[i].exit_code);
    action_event(w, res[i].name,
                 res[i].timed_out        ? "timeout"
                 : res[i].exit_code == 0 ? "done"
                                         : "failed",
                 detail);
  }
}

/* The worst level now, as the level event of the scope that has it (host
 * first on a tie); level OK when every scope is. */
static hr_event_level_t worst(const hr_watch_t *w) {
  const hr_snapshot_t *s = w->snap;
  hr_event_level_t lv = {.level = HR_LEVEL_OK, .used_pct = NAN};
  uint64_t used = HR_UNKNOWN, total = HR_UNKNOWN;
  if (s->host_state == HR_PROBE_OK && w->host > lv.level) {
    lv.level = w->host;
    hr__strlcpy(lv.scope, "host", sizeof lv.scope);
    used = s->host.total_bytes - s->host.available_bytes, total = s->host.total_bytes;
  }
  if (s->cgroup.state == HR_PROBE_OK && w->cgroup > lv.level) {
    lv.level = w->cgroup;
    hr__strlcpy(lv.scope, "cgroup", sizeof lv.scope);
    used = s->cgroup.usage_bytes, total = s->cgroup.limit_bytes;
  }
  for (size_t i = 0; i < s->n_gpus && i < w->n_gpu_levels; i++)
    if (w->gpus[i] > lv.level) {
      lv.level = w->gpus[i];
      snprintf(lv.scope, sizeof lv.scope, "gpu%u", s->gpus[i].index);
      used = s->gpus[i].used_bytes, total = s->gpus[i].total_bytes;
    }
  lv.previous = lv.level;
  lv.used_pct = hr__pct_of(used, total);
  lv.used_bytes = used, lv.total_bytes = total;
  return lv;
}

/* Starts the hook `name` with the level as its HEADROOM_EVENT, written by
 * the one event JSON writer, and reports the start as an action event. */
static void start_hook(hr_watch_t *w, const char *name, const char *cmd, hr_event_level_t lv,
                       double now) {
  hr_watch_event_t e = {.kind = HR_EVENT_LEVEL, .time = w->snap->time, .level = lv};
  hr__strlcpy(e.level.mode, w->cleanup->name, sizeof e.level.mode);
  hr__buf_t b = {0};
  hr__event_json(&b, &e);
  int rc = b.failed ? HR_ENOMEM : hr__hook_start(&w->hooks, name, cmd, b.s, w->action_timeout, now);
  hr__buf_free(&b);
  action_event(w, name, rc ? "not started" : "started", rc ? hr_strerror(rc) : cmd);
}

void hr__watch_actions(hr_watch_t *w) {
  double now = hr__watch_mono(w);
  reap_hooks(w, now);
  const hr_cleanup_mode_t *mode = w->cleanup;
  if (!mode->hooks && !mode->drop_caches) return;
  hr_event_level_t lv = worst(w);
  if (lv.level == HR_LEVEL_OK) return;
  int slot = lv.level == HR_LEVEL_CRITICAL ? 1 : 0;
  const char *cmd = slot ? w->on_critical : w->on_warning;
  if (mode->hooks && *cmd && now - w->last_action[slot] >= w->cooldown) {
    w->last_action[slot] = now;
    start_hook(w, slot ? "on_critical" : "on_warning", cmd, lv, now);
  }
  /* drop_caches frees clean page cache, which only helps the host or the
   * cgroup, and only at critical. */
  bool ram = strcmp(lv.scope, "host") == 0 || strcmp(lv.scope, "cgroup") == 0;
  if (mode->drop_caches && lv.level == HR_LEVEL_CRITICAL && ram && w->allow_drop_caches &&
      now - w->last_action[2] >= w->cooldown) {
    w->last_action[2] = now;
    char err[256];
    int rc = hr__drop_caches(err, sizeof err);
    action_event(w, "drop_caches", rc ? "failed" : "done", rc ? err : NULL);
  }
}
