/* The option table (options_table.h) and its layered values: a value set from
 * a source replaces the current one only when that source ranks at least as
 * high (default < file < environment < command line), so the chain can be
 * loaded in any order. Values are parsed and range-checked when set, never
 * when read, so a read cannot fail. */
#include "util/util.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <strings.h>
#include <stdlib.h>
#include <string.h>

#define HR_OPT_ROW_(name, type, deflt, min, max, choices, help)                                    \
  {#name, "HEADROOM_" #name, type, deflt, min, max, choices, help},
static hr_option_info_t table[] = {HR_OPTION_TABLE(HR_OPT_ROW_)};
#undef HR_OPT_ROW_
#define N_OPTIONS HR_ARRAY_LEN(table)
_Static_assert(N_OPTIONS == HR_OPTION_COUNT_, "identifiers follow the table");

typedef struct opt_value {
  hr_opt_source_t src;
  struct {
    bool b;
    int64_t i;
    uint64_t u;
    double d;
  } v;     /* the member of the row's type holds the value */
  char *s; /* strings and enums */
} opt_value_t;

struct hr_options {
  opt_value_t values[N_OPTIONS];
};

/* The environment names are built once: "HEADROOM_" followed by the upper-
 * case name. Static storage keeps hr_option_info_t plain const strings. */
static char env_names[N_OPTIONS][64];
static pthread_once_t env_once = PTHREAD_ONCE_INIT;

static void env_names_init(void) {
  for (size_t i = 0; i < N_OPTIONS; i++) {
    snprintf(env_names[i], sizeof env_names[i], "HEADROOM_%s", table[i].name);
    for (char *c = env_names[i]; *c; c++) *c = (char)toupper((unsigned char)*c);
    table[i].env = env_names[i];
  }
}

const hr_option_info_t *hr_options_table(size_t *n) {
  pthread_once(&env_once, env_names_init);
  if (n) *n = N_OPTIONS;
  return table;
}

static int find(const char *name) {
  for (size_t i = 0; i < N_OPTIONS; i++) {
    const char *a = table[i].name, *b = name;
    while (*a && *b && (*a == *b || (*a == '_' && *b == '-'))) a++, b++;
    if (*a == '\0' && *b == '\0') return (int)i;
  }
  return -1;
}

int hr_parse_bool(const char *s, bool *out) {
  static const char *yes[] = {"1", "true", "yes", "on"}, *no[] = {"0", "false", "no", "off"};
  for (size_t i = 0; i < 4; i++) {
    if (strcasecmp(s, yes[i]) == 0) return *out = true, 0;
    if (strcasecmp(s, no[i]) == 0) return *out = false, 0;
  }
  return HR_EINVAL;
}

/* Parses a non-negative decimal number with an optional fraction; sets *end. */
static int parse_number(const char *s, double *out, const char **end) {
  while (isspace((unsigned char)*s)) s++;
  if (!isdigit((unsigned char)*s) && *s != '.') return HR_EINVAL;
  char *e;
  errno = 0;
  double v = strtod(s, &e);
  if (e == s || errno || !isfinite(v) || v < 0) return HR_EINVAL;
  *out = v;
  *end = e;
  return 0;
}

/* Reads a size unit at *e (K, M, G or T in either case, an optional "i",
 * then an optional "B"), moving *e past it. Returns its factor, 1 for none. */
static double size_unit(const char **e) {
  static const char prefixes[] = "KMGT";
  const char *p = **e ? strchr(prefixes, toupper((unsigned char)**e)) : NULL;
  double mult = 1;
  if (p) {
    for (const char *q = prefixes; q <= p; q++) mult *= 1024;
    (*e)++;
    if (**e == 'i' || **e == 'I') (*e)++;
  }
  if (**e == 'B' || **e == 'b') (*e)++;
  return mult;
}

/* Reads a duration unit at *e (ms, us, s, m, h or d), moving *e past it.
 * Returns its length in seconds, 1 for none. */
static double duration_unit(const char **e) {
  static const struct {
    const char *suffix;
    double seconds;
  } units[] = {{"ms", 1e-3}, {"us", 1e-6}, {"s", 1}, {"m", 60}, {"h", 3600}, {"d", 86400}};
  for (size_t i = 0; i < HR_ARRAY_LEN(units); i++) {
    size_t len = strlen(units[i].suffix);
    if (strncmp(*e, units[i].suffix, len) == 0) {
      *e += len;
      return units[i].seconds;
    }
  }
  return 1;
}

/* Parses a number, the unit that unit() reads after it (its factor) and
 * white space to the end: the one grammar of sizes and durations. */
static int parse_scaled(const char *s, double (*unit)(const char **e), double *out) {
  double v;
  const char *e;
  if (parse_number(s, &v, &e)) return HR_EINVAL;
  double mult = unit(&e);
  while (isspace((unsigned char)*e)) e++;
  if (*e != '\0') return HR_EINVAL;
  *out = v * mult;
  return 0;
}

int hr_parse_size(const char *s, uint64_t *out) {
  double bytes;
  if (parse_scaled(s, size_unit, &bytes) || bytes >= 18446744073709551616.0) return HR_EINVAL;
  *out = (uint64_t)bytes;
  return 0;
}

int hr_parse_duration(const char *s, double *out) {
  return parse_scaled(s, duration_unit, out);
}

static const char *type_word(hr_opt_type_t t) {
  static const char *const words[] = {[HR_OPT_BOOL] = "a boolean (true/false, yes/no, on/off, 1/0)",
                                      [HR_OPT_INT] = "an integer",
                                      [HR_OPT_SIZE] = "a size (bytes, or with K/M/G/T)",
                                      [HR_OPT_DURATION] = "a duration (with ms/s/m/h/d)",
                                      [HR_OPT_PERCENT] = "a percentage",
                                      [HR_OPT_STRING] = "a string",
                                      [HR_OPT_ENUM] = "one of"};
  return hr__enum_name(words, HR_ARRAY_LEN(words), (int)t, "?");
}

bool hr__choices_has(const char *choices, const char *s) {
  size_t n = strlen(s);
  for (const char *c = choices; *c;) {
    const char *bar = strchr(c, '|');
    size_t len = bar ? (size_t)(bar - c) : strlen(c);
    if (len == n && strncmp(c, s, n) == 0) return true;
    if (!bar) break;
    c = bar + 1;
  }
  return false;
}

/* The range of a number row as text: "[1, 100000]", "[0, 1099511627776] bytes",
 * "[0.01, 86400] seconds"; in full, never as 1e+06. */
static const char *range_text(const hr_option_info_t *t, char *buf, size_t n) {
  bool whole = t->type == HR_OPT_INT || t->type == HR_OPT_SIZE;
  snprintf(buf, n, whole ? "[%.0f, %.0f]%s" : "[%.15g, %.15g]%s", t->min, t->max,
           t->type == HR_OPT_SIZE       ? " bytes"
           : t->type == HR_OPT_DURATION ? " seconds"
                                        : "");
  return buf;
}

/* A number of `t`'s type from text (not yet range-checked). */
static int parse_number_of(const hr_option_info_t *t, const char *value, hr_option_value_t *v) {
  switch (t->type) {
  case HR_OPT_INT: {
    /* Digits with an optional minus: strtoll alone would also take " 3"
     * and "+3". */
    if (!isdigit((unsigned char)value[value[0] == '-'])) return HR_EINVAL;
    char *e;
    errno = 0;
    long long i = strtoll(value, &e, 10);
    if (e == value || *e || errno) return HR_EINVAL;
    v->i = i;
    return 0;
  }
  case HR_OPT_SIZE:
    return hr_parse_size(value, &v->u);
  case HR_OPT_DURATION:
    return hr_parse_duration(value, &v->d);
  default: {
    const char *e = NULL;
    int rc = parse_number(value, &v->d, &e);
    if (!rc && *e == '%') e++;
    return rc || *e ? HR_EINVAL : 0;
  }
  }
}

/* hr_option_parse with the message opened by `label` ("option top", "--count"). */
static int parse_value(const hr_option_info_t *t, const char *label, const char *value,
                       hr_option_value_t *out, char *err, size_t errlen) {
  hr_option_value_t v = {.s = value};
  char range[96];
  switch (t->type) {
  case HR_OPT_BOOL:
    if (hr_parse_bool(value, &v.b))
      return hr__err(err, errlen, HR_EINVAL, "%s: '%s' is not %s", label, value,
                     type_word(t->type));
    break;
  case HR_OPT_ENUM:
    if (!hr__choices_has(t->choices, value))
      return hr__err(err, errlen, HR_EINVAL, "%s: '%s' is not one of %s", label, value, t->choices);
    break;
  case HR_OPT_STRING:
    break;
  default: {
    if (parse_number_of(t, value, &v))
      return hr__err(err, errlen, HR_EINVAL, "%s: '%s' is not %s in %s", label, value,
                     type_word(t->type), range_text(t, range, sizeof range));
    double x = t->type == HR_OPT_INT ? (double)v.i : t->type == HR_OPT_SIZE ? (double)v.u : v.d;
    if (x < t->min || x > t->max)
      return hr__err(err, errlen, HR_ERANGE, "%s: '%s' is out of range %s", label, value,
                     range_text(t, range, sizeof range));
  }
  }
  *out = v;
  return 0;
}

int hr_option_parse(const hr_option_info_t *row, const char *text, hr_option_value_t *out,
                    char *err, size_t errlen) {
  if (!row || !row->name || !text || !out)
    return hr__err(err, errlen, HR_EINVAL, "option: missing row or value");
  return parse_value(row, row->name, text, out, err, errlen);
}

int hr_options_set(hr_options_t *o, const char *name, const char *value, hr_opt_source_t source,
                   char *err, size_t errlen) {
  if (!o || !name || !value)
    return hr__err(err, errlen, HR_EINVAL, "option: missing name or value");
  int i = find(name);
  if (i < 0) return hr__err(err, errlen, HR_ENOENT, "unknown option '%s'", name);
  const hr_option_info_t *t = &table[i];
  opt_value_t *ov = &o->values[i];
  char label[80];
  snprintf(label, sizeof label, "option %s", t->name);
  hr_option_value_t v;
  /* A bad value is an error even where a higher source has set the option:
   * the command line may be read before the file and the environment. */
  int rc = parse_value(t, label, value, &v, err, errlen);
  if (rc) return rc;
  if (source < ov->src) return 0;
  opt_value_t nv = {.src = source};
  nv.v.b = v.b, nv.v.i = v.i, nv.v.u = v.u, nv.v.d = v.d;
  if (t->type == HR_OPT_STRING || t->type == HR_OPT_ENUM) {
    nv.s = strdup(value);
    if (!nv.s) return hr__err(err, errlen, HR_ENOMEM, "option %s: out of memory", t->name);
  }
  free(ov->s);
  *ov = nv;
  return 0;
}

int hr_options_create(hr_options_t **out) {
  pthread_once(&env_once, env_names_init);
  hr_options_t *o = calloc(1, sizeof *o);
  if (!o) return HR_ENOMEM;
  for (size_t i = 0; i < N_OPTIONS; i++) {
    int rc = hr_options_set(o, table[i].name, table[i].deflt, HR_SRC_DEFAULT, NULL, 0);
    HR_ASSERT(rc == 0); /* a default outside its own range is a table bug */
    (void)rc;
  }
  *out = o;
  return 0;
}

void hr_options_destroy(hr_options_t *o) {
  if (!o) return;
  for (size_t i = 0; i < N_OPTIONS; i++) free(o->values[i].s);
  free(o);
}

int hr_options_load_env(hr_options_t *o, char *err, size_t errlen) {
  pthread_once(&env_once, env_names_init);
  char msg[512];
  for (size_t i = 0; i < N_OPTIONS; i++) {
    const char *v = getenv(table[i].env);
    if (!v) continue;
    int rc = hr_options_set(o, table[i].name, v, HR_SRC_ENV, msg, sizeof msg);
    if (rc) return hr__err(err, errlen, rc, "%s: %s", table[i].env, msg);
  }
  return 0;
}

/* The system-wide file that packages and configuration management install;
 * a build may move it (-DHR_SYSTEM_CONFIG=...). */
#ifndef HR_SYSTEM_CONFIG
#define HR_SYSTEM_CONFIG "/etc/headroom/headroom.conf"
#endif

int hr__options_load_files(hr_options_t *o, const char *system, const char *path, char *err,
                           size_t errlen) {
  char buf[1024];
  bool explicit_path = path != NULL;
  if (!path) path = getenv(table[HR_OPTION_config].env), explicit_path = path != NULL;
  /* An explicit file stands alone, as ssh -F does: what it says is what runs,
   * whatever the machine's file holds. Otherwise the system file comes first
   * and the user's file overrides it line by line (both rank as "file"). */
  if (!explicit_path && system && *system) {
    int rc = hr_options_load_file(o, system, err, errlen);
    /* A system file a user may not read (mode 0600) is the administrator's
     * choice, not the user's error: the user's own chain still runs. */
    if (rc == HR_EIO) hr__log(HR_LOG_WARN, "%s", err ? err : system);
    if (rc && rc != HR_ENOENT && rc != HR_EIO) return rc;
  }
  if (!path) {
    const char *xdg = getenv("XDG_CONFIG_HOME"), *home = getenv("HOME");
    if (xdg && *xdg)
      snprintf(buf, sizeof buf, "%s/headroom/headroom.conf", xdg);
    else if (home && *home)
      snprintf(buf, sizeof buf, "%s/.config/headroom/headroom.conf", home);
    else
      buf[0] = '\0';
    path = buf;
  }
  if (*path) {
    int rc = hr_options_load_file(o, path, err, errlen);
    if (rc && !(rc == HR_ENOENT && !explicit_path)) return rc;
  }
  if (err && errlen) err[0] = '\0';
  return hr_options_load_env(o, err, errlen);
}

int hr_options_load_defaults(hr_options_t *o, const char *path, char *err, size_t errlen) {
  return hr__options_load_files(o, HR_SYSTEM_CONFIG, path, err, errlen);
}

const char *hr__options_system_path(void) {
  return HR_SYSTEM_CONFIG;
}

int hr_options_id(const char *name) {
  int i = name ? find(name) : -1;
  return i < 0 ? HR_ENOENT : i;
}

static const opt_value_t *get(const hr_options_t *o, hr_option_id_t id, hr_opt_type_t type) {
  bool ok = o && (unsigned)id < N_OPTIONS;
  HR_ASSERT(ok);
  if (!ok) return NULL;
  ok = table[id].type == type || (type == HR_OPT_STRING && table[id].type == HR_OPT_ENUM) ||
       (type == HR_OPT_DURATION && table[id].type == HR_OPT_PERCENT);
  HR_ASSERT(ok);
  return ok ? &o->values[id] : NULL;
}

bool hr_options_get_bool(const hr_options_t *o, hr_option_id_t id) {
  const opt_value_t *v = get(o, id, HR_OPT_BOOL);
  return v ? v->v.b : false;
}

int64_t hr_options_get_int(const hr_options_t *o, hr_option_id_t id) {
  const opt_value_t *v = get(o, id, HR_OPT_INT);
  return v ? v->v.i : 0;
}

uint64_t hr_options_get_size(const hr_options_t *o, hr_option_id_t id) {
  const opt_value_t *v = get(o, id, HR_OPT_SIZE);
  return v ? v->v.u : 0;
}

double hr_options_get_double(const hr_options_t *o, hr_option_id_t id) {
  const opt_value_t *v = get(o, id, HR_OPT_DURATION);
  return v ? v->v.d : 0;
}

const char *hr_options_get_str(const hr_options_t *o, hr_option_id_t id) {
  const opt_value_t *v = get(o, id, HR_OPT_STRING);
  return v && v->s ? v->s : "";
}

hr_opt_source_t hr_options_source(const hr_options_t *o, hr_option_id_t id) {
  return o && (unsigned)id < N_OPTIONS ? o->values[id].src : HR_SRC_DEFAULT;
}

/* The process's options: built on first use and kept for the life of the
 * process (like the environment they were read from). A mutex rather than
 * pthread_once, so that tests can drop the set and read it again. */
static pthread_mutex_t process_lock = PTHREAD_MUTEX_INITIALIZER;
static hr_options_t *process_opts;
static int process_rc;
static char process_err[512];

int hr_options_process(const hr_options_t **out, char *err, size_t errlen) {
  /* Out of memory at the first call: defaults would need the allocation that
   * just failed, so the caller gets a zeroed set (every read a zero value). */
  static hr_options_t zero;
  pthread_mutex_lock(&process_lock);
  if (!process_opts) {
    if (hr_options_create(&process_opts)) {
      process_rc = hr__err(process_err, sizeof process_err, HR_ENOMEM, "options: out of memory");
    } else {
      process_rc = hr_options_load_defaults(process_opts, NULL, process_err, sizeof process_err);
    }
  }
  *out = process_opts ? process_opts : &zero;
  int rc = process_rc;
  if (rc) hr__err(err, errlen, rc, "%s", process_err);
  pthread_mutex_unlock(&process_lock);
  return rc;
}

void hr_options_process_reload(void) {
  pthread_mutex_lock(&process_lock);
  hr_options_destroy(process_opts);
  process_opts = NULL;
  process_rc = 0;
  pthread_mutex_unlock(&process_lock);
}
