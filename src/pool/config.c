/* Pool configuration: the default, the PyTorch-like preset, and a parser
 * for PYTORCH_CUDA_ALLOC_CONF syntax ("key:value,key:value", where a value
 * may be a bracketed list "[256:1,512:2,>:8]") with PyTorch's keys and
 * meanings plus headroom's own. Every error names the key and the range it
 * accepts; nothing falls back to a default in silence. */
#include "pool/pool_internal.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

void hr_pool_config_pytorch(hr_pool_config_t *c) {
  memset(c, 0, sizeof *c);
  c->max_split_size = UINT64_MAX;
  c->memory_fraction = 1.0;
  c->pytorch_compat = true;
}

void hr_pool_config_default(hr_pool_config_t *c) {
  hr_pool_config_pytorch(c);
  c->pytorch_compat = false;
  c->expandable_segments = true;
  c->compact_mapping = true;
}

/* Parses an unsigned decimal integer that fills the whole token. */
static int parse_uint(const char *s, uint64_t *out) {
  char *end;
  if (!isdigit((unsigned char)*s)) return HR_EINVAL;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno || *end) return HR_EINVAL;
  *out = v;
  return 0;
}

static int parse_double(const char *s, double *out) {
  char *end;
  if (!*s) return HR_EINVAL;
  errno = 0;
  double v = strtod(s, &end);
  if (errno || *end || !isfinite(v)) return HR_EINVAL;
  *out = v;
  return 0;
}

static bool pow2(uint64_t v) {
  return v && !(v & (v - 1));
}

static int div_value(const char *v, unsigned *out, char *err, size_t errlen) {
  uint64_t d = 0;
  if (parse_uint(v, &d) || (d && !pow2(d)) || d > 1024)
    return hr__err(err, errlen, HR_EINVAL,
                   "roundup_power2_divisions: '%s' is not 0 or a power of two up to 1024", v);
  *out = (unsigned)d;
  return 0;
}

/* roundup_power2_divisions: "4" or "[256:1,512:2,>:8]" (boundaries in MiB,
 * powers of two; ">" is every interval from the last boundary's own on, as
 * PyTorch reads it). */
static int parse_divisions(char *v, hr_pool_config_t *c, char *err, size_t errlen) {
  unsigned d = 0;
  if (*v != '[') {
    int rc = div_value(v, &d, err, errlen);
    if (rc) return rc;
    for (int i = 0; i < HR_ROUNDUP_INTERVALS; i++) c->roundup_divisions[i] = d;
    return 0;
  }
  size_t n = strlen(v);
  if (n < 2 || v[n - 1] != ']')
    return hr__err(err, errlen, HR_EINVAL, "roundup_power2_divisions: '%s' lacks its closing ']'",
                   v);
  v[n - 1] = '\0';
  int last = 0;
  bool any = false, first = true;
  for (char *save = NULL, *tok = strtok_r(v + 1, ",", &save); tok;
       tok = strtok_r(NULL, ",", &save)) {
    char *colon = strchr(tok, ':');
    if (!colon)
      return hr__err(err, errlen, HR_EINVAL,
                     "roundup_power2_divisions: '%s' is not SIZE_MB:DIVISIONS or >:DIVISIONS", tok);
    *colon = '\0';
    int rc = div_value(colon + 1, &d, err, errlen);
    if (rc) return rc;
    any = true;
    if (!strcmp(tok, ">")) {
      for (int i = last; i < HR_ROUNDUP_INTERVALS; i++) c->roundup_divisions[i] = d;
      continue;
    }
    uint64_t mb;
    if (parse_uint(tok, &mb) || !pow2(mb))
      return hr__err(err, errlen, HR_EINVAL,
                     "roundup_power2_divisions: interval '%s' is not a power of two (MiB)", tok);
    int idx = 63 - __builtin_clzll(mb);
    if (idx >= HR_ROUNDUP_INTERVALS) idx = HR_ROUNDUP_INTERVALS - 1;
    /* The first boundary also covers every interval below it. */
    if (first)
      for (int i = 0; i < idx; i++) c->roundup_divisions[i] = d;
    first = false;
    c->roundup_divisions[idx] = d;
    last = idx;
  }
  if (!any) return hr__err(err, errlen, HR_EINVAL, "roundup_power2_divisions: empty list");
  return 0;
}

static int parse_bool_key(const char *key, const char *v, bool *out, char *err, size_t errlen) {
  if (hr_parse_bool(v, out))
    return hr__err(err, errlen, HR_EINVAL, "%s: '%s' is not True or False", key, v);
  return 0;
}

