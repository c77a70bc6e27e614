/* headroom: the CLI entry. Loads the option chain (defaults < config file <
 * HEADROOM_* environment < global flags), then hands the rest of the command
 * line to one subcommand from the table below. */
#include "cli.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const hr_cli_command_t *commands[] = {
    &hr_cmd_config, &hr_cmd_status, &hr_cmd_watch,  &hr_cmd_history, &hr_cmd_replay,
    &hr_cmd_plan,   &hr_cmd_doctor, &hr_cmd_broker, &hr_cmd_reserve,
};
#define N_COMMANDS (sizeof commands / sizeof commands[0])

static void usage(FILE *f) {
  fprintf(f, "usage: headroom [--root DIR] [--config FILE] [--log-level LEVEL] [--color WHEN]\n"
             "                [--cgroup PATH | --cgroup-pid PID] COMMAND [ARGS]\n"
             "       headroom --version | --help | help COMMAND\n\n"
             "Sees where GPU and host memory go, and keeps inference processes out of\n"
             "out-of-memory trouble.\n\ncommands:\n");
  for (size_t i = 0; i < N_COMMANDS; i++)
    fprintf(f, "  %-10s %s\n", commands[i]->name, commands[i]->summary);
  fprintf(f, "\nglobal options:\n"
             "  --root DIR         read /proc and /sys under DIR (HEADROOM_ROOT; default /)\n"
             "  --config FILE      config file read instead of /etc/headroom/headroom.conf\n"
             "                     and $XDG_CONFIG_HOME/headroom/headroom.conf (HEADROOM_CONFIG)\n"
             "  --cgroup PATH      read this memory cgroup instead of headroom's own: a\n"
             "                     directory under /sys/fs/cgroup (HEADROOM_CGROUP)\n"
             "  --cgroup-pid PID   read the memory cgroup of process PID (HEADROOM_CGROUP_PID)\n"
             "  --log-level LEVEL  debug, info, warn or error (default warn)\n"
             "  --color WHEN       auto, always or never\n\n"
             "Run 'headroom COMMAND --help' for a command's options, and 'headroom config'\n"
             "for every option, its value and where the value came from.\n");
}

static const hr_cli_command_t *find_command(const char *name) {
  for (size_t i = 0; i < N_COMMANDS; i++)
    if (strcmp(commands[i]->name, name) == 0) return commands[i];
  return NULL;
}

static void log_to_stderr(hr_log_level_t level, const char *msg, void *arg) {
  (void)arg;
  fprintf(stderr, "headroom: %s: %s\n", hr_log_level_name(level), msg);
}

/* --cgroup and --cgroup-pid (or their config lines and variables) name one
 * cgroup each: both at once is a usage error. Returns the exit status. */
static int check_cgroup_options(const hr_cli_t *cli) {
  if (*hr_options_get_str(cli->opts, HR_OPTION_cgroup) &&
      hr_options_get_int(cli->opts, HR_OPTION_cgroup_pid) > 0) {
    hr_cli_error("cgroup and cgroup_pid both name a cgroup: give one");
    return 2;
  }
  return 0;
}

int main(int argc, char **argv) {
  static const struct option longopts[] = {{"root", required_argument, NULL, 'r'},
                                           {"config", required_argument, NULL, 'c'},
                                           {"log-level", required_argument, NULL, 'l'},
                                           {"color", required_argument, NULL, 'C'},
                                           {"cgroup", required_argument, NULL, 'g'},
                                           {"cgroup-pid", required_argument, NULL, 'p'},
                                           {"version", no_argument, NULL, 'V'},
                                           {"help", no_argument, NULL, 'h'},
                                           {NULL, 0, NULL, 0}};
  hr_cli_t cli = {.prog = "headroom"};
  const char *config = NULL;
  int status = 0;
  char err[512];

  if (hr_options_create(&cli.opts) != 0) {
    hr_cli_error("out of memory");
    return 1;
  }
  /* Global flags stop at the first non-option: the command name. */
  struct {
    const char *name, *value;
  } flags[8];
  size_t n_flags = 0;
  int c;
  while ((c = getopt_long(argc, argv, "+h", longopts, NULL)) != -1) {
    switch (c) {
    case 'r':
      flags[n_flags].name = "root", flags[n_flags++].value = optarg;
      break;
    case 'l':
      flags[n_flags].name = "log_level", flags[n_flags++].value = optarg;
      break;
    case 'C':
      flags[n_flags].name = "color", flags[n_flags++].value = optarg;
      break;
    case 'g':
      flags[n_flags].name = "cgroup", flags[n_flags++].value = optarg;
      break;
    case 'p':
      flags[n_flags].name = "cgroup_pid", flags[n_flags++].value = optarg;
      break;
    case 'c':
      config = optarg;
      break;
    case 'V':
      printf("headroom %s\n", hr_version());
      goto out;
    case 'h':
      usage(stdout);
      goto out;
    default:
      usage(stderr);
      status = 2;
      goto out;
    }
    if (n_flags == sizeof flags / sizeof flags[0]) n_flags--;
  }
  if (optind >= argc) {
    usage(stderr);
    status = 2;
    goto out;
  }
  if (hr_options_load_defaults(cli.opts, config, err, sizeof err) != 0) {
    hr_cli_error("%s", err);
    status = 2;
    goto out;
  }
  for (size_t i = 0; i < n_flags; i++)
    if ((status = hr_cli_set(&cli, flags[i].name, flags[i].value)) != 0) goto out;

  if ((status = check_cgroup_options(&cli)) != 0) goto out;

  const char *level = hr_options_get_str(cli.opts, HR_OPTION_log_level);
  hr_log_level_t lv = strcmp(level, "debug") == 0  ? HR_LOG_DEBUG
                      : strcmp(level, "info") == 0 ? HR_LOG_INFO
                      : strcmp(level, "warn") == 0 ? HR_LOG_WARN
                                                   : HR_LOG_ERROR;
  hr_set_log(log_to_stderr, NULL, lv);
  const char *color = hr_options_get_str(cli.opts, HR_OPTION_color);
  cli.tty = isatty(STDOUT_FILENO);
  cli.color = strcmp(color, "always") == 0 ||
              (strcmp(color, "auto") == 0 && cli.tty && !getenv("NO_COLOR"));

  const char *name = argv[optind];
  if (strcmp(name, "help") == 0) {
    const hr_cli_command_t *cmd = optind + 1 < argc ? find_command(argv[optind + 1]) : NULL;
    if (cmd)
      cmd->usage(stdout);
    else
      usage(optind + 1 < argc ? stderr : stdout), status = optind + 1 < argc ? 2 : 0;
    goto out;
  }
  const hr_cli_command_t *cmd = find_command(name);
  if (!cmd) {
    hr_cli_error("unknown command '%s' (see 'headroom --help')", name);
    status = 2;
    goto out;
  }
  int first = optind;
  optind = 0; /* getopt starts afresh for the command; its argv[0] is the command's name */
  status = cmd->run(&cli, argc - first, argv + first);
out:
  hr_options_destroy(cli.opts);
  return status;
}
