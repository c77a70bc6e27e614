/* Host memory from /proc/meminfo (and /proc/pressure/memory), alone
 * (hr_host_mem_read) or for a snapshot, and the "key value" scanner that the
 * /proc and cgroup readers share. meminfo gives sizes in kB (really KiB);
 * they are turned into bytes here with an overflow check, so a corrupt or
 * absurd value is an error and never a wrapped-around number. */
#include "probe/probe_int.h"

#include <string.h>

/* Parses the value that starts at s: a decimal number, optionally followed by
 * " kB". Returns 0, HR_EPARSE or HR_ERANGE. */
static int parse_value(const char *s, uint64_t *out) {
  const char *end;
  uint64_t v;
  int rc = hr__parse_u64(s, &v, &end);
  if (rc) return rc;
  while (*end == ' ' || *end == '\t') end++;
  if (end[0] == 'k' && end[1] == 'B') {
    if (v > UINT64_MAX / 1024) return HR_ERANGE;
    v *= 1024;
    end += 2;
  }
  if (*end != '\0' && *end != '\n' && *end != ' ') return HR_EPARSE;
  *out = v;
  return 0;
}

void hr__kv_scan(const char *text, char sep, hr__kv_t *keys, size_t n) {
  for (size_t i = 0; i < n; i++) {
    keys[i].rc = HR_ENOENT;
    *keys[i].out = HR_UNKNOWN;
  }
  for (const char *line = text; line && *line;) {
    const char *nl = strchr(line, '\n');
    size_t klen = strcspn(line, sep == ':' ? ":\n" : " \n");
    if (line[klen] == sep) {
      for (size_t i = 0; i < n; i++) {
        if (keys[i].rc != HR_ENOENT || strncmp(line, keys[i].key, klen) != 0 ||
            keys[i].key[klen] != '\0')
          continue;
        uint64_t v;
        keys[i].rc = parse_value(line + klen + 1, &v);
        if (keys[i].rc == 0) *keys[i].out = v;
        break;
      }
    }
    line = nl ? nl + 1 : NULL;
  }
}

int hr__meminfo_parse(const char *text, hr_host_mem_t *m, char *err, size_t errlen) {
  hr__kv_t keys[] = {
      {"MemTotal", &m->total_bytes, 0},         {"MemFree", &m->free_bytes, 0},
      {"MemAvailable", &m->available_bytes, 0}, {"Buffers", &m->buffers_bytes, 0},
      {"Cached", &m->cached_bytes, 0},          {"SwapTotal", &m->swap_total_bytes, 0},
      {"SwapFree", &m->swap_free_bytes, 0},     {"Shmem", &m->shmem_bytes, 0},
  };
  if (!*text) return hr__err(err, errlen, HR_EPARSE, "empty file");
  hr__kv_scan(text, ':', keys, HR_ARRAY_LEN(keys));
  /* Without the total and the free memory nothing else means anything. */
  for (size_t i = 0; i < 2; i++) {
    if (keys[i].rc == HR_ENOENT) return hr__err(err, errlen, HR_EPARSE, "%s missing", keys[i].key);
    if (keys[i].rc == HR_ERANGE)
      return hr__err(err, errlen, HR_ERANGE, "%s does not fit in 64 bits", keys[i].key);
    if (keys[i].rc) return hr__err(err, errlen, HR_EPARSE, "%s is not a number", keys[i].key);
  }
  if (m->free_bytes > m->total_bytes)
    return hr__err(err, errlen, HR_EPARSE, "MemFree is larger than MemTotal");
  for (size_t i = 2; i < HR_ARRAY_LEN(keys); i++)
    if (keys[i].rc && keys[i].rc != HR_ENOENT)
      hr__log(HR_LOG_WARN, "meminfo: %s is malformed; reported as unknown", keys[i].key);
  return 0;
}

bool hr__pressure_parse(const char *text, hr_pressure_t *some, hr_pressure_t *full) {
  int got = 0;
  for (const char *line = text; line && *line;) {
    hr_pressure_t p;
    unsigned long long total;
    char kind[8];
    if (sscanf(line, "%7s avg10=%lf avg60=%lf avg300=%lf total=%llu", kind, &p.avg10, &p.avg60,
               &p.avg300, &total) == 5) {
      p.total_us = total;
      if (strcmp(kind, "some") == 0)
        *some = p, got |= 1;
      else if (strcmp(kind, "full") == 0)
        *full = p, got |= 2;
    }
    line = strchr(line, '\n');
    if (line) line++;
  }
  return got != 0;
}

void hr__host_pressure_read(const char *root, hr_host_mem_t *m) {
  char path[4096], buf[512];
  m->has_pressure = false;
  if (hr__path(path, sizeof path, root, "/proc/pressure/memory") != 0) return;
  ssize_t len = hr__read_file(path, buf, sizeof buf);
  m->has_pressure = len > 0 && hr__pressure_parse(buf, &m->pressure_some, &m->pressure_full);
}

int hr__meminfo_read(const char *root, hr_host_mem_t *m, char *err, size_t errlen) {
  char path[4096], buf[8192], msg[128];
  int rc = hr__path(path, sizeof path, root, "/proc/meminfo");
  if (rc) return hr__err(err, errlen, rc, "root directory path too long");
  ssize_t len = hr__read_file(path, buf, sizeof buf);
  if (len < 0) return hr__err(err, errlen, (int)len, "%s: %s", path, hr_strerror((int)len));
  rc = hr__meminfo_parse(buf, m, msg, sizeof msg);
  if (rc) return hr__err(err, errlen, rc, "%s: %s", path, msg);
  return 0;
}

int hr_host_mem_read(const char *root, bool pressure, hr_host_mem_t *out, char *err,
                     size_t errlen) {
  if (!out) return hr__err(err, errlen, HR_EINVAL, "hr_host_mem_read: no output");
  memset(out, 0, sizeof *out);
  if (!root || !*root) root = "/";
  int rc = hr__meminfo_read(root, out, err, errlen);
  if (rc == 0 && pressure) hr__host_pressure_read(root, out);
  return rc;
}
