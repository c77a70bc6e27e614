/* Command-line values an attacker or a slip of the finger would give, through
 * the CLI as a real process with a time limit: each must end at once with a
 * clear message and a non-zero status, never run for ever or bind somewhere
 * other than asked. */
#include "hr_test.h"

#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Runs `headroom ARGS` under a 10 s limit; returns its exit status (124 when
 * it had to be killed) and its output in `out`. */
static int run_cli(const char *args, char *out, size_t n) {
  const char *cli = getenv("HR_CLI");
  char cmd[2048];
  snprintf(cmd, sizeof cmd,
           "env -u HEADROOM_CONFIG -u HEADROOM_LISTEN XDG_CONFIG_HOME=/nonexistent timeout 10 '%s' "
           "%s </dev/null 2>&1",
           cli, args);
  FILE *p = popen(cmd, "r");
  if (!p) return -1;
  size_t got = fread(out, 1, n - 1, p);
  out[got] = '\0';
  int st = pclose(p);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void test_count_checked(void) {
  if (!getenv("HR_CLI")) SKIP("HR_CLI is set by CTest");
  static const char *bad[] = {
      "-1", "0", "", "+3", " 3", "3x", "18446744073709551617", "1000000000000000"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    char args[256], out[2048];
    snprintf(args, sizeof args, "watch --json --db none --listen none --interval 10ms --count '%s'",
             bad[i]);
    int st = run_cli(args, out, sizeof out);
    CHECK_MSG(st == 2, "--count '%s': status %d: %s", bad[i], st, out);
    CHECK_CONTAINS(out, "--count");
  }
  char out[8192];
  int st =
      run_cli("watch --json --db none --listen none --interval 10ms --count 2", out, sizeof out);
  CHECK_MSG(st == 0, "--count 2: status %d: %s", st, out);
}

static void test_listen_checked(void) {
  if (!getenv("HR_CLI")) SKIP("HR_CLI is set by CTest");
  static const char *bad[] = {"127.0.0.1:4294967297", ":0", ":10460", "127.0.0.1:65536"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    char args[256], out[2048];
    snprintf(args, sizeof args, "watch --json --db none --once --listen '%s'", bad[i]);
    int st = run_cli(args, out, sizeof out);
    CHECK_MSG(st == 1, "--listen '%s': status %d: %s", bad[i], st, out);
    CHECK_CONTAINS(out, bad[i]);
    CHECK_CONTAINS(out, "0.0.0.0:10460");
  }
}

/* A window with no samples left qsort(NULL, 0, ...), undefined behaviour
 * that the sanitizer build aborts on. */
static void test_history_empty_window(void) {
  if (!getenv("HR_CLI")) SKIP("HR_CLI is set by CTest");
  char db[] = "/tmp/hr_test_hist_XXXXXX", args[768], out[8192];
  int fd = mkstemp(db);
  CHECK(fd >= 0);
  close(fd);
  unlink(db);
  snprintf(args, sizeof args, "watch --json --once --listen none --db '%s'", db);
  int st = run_cli(args, out, sizeof out);
  CHECK_MSG(st == 0, "watch: status %d: %s", st, out);
  struct timespec p = {2, 500 * 1000 * 1000};
  nanosleep(&p, NULL);
  snprintf(args, sizeof args, "history --db '%s' --since 1s", db);
  st = run_cli(args, out, sizeof out);
  int st_svg = -1;
  char svg[64];
  snprintf(svg, sizeof svg, "%s.svg", db);
  snprintf(args, sizeof args, "history --db '%s' --since 1s --svg '%s'", db, svg);
  char out2[8192];
  st_svg = run_cli(args, out2, sizeof out2);
  unlink(db);
  unlink(svg);
  CHECK_MSG(st == 0, "history --since 1s: status %d: %s", st, out);
  CHECK_MSG(st_svg == 0 || st_svg == 1, "history --svg: status %d: %s", st_svg, out2);
  CHECK(strstr(out2, "runtime error") == NULL);
}

int main(void) {
  HR_RUN(test_count_checked);
  HR_RUN(test_listen_checked);
  HR_RUN(test_history_empty_window);
  return hr_test_finish("test_cli_options");
}
