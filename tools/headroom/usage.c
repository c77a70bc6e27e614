/* The one usage printer: `headroom --help`, `headroom COMMAND --help` and
 * `headroom help COMMAND` all print a command's table here, each option
 * once, with its help, accepted choices, default and environment variable
 * (the same texts the man page shows). Text is wrapped to 79 columns; a
 * paragraph that opens with two spaces is printed as it stands. */
#include "cli.h"

#include <string.h>

#define WIDTH    79
#define FLAG_COL 24 /* the help column of the option list, at most */

/* Writes `text` wrapped to WIDTH, from column `col`, continuing lines at
 * column `indent`. */
static void wrap(FILE *f, const char *text, int col, int indent) {
  const char *p = text;
  bool first = true;
  while (*p) {
    while (*p == ' ' || *p == '\n') p++;
    size_t len = strcspn(p, " \n");
    if (!len) break;
    if (!first && col + 1 + (int)len > WIDTH) {
      fprintf(f, "\n%*s", indent, "");
      col = indent;
    } else if (!first) {
      fputc(' ', f), col++;
    }
    fwrite(p, 1, len, f);
    col += (int)len;
    p += len;
    first = false;
  }
  fputc('\n', f);
}

void hr_cli_paragraphs(FILE *f, void (*write)(FILE *f, char *text, bool verbatim),
                       const char *text) {
  for (const char *p = text; p && *p;) {
    const char *end = strstr(p, "\n\n");
    size_t len = end ? (size_t)(end - p) : strlen(p);
    char buf[4096];
    snprintf(buf, sizeof buf, "%.*s", (int)len, p);
    write(f, buf, strncmp(buf, "  ", 2) == 0);
    p = end ? end + 2 : p + len;
  }
}

/* A paragraph of help: wrapped, or as it stands. */
static void paragraph(FILE *f, char *text, bool verbatim) {
  fputc('\n', f);
  if (verbatim)
    fprintf(f, "%s\n", text);
  else
    wrap(f, text, 0, 0);
}

void hr_cli_row_flag(const hr_cli_row_t *r, char *buf, size_t n) {
  snprintf(buf, n, "--%s%s%s", r->name, r->arg == HR_CLI_FLAG ? "" : " ",
           r->arg == HR_CLI_FLAG ? "" : r->meta);
}

/* Appends `part` to the list in buf, after "; " when the list has one. */
static void append(char *buf, size_t n, const char *part) {
  size_t used = strlen(buf);
  snprintf(buf + used, n - used, "%s%s", used ? "; " : "", part);
}

void hr_cli_row_help(const hr_cli_row_t *r, char *buf, size_t n) {
  char extra[256] = "", d[128];
  /* Defaults of text in quotes: "default '/'" reads as a value, not a word. */
  bool text = r->arg == HR_CLI_STRING || r->arg == HR_CLI_CHOICE || r->arg == HR_CLI_LIST;
  if (r->arg == HR_CLI_CHOICE && r->choices) append(extra, sizeof extra, r->choices);
  if (r->deflt && *r->deflt && r->arg != HR_CLI_FLAG) {
    snprintf(d, sizeof d, text ? "default '%s'" : "default %s", r->deflt);
    append(extra, sizeof extra, d);
  }
  if (r->env) append(extra, sizeof extra, r->env);
  /* A help that ends in a parenthesis takes the additions inside it. */
  size_t hl = strlen(r->help);
  bool inside = *extra && hl && r->help[hl - 1] == ')';
  snprintf(buf, n, "%.*s%s%s%s", (int)(inside ? hl - 1 : hl), r->help,
           !*extra  ? ""
           : inside ? "; "
                    : " (",
           extra, *extra ? ")" : "");
}

/* The option list: each row once, then --help. */
static void option_list(const hr_cli_command_t *cmd, FILE *f) {
  int col = 0;
  char flag[96], help[1024];
  for (size_t i = 0; i < cmd->n_opts; i++) {
    hr_cli_row_t r;
    hr_cli_row_flag(hr_cli_row(&cmd->opts[i], &r), flag, sizeof flag);
    int w = 2 + (int)strlen(flag) + 2;
    if (w > col && w <= FLAG_COL) col = w;
  }
  if (col < 12) col = 12;
  for (size_t i = 0; i <= cmd->n_opts; i++) {
    hr_cli_row_t r;
    if (i < cmd->n_opts) {
      hr_cli_row(&cmd->opts[i], &r);
      hr_cli_row_flag(&r, flag, sizeof flag);
      hr_cli_row_help(&r, help, sizeof help);
    } else {
      snprintf(flag, sizeof flag, "--help");
      snprintf(help, sizeof help, "print this help and exit");
    }
    int w = fprintf(f, "  %s", flag);
    if (w + 2 > col)
      fprintf(f, "\n%*s", col, "");
    else
      fprintf(f, "%*s", col - w, "");
    wrap(f, help, col, col);
  }
}

static void command_list(FILE *f) {
  size_t n;
  const hr_cli_command_t *const *cmds = hr_cli_commands(&n);
  fprintf(f, "\ncommands:\n");
  for (size_t i = 0; i < n; i++)
    if (!cmds[i]->hidden) fprintf(f, "  %-10s %s\n", cmds[i]->name, cmds[i]->summary);
}

void hr_cli_usage(const hr_cli_command_t *cmd, FILE *f) {
  bool global = !*cmd->name;
  fprintf(f, "usage: headroom%s%s [OPTIONS]%s%s\n", global ? "" : " ", cmd->name,
          cmd->operands ? " " : "", cmd->operands ? cmd->operands : "");
  if (global) fprintf(f, "       headroom --version | --help | help COMMAND\n");
  hr_cli_paragraphs(f, paragraph, cmd->about);
  if (global) command_list(f);
  fprintf(f, "\n%s:\n", global ? "global options" : "options");
  option_list(cmd, f);
  if (cmd->tables) {
    char buf[4096];
    cmd->tables(buf, sizeof buf);
    hr_cli_paragraphs(f, paragraph, buf);
  }
  hr_cli_paragraphs(f, paragraph, cmd->notes);
}
