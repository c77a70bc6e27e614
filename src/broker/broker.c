/* The broker's life: reading its options, making the socket (a directory
 * of the user's own, 0700, and the socket 0600; with a configured group,
 * the directory 0750 and the socket 0660, both the group's, after checking
 * that the group can reach the directory at all), refusing to steal the
 * socket of a live broker, starting the loop's thread, and stopping it
 * (every connection closed, so every lease ends). */
#include "broker/broker_int.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

static double system_clock(void *arg) {
  (void)arg;
  return hr__now_mono();
}

double hr__broker_now(const hr_broker_t *b) {
  return b->clock ? b->clock(b->clock_arg) : hr__now_mono();
}

/* The group named (or numbered) by broker_group in *gid; -1 when none is
 * set. */
static int group_id(const char *group, long *gid, char *err, size_t n) {
  *gid = -1;
  if (!*group) return 0;
  struct group *g = getgrnam(group);
  char *end = NULL;
  *gid = g ? (long)g->gr_gid : strtol(group, &end, 10);
  if ((!g && (*end || end == group)) || *gid < 0)
    return hr__err(err, n, HR_EINVAL, "broker_group: no group '%s'", group);
  return 0;
}

/* Members of gid can pass through every directory above `dir` (each
 * searchable by its group when it is gid's, or by others). */
static int group_reaches(const char *dir, long gid, const char *group, char *err, size_t n) {
  char p[256];
  hr__strlcpy(p, dir, sizeof p);
  for (char *slash = strrchr(p, '/'); slash && slash != p; slash = strrchr(p, '/')) {
    *slash = '\0';
    struct stat st;
    if (stat(p, &st) != 0) continue;
    bool ok = (st.st_mode & S_IXOTH) || ((long)st.st_gid == gid && (st.st_mode & S_IXGRP));
    if (!ok)
      return hr__err(err, n, HR_EINVAL,
                     "broker_group: members of group '%s' cannot enter %s (mode %03o): set "
                     "broker_socket to a path under a directory they can reach, such as "
                     "/run/headroom/broker.sock",
                     group, p, (unsigned)(st.st_mode & 0777));
  }
  return 0;
}

/* Makes the socket's directory (one level) when it is missing: 0700, or
 * 0750 and the group's with broker_group (an existing one of this user is
 * given to the group too). */
static int make_dir(const char *path, long gid, const char *group, char *err, size_t n) {
  char dir[256];
  hr__strlcpy(dir, path, sizeof dir);
  char *slash = strrchr(dir, '/');
  if (!slash || slash == dir) return 0;
  *slash = '\0';
  if (mkdir(dir, gid >= 0 ? 0750 : 0700) != 0 && errno != EEXIST)
    return hr__err(err, n, HR_EIO, "broker: cannot make %s: %s", dir, strerror(errno));
  if (gid < 0) return 0;
  struct stat st;
  if (stat(dir, &st) == 0 && st.st_uid == geteuid() &&
      (chown(dir, (uid_t)-1, (gid_t)gid) != 0 || chmod(dir, (st.st_mode & 0777) | 0750) != 0))
    return hr__err(err, n, HR_EINVAL, "broker_group: cannot give %s to group '%s': %s", dir, group,
                   strerror(errno));
  return group_reaches(dir, gid, group, err, n);
}

/* Binds `path`; a socket file that a live broker answers on is HR_EBUSY, a
 * stale one (nobody listening) is replaced. */
