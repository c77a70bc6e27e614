/* Workflows for `headroom plan`: parsing (cJSON) and simulation through a
 * real registry with a fixed budget and callbacks that only count bytes.
 *
 * A parsed workflow keeps its assets (a group's parent is listed before its
 * members, so asset i registers as id i + 1), its step templates, and the
 * sequence of templates after repetition. Errors give a place: line and
 * column for a syntax error, the path in the document ("steps[2].use[0]")
 * for a wrong value. */
#include "trace/workflow_internal.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Places in messages are cut at the end of their buffer by design. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wformat-truncation"
#endif

#define WF_MAX_STEPS 1000000u /* after repetition */
#define WF_MAX_DEPTH 8        /* nested step blocks */

typedef struct parse_ctx {
  hr_workflow_t *w;
  const char *src;
  char *err;
  size_t errlen;
  size_t cap_tmpl, cap_seq;
} parse_ctx_t;

void hr_workflow_destroy(hr_workflow_t *w) {
  if (!w) return;
  for (size_t i = 0; i < w->n_tmpl; i++) free(w->tmpl[i].use);
  free(w->tmpl);
  free(w->seq);
  free(w->assets);
  free(w);
}

int hr_workflow_info(const hr_workflow_t *w, hr_workflow_info_t *out) {
  if (!w || !out) return HR_EINVAL;
  out->budget_bytes = w->budget_bytes;
  out->reserve_bytes = w->reserve_bytes;
  out->assets = w->n_assets;
  out->steps = w->n_seq;
  return 0;
}

/* Reads a size: a non-negative integer number, or a string with a K/M/G/T
 * suffix. */
static int get_size(parse_ctx_t *c, const cJSON *v, const char *where, uint64_t *out) {
  if (cJSON_IsNumber(v)) {
    double d = v->valuedouble;
    if (!(d >= 0) || d != floor(d) || d >= 18446744073709551616.0)
      return hr__err(c->err, c->errlen, HR_ERANGE,
                     "%s: %s: a size must be a whole number of bytes >= 0 (got %g)", c->src, where,
                     d);
    *out = (uint64_t)d;
    return 0;
  }
  if (cJSON_IsString(v) && hr_parse_size(v->valuestring, out) == 0) return 0;
  return hr__err(c->err, c->errlen, HR_EPARSE,
                 "%s: %s: expected a size in bytes (a number, or a string such as \"6.5G\")",
                 c->src, where);
}

static int get_bool(parse_ctx_t *c, const cJSON *v, const char *where, bool *out) {
  if (!v || cJSON_IsNull(v)) return 0;
  if (!cJSON_IsBool(v))
    return hr__err(c->err, c->errlen, HR_EPARSE, "%s: %s: expected true or false", c->src, where);
  *out = cJSON_IsTrue(v);
  return 0;
}

static int get_string(parse_ctx_t *c, const cJSON *v, const char *where, char *out, size_t n) {
  if (!cJSON_IsString(v) || !v->valuestring[0])
    return hr__err(c->err, c->errlen, HR_EPARSE, "%s: %s: expected a non-empty string", c->src,
                   where);
  if (strlen(v->valuestring) >= n)
    return hr__err(c->err, c->errlen, HR_ERANGE, "%s: %s: longer than %zu characters", c->src,
                   where, n - 1);
  hr__strlcpy(out, v->valuestring, n);
  return 0;
}

