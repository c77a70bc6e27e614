/* headroom: see where GPU and host memory go, decide what to release before it
 * runs out, and release it.
 *
 * This is the header of libheadroom, the library an inference process loads
 * (it needs libc alone). It holds what every part shares (errors, version,
 * logging, the option table, the byte formatter) and includes the header of
 * each part of libheadroom: probe (machine snapshot), pool (caching device
 * allocator), residency (model registry) and detect (levels, leak trend
 * test). The daemon library's parts (watch, history, exporter, trace replay,
 * workflow planning, charts) are declared in headroom/daemon.h, which
 * includes this one; a program that links the daemon library includes that.
 *
 * Conventions: functions return 0 or a negative HR_E* code and give results
 * through out-parameters. Sizes are bytes (uint64_t), times are seconds
 * (double). The library never prints, exits or aborts in a release build;
 * messages go to the log callback set with hr_set_log(). */
#ifndef HEADROOM_H
#define HEADROOM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include "headroom/options_table.h"

#ifdef __cplusplus
extern "C" {
#endif

#if defined(HR_BUILDING)
#define HR_API __attribute__((visibility("default")))
#else
#define HR_API
#endif

#define HR_PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))

/* ---- version ------------------------------------------------------------ */

#define HR_VERSION_MAJOR 0
#define HR_VERSION_MINOR 1
#define HR_VERSION_PATCH 0

/* Returns the library's version as "MAJOR.MINOR.PATCH"; a static string. */
HR_API const char *hr_version(void);

/* ---- errors ------------------------------------------------------------- */

/* One list gives the enum, hr_strerror() and hr_err_name(). Codes are
 * negative; 0 is success. Append only: the numbers are part of the ABI. */
#define HR_ERRORS(X)                                                                               \
  X(HR_EINVAL, -1, "invalid argument")                                                             \
  X(HR_ENOMEM, -2, "out of memory")                                                                \
  X(HR_ENOSPC, -3, "does not fit in the budget")                                                   \
  X(HR_ENOENT, -4, "not found")                                                                    \
  X(HR_EIO, -5, "input/output error")                                                              \
  X(HR_EPARSE, -6, "malformed input")                                                              \
  X(HR_ENOTSUP, -7, "not supported")                                                               \
  X(HR_ENODRIVER, -8, "driver not found")                                                          \
  X(HR_EPERM, -9, "permission denied")                                                             \
  X(HR_ERANGE, -10, "value out of range")                                                          \
  X(HR_EBUSY, -11, "resource busy")                                                                \
  X(HR_ETIMEDOUT, -12, "timed out")                                                                \
  X(HR_EEXIST, -13, "already exists")                                                              \
  X(HR_ESTATE, -14, "not allowed in the current state")                                            \
  X(HR_EDEVICE, -15, "device error")                                                               \
  X(HR_EVERSION, -16, "version mismatch")

typedef enum hr_err {
  HR_OK = 0,
#define HR_ERR_ENUM_(name, code, text) name = code,
  HR_ERRORS(HR_ERR_ENUM_)
#undef HR_ERR_ENUM_
} hr_err_t;

/* Returns a short text for `code` ("out of memory"); "success" for 0 and
 * "unknown error" for codes not in the list. Static strings. */
HR_API const char *hr_strerror(int code);
/* Returns the code's name ("HR_ENOMEM"), or "HR_E?" for an unknown code. */
HR_API const char *hr_err_name(int code);

/* ---- logging ------------------------------------------------------------ */

typedef enum hr_log_level {
  HR_LOG_DEBUG = 0,
  HR_LOG_INFO = 1,
  HR_LOG_WARN = 2,
  HR_LOG_ERROR = 3,
} hr_log_level_t;

/* Receives one message, without a trailing newline. May be called from any
 * thread that calls into the library; it must not call back into it. */
typedef void (*hr_log_fn)(hr_log_level_t level, const char *msg, void *arg);

/* Sets the process-wide log callback and the lowest level it receives.
 * NULL silences the library (the default). Thread-safe. */
HR_API void hr_set_log(hr_log_fn fn, void *arg, hr_log_level_t min_level);
/* Returns "debug", "info", "warn" or "error". */
HR_API const char *hr_log_level_name(hr_log_level_t level);

/* ---- options ------------------------------------------------------------ */

/* One table of options (headroom/options_table.h) with a type, a default, a
 * range and a description each. Values come, each overriding the one before,
 * from the default, the config file, the environment (HEADROOM_<NAME>) and the
 * command line or the API. Sizes take K/M/G/T suffixes (powers of 1024),
 * durations take ms/s/m/h/d, booleans 1/0, true/false, yes/no, on/off. A bad
 * value is an error naming the option and the accepted range. */

typedef enum hr_opt_type {
  HR_OPT_BOOL,
  HR_OPT_INT,      /* int64_t within [min, max] */
  HR_OPT_SIZE,     /* bytes, uint64_t within [min, max] */
  HR_OPT_DURATION, /* seconds, double within [min, max] */
  HR_OPT_PERCENT,  /* double within [min, max], in percent */
  HR_OPT_STRING,
  HR_OPT_ENUM, /* one of the '|'-separated choices */
} hr_opt_type_t;

typedef enum hr_opt_source {
  HR_SRC_DEFAULT = 0,
  HR_SRC_FILE = 1,
  HR_SRC_ENV = 2,
  HR_SRC_CLI = 3,
} hr_opt_source_t;

typedef struct hr_option_info {
  const char *name; /* "vram_warn" */
  const char *env;  /* "HEADROOM_VRAM_WARN" */
  hr_opt_type_t type;
  const char *deflt;   /* default, as text */
  double min, max;     /* range for numbers; unused otherwise */
  const char *choices; /* "conservative|balanced|aggressive" for enums */
  const char *help;
} hr_option_info_t;

/* Each option's identifier, HR_OPTION_<name>, generated from the table, in
 * table order: code reads options by identifier, so a misspelt name does not
 * compile. HR_OPTION_COUNT_ is the number of options. */
#define HR_OPTION_ID_(name, ...) HR_OPTION_##name,
typedef enum hr_option_id { HR_OPTION_TABLE(HR_OPTION_ID_) HR_OPTION_COUNT_ } hr_option_id_t;
#undef HR_OPTION_ID_

typedef struct hr_options hr_options_t;

/* Creates a set of options holding every default. */
HR_API int hr_options_create(hr_options_t **out);
HR_API void hr_options_destroy(hr_options_t *o);

/* Sets `name` (dashes and underscores are the same) from text at `source`.
 * A value from a lower source never overrides one from a higher source (it
 * is still checked: a bad value is an error whichever source outranks it).
 * On error returns HR_ENOENT (unknown option) or HR_EINVAL/HR_ERANGE and
 * writes a message naming the option and the accepted values into err. */
HR_API int hr_options_set(hr_options_t *o, const char *name, const char *value,
                          hr_opt_source_t source, char *err, size_t errlen);

/* Reads a config file: `name = value` lines, '#' comments (outside double
 * quotes), blank lines; a value may be in double quotes. The file must be a
 * regular file of at most 1 MiB with lines of at most 16 KiB and no NUL
 * byte. A missing file is HR_ENOENT (callers decide whether that matters);
 * a bad line is HR_EPARSE or the value's error, with "path:line:" in err;
 * nothing is set from the lines after the first bad one. */
HR_API int hr_options_load_file(hr_options_t *o, const char *path, char *err, size_t errlen);

/* Reads every HEADROOM_<NAME> variable of the table from the environment. */
HR_API int hr_options_load_env(hr_options_t *o, char *err, size_t errlen);

/* The standard chain: defaults; then the files: the one at `path` or
 * $HEADROOM_CONFIG alone when either is given (a missing one is an error),
 * else /etc/headroom/headroom.conf followed by the user's
 * $XDG_CONFIG_HOME/headroom/headroom.conf (else ~/.config/headroom/
 * headroom.conf), whose lines override the system file's (either may be
 * missing; a system file the user may not read is logged and skipped); then
 * the environment. */
HR_API int hr_options_load_defaults(hr_options_t *o, const char *path, char *err, size_t errlen);

/* The options of this process: defaults, the config file, the environment,
 * read once on the first call (thread-safe) and kept for the life of the
 * process. Parts that have no options of their own to go by (the pool behind
 * PyTorch, the CUDA backend, the Python package) read these. When the chain
 * cannot be read (a bad value somewhere), *out holds the defaults plus what
 * was read before the error, the call returns the error each time and err
 * says why. Never NULL on return. */
HR_API int hr_options_process(const hr_options_t **out, char *err, size_t errlen);

/* Drops the process's options so that the next hr_options_process call reads
 * the file and the environment again. For tests, and for a program that
 * changed its own HEADROOM_* variables on purpose: every set handed out
 * before is freed, so no other thread may still hold one. */
HR_API void hr_options_process_reload(void);

/* The identifier of option `name` (dashes and underscores are the same), or
 * HR_ENOENT. For callers that hold a name as text: the CLI, Python. */
HR_API int hr_options_id(const char *name);

/* Typed reads by identifier. The option must have that type (a size read
 * as a size, a duration or percentage as a double, an enum as a string);
 * otherwise, or for an identifier out of range, the call returns a zero value
 * (and asserts in debug builds). */
HR_API bool hr_options_get_bool(const hr_options_t *o, hr_option_id_t id);
HR_API int64_t hr_options_get_int(const hr_options_t *o, hr_option_id_t id);
HR_API uint64_t hr_options_get_size(const hr_options_t *o, hr_option_id_t id);
HR_API double hr_options_get_double(const hr_options_t *o, hr_option_id_t id);
HR_API const char *hr_options_get_str(const hr_options_t *o, hr_option_id_t id);
HR_API hr_opt_source_t hr_options_source(const hr_options_t *o, hr_option_id_t id);

/* The table itself, for --help and docs: `*n` entries, entry i being the
 * option whose identifier is i. */
HR_API const hr_option_info_t *hr_options_table(size_t *n);

/* A value read as a row of the table describes it: the member of the row's
 * type is set (strings and enums: `s` is the text given, not a copy). */
typedef struct hr_option_value {
  bool b;        /* HR_OPT_BOOL */
  int64_t i;     /* HR_OPT_INT */
  uint64_t u;    /* HR_OPT_SIZE, bytes */
  double d;      /* HR_OPT_DURATION (seconds), HR_OPT_PERCENT */
  const char *s; /* HR_OPT_STRING, HR_OPT_ENUM */
} hr_option_value_t;

/* Parses `text` as `row` describes it (type, range, choices) by the rules and
 * with the messages of hr_options_set, for a program whose own options are
 * rows of the same shape (the CLI's per-command flags): env and help of `row`
 * are not read. Returns 0 with *out set, or HR_EINVAL / HR_ERANGE with a
 * message in err opened by row->name ("--count: '-1' is out of range
 * [1, 999999]"). Reentrant. */
HR_API int hr_option_parse(const hr_option_info_t *row, const char *text, hr_option_value_t *out,
                           char *err, size_t errlen);

/* `s` as a JSON string literal, quotes included, in *out (malloc'd, the
 * caller frees): the library's one JSON string writer, for callers that write
 * JSON of their own. Control characters are escaped and every byte that is
 * not valid UTF-8 becomes U+FFFD, so the result is always valid JSON; NULL
 * gives null. Returns 0, HR_EINVAL or HR_ENOMEM. */
HR_API int hr_json_string(const char *s, char **out);

/* Formats bytes in binary units, as every message and table of headroom
 * does: "512 B", "6.31 GiB" (two decimals, KiB to PiB, PyTorch's style).
 * Writes into buf (32 bytes hold any value) and returns it. The library's one
 * byte formatter, exported for the CLI and the charts. */
HR_API const char *hr_size_text(char *buf, size_t n, uint64_t bytes);

/* Parsers the option table uses, exported for the CLI and the parts that take
 * sizes and durations elsewhere (workflow files, config strings). Each returns
 * 0 or HR_EINVAL. */
HR_API int hr_parse_size(const char *s, uint64_t *out);
HR_API int hr_parse_duration(const char *s, double *out);
HR_API int hr_parse_bool(const char *s, bool *out);

#ifdef __cplusplus
}
#endif

#include "headroom/probe.h"
#include "headroom/pool.h"
#include "headroom/residency.h"
#include "headroom/detect.h"

#endif /* HEADROOM_H */