static int parse_pair(char *key, char *v, hr_pool_config_t *c, char *err, size_t errlen) {
  uint64_t u;
  double d;
  if (!strcmp(key, "max_split_size_mb")) {
    if (parse_uint(v, &u) || u <= 20 || u > (1ull << 44))
      return hr__err(err, errlen, HR_EINVAL,
                     "max_split_size_mb: '%s' is not an integer in (20, 17592186044416] MiB", v);
    c->max_split_size = u << 20;
  } else if (!strcmp(key, "garbage_collection_threshold")) {
    if (parse_double(v, &d) || d <= 0 || d >= 1)
      return hr__err(err, errlen, HR_EINVAL,
                     "garbage_collection_threshold: '%s' is not a number in (0.0, 1.0)", v);
    c->gc_threshold = d;
  } else if (!strcmp(key, "expandable_segments")) {
    return parse_bool_key(key, v, &c->expandable_segments, err, errlen);
  } else if (!strcmp(key, "roundup_power2_divisions")) {
    return parse_divisions(v, c, err, errlen);
  } else if (!strcmp(key, "backend")) {
    return hr__err(err, errlen, HR_EINVAL,
                   "backend: headroom is itself the allocator; the backend key (native, "
                   "cudaMallocAsync) cannot be set here");
  } else if (!strcmp(key, "pinned_use_cuda_host_register") ||
             !strcmp(key, "pinned_num_register_threads") ||
             !strcmp(key, "release_lock_on_cudamalloc") ||
             !strcmp(key, "pinned_use_background_threads")) {
    /* Host pinned memory and lock details: not this pool's business. */
  } else if (!strcmp(key, "memory_fraction")) {
    if (parse_double(v, &d) || d <= 0 || d > 1)
      return hr__err(err, errlen, HR_EINVAL, "memory_fraction: '%s' is not a number in (0.0, 1.0]",
                     v);
    c->memory_fraction = d;
  } else if (!strcmp(key, "reserve_mb")) {
    if (parse_uint(v, &u) || u > (1ull << 30))
      return hr__err(err, errlen, HR_EINVAL,
                     "reserve_mb: '%s' is not an integer in [0, 1073741824] MiB", v);
    c->reserve_bytes = u << 20;
  } else if (!strcmp(key, "pytorch_compat")) {
    return parse_bool_key(key, v, &c->pytorch_compat, err, errlen);
  } else if (!strcmp(key, "compact_mapping")) {
    return parse_bool_key(key, v, &c->compact_mapping, err, errlen);
  } else {
    return hr__err(err, errlen, HR_EINVAL,
                   "unknown key '%s' (known: max_split_size_mb, garbage_collection_threshold, "
                   "expandable_segments, roundup_power2_divisions, memory_fraction, reserve_mb, "
                   "pytorch_compat, compact_mapping)",
                   key);
  }
  return 0;
}

static char *trim(char *s) {
  while (isspace((unsigned char)*s)) s++;
  char *e = s + strlen(s);
  while (e > s && isspace((unsigned char)e[-1])) *--e = '\0';
  return s;
}

int hr_pool_config_parse(const char *conf, hr_pool_config_t *out, char *err, size_t errlen) {
  hr_pool_config_t c;
  int rc = 0;
  if (!out) return HR_EINVAL;
  if (err && errlen) err[0] = '\0';
  hr_pool_config_default(&c);
  if (!conf) conf = "";
  char *buf = strdup(conf);
  if (!buf) return HR_ENOMEM;
  /* Split on commas outside brackets. */
  char *p = buf;
  bool first = true;
  while (p && !rc) {
    char *q = p;
    int depth = 0;
    for (; *q && (depth || *q != ','); q++) depth += (*q == '[') - (*q == ']');
    char *next = *q ? q + 1 : NULL;
    *q = '\0';
    char *tok = trim(p);
    p = next;
    if (!*tok) {
      if (next) rc = hr__err(err, errlen, HR_EINVAL, "empty entry in '%s'", conf);
      continue;
    }
    char *colon = strchr(tok, ':');
    if (!colon) {
      if (first && !strcmp(tok, "pytorch"))
        hr_pool_config_pytorch(&c);
      else if (first && !strcmp(tok, "default"))
        hr_pool_config_default(&c);
      else
        rc = hr__err(err, errlen, HR_EINVAL,
                     "'%s' is not key:value (or a first preset: default, pytorch)", tok);
      first = false;
      continue;
    }
    first = false;
    *colon = '\0';
    rc = parse_pair(trim(tok), trim(colon + 1), &c, err, errlen);
  }
  free(buf);
  if (!rc) *out = c;
  return rc;
}
