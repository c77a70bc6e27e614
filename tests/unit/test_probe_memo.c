/* The memo of failed NVML loads (src/probe/nvml_memo.c): a library that
 * cannot be loaded is tried again at most once a minute, or at the next
 * snapshot after hr_probe_retry_gpus(), and the log hears of it once.
 *
 * The attempts are counted outside the probe's own books: a stand-in file
 * that is no library is watched with inotify (each dlopen opens it once),
 * and the stand-in NVML counts its nvmlInit_v2 calls. The memo's clock is
 * a fake one the tests move, so nothing waits for a minute to pass; the
 * last test sends SIGHUP to a real `headroom watch`. */
#include "hr_test.h"
#include "probe/probe_int.h"

#include <dlfcn.h>
#include <signal.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static double fake_time = 1000;
static double fake_now(void) {
  return fake_time;
}

/* The messages the library logs that contain `match`. */
typedef struct log_count {
  const char *match;
  int n;
  char last[512];
} log_count_t;

static void count_log(hr_log_level_t level, const char *msg, void *arg) {
  log_count_t *c = arg;
  (void)level;
  if (!strstr(msg, c->match)) return;
  c->n++;
  hr__strlcpy(c->last, msg, sizeof c->last);
}

static char tmpdir[64];

/* A snapshot of the GPUs alone through `lib`; its state and message. */
static int take_gpus(const char *lib, hr_probe_state_t *state, char *msg, size_t n, size_t *gpus) {
  hr_probe_options_t o = {.what = HR_PROBE_GPUS, .nvml_path = lib};
  hr_snapshot_t *s = NULL;
  int rc = hr_snapshot_take(&o, &s);
  if (rc) return rc;
  *state = s->gpu_state;
  hr__strlcpy(msg, s->gpu_message, n);
  *gpus = s->n_gpus;
  hr_snapshot_free(s);
  return 0;
}

/* IN_OPEN events waiting on the inotify descriptor. */
static int opens(int fd) {
  char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
  int n = 0;
  ssize_t len;
  while ((len = read(fd, buf, sizeof buf)) > 0) {
    for (char *p = buf; p < buf + len;) {
      const struct inotify_event *e = (const struct inotify_event *)p;
      n += (e->mask & IN_OPEN) != 0;
      p += sizeof *e + e->len;
    }
  }
  return n;
}

/* Writes a stand-in that is no library at `lib` (under tmpdir) and returns
 * an inotify descriptor that reports each open of it, or -1. */
static int standin(char *lib, size_t n, const char *name) {
  snprintf(lib, n, "%s/%s", tmpdir, name);
  FILE *f = fopen(lib, "w");
  if (!f) return -1;
  fputs("not a shared library\n", f);
  fclose(f);
  int ino = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  if (ino >= 0 && inotify_add_watch(ino, lib, IN_OPEN) < 0) close(ino), ino = -1;
  return ino;
}

static void test_missing_library_opened_once_a_minute(void) {
  char lib[128], msg[160];
  int ino = standin(lib, sizeof lib, "libnvidia-ml.so.1");
  CHECK(ino >= 0);
  log_count_t lc = {.match = lib};
  hr_set_log(count_log, &lc, HR_LOG_DEBUG);
  hr_probe_state_t st;
  size_t gpus;
  int seen[5];
  double failed_at = fake_time + 1;
  for (int i = 0; i < 5; i++) {
    fake_time += 1; /* samples a second apart */
    CHECK_OK(take_gpus(lib, &st, msg, sizeof msg, &gpus));
    CHECK_EQ_INT(st, HR_PROBE_ABSENT);
    CHECK_CONTAINS(msg, "nvml: library not found");
    seen[i] = opens(ino);
  }
  /* One dlopen for five snapshots; the other four had the failure from the memo. */
  CHECK_EQ_INT(seen[0], 1);
  for (int i = 1; i < 5; i++) CHECK_EQ_INT(seen[i], 0);
  fake_time = failed_at + 59.5; /* still remembered */
  CHECK_OK(take_gpus(lib, &st, msg, sizeof msg, &gpus));
  CHECK_EQ_INT(opens(ino), 0);
  fake_time = failed_at + 60; /* a minute after it: tried again, once */
  CHECK_OK(take_gpus(lib, &st, msg, sizeof msg, &gpus));
  CHECK_EQ_INT(opens(ino), 1);
  CHECK_OK(take_gpus(lib, &st, msg, sizeof msg, &gpus));
  CHECK_EQ_INT(opens(ino), 0);
  /* A retry asked for (watch's SIGHUP) is at the next snapshot, not later. */
  hr_probe_retry_gpus();
  CHECK_OK(take_gpus(lib, &st, msg, sizeof msg, &gpus));
  CHECK_EQ_INT(opens(ino), 1);
  CHECK_EQ_INT(st, HR_PROBE_ABSENT);
  CHECK_OK(take_gpus(lib, &st, msg, sizeof msg, &gpus));
  CHECK_EQ_INT(opens(ino), 0);
  hr_set_log(NULL, NULL, HR_LOG_DEBUG);
  /* Three loads failed the same way: said once. */
  CHECK_EQ_INT(lc.n, 1);
  CHECK_CONTAINS(lc.last, "library not found");
  CHECK_CONTAINS(lc.last, "at most once a minute");
  close(ino);
  unlink(lib);
}

/* The stand-in NVML's count of nvmlInit_v2 calls, through the object that
 * `lib` names (the probe loaded the same one). */
static int init_calls(const char *lib) {
  void *dl = dlopen(lib, RTLD_NOW | RTLD_LOCAL);
  if (!dl) return -1;
  int (*calls)(void);
  void *sym = dlsym(dl, "fake_nvml_init_calls");
  memcpy(&calls, &sym, sizeof sym);
  int n = calls ? calls() : -1;
  dlclose(dl);
  return n;
}

