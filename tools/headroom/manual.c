/* The man page, headroom(1), written by `headroom __man` from the option
 * tables: the global options and every command's options are the rows that
 * --help prints, in the same words; the prose around them (what headroom
 * is, configuration, environment, files, exit status, examples) is written
 * here once. packaging/man/headroom.1 is this output, committed; a test
 * keeps the two equal and the page clean under groff -ww. */
#include "cli.h"

#include <string.h>

/* Writes text with roff's special characters escaped: a backslash, a dash
 * (so that it prints as the ASCII minus a reader types), and a dot or quote
 * opening a line. */
static void roff(FILE *f, const char *text) {
  bool bol = true;
  for (const char *p = text; *p; p++) {
    if (bol && (*p == '.' || *p == '\'')) fputs("\\&", f);
    if (*p == '\\')
      fputs("\\e", f);
    else if (*p == '-')
      fputs("\\-", f);
    else
      fputc(*p, f);
    bol = *p == '\n';
  }
}

/* One paragraph of --help's texts: filled, or kept line by line. */
static void roff_paragraph(FILE *f, char *text, bool verbatim) {
  fputs(verbatim ? ".PP\n.nf\n" : ".PP\n", f);
  if (!verbatim)
    for (char *c = text; *c; c++)
      if (*c == '\n') *c = ' ';
  roff(f, text);
  fputs(verbatim ? "\n.fi\n" : "\n", f);
}

/* One .TP entry per row, then --help. */
static void roff_options(FILE *f, const hr_cli_command_t *cmd) {
  char help[1024];
  for (size_t i = 0; i < cmd->n_opts; i++) {
    hr_cli_row_t r;
    hr_cli_row(&cmd->opts[i], &r);
    fputs(r.arg == HR_CLI_FLAG ? ".TP\n.B " : ".TP\n.BI ", f);
    roff(f, "--");
    roff(f, r.name);
    if (r.arg != HR_CLI_FLAG) {
      fputs(" \" ", f);
      roff(f, r.meta);
      fputc('"', f);
    }
    hr_cli_row_help(&r, help, sizeof help);
    fputc('\n', f);
    roff(f, help);
    fputc('\n', f);
  }
  fputs(".TP\n.B \\-\\-help\nprint this help and exit\n", f);
}

static void roff_command(FILE *f, const hr_cli_command_t *cmd) {
  fprintf(f, ".SS %s\n.B headroom %s\n.RI [ OPTIONS ]", cmd->name, cmd->name);
  if (cmd->operands) {
    fputs("\n.I \"", f);
    roff(f, cmd->operands);
    fputc('"', f);
  }
  fputc('\n', f);
  hr_cli_paragraphs(f, roff_paragraph, cmd->summary);
  hr_cli_paragraphs(f, roff_paragraph, cmd->about);
  if (cmd->n_opts) roff_options(f, cmd);
  if (cmd->tables) {
    char buf[4096];
    cmd->tables(buf, sizeof buf);
    hr_cli_paragraphs(f, roff_paragraph, buf);
  }
  hr_cli_paragraphs(f, roff_paragraph, cmd->notes);
}

static const char head[] =
    ".TH HEADROOM 1 \"2026\" \"headroom %s\" \"User Commands\"\n"
    ".nh\n"
    ".SH NAME\n"
    "headroom \\- see where GPU and host memory go, and keep inference processes out of "
    "out-of-memory trouble\n"
    ".SH SYNOPSIS\n"
    ".B headroom\n"
    ".RI [ \"GLOBAL OPTIONS\" ]\n"
    ".I COMMAND\n"
    ".RI [ OPTIONS ]\n"
    ".RI [ ARGS ]\n"
    ".br\n"
    ".B headroom\n"
    ".BR \\-\\-version \" | \" \\-\\-help \" | \" help\n"
    ".I COMMAND\n"
    ".SH DESCRIPTION\n"
    ".B headroom\n"
    "reads the memory of the host, of a memory cgroup, of each NVIDIA GPU (through\n"
    "NVML, loaded at run time) and of each process, and watches it over time: levels\n"
    "with hysteresis, leaks, idle GPU hogs, OOM kills. It keeps a history in SQLite\n"
    "and serves Prometheus metrics. No GPU, no NVML, no cgroup and no permission are\n"
    "each a state that is reported, not an error.\n"
    ".PP\n"
    "Global options come before the command, the command's own options after it.\n"
    "Every command takes\n"
    ".BR \\-\\-help ,\n"
    "which lists its options as this page does; most take\n"
    ".B \\-\\-json\n"
    "for JSON on standard output. An option's value may follow it as the next\n"
    "word or after\n"
    ".BR = ;\n"
    "a long option may be shortened while it stays unambiguous.\n";

