/* The headroom CLI: one binary, one file per subcommand. Commands use only
 * the public API plus the helpers here (formatting, colour, options). */
#ifndef HR_CLI_H
#define HR_CLI_H

#include <headroom/daemon.h>

#include <stdio.h>

/* What every command gets: the option chain already loaded (defaults, the
 * config file, the environment and the global flags). */
typedef struct hr_cli {
  hr_options_t *opts;
  bool color; /* stdout is a terminal and colour is not turned off */
  bool tty;   /* stdout is a terminal */
  const char *prog;
} hr_cli_t;

typedef struct hr_cli_command {
  const char *name;
  const char *summary;
  int (*run)(hr_cli_t *cli, int argc, char **argv); /* returns the exit status */
  void (*usage)(FILE *f);
} hr_cli_command_t;

/* Each subcommand file defines one of these. */
extern const hr_cli_command_t hr_cmd_config;
extern const hr_cli_command_t hr_cmd_status;
extern const hr_cli_command_t hr_cmd_watch;
extern const hr_cli_command_t hr_cmd_history;
extern const hr_cli_command_t hr_cmd_replay;
extern const hr_cli_command_t hr_cmd_plan;
extern const hr_cli_command_t hr_cmd_doctor;
extern const hr_cli_command_t hr_cmd_broker;
extern const hr_cli_command_t hr_cmd_reserve;

/* The broker's client side (cmd_broker.c): connect to the socket (socket_opt
 * or the broker_socket option), printing why not and returning -1; send one
 * line; read one line (malloc'd; NULL on EOF or after timeout seconds). */
int hr_cli_broker_connect(hr_cli_t *cli, const char *socket_opt);
int hr_cli_broker_send(int fd, const char *line);
char *hr_cli_broker_read(int fd, double timeout);
/* Starts the broker beside `headroom watch`: its events are posted to `w`
 * (history, watch --json, the live view) and its counters feed /metrics. `w`
 * must outlive the broker. Returns 0 (with *out NULL when it could not start on its default
 * socket, said on stderr) or the exit status of a bad configuration. */
int hr_cli_broker_start(hr_cli_t *cli, hr_watch_t *w, hr_broker_t **out);

/* The probe's options as the option chain sets them (root, nvml_library,
 * cgroup, cgroup_pid), reading `what` and writing why a snapshot failed to
 * err. The strings belong to cli->opts. */
hr_probe_options_t hr_cli_probe_options(const hr_cli_t *cli, unsigned what, char *err,
                                        size_t errlen);

/* Sets an option from the command line; on error prints "headroom: <msg>" and
 * returns 2 (the usage-error status), else 0. */
int hr_cli_set(hr_cli_t *cli, const char *name, const char *value);

/* Wraps text in an ANSI colour when cli->color ("red", "yellow", "green",
 * "bold", "dim"); returns buf. */
const char *hr_cli_paint(const hr_cli_t *cli, char *buf, size_t n, const char *color,
                         const char *text);

/* Prints "headroom: <msg>" to stderr. */
void hr_cli_error(const char *fmt, ...) HR_PRINTF(1, 2);

/* Writes a JSON string literal (with quotes, escaped) to f. */
void hr_cli_json_str(FILE *f, const char *s);

#endif /* HR_CLI_H */
