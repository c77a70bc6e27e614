/* Actions: hook commands and drop_caches.
 *
 * A hook runs as `/bin/sh -c CMD` in a process group of its own, with the
 * event that caused it as JSON in HEADROOM_EVENT. The loop does not wait
 * for it: each sample reaps the hooks that ended and kills (the whole group)
 * those past their timeout, so a hung hook costs nothing but a slot. The
 * environment is built before fork(): between fork() and exec() in a
 * process with threads (the exporter's) only async-signal-safe calls are
 * allowed, and setenv() is not one. */
#include "watch/watch_int.h"

#include <errno.h>
#include <fcntl.h>
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