static const char tail[] =
    ".SH CONFIGURATION\n"
    "Every option comes, each source overriding the one before, from its built-in\n"
    "default, the system file\n"
    ".IR /etc/headroom/headroom.conf ,\n"
    "the user's file\n"
    ".IR $XDG_CONFIG_HOME/headroom/headroom.conf\n"
    "(else\n"
    ".IR ~/.config/headroom/headroom.conf ),\n"
    "the environment variable\n"
    ".BI HEADROOM_ NAME\n"
    "and the command line. A file named by\n"
    ".B \\-\\-config\n"
    "or\n"
    ".B HEADROOM_CONFIG\n"
    "is read instead of both files. Files hold lines of\n"
    ".IB name \" = \" value\n"
    "and\n"
    ".B #\n"
    "comments. Sizes take K, M, G and T suffixes (powers of 1024), durations ms,\n"
    "s, m, h and d, booleans true/false, yes/no, on/off, 1/0. A bad value is an\n"
    "error that names the option and its range.\n"
    ".B headroom config\n"
    "lists every option;\n"
    ".B headroom config \\-\\-example\n"
    "writes them all at their defaults.\n"
    ".SH ENVIRONMENT\n"
    ".TP\n"
    ".BI HEADROOM_ NAME\n"
    "The option\n"
    ".I name\n"
    "in upper case, for example\n"
    ".BR HEADROOM_LISTEN ,\n"
    ".BR HEADROOM_CGROUP_PID .\n"
    ".TP\n"
    ".B XDG_CONFIG_HOME\n"
    "Where the user's config file is.\n"
    ".TP\n"
    ".B XDG_STATE_HOME\n"
    "Where the history database is\n"
    ".RI ( $XDG_STATE_HOME/headroom/history.db ,\n"
    "else\n"
    ".IR ~/.local/state/headroom/history.db ).\n"
    ".TP\n"
    ".B NO_COLOR\n"
    "No colour with\n"
    ".BR \"\\-\\-color auto\" .\n"
    ".SH FILES\n"
    ".TP\n"
    ".I /etc/headroom/headroom.conf\n"
    "The system config file.\n"
    ".TP\n"
    ".I /var/lib/headroom/history.db\n"
    "The history of the systemd service\n"
    ".RB ( headroom.service ).\n"
    ".SH EXIT STATUS\n"
    "0 on success, 1 when the command failed (or, for\n"
    ".BR doctor ,\n"
    "a check failed), 2 for a usage error: an unknown command or option, or a bad\n"
    "value (the message names the option and what it accepts).\n"
    ".B reserve\n"
    "exits with its command's status, or 75 when the broker refuses.\n"
    ".SH EXAMPLES\n"
    ".TP\n"
    ".B headroom status\n"
    "One reading of the machine.\n"
    ".TP\n"
    ".B headroom \\-\\-cgroup\\-pid 4242 status\n"
    "The limit and usage of the cgroup (a pod, a container) of process 4242.\n"
    ".TP\n"
    ".B headroom watch \\-\\-mode balanced \\-\\-on\\-critical 'systemctl kill \\-s USR1 "
    "my.service'\n"
    "Watch, and signal a service at a critical level.\n"
    ".TP\n"
    ".B headroom doctor\n"
    "What is missing here, and how to fix it.\n"
    ".TP\n"
    ".B headroom config \\-\\-example > /etc/headroom/headroom.conf\n"
    "A system config file to edit, every option at its default.\n"
    ".SH SEE ALSO\n"
    ".BR systemd.exec (5),\n"
    ".BR proc (5),\n"
    ".BR cgroups (7),\n"
    ".BR nvidia\\-smi (1)\n";

int hr_cli_manual(FILE *f) {
  size_t n;
  const hr_cli_command_t *const *cmds = hr_cli_commands(&n);
  fputs(".\\\" headroom(1), written by `headroom __man` from the CLI's option tables:\n"
        ".\\\" edit those (tools/headroom), then run `make packaging`.\n",
        f);
  fprintf(f, head, hr_version());
  fputs(".SH GLOBAL OPTIONS\n", f);
  roff_options(f, &hr_cli_global);
  fputs(".SH COMMANDS\n", f);
  for (size_t i = 0; i < n; i++)
    if (!cmds[i]->hidden) roff_command(f, cmds[i]);
  fputs(tail, f);
  return fflush(f) == 0 && !ferror(f) ? 0 : 1;
}