static void test_failed_init_retried_then_loaded(void) {
  char fake[1024], lib[128], msg[160];
  const char *dir = getenv("HR_BINARY_DIR");
  snprintf(fake, sizeof fake, "%s/helpers/libfake-nvml-v3.so", dir ? dir : ".");
  snprintf(lib, sizeof lib, "%s/libnvml-init.so", tmpdir);
  CHECK_MSG(symlink(fake, lib) == 0, "symlink %s", fake);
  log_count_t lc = {.match = "NVML loaded after all"}, lf = {.match = "Driver Not Loaded"};
  setenv("FAKE_NVML_INIT", "9", 1); /* NVML_ERROR_DRIVER_NOT_LOADED */
  setenv("FAKE_NVML_GPUS", "1", 1);
  hr_set_log(count_log, &lf, HR_LOG_DEBUG);
  hr_probe_state_t st;
  size_t gpus;
  for (int i = 0; i < 4; i++) {
    fake_time += 1;
    CHECK_OK(take_gpus(lib, &st, msg, sizeof msg, &gpus));
    CHECK_EQ_INT(st, HR_PROBE_ABSENT);
    CHECK_CONTAINS(msg, "Driver Not Loaded");
  }
  CHECK_EQ_INT(init_calls(lib), 1);
  fake_time += 60;
  CHECK_OK(take_gpus(lib, &st, msg, sizeof msg, &gpus));
  CHECK_EQ_INT(init_calls(lib), 2);
  CHECK_EQ_INT(lf.n, 1);
  /* The driver comes up: found at the next retry, not before. */
  setenv("FAKE_NVML_INIT", "0", 1);
  fake_time += 1;
  CHECK_OK(take_gpus(lib, &st, msg, sizeof msg, &gpus));
  CHECK_EQ_INT(st, HR_PROBE_ABSENT);
  CHECK_EQ_INT(init_calls(lib), 2);
  hr_set_log(count_log, &lc, HR_LOG_DEBUG);
  hr_probe_retry_gpus();
  CHECK_OK(take_gpus(lib, &st, msg, sizeof msg, &gpus));
  hr_set_log(NULL, NULL, HR_LOG_DEBUG);
  CHECK_EQ_INT(st, HR_PROBE_OK);
  CHECK_EQ_U64(gpus, 1);
  CHECK_EQ_INT(init_calls(lib), 3);
  CHECK_EQ_INT(lc.n, 1);
  /* Loaded and initialised: kept, nvmlInit is not called again. */
  CHECK_OK(take_gpus(lib, &st, msg, sizeof msg, &gpus));
  CHECK_EQ_INT(st, HR_PROBE_OK);
  CHECK_EQ_INT(init_calls(lib), 3);
  unsetenv("FAKE_NVML_INIT");
  unsetenv("FAKE_NVML_GPUS");
  unlink(lib);
}

/* Reads lines from f until `n` sample lines have come; returns how many did. */
static int samples(FILE *f, int n) {
  static const char head[] = "{\"event\":\"sample\"";
  char line[65536];
  int got = 0;
  while (got < n && fgets(line, sizeof line, f)) got += strncmp(line, head, sizeof head - 1) == 0;
  return got;
}

/* `headroom watch` writing JSON (a service, a pipe) loads NVML again on
 * SIGHUP, at once, and goes on; without it the failure is remembered. */
static void test_watch_sighup_retries(void) {
  const char *cli = getenv("HR_CLI");
  if (!cli) SKIP("HR_CLI is not set (run under CTest)");
  char lib[128];
  int ino = standin(lib, sizeof lib, "libnvidia-ml-hup.so.1");
  CHECK(ino >= 0);
  int out[2];
  CHECK(pipe(out) == 0);
  pid_t kid = fork();
  if (kid == 0) {
    dup2(out[1], 1);
    close(out[0]), close(out[1]);
    setenv("HEADROOM_NVML_LIBRARY", lib, 1);
    execl(cli, cli, "watch", "--json", "--interval", "0.1s", "--count", "40", "--db", "none",
          "--listen", "none", (char *)NULL);
    _exit(127);
  }
  close(out[1]);
  FILE *f = fdopen(out[0], "r");
  CHECK(f);
  CHECK_EQ_INT(samples(f, 5), 5);
  int before = opens(ino);
  kill(kid, SIGHUP);
  CHECK_EQ_INT(samples(f, 5), 5); /* still running */
  int after = opens(ino);
  kill(kid, SIGTERM);
  int st = 0;
  waitpid(kid, &st, 0);
  fclose(f);
  close(ino);
  unlink(lib);
  CHECK_EQ_INT(before, 1); /* five samples, one load */
  CHECK_EQ_INT(after, 1);  /* the retry SIGHUP asked for */
  CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

int main(void) {
  snprintf(tmpdir, sizeof tmpdir, "/tmp/hr-test-memo-XXXXXX");
  if (!mkdtemp(tmpdir)) {
    perror("mkdtemp");
    return 1;
  }
  hr__nvml_memo_clock(fake_now);
  HR_RUN(test_missing_library_opened_once_a_minute);
  HR_RUN(test_failed_init_retried_then_loaded);
  hr__nvml_memo_clock(NULL);
  HR_RUN(test_watch_sighup_retries);
  /* A failed check leaves its file behind. */
  char path[128];
  snprintf(path, sizeof path, "%s/libnvidia-ml.so.1", tmpdir);
  unlink(path);
  snprintf(path, sizeof path, "%s/libnvml-init.so", tmpdir);
  unlink(path);
  rmdir(tmpdir);
  return hr_test_finish("test_probe_memo");
}
