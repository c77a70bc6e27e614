/* headroom: the CLI entry. Reads the global options (their table is below),
 * loads the option chain (defaults < config file < HEADROOM_* environment <
 * global flags: each source outranks the ones before, whatever the order
 * they are read in), then hands the rest of the command line to one
 * subcommand, whose options its own table describes. */
#include "cli.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct global_args {
  const char *config;
  bool version;
} global_args_t;

static const hr_cli_opt_t global_opts[] = {
    HR_CLI_OPTION_AS(NULL, root, "DIR", HR_CLI_COMPLETE_DIR),
    {"config", HR_CLI_STRING, HR_CLI_AT(global_args_t, config), .meta = "FILE",
     .complete = HR_CLI_COMPLETE_FILE,
     .help = "config file read instead of /etc/headroom/headroom.conf and "
             "$XDG_CONFIG_HOME/headroom/headroom.conf (HEADROOM_CONFIG)"},
    HR_CLI_OPTION_AS(NULL, cgroup, "PATH", HR_CLI_COMPLETE_CGROUP),
    HR_CLI_OPTION_AS(NULL, cgroup_pid, "PID", HR_CLI_COMPLETE_PID),
    HR_CLI_OPTION(log_level, "LEVEL"),
    HR_CLI_OPTION(color, "WHEN"),
    {"version", HR_CLI_FLAG, HR_CLI_AT(global_args_t, version),
     .help = "print the version and exit"},
};

const hr_cli_command_t hr_cli_global = {
    .name = "",
    .operands = "COMMAND [ARGS]",
    .about = "Sees where GPU and host memory go, and keeps inference processes out of "
             "out-of-memory trouble.",
    .notes = "Run 'headroom COMMAND --help' for a command's options, and 'headroom config' for "
             "every option, its value and where the value came from.",
    HR_CLI_ROWS(global_opts),
    .args_size = sizeof(global_args_t),
    .max_operands = -1,
    .in_order = true,
};

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

/* The log level and colour the option chain asks for. */
static void set_output(hr_cli_t *cli) {
  const char *level = hr_options_get_str(cli->opts, HR_OPTION_log_level);
  hr_log_level_t lv = strcmp(level, "debug") == 0  ? HR_LOG_DEBUG
                      : strcmp(level, "info") == 0 ? HR_LOG_INFO
                      : strcmp(level, "warn") == 0 ? HR_LOG_WARN
                                                   : HR_LOG_ERROR;
  hr_set_log(log_to_stderr, NULL, lv);
  const char *color = hr_options_get_str(cli->opts, HR_OPTION_color);
  cli->tty = isatty(STDOUT_FILENO);
  cli->color = strcmp(color, "always") == 0 ||
               (strcmp(color, "auto") == 0 && cli->tty && !getenv("NO_COLOR"));
}

/* `headroom help [COMMAND]`. */
static int help(int argc, char **argv) {
  const hr_cli_command_t *cmd = argc > 1 ? hr_cli_find(argv[1]) : &hr_cli_global;
  if (!cmd) {
    hr_cli_error("unknown command '%s' (see 'headroom --help')", argv[1]);
    return 2;
  }
  hr_cli_usage(cmd, stdout);
  return 0;
}

/* Parses the command's options into its settings and runs it. */
static int run_command(hr_cli_t *cli, int argc, char **argv) {
  if (strcmp(argv[0], "help") == 0) return help(argc, argv);
  const hr_cli_command_t *cmd = hr_cli_find(argv[0]);
  if (!cmd) {
    hr_cli_error("unknown command '%s' (see 'headroom --help')", argv[0]);
    return 2;
  }
  void *args = calloc(1, cmd->args_size ? cmd->args_size : 1);
  int first = 0, status = args ? hr_cli_parse(cli, cmd, args, argc, argv, &first) : 1;
  if (!args) hr_cli_error("out of memory");
  if (status == 0) status = cmd->run(cli, args, argc - first, argv + first);
  free(args);
  return status == HR_CLI_HELPED ? 0 : status;
}

/* The global options, the option chain, then the command. */
static int run(hr_cli_t *cli, int argc, char **argv) {
  global_args_t g = {0};
  char err[512];
  int first = 0, status = hr_cli_parse(cli, &hr_cli_global, &g, argc, argv, &first);
  if (status) return status == HR_CLI_HELPED ? 0 : status;
  if (g.version) {
    printf("headroom %s\n", hr_version());
    return 0;
  }
  if (first >= argc) {
    hr_cli_usage(&hr_cli_global, stderr);
    return 2;
  }
  if (hr_options_load_defaults(cli->opts, g.config, err, sizeof err) != 0) {
    hr_cli_error("%s", err);
    return 2;
  }
  if ((status = check_cgroup_options(cli)) != 0) return status;
  set_output(cli);
  return run_command(cli, argc - first, argv + first);
}

int main(int argc, char **argv) {
  hr_cli_t cli = {.prog = "headroom"};
  if (hr_options_create(&cli.opts) != 0) {
    hr_cli_error("out of memory");
    return 1;
  }
  int status = run(&cli, argc, argv);
  hr_options_destroy(cli.opts);
  return status;
}
