/* headroom reserve SIZE -- CMD: asks the broker for SIZE bytes on a device,
 * waiting while it asks others to release; once granted, runs CMD holding the
 * lease on an open connection, and exits with CMD's status. The lease ends
 * when CMD ends: this process closes the connection (or dies, and the kernel
 * closes it). A refusal prints who holds what and exits 75 (EX_TEMPFAIL). */
#include "cli.h"

#include <cjson/cJSON.h>
#include <getopt.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define EXIT_REFUSED 75

static void reserve_usage(FILE *f) {
  fprintf(f, "usage: headroom reserve SIZE [--device N|host] [--timeout D] [--lease D]\n"
             "                        [--priority P] [--socket PATH] [--json] -- CMD [ARGS...]\n\n"
             "Reserves SIZE (512M, 8G) through the broker of 'headroom watch' before CMD\n"
             "runs: the broker grants at once when it is free, or asks idle clients of no\n"
             "higher priority to release first. CMD runs while the lease is held; the lease\n"
             "ends when CMD exits, and headroom exits with CMD's status.\n\n"
             "  --device N     GPU N, or host for host memory (default 0)\n"
             "  --timeout D    how long to wait for room (30s)\n"
             "  --lease D      the lease ends after D even if CMD still runs (default: never)\n"
             "  --priority P   the priority asked with; clients above it are never asked (0)\n"
             "  --json         the broker's answer as JSON on stderr\n\n"
             "Exit status: CMD's, or 75 when refused (the reason and the holders on\n"
             "stderr), 1 when the broker cannot be reached, 2 on a usage error.\n");
}

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

static int reserve_run(hr_cli_t *cli, int argc, char **argv) {
  static const struct option longopts[] = {
      {"device", required_argument, NULL, 'd'}, {"timeout", required_argument, NULL, 't'},
      {"lease", required_argument, NULL, 'l'},  {"priority", required_argument, NULL, 'p'},
      {"socket", required_argument, NULL, 's'}, {"json", no_argument, NULL, 'j'},
      {"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0}};
  char device[32] = "gpu0", *end;
  const char *sock = NULL;
  double timeout = 30, lease = 0;
  long prio = 0;
  bool json = false;
  int c;
  /* Options may follow SIZE; "--" ends them, and CMD keeps its own. */
  while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
    if (c == 'd') {
      long n = strtol(optarg, &end, 10);
      if (strcmp(optarg, "host") == 0)
        snprintf(device, sizeof device, "host");
      else if (*optarg && !*end && n >= 0 && n < 64)
        snprintf(device, sizeof device, "gpu%ld", n);
      else
        return hr_cli_error("reserve: --device: '%s' is not a GPU index nor host", optarg), 2;
    } else if (c == 't' || c == 'l') {
      double *d = c == 't' ? &timeout : &lease;
      if (hr_parse_duration(optarg, d) != 0 || *d < 0)
        return hr_cli_error("reserve: --%s: '%s' is not a duration (30s, 5m)",
                            c == 't' ? "timeout" : "lease", optarg),
               2;
    } else if (c == 'p') {
      prio = strtol(optarg, &end, 10);
      if (!*optarg || *end || prio < -1000000 || prio > 1000000)
        return hr_cli_error("reserve: --priority: '%s' is not a number in [-1e6, 1e6]", optarg), 2;
    } else if (c == 's')
      sock = optarg;
    else if (c == 'j')
      json = true;
    else if (c == 'h')
      return reserve_usage(stdout), 0;
    else
      return reserve_usage(stderr), 2;
  }
  uint64_t bytes;
  if (optind >= argc || hr_parse_size(argv[optind], &bytes) != 0 || bytes == 0)
    return hr_cli_error("reserve: SIZE%s%s is not a size (512M, 8G)", optind < argc ? " " : "",
                        optind < argc ? argv[optind] : ""),
           2;
  if (++optind >= argc)
    return hr_cli_error("reserve: no command to run (headroom reserve SIZE -- CMD ARGS...)"), 2;
  int fd = hr_cli_broker_connect(cli, sock);
  if (fd < 0) return 1;
  char req[300];
  snprintf(req, sizeof req,
           "{\"v\":1,\"op\":\"reserve\",\"id\":1,\"bytes\":%llu,\"device\":\"%s\","
           "\"timeout\":%g,\"lease\":%g,\"priority\":%ld}",
           (unsigned long long)bytes, device, timeout, lease, prio);
  char *line = hr_cli_broker_send(fd, req) == 0 ? hr_cli_broker_read(fd, timeout + 10) : NULL;
  cJSON *j = line ? cJSON_Parse(line) : NULL;
  const char *op = cJSON_GetStringValue(cJSON_GetObjectItem(j, "op"));
  int status;
  if (json && line) fprintf(stderr, "%s\n", line);
  if (op && strcmp(op, "granted") == 0)
    status = run_child(argv + optind);
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

const hr_cli_command_t hr_cmd_reserve = {"reserve",
                                         "reserve memory through the broker while a command runs",
                                         reserve_run, reserve_usage};