/* Finds an asset by "name" (when it has one variant) or "name:variant". */
static int resolve(parse_ctx_t *c, const char *ref, const char *where, size_t limit,
                   uint32_t *out) {
  const hr_workflow_t *w = c->w;
  const char *colon = strchr(ref, ':');
  size_t nlen = colon ? (size_t)(colon - ref) : strlen(ref);
  size_t found = 0, idx = 0;
  char variants[200] = "";
  size_t vlen = 0;
  for (size_t i = 0; i < limit; i++) {
    const wf_asset_t *a = &w->assets[i];
    if (strlen(a->name) != nlen || strncmp(a->name, ref, nlen) != 0) continue;
    if (colon && strcmp(a->variant, colon + 1) != 0) {
      if (vlen < sizeof variants)
        vlen += (size_t)snprintf(variants + vlen, sizeof variants - vlen, "%s%s", vlen ? ", " : "",
                                 a->variant[0] ? a->variant : "(none)");
      continue;
    }
    if (vlen < sizeof variants)
      vlen += (size_t)snprintf(variants + vlen, sizeof variants - vlen, "%s%s", vlen ? ", " : "",
                               a->variant[0] ? a->variant : "(none)");
    found++;
    idx = i;
  }
  if (found == 1) {
    *out = (uint32_t)idx;
    return 0;
  }
  if (found > 1)
    return hr__err(c->err, c->errlen, HR_EPARSE,
                   "%s: %s: '%s' has several variants (%s): write '%.*s:VARIANT'", c->src, where,
                   ref, variants, (int)nlen, ref);
  if (vlen)
    return hr__err(c->err, c->errlen, HR_EPARSE, "%s: %s: '%s' has no such variant (it has %s)",
                   c->src, where, ref, variants);
  return hr__err(c->err, c->errlen, HR_EPARSE, "%s: %s: unknown asset '%s'%s", c->src, where, ref,
                 strstr(where, ".group") ? " (a group must name an asset listed before it)" : "");
}

static int check_keys(parse_ctx_t *c, const cJSON *obj, const char *where,
                      const char *const *allowed) {
  for (const cJSON *k = obj->child; k; k = k->next) {
    bool ok = false;
    for (const char *const *a = allowed; *a; a++) ok = ok || strcmp(k->string, *a) == 0;
    if (!ok)
      return hr__err(c->err, c->errlen, HR_EPARSE, "%s: %s: unknown key '%s'", c->src, where,
                     k->string);
  }
  return 0;
}

/* The name and variant of asset i, which no asset before it may have. */
static int asset_name(parse_ctx_t *c, const cJSON *o, size_t i, wf_asset_t *a) {
  char where[96];
  int rc;
  snprintf(where, sizeof where, "assets[%zu].name", i);
  if ((rc = get_string(c, cJSON_GetObjectItemCaseSensitive(o, "name"), where, a->name,
                       sizeof a->name)))
    return rc;
  if (strchr(a->name, ':'))
    return hr__err(c->err, c->errlen, HR_EPARSE, "%s: %s: a name cannot contain ':'", c->src,
                   where);
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, "variant");
  snprintf(where, sizeof where, "assets[%zu].variant", i);
  if (v && !cJSON_IsNull(v) && (rc = get_string(c, v, where, a->variant, sizeof a->variant)))
    return rc;
  for (size_t j = 0; j < i; j++)
    if (strcmp(c->w->assets[j].name, a->name) == 0 &&
        strcmp(c->w->assets[j].variant, a->variant) == 0)
      return hr__err(c->err, c->errlen, HR_EPARSE, "%s: assets[%zu]: '%s%s%s' is listed twice",
                     c->src, i, a->name, a->variant[0] ? ":" : "", a->variant);
  return 0;
}

/* bytes (more than 0) and host_bytes (bytes when absent) of asset i. */
static int asset_sizes(parse_ctx_t *c, const cJSON *o, size_t i, wf_asset_t *a) {
  char where[96];
  int rc;
  snprintf(where, sizeof where, "assets[%zu].bytes", i);
  if ((rc = get_size(c, cJSON_GetObjectItemCaseSensitive(o, "bytes"), where, &a->bytes))) return rc;
  if (a->bytes == 0)
    return hr__err(c->err, c->errlen, HR_ERANGE, "%s: %s: must be more than 0", c->src, where);
  a->host_bytes = a->bytes;
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, "host_bytes");
  snprintf(where, sizeof where, "assets[%zu].host_bytes", i);
  return v ? get_size(c, v, where, &a->host_bytes) : 0;
}

/* group (an asset listed before, or null), pinned, partial and priority of
 * asset i. */
