/* The headroom CLI: one binary, one file per subcommand. Commands use only
 * the public API plus the helpers here (the option tables, formatting,
 * colour).
 *
 * Every command's options, and the global ones, are rows of a table
 * (hr_cli_opt_t): a long name, the kind of its argument, where the value
 * goes, the default shown in help and the help text. A row either fills a
 * field of the command's own settings struct, or names a row of the
 * library's option table (HR_OPTION_*) that it sets through the option
 * chain; such a row takes its kind, range, default, environment name and
 * help from the library table, so none of them is written twice. One parser
 * (parse.c, the only getopt_long call), one usage printer (usage.c), the man
 * page (manual.c) and the bash completion (completion.c) all read these
 * tables. */
#ifndef HR_CLI_H
#define HR_CLI_H

#include <headroom/daemon.h>

#include <stddef.h>
#include <stdio.h>

/* What every command gets: the option chain already loaded (defaults, the
 * config file, the environment and the global flags). */
typedef struct hr_cli {
  hr_options_t *opts;
  bool color; /* stdout is a terminal and colour is not turned off */
  bool tty;   /* stdout is a terminal */
  const char *prog;
} hr_cli_t;

/* ---- the option tables -------------------------------------------------- */

/* The kind of an option's argument, and the type of the field it fills. */
typedef enum hr_cli_arg {
  HR_CLI_FLAG,     /* no argument; bool (a boolean library option becomes true) */
  HR_CLI_INT,      /* int64_t within [min, max] */
  HR_CLI_SIZE,     /* uint64_t bytes, K/M/G/T suffixes, within [min, max] */
  HR_CLI_DURATION, /* double seconds, ms/s/m/h/d suffixes, within [min, max] */
  HR_CLI_PERCENT,  /* double within [min, max] */
  HR_CLI_STRING,   /* const char *, pointing into argv */
  HR_CLI_CHOICE,   /* const char *, one of the '|'-separated choices */
  HR_CLI_LIST,     /* hr_cli_list_t: a string that may be given up to max times */
  HR_CLI_DEVICE,   /* int64_t: a GPU index within [min, max], or -1 for "host" */
} hr_cli_arg_t;

/* What completion offers for an option's value (choices need none: they are
 * offered from the row). */
typedef enum hr_cli_complete {
  HR_CLI_COMPLETE_NONE,
  HR_CLI_COMPLETE_FILE,
  HR_CLI_COMPLETE_DIR,
  HR_CLI_COMPLETE_PID,
  HR_CLI_COMPLETE_CGROUP, /* directories under /sys/fs/cgroup */
} hr_cli_complete_t;

#define HR_CLI_LIST_MAX 8
typedef struct hr_cli_list {
  const char *v[HR_CLI_LIST_MAX];
  size_t n;
} hr_cli_list_t;

typedef struct hr_cli_opt {
  const char *name;    /* without the dashes; NULL on a library row: its name, dashed */
  hr_cli_arg_t arg;    /* field rows; a library row's kind follows its table type */
  size_t offset, size; /* field rows: the field in the settings struct (HR_CLI_AT) */
  bool to_option;      /* a library row: the value sets `option` at HR_SRC_CLI */
  hr_option_id_t option;
  const char *meta;    /* the value's name in help: N, SIZE, PATH (NULL for a flag) */
  const char *deflt;   /* field rows: the default, set before parsing and shown in help */
  double min, max;     /* field rows: the range of numbers; list rows: max is the count */
  const char *choices; /* field rows of HR_CLI_CHOICE */
  hr_cli_complete_t complete;
  const char *help; /* field rows; a library row's comes from the table */
} hr_cli_opt_t;

