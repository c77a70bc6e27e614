/* Command-line values an attacker or a slip of the finger would give, through
 * the CLI as a real process with a time limit: each must end at once with a
 * clear message and a non-zero status, never run for ever or bind somewhere
 * other than asked. */
#include "hr_test.h"

#include <string.h>
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

/* A bad value of each kind the option tables take, for a field of a
 * command's settings and for a row of the library's table, at the command
 * and at the global level: exit 2 at once, one message that names the
 * command's option and what it accepts, and nothing run. */
static void test_bad_values_named(void) {
  if (!getenv("HR_CLI")) SKIP("HR_CLI is set by CTest");
  static const struct {
    const char *args, *option, *accepts;
  } cases[] = {
      {"status --top x", "status: --top", "not an integer in [1, 100000]"},
      {"status --top 0", "status: --top", "option top: '0' is out of range [1, 100000]"},
      {"history --since 2x", "history: --since", "not a duration (with ms/s/m/h/d) in [0, "},
      {"history --pid 0", "history: --pid", "out of range [1, 2147483647]"},
      {"plan --budget 0 w.json", "plan: --budget", "out of range [1, 1125899906842624] bytes"},
      {"plan --budget lots w.json", "plan: --budget", "not a size (bytes, or with K/M/G/T)"},
      {"watch --ram-warn 101", "watch: --ram-warn", "out of range [1, 100]"},
      {"watch --interval 0", "watch: --interval", "out of range [0.01, 86400] seconds"},
      {"watch --mode reckless", "watch: --mode", "not one of conservative|balanced|aggressive"},
      {"watch --leak-min-rate 1Q", "watch: --leak-min-rate", "not a size"},
      {"replay --backend gpu t", "replay: --backend", "not one of sim|host"},
      {"reserve --device 64 1G -- true", "reserve: --device",
       "not a GPU index in [0, 63] nor host"},
      {"reserve --priority 1e9 1G -- true", "reserve: --priority", "not an integer in [-1000000, "},
      {"reserve --timeout -1s 1G -- true", "reserve: --timeout", "not a duration"},
      {"--cgroup-pid -1 status", "--cgroup-pid", "option cgroup_pid: '-1' is out of range"},
      {"--log-level loud status", "--log-level", "not one of debug|info|warn|error"},
      {"status --json=1", "status: '--json=1'", "--json takes no value"},
      {"status --top", "status: --top", "needs a value: N"},
      {"status --nope", "status: unknown or ambiguous option '--nope'", "status --help"},
      {"replay --conf 1 --conf 2 --conf 3 --conf 4 --conf 5 --conf 6 --conf 7 --conf 8 --conf 9 t",
       "replay: --conf", "at most 8 values"},
      {"plan", "plan: a workflow file is needed", "plan --help"},
      {"doctor extra", "doctor: unexpected argument 'extra'", "doctor"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char out[4096];
    int st = run_cli(cases[i].args, out, sizeof out);
    CHECK_MSG(st == 2, "'%s': status %d: %s", cases[i].args, st, out);
    CHECK_MSG(strstr(out, cases[i].option) && strstr(out, cases[i].accepts),
              "'%s': the message names neither '%s' nor '%s': %s", cases[i].args, cases[i].option,
              cases[i].accepts, out);
    CHECK_MSG(strchr(out, '\n') == out + strlen(out) - 1, "'%s': one line, not: %s", cases[i].args,
              out);
  }
}

/* Each command's --help (and `headroom help COMMAND`) lists each option
 * once, --help among them. */
static void test_help_lists_each_option_once(void) {
  if (!getenv("HR_CLI")) SKIP("HR_CLI is set by CTest");
  static const char *cmds[] = {"",       "config", "status", "watch",  "history",
                               "replay", "plan",   "doctor", "broker", "reserve"};
  for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
    char args[64], out[32768], out2[32768], seen[64][48];
    size_t n_seen = 0;
    snprintf(args, sizeof args, "%s --help", cmds[i]);
    CHECK_MSG(run_cli(args, out, sizeof out) == 0, "%s: %s", args, out);
    snprintf(args, sizeof args, "help %s", cmds[i]);
    CHECK_MSG(run_cli(args, out2, sizeof out2) == 0, "%s: %s", args, out2);
    CHECK_MSG(strcmp(out, out2) == 0, "'%s --help' and 'help %s' differ", cmds[i], cmds[i]);
    CHECK_CONTAINS(out, "\n  --help ");
    for (const char *p = strstr(out, "\n  --"); p; p = strstr(p + 1, "\n  --")) {
      char name[48];
      if (sscanf(p + 3, "%47[a-z0-9-]", name) != 1) continue;
      for (size_t k = 0; k < n_seen; k++)
        CHECK_MSG(strcmp(seen[k], name) != 0, "'%s --help' lists --%s twice", cmds[i], name);
      if (n_seen < 64) snprintf(seen[n_seen++], sizeof seen[0], "%s", name);
    }
    CHECK_MSG(n_seen >= 2, "'%s --help' lists %zu options", cmds[i], n_seen);
  }
  /* history's database option once in the whole text, not also in a
   * synopsis. */
  char out[8192];
  CHECK(run_cli("history --help", out, sizeof out) == 0);
  const char *first = strstr(out, "--db");
  CHECK(first && !strstr(first + 1, "--db"));
}

/* A command takes the library options its table names on its own command
 * line: doctor checks the exporter address and the database it is given. */
static void test_command_takes_library_options(void) {
  if (!getenv("HR_CLI")) SKIP("HR_CLI is set by CTest");
  char out[16384];
  int st = run_cli("doctor --json --listen none --db none", out, sizeof out);
  CHECK_MSG(st == 0 || st == 1, "status %d: %s", st, out);
  CHECK_CONTAINS(out, "exporter off (listen = none)");
  CHECK_CONTAINS(out, "history off (db = none)");
  st = run_cli("doctor --json --listen 192.0.2.1:10460 --db /proc/1/nope/h.db", out, sizeof out);
  CHECK_MSG(st == 1, "status %d: %s", st, out);
  CHECK_CONTAINS(out, "192.0.2.1:10460: ");
  CHECK_CONTAINS(out, "/proc/1/nope/h.db cannot be created");
}

int main(void) {
  HR_RUN(test_count_checked);
  HR_RUN(test_listen_checked);
  HR_RUN(test_history_empty_window);
  HR_RUN(test_bad_values_named);
  HR_RUN(test_help_lists_each_option_once);
  HR_RUN(test_command_takes_library_options);
  return hr_test_finish("test_cli_options");
}
