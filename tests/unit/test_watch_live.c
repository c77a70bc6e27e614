/* Integration: `headroom watch` against real child processes (helpers/
 * mem_pattern): one leaking 5 MB/min, one sawtooth, one step then plateau,
 * one stable. Time runs 10 times faster than life: 100 ms samples, a 6 s
 * window (1 minute scaled), and rates and the leak bar scaled by 10 too, so
 * the leaker grows 50 MB/min. Only the leaker may be reported, and it must
 * be. Also: SIGTERM ends watch cleanly with history committed, and a port
 * in use is a clear error with exit status 1.
 *
 * These prove the real thing, so they take real time, and a loaded machine
 * stretches it: they wait for what they expect (an event, a number of
 * samples) with deadlines far beyond its usual time, and never judge how
 * long it took. How soon a leak is found, in samples, is test_watch's. */
#include "hr_test.h"

#include <cjson/cJSON.h>
#include <signal.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define MB    (1000.0 * 1000.0)
#define SCALE 10.0

static pid_t spawn(const char *const argv[]) {
  pid_t pid = fork();
  if (pid == 0) {
    execv(argv[0], (char *const *)argv);
    _exit(127);
  }
  return pid;
}

/* Starts argv with its stdout on a pipe whose read end goes to *out. */
static pid_t spawn_reading(const char *const argv[], int *out) {
  int fds[2];
  if (pipe(fds) != 0) return -1;
  pid_t pid = fork();
  if (pid == 0) {
    dup2(fds[1], STDOUT_FILENO);
    close(fds[0]), close(fds[1]);
    execv(argv[0], (char *const *)argv);
    _exit(127);
  }
  close(fds[1]);
  *out = fds[0];
  return pid;
}

/* Lines in `path` that contain `what`. */
static int count_lines(const char *path, const char *what) {
  FILE *f = fopen(path, "r");
  if (!f) return 0;
  static char line[1 << 16];
  int n = 0;
  while (fgets(line, sizeof line, f)) n += strstr(line, what) != NULL;
  fclose(f);
  return n;
}

/* The last TRAIL RssAnon readings of each helper, from the sample events,
 * so a false alarm can show the curve that raised it. */
#define TRAIL 80
typedef struct trail {
  double t[TRAIL], mb[TRAIL];
  int n;
} trail_t;

static void trail_add(trail_t *tr, const pid_t pids[4], const cJSON *sample) {
  const cJSON *it;
  cJSON_ArrayForEach(it, cJSON_GetObjectItem(sample, "top")) {
    int pid = cJSON_GetObjectItem(it, "pid")->valueint;
    for (int k = 0; k < 4; k++) {
      if (pid != pids[k]) continue;
      trail_t *x = &tr[k];
      x->t[x->n % TRAIL] = cJSON_GetObjectItem(sample, "time")->valuedouble;
      x->mb[x->n % TRAIL] = cJSON_GetObjectItem(it, "rss_anon_bytes")->valuedouble / MB;
      x->n++;
    }
  }
}

static void trail_print(const trail_t *x) {
  int from = x->n > TRAIL ? x->n - TRAIL : 0;
  for (int i = from; i < x->n; i++)
    fprintf(stderr, "%s%.2f:%.1f", i == from ? "    RssAnon MB by time: " : " ",
            x->t[i % TRAIL] - x->t[from % TRAIL], x->mb[i % TRAIL]);
  fprintf(stderr, "\n");
}