static int asset_options(parse_ctx_t *c, const cJSON *o, size_t i, wf_asset_t *a) {
  char where[96];
  int rc;
  a->parent = -1;
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, "group");
  if (v && !cJSON_IsNull(v)) {
    uint32_t p;
    snprintf(where, sizeof where, "assets[%zu].group", i);
    if (!cJSON_IsString(v))
      return hr__err(c->err, c->errlen, HR_EPARSE, "%s: %s: expected an asset name or null", c->src,
                     where);
    if ((rc = resolve(c, v->valuestring, where, i, &p))) return rc;
    a->parent = (int)p;
  }
  snprintf(where, sizeof where, "assets[%zu].pinned", i);
  if ((rc = get_bool(c, cJSON_GetObjectItemCaseSensitive(o, "pinned"), where, &a->pinned)))
    return rc;
  snprintf(where, sizeof where, "assets[%zu].partial", i);
  if ((rc = get_bool(c, cJSON_GetObjectItemCaseSensitive(o, "partial"), where, &a->partial)))
    return rc;
  if ((v = cJSON_GetObjectItemCaseSensitive(o, "priority"))) {
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) ||
        fabs(v->valuedouble) > 1000000)
      return hr__err(c->err, c->errlen, HR_EPARSE,
                     "%s: assets[%zu].priority: expected a whole number in [-1000000, 1000000]",
                     c->src, i);
    a->priority = (int)v->valuedouble;
  }
  return 0;
}

static int parse_assets(parse_ctx_t *c, const cJSON *arr) {
  static const char *const keys[] = {"name",   "variant", "bytes",    "host_bytes", "group",
                                     "pinned", "partial", "priority", "comment",    NULL};
  hr_workflow_t *w = c->w;
  char where[96];
  int rc;
  if (!cJSON_IsArray(arr) || cJSON_GetArraySize(arr) == 0)
    return hr__err(c->err, c->errlen, HR_EPARSE, "%s: assets: expected a non-empty array", c->src);
  w->assets = calloc((size_t)cJSON_GetArraySize(arr), sizeof *w->assets);
  if (!w->assets) return HR_ENOMEM;
  for (const cJSON *o = arr->child; o; o = o->next) {
    size_t i = w->n_assets;
    wf_asset_t *a = &w->assets[i];
    snprintf(where, sizeof where, "assets[%zu]", i);
    if (!cJSON_IsObject(o))
      return hr__err(c->err, c->errlen, HR_EPARSE, "%s: %s: expected an object", c->src, where);
    if ((rc = check_keys(c, o, where, keys)) || (rc = asset_name(c, o, i, a)) ||
        (rc = asset_sizes(c, o, i, a)) || (rc = asset_options(c, o, i, a)))
      return rc;
    w->n_assets++;
  }
  return 0;
}

static int push_seq(parse_ctx_t *c, uint32_t t) {
  hr_workflow_t *w = c->w;
  if (w->n_seq >= WF_MAX_STEPS)
    return hr__err(c->err, c->errlen, HR_ERANGE, "%s: steps: more than %u steps after repetition",
                   c->src, WF_MAX_STEPS);
  if (hr__grow(&w->seq, &c->cap_seq, w->n_seq, sizeof *w->seq, 64)) return HR_ENOMEM;
  w->seq[w->n_seq++] = t;
  return 0;
}

static int parse_steps(parse_ctx_t *c, const cJSON *arr, const char *path, int depth);

static int get_repeat(parse_ctx_t *c, const cJSON *o, const char *where, uint64_t *rep) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, "repeat");
  *rep = 1;
  if (!v) return 0;
  if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || v->valuedouble < 1 ||
      v->valuedouble > WF_MAX_STEPS)
    return hr__err(c->err, c->errlen, HR_ERANGE,
                   "%s: %s.repeat: expected a whole number in [1, %u]", c->src, where,
                   WF_MAX_STEPS);
  *rep = (uint64_t)v->valuedouble;
  return 0;
}

