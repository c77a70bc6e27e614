/* Internal helpers shared by every room: logging, asserts, small string and
 * file utilities. Not part of the public API (names start with hr__). */
#ifndef HR_UTIL_H
#define HR_UTIL_H

#include "headroom/headroom.h"
/* The daemon library's sources (watch, store, export, trace, chart) are
 * built with HR_BUILDING_DAEMON and see its declarations too; libheadroom's
 * are built without them, so a call from libheadroom into the daemon does not
 * compile. */
#if defined(HR_BUILDING_DAEMON)
#include "headroom/daemon.h"
#endif

#include <stdarg.h>
#include <stdio.h>

#define HR_INTERNAL     __attribute__((visibility("hidden")))
#define HR_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define HR_MIN(a, b)    ((a) < (b) ? (a) : (b))
#define HR_MAX(a, b)    ((a) > (b) ? (a) : (b))

/* Sends a message to the log callback, if one is set and the level passes. */
HR_INTERNAL void hr__log(hr_log_level_t level, const char *fmt, ...) HR_PRINTF(2, 3);
HR_INTERNAL bool hr__log_enabled(hr_log_level_t level);

#ifdef HR_DEBUG
HR_INTERNAL void hr__assert_fail(const char *expr, const char *file, int line);
#define HR_ASSERT(e) ((e) ? (void)0 : hr__assert_fail(#e, __FILE__, __LINE__))
#else
#define HR_ASSERT(e) ((void)0)
#endif

/* snprintf into err when err is not NULL; returns `code` for tail calls. */
HR_INTERNAL int hr__err(char *err, size_t errlen, int code, const char *fmt, ...) HR_PRINTF(4, 5);

/* Copies src into dst of size n, always terminated; returns dst. */
HR_INTERNAL char *hr__strlcpy(char *dst, const char *src, size_t n);

/* Formats bytes for messages: "512 B", "6.31 GiB" (binary units, two
 * decimals). Writes into buf and returns it. The one byte formatter: the
 * public hr_size_text() is this function. */
HR_INTERNAL const char *hr__size_text(char *buf, size_t n, uint64_t bytes);

/* Reads a whole (small) file into buf, terminated; returns the length, or a
 * negative HR_E* code: HR_ENOENT, HR_EPERM, HR_EIO. Truncates at n-1 bytes.
 * For /proc and /sys (under a root): never waits, so a FIFO there is read as
 * empty (or HR_EIO while a writer holds it) rather than hanging. */
HR_INTERNAL ssize_t hr__read_file(const char *path, char *buf, size_t n);

/* Opens the file at `path` for reading, refusing what is not a regular file
 * before a byte is read: a FIFO, a directory, a device or a socket (a
 * symbolic link to one included) would hang a reader or feed it without end.
 * The file is looked at with stat() first, so no device is even opened; then
 * opened without waiting (O_NONBLOCK, cleared once fstat() agrees it is a
 * regular file: a FIFO swapped in between is refused too). With
 * HR__OPEN_DEV_NULL, /dev/null is taken as an empty file. *fd gets the
 * descriptor (O_CLOEXEC), *size (may be NULL) the file's size. Returns 0,
 * HR_ENOENT (no such file), HR_EPERM (no permission) or HR_EIO (not a regular
 * file, or the system's error), with "PATH: why" in err ("PATH: not a
 * regular file (a FIFO)"). The one way every reader of a user's path opens it. */
#define HR__OPEN_DEV_NULL 1u
HR_INTERNAL int hr__open_regular(const char *path, unsigned flags, int *fd, uint64_t *size,
                                 char *err, size_t errlen);
/* hr__open_regular() as a stdio stream opened "rb" (*f NULL on failure). */
HR_INTERNAL int hr__fopen_regular(const char *path, FILE **f, char *err, size_t errlen);
/* hr__open_regular() for a path that another opener reads (dlopen, SQLite):
 * checks it and closes it again. Same returns and messages. */
HR_INTERNAL int hr__check_regular(const char *path, char *err, size_t errlen);
/* A library path before dlopen (which waits for ever on a FIFO): one with a
 * slash that is there but is not a regular file is HR_EIO with the reason in
 * err; a bare name (dlopen searches for it) or a missing file is 0, left for
 * dlopen to report. */
HR_INTERNAL int hr__check_library(const char *path, char *err, size_t errlen);

/* Joins root and an absolute path ("/proc/meminfo") into out. */
HR_INTERNAL int hr__path(char *out, size_t n, const char *root, const char *path);

/* Parses a decimal uint64 that ends at a space, a newline or the end; sets
 * *end past it. Returns 0 or HR_EPARSE/HR_ERANGE. */
HR_INTERNAL int hr__parse_u64(const char *s, uint64_t *out, const char **end);

/* The chain of hr_options_load_defaults with the system file named: `system`
 * (skipped when NULL or when a file is given explicitly, by `path` or
 * $HEADROOM_CONFIG), then the user's file or `path`, then the environment.
 * hr__options_system_path() is the system file that build reads. */
HR_INTERNAL int hr__options_load_files(hr_options_t *o, const char *system, const char *path,
                                       char *err, size_t errlen);
HR_INTERNAL const char *hr__options_system_path(void);
/* Whether `s` is one of `choices`, a '|'-separated list ("cache|model"), as
 * an enum option's row and a protocol field give them. */
HR_INTERNAL bool hr__choices_has(const char *choices, const char *s);

/* Arrays (array.c). hr__resize reallocates the array whose pointer is at
 * `arr` (a T **) to n elements of `size` bytes; hr__grow makes room for one
 * more after n elements when *cap is full, doubling *cap (from `first`).
 * Either leaves the array and *cap as they were when out of memory and
 * returns HR_ENOMEM, else 0. */
HR_INTERNAL int hr__resize(void *arr, size_t n, size_t size);
HR_INTERNAL int hr__grow(void *arr, size_t *cap, size_t n, size_t size, size_t first);
/* names[v], from a table of n names indexed by enum value; `unknown` when v
 * is out of the table or has no name there. */
HR_INTERNAL const char *hr__enum_name(const char *const *names, size_t n, int v,
                                      const char *unknown);

/* Monotonic and wall clocks in seconds. */
HR_INTERNAL double hr__now_mono(void);
HR_INTERNAL double hr__now_wall(void);

#endif /* HR_UTIL_H */