static void test_only_the_leak_is_reported(void) {
  const char *bin = getenv("HR_BINARY_DIR"), *cli = getenv("HR_CLI");
  if (!bin || !cli) SKIP("HR_BINARY_DIR and HR_CLI are set by CTest");
  char helper[512];
  snprintf(helper, sizeof helper, "%s/helpers/mem_pattern", bin);
  if (access(helper, X_OK) != 0) SKIP("%s is not built", helper);

  char leak_rate[32], saw_amp[32], step_size[32], stable[32];
  snprintf(leak_rate, sizeof leak_rate, "%.0f", 5 * MB / 60 * SCALE); /* bytes per second */
  snprintf(saw_amp, sizeof saw_amp, "%.0f", 60 * MB);
  /* The step and the stable block are small enough to be faulted in at
   * once even on a loaded machine: a step that took seconds to draw would
   * be a ramp, which a 6 s window rightly calls a leak. */
  snprintf(step_size, sizeof step_size, "%.0f", 30 * MB);
  snprintf(stable, sizeof stable, "%.0f", 30 * MB);
  const char *const leak[] = {helper, "leak", leak_rate, NULL};
  const char *const saw[] = {helper, "sawtooth", saw_amp, "1.5", NULL};
  const char *const step[] = {helper, "step", step_size, "2", NULL};
  const char *const flat[] = {helper, "stable", stable, NULL};
  pid_t pids[4] = {spawn(leak), spawn(saw), spawn(step), spawn(flat)};
  for (int i = 0; i < 4; i++) CHECK(pids[i] > 0);

  /* At least 120 samples at 100 ms (two scaled minutes) and until the leak
   * is found; 1200 at most. */
  char count[] = "1200";
  const char *const argv[] = {
      cli,    "watch",         "--json",      "--interval",         "100ms", "--count",
      count,  "--leak-window", "6s",          "--leak-min-samples", "20",    "--leak-min-rate",
      "20M",  "--filter",      "mem_pattern", "--listen",           "none",  "--db",
      "none", "--top",         "8",           "--proc-budget",      "100",   NULL};
  int out = -1;
  pid_t wp = spawn_reading(argv, &out);
  CHECK(wp > 0);
  FILE *p = fdopen(out, "r");
  CHECK(p);
  static char line[65536];
  int samples = 0, leaks_right = 0, leaks_wrong = 0, bad = 0, found_at = -1;
  double first_sample = 0, found = -1;
  bool stopped = false;
  static trail_t trails[4];
  memset(trails, 0, sizeof trails);
  while (fgets(line, sizeof line, p)) {
    cJSON *j = cJSON_Parse(line);
    if (!j) {
      bad++;
      continue;
    }
    const char *ev = cJSON_GetObjectItem(j, "event")->valuestring;
    double t = cJSON_GetObjectItem(j, "time")->valuedouble;
    if (strcmp(ev, "sample") == 0 && samples++ == 0) first_sample = t;
    if (strcmp(ev, "sample") == 0) trail_add(trails, pids, j);
    if (strcmp(ev, "leak") == 0) {
      int pid = cJSON_GetObjectItem(j, "pid")->valueint;
      if (pid == pids[0]) {
        leaks_right++;
        if (found < 0) found = t - first_sample, found_at = samples;
        double slope = cJSON_GetObjectItem(j, "slope_bytes_per_min")->valuedouble;
        /* 50 MB/min, as measured through RssAnon. The helpers are built
         * without sanitizers in every build, so the bound is the same. */
        double top = 62 * MB;
        CHECK_MSG(slope > 40 * MB && slope < top, "leak slope %.0f B/min", slope);
      } else if (pid == pids[1] || pid == pids[2] || pid == pids[3]) {
        leaks_wrong++;
        fprintf(stderr, "  false alarm (%s): %s",
                pid == pids[1]   ? "sawtooth"
                : pid == pids[2] ? "step"
                                 : "stable",
                line);
        trail_print(&trails[pid == pids[1] ? 1 : pid == pids[2] ? 2 : 3]);
      } /* else another run's helper (a concurrent copy of this test): not ours */
    }
    cJSON_Delete(j);
    if (samples >= 120 && leaks_right && !stopped) stopped = kill(wp, SIGTERM) == 0;
  }
  fclose(p);
  int st;
  waitpid(wp, &st, 0);
  for (int i = 0; i < 4; i++) kill(pids[i], SIGKILL), waitpid(pids[i], NULL, 0);
  CHECK_MSG(WIFEXITED(st) && WEXITSTATUS(st) == 0, "watch exited with %d", st);
  CHECK_EQ_INT(bad, 0);
  CHECK_MSG(samples >= 120, "%d samples", samples);
  CHECK_EQ_INT(leaks_wrong, 0);
  CHECK_EQ_INT(leaks_right, 1); /* raised once */
  fprintf(stderr, "  leak found after %.1f s, at sample %d of %d\n", found, found_at, samples);
}