/* A block of steps, its sequence repeated `rep` times as a whole. */
static int parse_block(parse_ctx_t *c, const cJSON *steps, const char *where, int depth,
                       uint64_t rep) {
  hr_workflow_t *w = c->w;
  char sub[160];
  int rc;
  size_t start = w->n_seq;
  if (depth >= WF_MAX_DEPTH)
    return hr__err(c->err, c->errlen, HR_ERANGE, "%s: %s: blocks nested deeper than %d", c->src,
                   where, WF_MAX_DEPTH);
  snprintf(sub, sizeof sub, "%s.steps", where);
  if ((rc = parse_steps(c, steps, sub, depth + 1))) return rc;
  size_t len = w->n_seq - start;
  for (uint64_t k = 1; k < rep; k++)
    for (size_t j = 0; j < len; j++)
      if ((rc = push_seq(c, w->seq[start + j]))) return rc;
  return 0;
}

/* A new, zeroed step template; NULL when out of memory. */
static wf_step_t *new_template(parse_ctx_t *c) {
  hr_workflow_t *w = c->w;
  if (hr__grow(&w->tmpl, &c->cap_tmpl, w->n_tmpl, sizeof *w->tmpl, 16)) return NULL;
  wf_step_t *t = &w->tmpl[w->n_tmpl++];
  memset(t, 0, sizeof *t);
  return t;
}

/* The assets a template uses: a non-empty array of asset names. */
static int parse_use(parse_ctx_t *c, const cJSON *use, const char *where, wf_step_t *t) {
  char sub[160];
  int rc;
  if (!cJSON_IsArray(use) || cJSON_GetArraySize(use) == 0)
    return hr__err(c->err, c->errlen, HR_EPARSE, "%s: %s.use: expected a non-empty array of names",
                   c->src, where);
  t->use = calloc((size_t)cJSON_GetArraySize(use), sizeof *t->use);
  if (!t->use) return HR_ENOMEM;
  for (const cJSON *u = use->child; u; u = u->next) {
    snprintf(sub, sizeof sub, "%s.use[%zu]", where, t->n_use);
    if (!cJSON_IsString(u))
      return hr__err(c->err, c->errlen, HR_EPARSE, "%s: %s: expected an asset name", c->src, sub);
    if ((rc = resolve(c, u->valuestring, sub, c->w->n_assets, &t->use[t->n_use]))) return rc;
    t->n_use++;
  }
  return 0;
}

/* A template (name, working bytes, use), added to the sequence `rep` times. */
static int parse_template(parse_ctx_t *c, const cJSON *o, const cJSON *use, const char *where,
                          uint64_t rep) {
  char sub[160];
  int rc;
  wf_step_t *t = new_template(c);
  if (!t) return HR_ENOMEM;
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, "name");
  snprintf(sub, sizeof sub, "%s.name", where);
  if (v && (rc = get_string(c, v, sub, t->name, sizeof t->name))) return rc;
  if (!v) snprintf(t->name, sizeof t->name, "%s", where);
  if ((v = cJSON_GetObjectItemCaseSensitive(o, "working_bytes"))) {
    snprintf(sub, sizeof sub, "%s.working_bytes", where);
    if ((rc = get_size(c, v, sub, &t->working))) return rc;
  }
  if ((rc = parse_use(c, use, where, t))) return rc;
  for (uint64_t k = 0; k < rep; k++)
    if ((rc = push_seq(c, (uint32_t)(c->w->n_tmpl - 1)))) return rc;
  return 0;
}

/* One step: a template (use, working bytes) added `repeat` times, or a block
 * of steps repeated as a whole. */
static int parse_step(parse_ctx_t *c, const cJSON *o, const char *where, int depth) {
  static const char *const keys[] = {"name",    "use", "working_bytes", "repeat", "steps",
                                     "comment", NULL};
  uint64_t rep;
  int rc;
  if (!cJSON_IsObject(o))
    return hr__err(c->err, c->errlen, HR_EPARSE, "%s: %s: expected an object", c->src, where);
  if ((rc = check_keys(c, o, where, keys)) || (rc = get_repeat(c, o, where, &rep))) return rc;
  const cJSON *use = cJSON_GetObjectItemCaseSensitive(o, "use");
  const cJSON *steps = cJSON_GetObjectItemCaseSensitive(o, "steps");
  if (!!use == !!steps)
    return hr__err(c->err, c->errlen, HR_EPARSE, "%s: %s: a step has either \"use\" or \"steps\"",
                   c->src, where);
  return steps ? parse_block(c, steps, where, depth, rep) : parse_template(c, o, use, where, rep);
}

