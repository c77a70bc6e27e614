/* The one option parser of the CLI: every command's options and the global
 * ones are read here, from their tables (cli.h), by the one getopt_long call
 * of the program.
 *
 * A field row's value is parsed as the library parses its own options
 * (hr_option_parse: the same suffixes, ranges and messages), so that
 * `--since 2x` and `interval = 2x` in a config file are refused in the same
 * words; a library row's value goes through hr_options_set at HR_SRC_CLI and
 * so outranks the config file and the environment whenever it is set. Every
 * refusal names the command, the option, the value and what is accepted, and
 * is exit status 2. */
#include "cli.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#define ROW_VAL 0x100 /* getopt_long's value of row i is ROW_VAL + i */

/* The size of the field each kind fills. */
static size_t field_size(hr_cli_arg_t a) {
  switch (a) {
  case HR_CLI_FLAG:
    return sizeof(bool);
  case HR_CLI_INT:
  case HR_CLI_DEVICE:
    return sizeof(int64_t);
  case HR_CLI_SIZE:
    return sizeof(uint64_t);
  case HR_CLI_DURATION:
  case HR_CLI_PERCENT:
    return sizeof(double);
  case HR_CLI_STRING:
  case HR_CLI_CHOICE:
    return sizeof(const char *);
  case HR_CLI_LIST:
    break;
  }
  return sizeof(hr_cli_list_t);
}

static hr_opt_type_t opt_type(hr_cli_arg_t a) {
  switch (a) {
  case HR_CLI_INT:
  case HR_CLI_DEVICE:
    return HR_OPT_INT;
  case HR_CLI_SIZE:
    return HR_OPT_SIZE;
  case HR_CLI_DURATION:
    return HR_OPT_DURATION;
  case HR_CLI_PERCENT:
    return HR_OPT_PERCENT;
  case HR_CLI_CHOICE:
    return HR_OPT_ENUM;
  default:
    return HR_OPT_STRING;
  }
}

/* "status: " before a command's messages; nothing at the global level. */
static const char *cmd_prefix(const hr_cli_command_t *cmd, char *buf, size_t n) {
  snprintf(buf, n, "%s%s", cmd->name, *cmd->name ? ": " : "");
  return buf;
}

/* Stores `text` in the field of row `o` as its kind reads it. Returns 0, or
 * 2 after saying why not. */
static int set_field(const hr_cli_command_t *cmd, const hr_cli_opt_t *o, const hr_cli_row_t *r,
                     void *args, const char *text) {
  char *field = (char *)args + o->offset, label[64], err[512], pre[48];
  snprintf(label, sizeof label, "--%s", r->name);
  hr_option_info_t info = {
      .name = label, .type = opt_type(r->arg), .min = r->min, .max = r->max, .choices = r->choices};
  hr_option_value_t v;
  if (r->arg == HR_CLI_FLAG) {
    *(bool *)field = true;
    return 0;
  }
  if (r->arg == HR_CLI_DEVICE && strcmp(text, "host") == 0) {
    v.i = -1;
  } else if (hr_option_parse(&info, text, &v, err, sizeof err) != 0) {
    if (r->arg == HR_CLI_DEVICE)
      snprintf(err, sizeof err, "%s: '%s' is not a GPU index in [%.0f, %.0f] nor host", label, text,
               r->min, r->max);
    hr_cli_error("%s%s", cmd_prefix(cmd, pre, sizeof pre), err);
    return 2;
  }
  if (r->arg == HR_CLI_LIST) {
    hr_cli_list_t *l = (hr_cli_list_t *)(void *)field;
    if (l->n >= (size_t)r->max || l->n >= HR_CLI_LIST_MAX) {
      hr_cli_error("%s%s: at most %.0f values", cmd_prefix(cmd, pre, sizeof pre), label, r->max);
      return 2;
    }
    l->v[l->n++] = text;
    return 0;
  }
  const void *from = r->arg == HR_CLI_SIZE                                   ? (const void *)&v.u
                     : r->arg == HR_CLI_INT || r->arg == HR_CLI_DEVICE       ? (const void *)&v.i
                     : r->arg == HR_CLI_DURATION || r->arg == HR_CLI_PERCENT ? (const void *)&v.d
                                                                             : (const void *)&text;
  memcpy(field, from, field_size(r->arg));
  return 0;
}

/* Sets a library row's option from the command line. */
static int set_option(hr_cli_t *cli, const hr_cli_command_t *cmd, const hr_cli_opt_t *o,
                      const hr_cli_row_t *r, const char *text) {
  char err[512], pre[48];
  const char *name = hr_options_table(NULL)[o->option].name;
  if (hr_options_set(cli->opts, name, r->arg == HR_CLI_FLAG ? "true" : text, HR_SRC_CLI, err,
                     sizeof err) == 0)
    return 0;
  hr_cli_error("%s--%s: %s", cmd_prefix(cmd, pre, sizeof pre), r->name, err);
  return 2;
}

/* Sets each field row's default; checks that each field has its kind's size
 * (a table that points a row at the wrong field is a bug: exit 70). */