static void test_sigterm_and_port_in_use(void) {
  const char *cli = getenv("HR_CLI");
  if (!cli) SKIP("HR_CLI is set by CTest");
  char dir[] = "/tmp/hr-test-live-XXXXXX";
  CHECK(mkdtemp(dir));
  char db[256], out[300];
  snprintf(db, sizeof db, "%s/h.db", dir);
  snprintf(out, sizeof out, "%s/out.jsonl", dir);
  pid_t pid = fork();
  if (pid == 0) {
    if (!freopen(out, "w", stdout)) _exit(126);
    execl(cli, cli, "watch", "--json", "--interval", "50ms", "--db", db, "--history-flush", "1h",
          "--listen", "127.0.0.1:0", (char *)NULL);
    _exit(127);
  }
  /* Five samples written, however long a loaded machine takes for them. */
  double deadline = hr_test_now() + 120;
  while (count_lines(out, "\"event\":\"sample\"") < 5 && hr_test_now() < deadline) usleep(20000);
  kill(pid, SIGTERM);
  int st;
  waitpid(pid, &st, 0);
  CHECK_MSG(WIFEXITED(st) && WEXITSTATUS(st) == 0, "watch ended with %d on SIGTERM", st);
  /* Samples were not committed by the timer (1 h): the clean stop did. */
  char cmd[600];
  snprintf(cmd, sizeof cmd, "'%s' history --db '%s' --json --since 1h", cli, db);
  FILE *p = popen(cmd, "r");
  CHECK(p);
  static char json[1 << 20];
  size_t n = fread(json, 1, sizeof json - 1, p);
  json[n] = '\0';
  pclose(p);
  cJSON *j = cJSON_Parse(json);
  CHECK_MSG(j, "history --json is not JSON: %.200s", json);
  int hosts = 0;
  cJSON *it;
  cJSON_ArrayForEach(it, cJSON_GetObjectItem(j, "samples")) hosts +=
      strcmp(cJSON_GetObjectItem(it, "scope")->valuestring, "host") == 0;
  cJSON_Delete(j);
  CHECK_MSG(hosts >= 5, "%d host samples in history", hosts);

  /* The picture: an SVG with the host's line and the top processes'. */
  char svg[300];
  snprintf(svg, sizeof svg, "%s/h.svg", dir);
  snprintf(cmd, sizeof cmd, "'%s' history --db '%s' --svg '%s' 2>/dev/null", cli, db, svg);
  CHECK_EQ_INT(system(cmd), 0);
  FILE *f = fopen(svg, "r");
  CHECK(f);
  n = fread(json, 1, sizeof json - 1, f);
  json[n] = '\0';
  fclose(f);
  CHECK_CONTAINS(json, "<svg xmlns=\"http://www.w3.org/2000/svg\"");
  CHECK_CONTAINS(json, "host used");
  CHECK_CONTAINS(json, "<polyline");
  CHECK_CONTAINS(json, "</svg>");
  /* No database: a clear error, and no file made. */
  snprintf(cmd, sizeof cmd, "'%s' history --db '%s/none.db' 2>&1", cli, dir);
  p = popen(cmd, "r");
  CHECK(p);
  n = fread(json, 1, sizeof json - 1, p);
  json[n] = '\0';
  st = pclose(p);
  CHECK_CONTAINS(json, "no history at");
  CHECK_EQ_INT(WEXITSTATUS(st), 1);
  snprintf(svg, sizeof svg, "%s/none.db", dir);
  CHECK(access(svg, F_OK) != 0);

  /* A tiny budget: processes are read on the first two samples (the first,
   * which identifies every process, does not set the pace), then carried
   * over while the second's cost is being paid back. */
  snprintf(cmd, sizeof cmd,
           "'%s' watch --json --count 6 --interval 20ms --proc-budget 0.01 --db none "
           "--listen none",
           cli);
  p = popen(cmd, "r");
  CHECK(p);
  int read = 0, carried = 0;
  while (fgets(json, sizeof json, p)) {
    read += strstr(json, "\"processes_read\":true") != NULL;
    carried += strstr(json, "\"processes_read\":false") != NULL;
  }
  pclose(p);
  CHECK_EQ_INT(read, 2);
  CHECK_EQ_INT(carried, 4);

  /* Port in use: a listener of our own, then watch on the same port. */
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  CHECK(bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0 && listen(fd, 1) == 0);
  socklen_t sl = sizeof sa;
  getsockname(fd, (struct sockaddr *)&sa, &sl);
  snprintf(cmd, sizeof cmd, "'%s' watch --once --db none --listen 127.0.0.1:%d 2>&1 >/dev/null",
           cli, ntohs(sa.sin_port));
  p = popen(cmd, "r");
  CHECK(p);
  n = fread(json, 1, sizeof json - 1, p);
  json[n] = '\0';
  st = pclose(p);
  close(fd);
  CHECK_CONTAINS(json, "address already in use");
  CHECK_MSG(WIFEXITED(st) && WEXITSTATUS(st) == 1, "exit status %d", WEXITSTATUS(st));
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  CHECK(system(cmd) == 0);
}