static int parse_steps(parse_ctx_t *c, const cJSON *arr, const char *path, int depth) {
  char where[160];
  size_t i = 0;
  int rc;
  if (!cJSON_IsArray(arr) || cJSON_GetArraySize(arr) == 0)
    return hr__err(c->err, c->errlen, HR_EPARSE, "%s: %s: expected a non-empty array", c->src,
                   path);
  for (const cJSON *o = arr->child; o; o = o->next, i++) {
    snprintf(where, sizeof where, "%s[%zu]", path, i);
    if ((rc = parse_step(c, o, where, depth))) return rc;
  }
  return 0;
}

/* Line and column (from 1) of `pos` in text. */
static void line_col(const char *text, const char *pos, int *line, int *col) {
  *line = 1, *col = 1;
  for (const char *p = text; p < pos && *p; p++) {
    if (*p == '\n')
      (*line)++, *col = 1;
    else
      (*col)++;
  }
}

/* The message of a JSON syntax error at `end` (or cJSON's error pointer). */
static int syntax_error(const char *text, size_t len, const char *end, const char *src, char *err,
                        size_t errlen) {
  int line, col;
  const char *at = end ? end : cJSON_GetErrorPtr();
  if (!at || at < text || at > text + len) at = text + len;
  line_col(text, at, &line, &col);
  return hr__err(err, errlen, HR_EPARSE, "%s:%d:%d: JSON syntax error%s", src, line, col,
                 at >= text + len ? " (unexpected end of input)" : "");
}

/* The top level: sizes, then the assets, then the steps that use them. */
static int parse_root(parse_ctx_t *c, const cJSON *root) {
  static const char *const keys[] = {"name",   "description", "budget_bytes", "reserve_bytes",
                                     "assets", "steps",       "comment",      NULL};
  int rc;
  if (!cJSON_IsObject(root))
    return hr__err(c->err, c->errlen, HR_EPARSE, "%s: the top level must be an object", c->src);
  if ((rc = check_keys(c, root, "top level", keys))) return rc;
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, "budget_bytes");
  if (v && (rc = get_size(c, v, "budget_bytes", &c->w->budget_bytes))) return rc;
  if ((v = cJSON_GetObjectItemCaseSensitive(root, "reserve_bytes")) &&
      (rc = get_size(c, v, "reserve_bytes", &c->w->reserve_bytes)))
    return rc;
  if ((rc = parse_assets(c, cJSON_GetObjectItemCaseSensitive(root, "assets")))) return rc;
  return parse_steps(c, cJSON_GetObjectItemCaseSensitive(root, "steps"), "steps", 0);
}

int hr_workflow_parse(const char *text, size_t len, const char *source, hr_workflow_t **out,
                      char *err, size_t errlen) {
  parse_ctx_t c = {.src = source ? source : "workflow", .err = err, .errlen = errlen};
  const char *end = NULL;
  if (!text || !out) return HR_EINVAL;
  *out = NULL;
  cJSON *root = cJSON_ParseWithLengthOpts(text, len, &end, false);
  if (!root) return syntax_error(text, len, end, c.src, err, errlen);
  c.w = calloc(1, sizeof *c.w);
  int rc = c.w ? parse_root(&c, root) : HR_ENOMEM;
  cJSON_Delete(root);
  if (rc)
    hr_workflow_destroy(c.w);
  else
    *out = c.w;
  return rc;
}

/* Reads all of f (64 MiB at most) into a malloc'd *buf. */
static int read_all(FILE *f, const char *path, char **buf, size_t *len, char *err, size_t errlen) {
  size_t cap = 0;
  *buf = NULL, *len = 0;
  for (;;) {
    if (*len + 4096 > cap) {
      if (cap >= (64u << 20))
        return hr__err(err, errlen, HR_ERANGE, "%s: larger than 64 MiB", path);
      cap = cap ? cap * 2 : 65536;
      char *b = realloc(*buf, cap);
      if (!b) return HR_ENOMEM;
      *buf = b;
    }
    size_t got = fread(*buf + *len, 1, cap - *len, f);
    *len += got;
    if (got == 0) break;
  }
  if (ferror(f)) return hr__err(err, errlen, HR_EIO, "%s: read error", path);
  return 0;
}