static int set_defaults(const hr_cli_command_t *cmd, void *args) {
  for (size_t i = 0; i < cmd->n_opts; i++) {
    const hr_cli_opt_t *o = &cmd->opts[i];
    hr_cli_row_t r;
    hr_cli_row(o, &r);
    if (o->to_option) continue;
    if (o->size != field_size(o->arg) || o->offset + o->size > cmd->args_size) {
      hr_cli_error("internal error: %s --%s: its field does not fit its kind", cmd->name, r.name);
      return 70;
    }
    if (o->deflt && o->arg != HR_CLI_LIST && set_field(cmd, o, &r, args, o->deflt) != 0) return 70;
  }
  return 0;
}

/* A list row given no value gets its default as its one value. */
static void set_list_defaults(const hr_cli_command_t *cmd, void *args) {
  for (size_t i = 0; i < cmd->n_opts; i++) {
    const hr_cli_opt_t *o = &cmd->opts[i];
    hr_cli_list_t *l = (hr_cli_list_t *)(void *)((char *)args + o->offset);
    if (!o->to_option && o->arg == HR_CLI_LIST && o->deflt && l->n == 0) l->v[l->n++] = o->deflt;
  }
}

/* "see 'headroom status --help'", or 'headroom --help' at the global level. */
static const char *see_help(const hr_cli_command_t *cmd, char *buf, size_t n) {
  snprintf(buf, n, "see 'headroom %s%s--help'", cmd->name, *cmd->name ? " " : "");
  return buf;
}

/* Says what getopt_long refused: an option without its value, a value
 * given to a flag, or an unknown option. */
static int refuse(const hr_cli_command_t *cmd, const hr_cli_row_t *rows, int c, char **argv) {
  char pre[48], see[64];
  see_help(cmd, see, sizeof see);
  cmd_prefix(cmd, pre, sizeof pre);
  const char *word = argv[optind - 1];
  if (c == ':' && optopt >= ROW_VAL)
    hr_cli_error("%s--%s needs a value: %s (%s)", pre, rows[optopt - ROW_VAL].name,
                 rows[optopt - ROW_VAL].meta, see);
  else if (optopt >= ROW_VAL || (optopt == 'h' && strncmp(word, "--", 2) == 0))
    hr_cli_error("%s'%s': --%s takes no value (%s)", pre, word,
                 optopt == 'h' ? "help" : rows[optopt - ROW_VAL].name, see);
  else if (optopt > 0)
    hr_cli_error("%sunknown option '-%c' (%s)", pre, optopt, see);
  else
    hr_cli_error("%sunknown or ambiguous option '%s' (%s)", pre, word, see);
  return 2;
}

/* Checks the number of operands left after the options. */
static int check_operands(const hr_cli_command_t *cmd, int argc, char **argv) {
  char pre[48], see[64];
  int n = argc - optind;
  cmd_prefix(cmd, pre, sizeof pre);
  if (n < cmd->min_operands) {
    hr_cli_error("%s%s (%s)", pre, cmd->missing, see_help(cmd, see, sizeof see));
    return 2;
  }
  if (cmd->max_operands >= 0 && n > cmd->max_operands) {
    hr_cli_error("%sunexpected argument '%s'", pre, argv[optind + cmd->max_operands]);
    return 2;
  }
  return 0;
}

/* Reads the options one by one into `args` and the option chain. */
static int read_options(hr_cli_t *cli, const hr_cli_command_t *cmd, const hr_cli_row_t *rows,
                        const struct option *longopts, void *args, int argc, char **argv) {
  int c;
  optind = 0; /* a fresh scan: the global level has been read with these globals */
  opterr = 0;
  while ((c = getopt_long(argc, argv, cmd->in_order ? "+:h" : ":h", longopts, NULL)) != -1) {
    if (c == 'h') {
      hr_cli_usage(cmd, stdout);
      return HR_CLI_HELPED;
    }
    if (c < ROW_VAL) return refuse(cmd, rows, c, argv);
    const hr_cli_opt_t *o = &cmd->opts[c - ROW_VAL];
    const hr_cli_row_t *r = &rows[c - ROW_VAL];
    int st = o->to_option ? set_option(cli, cmd, o, r, optarg) : set_field(cmd, o, r, args, optarg);
    if (st) return st;
  }
  return 0;
}

int hr_cli_parse(hr_cli_t *cli, const hr_cli_command_t *cmd, void *args, int argc, char **argv,
                 int *first) {
  hr_cli_row_t *rows = calloc(cmd->n_opts + 1, sizeof *rows);
  struct option *longopts = calloc(cmd->n_opts + 2, sizeof *longopts);
  int status = 1;
  if (!rows || !longopts) {
    hr_cli_error("out of memory");
    goto out;
  }
  for (size_t i = 0; i < cmd->n_opts; i++) {
    const hr_cli_row_t *r = hr_cli_row(&cmd->opts[i], &rows[i]);
    longopts[i] = (struct option){r->name, r->arg == HR_CLI_FLAG ? no_argument : required_argument,
                                  NULL, ROW_VAL + (int)i};
  }
  longopts[cmd->n_opts] = (struct option){"help", no_argument, NULL, 'h'};
  if ((status = set_defaults(cmd, args)) != 0) goto out;
  if ((status = read_options(cli, cmd, rows, longopts, args, argc, argv)) != 0) goto out;
  set_list_defaults(cmd, args);
  status = check_operands(cmd, argc, argv);
  *first = optind;
out:
  free(rows);
  free(longopts);
  return status;
}