static int bind_socket(hr_broker_t *b, long gid, const char *group, char *err, size_t n) {
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  hr__strlcpy(sa.sun_path, b->path, sizeof sa.sun_path);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return hr__err(err, n, HR_EIO, "broker: socket: %s", strerror(errno));
  struct stat st;
  if (lstat(b->path, &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      close(fd);
      return hr__err(err, n, HR_EEXIST, "broker: %s exists and is not a socket", b->path);
    }
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0) {
      close(fd);
      return hr__err(err, n, HR_EBUSY, "broker: another broker serves %s", b->path);
    }
    unlink(b->path);
  }
  /* Bound and listening under a temporary name, then renamed: a client that
   * sees the socket can connect at once. */
  char tmp[sizeof sa.sun_path];
  if (snprintf(tmp, sizeof tmp, "%s.new", b->path) >= (int)sizeof tmp) {
    close(fd);
    return hr__err(err, n, HR_ERANGE, "broker: the socket path is too long: %s", b->path);
  }
  hr__strlcpy(sa.sun_path, tmp, sizeof sa.sun_path);
  unlink(tmp);
  mode_t old = umask(0177);
  int rc = bind(fd, (struct sockaddr *)&sa, sizeof sa);
  umask(old);
  if (rc != 0 || listen(fd, 128) != 0) {
    int e = errno;
    close(fd);
    unlink(tmp);
    return hr__err(err, n, HR_EIO, "broker: cannot listen on %s: %s", b->path, strerror(e));
  }
  if (gid >= 0) {
    if (chown(tmp, (uid_t)-1, (gid_t)gid) != 0 || chmod(tmp, 0660) != 0) {
      close(fd);
      unlink(tmp);
      return hr__err(err, n, HR_EINVAL, "broker_group: cannot give %s to group '%s'", b->path,
                     group);
    }
    b->group_set = true;
  }
  if (rename(tmp, b->path) != 0) {
    int e = errno;
    close(fd);
    unlink(tmp);
    return hr__err(err, n, HR_EIO, "broker: cannot make %s: %s", b->path, strerror(e));
  }
  b->listen_fd = fd;
  fcntl(fd, F_SETFL, O_NONBLOCK);
  return 0;
}

static int configure(hr_broker_t *b, const hr_options_t *o, char *err, size_t n) {
  const char *root = hr_options_get_str(o, HR_OPTION_root);
  hr__strlcpy(b->root, strcmp(root, "/") == 0 ? "" : root, sizeof b->root);
  hr__strlcpy(b->nvml, hr_options_get_str(o, HR_OPTION_nvml_library), sizeof b->nvml);
  hr__strlcpy(b->cgroup, hr_options_get_str(o, HR_OPTION_cgroup), sizeof b->cgroup);
  b->cgroup_pid = (int)hr_options_get_int(o, HR_OPTION_cgroup_pid);
  b->request_timeout = hr_options_get_double(o, HR_OPTION_broker_timeout);
  b->patience = hr_options_get_double(o, HR_OPTION_patience);
  b->cooldown = hr_options_get_double(o, HR_OPTION_cooldown);
  b->warn[0] = hr_options_get_double(o, HR_OPTION_ram_warn) / 100;
  b->critical[0] = hr_options_get_double(o, HR_OPTION_ram_critical) / 100;
  b->warn[1] = hr_options_get_double(o, HR_OPTION_vram_warn) / 100;
  b->critical[1] = hr_options_get_double(o, HR_OPTION_vram_critical) / 100;
  b->max_conns = (size_t)hr_options_get_int(o, HR_OPTION_broker_max_conns);
  b->max_leases = (size_t)hr_options_get_int(o, HR_OPTION_broker_max_leases);
  b->max_queued = (size_t)hr_options_get_int(o, HR_OPTION_broker_max_queued);
  b->adapter_priority = (int)hr_options_get_int(o, HR_OPTION_broker_adapter_priority);
  int rc = hr__broker_parse_budget(b, hr_options_get_str(o, HR_OPTION_budget), err, n);
  if (rc == 0)
    rc = hr__broker_parse_adapters(b, hr_options_get_str(o, HR_OPTION_broker_adapters), err, n);
  return rc;
}