int hr_workflow_load(const char *path, hr_workflow_t **out, char *err, size_t errlen) {
  char *buf = NULL;
  size_t len = 0;
  if (!path || !out) return HR_EINVAL;
  FILE *f;
  int rc = hr__fopen_regular(path, &f, err, errlen);
  if (rc) return rc;
  rc = read_all(f, path, &buf, &len, err, errlen);
  if (rc == 0) rc = hr_workflow_parse(buf, len, path, out, err, errlen);
  free(buf);
  fclose(f);
  return rc;
}

/* ---- simulation -------------------------------------------------------- */

typedef struct sim {
  const hr_workflow_t *w;
  uint64_t *resident; /* by asset index */
} sim_t;

static int sim_load(hr_asset_id_t id, uint64_t budget, uint64_t *loaded, void *arg) {
  sim_t *s = arg;
  uint64_t full = s->w->assets[id - 1].bytes;
  s->resident[id - 1] = HR_MIN(budget, full);
  *loaded = s->resident[id - 1];
  return 0;
}

static int sim_offload(hr_asset_id_t id, uint64_t bytes, uint64_t *freed, void *arg) {
  sim_t *s = arg;
  uint64_t *res = &s->resident[id - 1];
  uint64_t f = s->w->assets[id - 1].partial ? HR_MIN(bytes, *res) : *res;
  *res -= f;
  *freed = f;
  return 0;
}

/* Steps of upcoming uses the lookahead policy is shown. */
#define SIM_WINDOW 1024

/* The lookahead handed to each require: the uses of the next SIM_WINDOW
 * steps, in arrays grown as needed. */
typedef struct sim_ahead {
  hr_asset_id_t *ids;
  uint32_t *steps;
  uint64_t *work;
  size_t cap;
} sim_ahead_t;

static void ahead_free(sim_ahead_t *b) {
  free(b->ids), free(b->steps), free(b->work);
}

static int ahead_reserve(sim_ahead_t *b, size_t n) {
  if (n <= b->cap) return 0;
  size_t cap = n * 2;
  if (hr__resize(&b->ids, cap, sizeof *b->ids) || hr__resize(&b->steps, cap, sizeof *b->steps) ||
      hr__resize(&b->work, cap, sizeof *b->work))
    return HR_ENOMEM;
  b->cap = cap;
  return 0;
}

/* The uses of the steps after step k, as the lookahead of its require. */
static int ahead_fill(const hr_workflow_t *w, size_t k, sim_ahead_t *b, hr_lookahead_t *la) {
  size_t n = 0;
  for (size_t d = 1; d <= SIM_WINDOW && k + d < w->n_seq; d++) {
    const wf_step_t *u = &w->tmpl[w->seq[k + d]];
    if (ahead_reserve(b, n + u->n_use) != 0) return HR_ENOMEM;
    for (size_t j = 0; j < u->n_use; j++) {
      b->ids[n] = u->use[j] + 1;
      b->work[n] = u->working;
      b->steps[n++] = (uint32_t)d;
    }
  }
  *la = (hr_lookahead_t){b->ids, b->steps, n, b->work};
  return 0;
}

/* A registry with the budget, holding every asset of the workflow (asset i
 * as id i + 1), whose callbacks only count bytes in s. */
static int sim_registry(const hr_workflow_t *w, const hr_residency_options_t *o, sim_t *s,
                        hr_residency_t **out) {
  hr_residency_t *r = NULL;
  int rc = hr_residency_create(o, &r);
  for (size_t i = 0; rc == 0 && i < w->n_assets; i++) {
    const wf_asset_t *a = &w->assets[i];
    hr_asset_desc_t d = {.name = a->name,
                         .variant = a->variant,
                         .device_bytes = a->bytes,
                         .host_bytes = a->host_bytes,
                         .parent = a->parent >= 0 ? (hr_asset_id_t)a->parent + 1 : HR_ASSET_NONE,
                         .pinned = a->pinned,
                         .partial = a->partial,
                         .priority = a->priority,
                         .load = sim_load,
                         .offload = sim_offload,
                         .arg = s};
    hr_asset_id_t id;
    rc = hr_asset_register(r, &d, &id);
    HR_ASSERT(rc || id == i + 1);
  }
  if (rc) {
    hr_residency_destroy(r);
    return rc;
  }
  *out = r;
  return 0;
}