/* GPUs through the probe's stand-in NVML library: a GPU at 87.5 % gives a
 * warning for gpu0, and the process holding it is on the metrics. */
static void test_gpu_levels_through_fake_nvml(void) {
  const char *bin = getenv("HR_BINARY_DIR"), *cli = getenv("HR_CLI");
  if (!bin || !cli) SKIP("HR_BINARY_DIR and HR_CLI are set by CTest");
  char lib[512], procs[64], cmd[1024];
  snprintf(lib, sizeof lib, "%s/helpers/libfake-nvml-v3.so", bin);
  if (access(lib, R_OK) != 0) SKIP("%s is not built", lib);
  snprintf(procs, sizeof procs, "0:%d:21000", (int)getpid());
  setenv("FAKE_NVML_GPUS", "2", 1);
  setenv("FAKE_NVML_PROCS", procs, 1);
  snprintf(cmd, sizeof cmd,
           "HEADROOM_NVML_LIBRARY='%s' '%s' watch --json --once --db none --listen none", lib, cli);
  FILE *p = popen(cmd, "r");
  CHECK(p);
  static char line[1 << 16];
  bool level = false, sample = false;
  while (fgets(line, sizeof line, p)) {
    if (strstr(line, "\"event\":\"level\"") && strstr(line, "\"scope\":\"gpu0\"") &&
        strstr(line, "\"level\":\"warning\""))
      level = true;
    if (strstr(line, "\"event\":\"sample\"") && strstr(line, "\"index\":1,") &&
        strstr(line, "\"gpu_bytes\":22020096000"))
      sample = true;
  }
  int st = pclose(p);
  unsetenv("FAKE_NVML_GPUS");
  unsetenv("FAKE_NVML_PROCS");
  CHECK_EQ_INT(WEXITSTATUS(st), 0);
  CHECK_MSG(level, "no warning for gpu0");
  CHECK_MSG(sample, "the sample lacks GPU 1 or this process's 21000 MiB");
}

int main(void) {
  HR_RUN(test_only_the_leak_is_reported);
  HR_RUN(test_sigterm_and_port_in_use);
  HR_RUN(test_gpu_levels_through_fake_nvml);
  return hr_test_finish("test_watch_live");
}