int hr__broker_new(const hr_options_t *o, hr_broker_event_fn fn, void *arg, hr_broker_t **out,
                   char *err, size_t n) {
  *out = NULL;
  hr_broker_t *b = calloc(1, sizeof *b);
  if (!b) return HR_ENOMEM;
  b->listen_fd = b->wake[0] = b->wake[1] = -1;
  b->fn = fn, b->fn_arg = arg;
  b->clock = system_clock;
  pthread_mutex_init(&b->lock, NULL);
  int rc = configure(b, o, err, n);
  if (rc) {
    hr__broker_free_state(b);
    return rc;
  }
  *out = b;
  return 0;
}

void hr__broker_free_state(hr_broker_t *b) {
  for (size_t i = 0; i < b->n_conns; i++) {
    if (b->conns[i]->fd >= 0) close(b->conns[i]->fd);
    free(b->conns[i]->rbuf);
    hr__buf_free(&b->conns[i]->wbuf);
    free(b->conns[i]);
  }
  for (size_t i = 0; i < b->n_adapters; i++) hr__adapter_close(&b->adapters[i]);
  while (b->queue) {
    hr__breq_t *q = b->queue;
    b->queue = q->next;
    free(q);
  }
  free(b->conns);
  free(b->leases);
  pthread_mutex_destroy(&b->lock);
  free(b);
}

int hr_broker_start(const hr_options_t *o, hr_broker_event_fn fn, void *arg, hr_broker_t **out,
                    char *err, size_t errlen) {
  int rc;
  hr_broker_t *b = NULL;
  if (!o || !out) return HR_EINVAL;
  *out = NULL;
  const char *group = hr_options_get_str(o, HR_OPTION_broker_group);
  long gid;
  if ((rc = group_id(group, &gid, err, errlen)) != 0) return rc;
  if ((rc = hr__broker_new(o, fn, arg, &b, err, errlen)) != 0) return rc;
  if ((rc = hr_broker_socket_path(o, b->path, sizeof b->path)) != 0) {
    hr__err(err, errlen, rc,
            rc == HR_ERANGE ? "broker: the socket path is longer than 103 bytes"
                            : "broker: no socket path (broker_socket is none, or neither "
                              "XDG_RUNTIME_DIR is set nor the user root)");
    goto fail;
  }
  hr__broker_read(b);
  if ((rc = make_dir(b->path, gid, group, err, errlen)) != 0) goto fail;
  if ((rc = bind_socket(b, gid, group, err, errlen)) != 0) goto fail;
  if (pipe2(b->wake, O_CLOEXEC) != 0) {
    rc = hr__err(err, errlen, HR_EIO, "broker: pipe: %s", strerror(errno));
    goto fail;
  }
  if (pthread_create(&b->thread, NULL, hr__broker_loop, b) != 0) {
    rc = hr__err(err, errlen, HR_ENOMEM, "broker: cannot start its thread");
    goto fail;
  }
  pthread_setname_np(b->thread, "hr-broker");
  b->running = true;
  *out = b;
  return 0;
fail:
  hr_broker_stop(b);
  return rc;
}

void hr_broker_stop(hr_broker_t *b) {
  if (!b) return;
  if (b->running) {
    ssize_t w = write(b->wake[1], "x", 1);
    (void)w;
    pthread_join(b->thread, NULL);
  }
  if (b->listen_fd >= 0) {
    close(b->listen_fd);
    unlink(b->path);
  }
  for (int i = 0; i < 2; i++)
    if (b->wake[i] >= 0) close(b->wake[i]);
  hr__broker_free_state(b);
}

void hr_broker_get_counters(hr_broker_t *b, hr_broker_counters_t *out) {
  pthread_mutex_lock(&b->lock);
  *out = b->counters;
  pthread_mutex_unlock(&b->lock);
}

const char *hr_broker_path(const hr_broker_t *b) {
  return b->path;
}

int hr_broker_protocol_schema(char **out) {
  if (!out) return HR_EINVAL;
  hr__buf_t o = {0};
  hr__bproto_schema(&o);
  return hr__buf_finish(&o, out);
}