/* A field row's target: `field` of the settings struct `type`. */
#define HR_CLI_AT(type, field) .offset = offsetof(type, field), .size = sizeof(((type *)0)->field)
/* A row that sets library option `id` under its own name (underscores as dashes). */
#define HR_CLI_OPTION(id, meta_)                                                                   \
  { .to_option = true, .option = HR_OPTION_##id, .meta = (meta_) }
/* The same under another name, and with a completion. */
#define HR_CLI_OPTION_AS(flag, id, meta_, complete_)                                               \
  {                                                                                                \
    .name = (flag), .to_option = true, .option = HR_OPTION_##id, .meta = (meta_),                  \
    .complete = (complete_)                                                                        \
  }
#define HR_CLI_ROWS(rows) .opts = (rows), .n_opts = sizeof(rows) / sizeof((rows)[0])

/* A row resolved: for a library row, what the library table says. */
typedef struct hr_cli_row {
  char name[48]; /* "ram-warn" */
  hr_cli_arg_t arg;
  const char *meta, *help, *deflt, *choices;
  const char *env; /* HEADROOM_<NAME> of a library row, NULL for a field row */
  double min, max;
  hr_cli_complete_t complete;
} hr_cli_row_t;

/* Resolves row `o`; fills *r and returns it. */
const hr_cli_row_t *hr_cli_row(const hr_cli_opt_t *o, hr_cli_row_t *r);

/* ---- commands ----------------------------------------------------------- */

typedef struct hr_cli_command {
  const char *name;               /* "" for the global level */
  const char *summary;            /* one line, for the command list */
  const char *operands;           /* what follows the options in the synopsis, or NULL */
  int min_operands, max_operands; /* max < 0: any number */
  const char *missing;            /* the message when fewer than min_operands are given */
  const char *about;              /* paragraphs ("\n\n" between) under the usage line */
  const char *notes;              /* paragraphs after the options (exit status, ...), or NULL */
  /* Writes paragraphs ("\n\n" between) that come from the library's own
   * tables into buf (of len bytes), printed after the options, before the
   * notes; NULL when there are none. */
  void (*tables)(char *buf, size_t len);
  const hr_cli_opt_t *opts;
  size_t n_opts;
  size_t args_size; /* sizeof the settings struct the rows fill */
  bool in_order;    /* options end at the first operand (the global level) */
  bool hidden;      /* left out of the command list, the man page and completion */
  /* Runs with the settings filled and the operands left; returns the exit
   * status. */
  int (*run)(hr_cli_t *cli, const void *args, int argc, char **argv);
} hr_cli_command_t;

/* Defines hr_cmd_<name>: the command `name` with its one-line summary, whose
 * settings struct <name>_args_t the rows <name>_opts fill, run by
 * <name>_run. The other members (.about, .notes, the operands) follow as
 * designated initializers. */
#define HR_CLI_COMMAND(name_, summary_, ...)                                                       \
  const hr_cli_command_t hr_cmd_##name_ = {.name = #name_,                                         \
                                           .summary = (summary_),                                  \
                                           HR_CLI_ROWS(name_##_opts),                              \
                                           .args_size = sizeof(name_##_args_t),                    \
                                           .run = name_##_run,                                     \
                                           __VA_ARGS__}

/* Each subcommand file defines one of these; main.c the global level. */
extern const hr_cli_command_t hr_cmd_config;
extern const hr_cli_command_t hr_cmd_status;
extern const hr_cli_command_t hr_cmd_watch;
extern const hr_cli_command_t hr_cmd_history;
extern const hr_cli_command_t hr_cmd_replay;
extern const hr_cli_command_t hr_cmd_plan;
extern const hr_cli_command_t hr_cmd_doctor;
extern const hr_cli_command_t hr_cmd_broker;
extern const hr_cli_command_t hr_cmd_reserve;
extern const hr_cli_command_t hr_cmd_man;
extern const hr_cli_command_t hr_cmd_completion;
extern const hr_cli_command_t hr_cli_global;

/* Every command, in the order of the command list; `*n` gets the count. */
const hr_cli_command_t *const *hr_cli_commands(size_t *n);
/* The command named `name` (hidden ones included), or NULL. */
const hr_cli_command_t *hr_cli_find(const char *name);

/* What hr_cli_parse returns when --help was asked and printed. */
#define HR_CLI_HELPED (-1)

/* Parses argv by cmd's table: argv[0] is the command's name (or the
 * program's at the global level); options may be abbreviated as getopt_long
 * allows. Sets the field rows' defaults in `args` (cmd->args_size bytes,
 * zeroed by the caller), then each option given: fields in `args`, library
 * rows in cli->opts at HR_SRC_CLI. Checks the count of operands. *first gets
 * the index of the first operand. Returns 0, HR_CLI_HELPED, or an exit
 * status after a message on stderr (2: a usage error; the message names the
 * option, the value and what it accepts). Uses getopt's globals: not
 * reentrant. */
int hr_cli_parse(hr_cli_t *cli, const hr_cli_command_t *cmd, void *args, int argc, char **argv,
                 int *first);

/* Prints cmd's usage: synopsis, about, each option once with its help,
 * default and environment variable, the notes. */
void hr_cli_usage(const hr_cli_command_t *cmd, FILE *f);

/* Calls write for each paragraph of text (paragraphs are separated by a
 * blank line; one that opens with two spaces is verbatim: its lines are
 * kept). The text handed to write may be changed by it. */
void hr_cli_paragraphs(FILE *f, void (*write)(FILE *f, char *text, bool verbatim),
                       const char *text);

/* The usage text of one row's value ("--top N"), and its help with the
 * choices, default and environment variable appended. */
void hr_cli_row_flag(const hr_cli_row_t *r, char *buf, size_t n);
void hr_cli_row_help(const hr_cli_row_t *r, char *buf, size_t n);

/* Writes the man page and the bash completion script, both from the tables;
 * return the exit status (1 when the output cannot be written). */
int hr_cli_manual(FILE *f);
int hr_cli_completion(FILE *f);

/* ---- shared helpers ----------------------------------------------------- */

/* The broker's client side (cmd_broker.c): connect to the socket of the
 * broker_socket option, printing why not and returning -1; send one line;
 * read one line (malloc'd; NULL on EOF or after timeout seconds). */
int hr_cli_broker_connect(hr_cli_t *cli);
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

/* Wraps text in an ANSI colour when cli->color ("red", "yellow", "green",
 * "bold", "dim"); returns buf. */
const char *hr_cli_paint(const hr_cli_t *cli, char *buf, size_t n, const char *color,
                         const char *text);

/* A size as the tables show it: "-" when unknown, "unlimited" when no limit
 * is set, else hr_size_text. Returns buf. */
const char *hr_cli_size(char *buf, size_t n, uint64_t v);
/* Percent of `part` in `whole`, or -1 when either is not known. */
double hr_cli_pct(uint64_t part, uint64_t whole);

/* Writes `text` to the file at `path` (created or truncated). Returns 0, or
 * -1 when it cannot be written whole. */
int hr_cli_write_file(const char *path, const char *text);

/* Prints "headroom: <msg>" to stderr. */
void hr_cli_error(const char *fmt, ...) HR_PRINTF(1, 2);

/* Writes a JSON string literal (with quotes, escaped) to f. */
void hr_cli_json_str(FILE *f, const char *s);

#endif /* HR_CLI_H */