/* Adds one step's plan to the totals; `src` is its require's result. */
static void sim_count(hr_sim_result_t *out, const hr_plan_t *plan, int src) {
  out->bytes_moved += plan->bytes_loaded;
  out->bytes_offloaded += plan->bytes_offloaded;
  out->loads += plan->loads;
  out->partial_loads += plan->partial_loads;
  out->offloads += plan->offloads;
  out->partial_offloads += plan->partial_offloads;
  if (src == 0)
    out->peak_device_bytes = HR_MAX(out->peak_device_bytes, plan->used_bytes);
  else
    out->failed_steps++;
}

/* Requires each step in order; an out-of-room step (HR_ENOSPC) is counted
 * and the run goes on, another error ends it. */
static int sim_steps(const hr_workflow_t *w, hr_residency_t *r, hr_sim_step_fn fn, void *arg,
                     hr_sim_result_t *out) {
  size_t max_use = 1;
  for (size_t i = 0; i < w->n_tmpl; i++) max_use = HR_MAX(max_use, w->tmpl[i].n_use);
  hr_asset_id_t *ids = calloc(max_use, sizeof *ids);
  sim_ahead_t ahead = {0};
  hr_plan_t plan;
  memset(&plan, 0, sizeof plan);
  int rc = ids ? 0 : HR_ENOMEM;
  bool use_la = out->policy == HR_POLICY_LOOKAHEAD;
  for (size_t k = 0; rc == 0 && k < w->n_seq; k++) {
    const wf_step_t *t = &w->tmpl[w->seq[k]];
    hr_lookahead_t la = {0};
    for (size_t j = 0; j < t->n_use; j++) ids[j] = t->use[j] + 1;
    if (use_la && (rc = ahead_fill(w, k, &ahead, &la)) != 0) break;
    int src = hr_residency_require(r, ids, t->n_use, t->working, use_la ? &la : NULL, &plan);
    if (src != 0 && src != HR_ENOSPC) {
      rc = src;
      break;
    }
    sim_count(out, &plan, src);
    if (fn) fn(k, t->name, src, &plan, r, arg);
    hr_plan_free(&plan);
  }
  hr_plan_free(&plan);
  ahead_free(&ahead);
  free(ids);
  return rc;
}

int hr_workflow_simulate(const hr_workflow_t *w, hr_policy_t policy, uint64_t budget_bytes,
                         hr_sim_step_fn fn, void *arg, hr_sim_result_t *out) {
  hr_residency_t *r = NULL;
  hr_residency_options_t o;
  sim_t s = {.w = w};
  if (!w || !out || (unsigned)policy > HR_POLICY_LOOKAHEAD) return HR_EINVAL;
  memset(out, 0, sizeof *out);
  hr_residency_options_default(NULL, &o);
  o.budget_bytes = budget_bytes ? budget_bytes : w->budget_bytes;
  o.reserve_bytes = w->reserve_bytes;
  o.policy = policy;
  if (o.budget_bytes == 0) return HR_EINVAL;
  /* The simulator knows every upcoming use, so auto means lookahead. */
  out->policy = policy == HR_POLICY_AUTO ? HR_POLICY_LOOKAHEAD : policy;
  out->budget_bytes = o.budget_bytes;
  out->steps = w->n_seq;
  s.resident = calloc(w->n_assets, sizeof *s.resident);
  int rc = s.resident ? sim_registry(w, &o, &s, &r) : HR_ENOMEM;
  if (rc == 0) rc = sim_steps(w, r, fn, arg, out);
  hr_residency_destroy(r);
  free(s.resident);
  return rc;
}
