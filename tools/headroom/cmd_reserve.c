/* headroom reserve SIZE -- CMD: asks the broker for SIZE bytes on a device,
 * waiting while it asks others to release; once granted, runs CMD holding the
 * lease on an open connection, and exits with CMD's status. The lease ends
 * when CMD ends: this process closes the connection (or dies, and the kernel
 * closes it). A refusal prints who holds what and exits 75 (EX_TEMPFAIL). */
#include "cli.h"

#include <cjson/cJSON.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define EXIT_REFUSED 75

typedef struct reserve_args {
  int64_t device; /* -1: host */
  double timeout, lease;
  int64_t priority;
  bool json;
} reserve_args_t;

static const hr_cli_opt_t reserve_opts[] = {
    {"device", HR_CLI_DEVICE, HR_CLI_AT(reserve_args_t, device), .meta = "N|host", .deflt = "0",
     .max = 63, .help = "GPU N, or host for host memory"},
    {"timeout", HR_CLI_DURATION, HR_CLI_AT(reserve_args_t, timeout), .meta = "D", .deflt = "30s",
     .max = 3650 * 86400.0, .help = "how long to wait for room"},
    {"lease", HR_CLI_DURATION, HR_CLI_AT(reserve_args_t, lease), .meta = "D", .max = 3650 * 86400.0,
     .help = "the lease ends after D even if CMD still runs (default: never)"},
    {"priority", HR_CLI_INT, HR_CLI_AT(reserve_args_t, priority), .meta = "P", .deflt = "0",
     .min = -1000000, .max = 1000000,
     .help = "the priority asked with; clients above it are never asked"},
    HR_CLI_OPTION_AS("socket", broker_socket, "PATH", HR_CLI_COMPLETE_FILE),
    {"json", HR_CLI_FLAG, HR_CLI_AT(reserve_args_t, json),
     .help = "the broker's answer as JSON on stderr"},
};

/* Prints a refusal: the reason and every holder. */
static void show_refusal(const cJSON *j) {
  char a[32], b[32];
  const cJSON *h;
  hr_cli_error(
      "reserve: refused on %s: %s; %s asked, %s fits",
      cJSON_GetStringValue(cJSON_GetObjectItem(j, "device")),
      cJSON_GetStringValue(cJSON_GetObjectItem(j, "reason")),
      hr_size_text(a, sizeof a, (uint64_t)cJSON_GetNumberValue(cJSON_GetObjectItem(j, "bytes"))),
      hr_size_text(b, sizeof b,
                   (uint64_t)cJSON_GetNumberValue(cJSON_GetObjectItem(j, "fits_bytes"))));
  cJSON_ArrayForEach(h, cJSON_GetObjectItem(j, "holders")) fprintf(
      stderr, "  pid %d %s (priority %d) holds %s, releasable %s: %s\n",
      (int)cJSON_GetNumberValue(cJSON_GetObjectItem(h, "pid")),
      cJSON_GetStringValue(cJSON_GetObjectItem(h, "name")),
      (int)cJSON_GetNumberValue(cJSON_GetObjectItem(h, "priority")),
      hr_size_text(a, sizeof a,
                   (uint64_t)cJSON_GetNumberValue(cJSON_GetObjectItem(h, "held_bytes"))),
      hr_size_text(b, sizeof b,
                   (uint64_t)cJSON_GetNumberValue(cJSON_GetObjectItem(h, "releasable_bytes"))),
      cJSON_GetStringValue(cJSON_GetObjectItem(h, "why")));
  cJSON_ArrayForEach(h, cJSON_GetObjectItem(j, "leases")) fprintf(
      stderr, "  lease %.0f of pid %d %s holds %s\n",
      cJSON_GetNumberValue(cJSON_GetObjectItem(h, "lease")),
      (int)cJSON_GetNumberValue(cJSON_GetObjectItem(h, "pid")),
      cJSON_GetStringValue(cJSON_GetObjectItem(h, "name")),
      hr_size_text(a, sizeof a, (uint64_t)cJSON_GetNumberValue(cJSON_GetObjectItem(h, "bytes"))));
}

static int run_child(char **argv) {
  pid_t pid = fork();
  if (pid < 0) return hr_cli_error("reserve: fork failed"), 1;
  if (pid == 0) {
    execvp(argv[0], argv);
    fprintf(stderr, "headroom: reserve: cannot run '%s'\n", argv[0]);
    _exit(127);
  }
  /* The child gets Ctrl-C itself; the lease lasts until it exits. */
  signal(SIGINT, SIG_IGN);
  signal(SIGTERM, SIG_IGN);
  int st;
  while (waitpid(pid, &st, 0) < 0) {
  }
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* Asks the broker for `bytes` on the connection `fd`; returns its answer
 * (malloc'd), or NULL when none came. */
static char *ask(int fd, const reserve_args_t *a, uint64_t bytes) {
  char req[300], device[32];
  if (a->device < 0)
    snprintf(device, sizeof device, "host");
  else
    snprintf(device, sizeof device, "gpu%lld", (long long)a->device);
  snprintf(req, sizeof req,
           "{\"v\":1,\"op\":\"reserve\",\"id\":1,\"bytes\":%llu,\"device\":\"%s\","
           "\"timeout\":%g,\"lease\":%g,\"priority\":%lld}",
           (unsigned long long)bytes, device, a->timeout, a->lease, (long long)a->priority);
  return hr_cli_broker_send(fd, req) == 0 ? hr_cli_broker_read(fd, a->timeout + 10) : NULL;
}

/* Options may follow SIZE; "--" ends them, and CMD keeps its own. */
static int reserve_run(hr_cli_t *cli, const void *args, int argc, char **argv) {
  const reserve_args_t *a = args;
  uint64_t bytes;
  if (hr_parse_size(argv[0], &bytes) != 0 || bytes == 0)
    return hr_cli_error("reserve: SIZE %s is not a size (512M, 8G)", argv[0]), 2;
  if (argc < 2)
    return hr_cli_error("reserve: no command to run (headroom reserve SIZE -- CMD ARGS...)"), 2;
  int fd = hr_cli_broker_connect(cli);
  if (fd < 0) return 1;
  char *line = ask(fd, a, bytes);
  cJSON *j = line ? cJSON_Parse(line) : NULL;
  const char *op = cJSON_GetStringValue(cJSON_GetObjectItem(j, "op"));
  int status;
  if (a->json && line) fprintf(stderr, "%s\n", line);
  if (op && strcmp(op, "granted") == 0)
    status = run_child(argv + 1);
  else if (op && strcmp(op, "refused") == 0)
    show_refusal(j), status = EXIT_REFUSED;
  else {
    hr_cli_error("reserve: %s", op && strcmp(op, "error") == 0
                                    ? cJSON_GetStringValue(cJSON_GetObjectItem(j, "error"))
                                    : "no answer from the broker");
    status = 1;
  }
  close(fd);
  cJSON_Delete(j);
  free(line);
  return status;
}

HR_CLI_COMMAND(
    reserve, "reserve memory through the broker while a command runs",
    .operands = "SIZE -- CMD [ARGS...]", .min_operands = 1, .max_operands = -1,
    .missing = "SIZE and a command are needed",
    .about = "Reserves SIZE (512M, 8G) through the broker of 'headroom watch' before CMD runs: "
             "the broker grants at once when it is free, or asks idle clients of no higher "
             "priority to release first. CMD runs while the lease is held; the lease ends when "
             "CMD exits, and headroom exits with CMD's status.",
    .notes = "Exit status: CMD's, or 75 when refused (the reason and the holders on stderr), 1 "
             "when the broker cannot be reached, 2 on a usage error.");
