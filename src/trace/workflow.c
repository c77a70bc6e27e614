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
    if ((rc = check_keys(c, o, where, keys))) return rc;
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
      if (strcmp(w->assets[j].name, a->name) == 0 && strcmp(w->assets[j].variant, a->variant) == 0)
        return hr__err(c->err, c->errlen, HR_EPARSE, "%s: assets[%zu]: '%s%s%s' is listed twice",
                       c->src, i, a->name, a->variant[0] ? ":" : "", a->variant);
    snprintf(where, sizeof where, "assets[%zu].bytes", i);
    if ((rc = get_size(c, cJSON_GetObjectItemCaseSensitive(o, "bytes"), where, &a->bytes)))
      return rc;
    if (a->bytes == 0)
      return hr__err(c->err, c->errlen, HR_ERANGE, "%s: %s: must be more than 0", c->src, where);
    a->host_bytes = a->bytes;
    if ((v = cJSON_GetObjectItemCaseSensitive(o, "host_bytes"))) {
      snprintf(where, sizeof where, "assets[%zu].host_bytes", i);
      if ((rc = get_size(c, v, where, &a->host_bytes))) return rc;
    }
    a->parent = -1;
    v = cJSON_GetObjectItemCaseSensitive(o, "group");
    if (v && !cJSON_IsNull(v)) {
      uint32_t p;
      snprintf(where, sizeof where, "assets[%zu].group", i);
      if (!cJSON_IsString(v))
        return hr__err(c->err, c->errlen, HR_EPARSE, "%s: %s: expected an asset name or null",
                       c->src, where);
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
    w->n_assets++;
  }
  return 0;
}

static int push_seq(parse_ctx_t *c, uint32_t t) {
  hr_workflow_t *w = c->w;
  if (w->n_seq >= WF_MAX_STEPS)
    return hr__err(c->err, c->errlen, HR_ERANGE, "%s: steps: more than %u steps after repetition",
                   c->src, WF_MAX_STEPS);
  if (w->n_seq == c->cap_seq) {
    size_t cap = c->cap_seq ? c->cap_seq * 2 : 64;
    uint32_t *s = realloc(w->seq, cap * sizeof *s);
    if (!s) return HR_ENOMEM;
    w->seq = s;
    c->cap_seq = cap;
  }
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

/* One step: a template (use, working bytes) added `repeat` times, or a block
 * of steps repeated as a whole. */
static int parse_step(parse_ctx_t *c, const cJSON *o, const char *where, int depth) {
  static const char *const keys[] = {"name",    "use", "working_bytes", "repeat", "steps",
                                     "comment", NULL};
  hr_workflow_t *w = c->w;
  char sub[160];
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
  if (steps) {
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
  if (w->n_tmpl == c->cap_tmpl) {
    size_t cap = c->cap_tmpl ? c->cap_tmpl * 2 : 16;
    wf_step_t *t = realloc(w->tmpl, cap * sizeof *t);
    if (!t) return HR_ENOMEM;
    w->tmpl = t;
    c->cap_tmpl = cap;
  }
  wf_step_t *t = &w->tmpl[w->n_tmpl];
  memset(t, 0, sizeof *t);
  w->n_tmpl++;
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, "name");
  snprintf(sub, sizeof sub, "%s.name", where);
  if (v && (rc = get_string(c, v, sub, t->name, sizeof t->name))) return rc;
  if (!v) snprintf(t->name, sizeof t->name, "%s", where);
  if ((v = cJSON_GetObjectItemCaseSensitive(o, "working_bytes"))) {
    snprintf(sub, sizeof sub, "%s.working_bytes", where);
    if ((rc = get_size(c, v, sub, &t->working))) return rc;
  }
  if (!cJSON_IsArray(use) || cJSON_GetArraySize(use) == 0)
    return hr__err(c->err, c->errlen, HR_EPARSE, "%s: %s.use: expected a non-empty array of names",
                   c->src, where);
  t->use = calloc((size_t)cJSON_GetArraySize(use), sizeof *t->use);
  if (!t->use) return HR_ENOMEM;
  for (const cJSON *u = use->child; u; u = u->next) {
    snprintf(sub, sizeof sub, "%s.use[%zu]", where, t->n_use);
    if (!cJSON_IsString(u))
      return hr__err(c->err, c->errlen, HR_EPARSE, "%s: %s: expected an asset name", c->src, sub);
    if ((rc = resolve(c, u->valuestring, sub, w->n_assets, &t->use[t->n_use]))) return rc;
    t->n_use++;
  }
  for (uint64_t k = 0; k < rep; k++)
    if ((rc = push_seq(c, (uint32_t)(w->n_tmpl - 1)))) return rc;
  return 0;
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

int hr_workflow_parse(const char *text, size_t len, const char *source, hr_workflow_t **out,
                      char *err, size_t errlen) {
  static const char *const keys[] = {"name",   "description", "budget_bytes", "reserve_bytes",
                                     "assets", "steps",       "comment",      NULL};
  parse_ctx_t c = {.src = source ? source : "workflow", .err = err, .errlen = errlen};
  cJSON *root = NULL;
  const char *end = NULL;
  int rc = 0;
  if (!text || !out) return HR_EINVAL;
  *out = NULL;
  root = cJSON_ParseWithLengthOpts(text, len, &end, false);
  if (!root) {
    int line, col;
    const char *at = end ? end : cJSON_GetErrorPtr();
    if (!at || at < text || at > text + len) at = text + len;
    line_col(text, at, &line, &col);
    return hr__err(err, errlen, HR_EPARSE, "%s:%d:%d: JSON syntax error%s", c.src, line, col,
                   at >= text + len ? " (unexpected end of input)" : "");
  }
  c.w = calloc(1, sizeof *c.w);
  if (!c.w) {
    rc = HR_ENOMEM;
    goto out;
  }
  if (!cJSON_IsObject(root)) {
    rc = hr__err(err, errlen, HR_EPARSE, "%s: the top level must be an object", c.src);
    goto out;
  }
  if ((rc = check_keys(&c, root, "top level", keys))) goto out;
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, "budget_bytes");
  if (v && (rc = get_size(&c, v, "budget_bytes", &c.w->budget_bytes))) goto out;
  if ((v = cJSON_GetObjectItemCaseSensitive(root, "reserve_bytes")) &&
      (rc = get_size(&c, v, "reserve_bytes", &c.w->reserve_bytes)))
    goto out;
  if ((rc = parse_assets(&c, cJSON_GetObjectItemCaseSensitive(root, "assets")))) goto out;
  if ((rc = parse_steps(&c, cJSON_GetObjectItemCaseSensitive(root, "steps"), "steps", 0))) goto out;
out:
  cJSON_Delete(root);
  if (rc)
    hr_workflow_destroy(c.w);
  else
    *out = c.w;
  return rc;
}

int hr_workflow_load(const char *path, hr_workflow_t **out, char *err, size_t errlen) {
  FILE *f = NULL;
  char *buf = NULL;
  size_t len = 0, cap = 0;
  int rc = 0;
  if (!path || !out) return HR_EINVAL;
  if (!(f = fopen(path, "rb"))) {
    int e = errno;
    return hr__err(err, errlen,
                   e == ENOENT   ? HR_ENOENT
                   : e == EACCES ? HR_EPERM
                                 : HR_EIO,
                   "%s: %s", path, strerror(e));
  }
  for (;;) {
    if (len + 4096 > cap) {
      if (cap >= (64u << 20)) {
        rc = hr__err(err, errlen, HR_ERANGE, "%s: larger than 64 MiB", path);
        goto out;
      }
      cap = cap ? cap * 2 : 65536;
      char *b = realloc(buf, cap);
      if (!b) {
        rc = HR_ENOMEM;
        goto out;
      }
      buf = b;
    }
    size_t got = fread(buf + len, 1, cap - len, f);
    len += got;
    if (got == 0) break;
  }
  if (ferror(f)) {
    rc = hr__err(err, errlen, HR_EIO, "%s: read error", path);
    goto out;
  }
  rc = hr_workflow_parse(buf, len, path, out, err, errlen);
out:
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

int hr_workflow_simulate(const hr_workflow_t *w, hr_policy_t policy, uint64_t budget_bytes,
                         hr_sim_step_fn fn, void *arg, hr_sim_result_t *out) {
  hr_residency_t *r = NULL;
  hr_residency_options_t o;
  sim_t s = {.w = w};
  hr_asset_id_t *ids = NULL, *la_ids = NULL;
  uint32_t *la_steps = NULL;
  uint64_t *la_work = NULL;
  size_t max_use = 0, la_cap = 0;
  hr_plan_t plan;
  int rc = 0;
  memset(&plan, 0, sizeof plan);
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
  for (size_t i = 0; i < w->n_tmpl; i++) max_use = HR_MAX(max_use, w->tmpl[i].n_use);
  s.resident = calloc(w->n_assets, sizeof *s.resident);
  ids = calloc(max_use ? max_use : 1, sizeof *ids);
  if (!s.resident || !ids) {
    rc = HR_ENOMEM;
    goto out;
  }
  if ((rc = hr_residency_create(&o, &r))) goto out;
  for (size_t i = 0; i < w->n_assets; i++) {
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
                         .arg = &s};
    hr_asset_id_t id;
    if ((rc = hr_asset_register(r, &d, &id))) goto out;
    HR_ASSERT(id == i + 1);
  }
  bool use_la = out->policy == HR_POLICY_LOOKAHEAD;
  for (size_t k = 0; k < w->n_seq; k++) {
    const wf_step_t *t = &w->tmpl[w->seq[k]];
    hr_lookahead_t la = {0};
    for (size_t j = 0; j < t->n_use; j++) ids[j] = t->use[j] + 1;
    if (use_la) {
      size_t n = 0;
      for (size_t d = 1; d <= SIM_WINDOW && k + d < w->n_seq; d++) {
        const wf_step_t *u = &w->tmpl[w->seq[k + d]];
        if (n + u->n_use > la_cap) {
          size_t cap = (n + u->n_use) * 2;
          hr_asset_id_t *a = realloc(la_ids, cap * sizeof *a);
          if (!a) {
            rc = HR_ENOMEM;
            goto out;
          }
          la_ids = a;
          uint32_t *b = realloc(la_steps, cap * sizeof *b);
          if (!b) {
            rc = HR_ENOMEM;
            goto out;
          }
          la_steps = b;
          uint64_t *c = realloc(la_work, cap * sizeof *c);
          if (!c) {
            rc = HR_ENOMEM;
            goto out;
          }
          la_work = c;
          la_cap = cap;
        }
        for (size_t j = 0; j < u->n_use; j++) {
          la_ids[n] = u->use[j] + 1;
          la_work[n] = u->working;
          la_steps[n++] = (uint32_t)d;
        }
      }
      la = (hr_lookahead_t){la_ids, la_steps, n, la_work};
    }
    int src = hr_residency_require(r, ids, t->n_use, t->working, use_la ? &la : NULL, &plan);
    if (src != 0 && src != HR_ENOSPC) {
      rc = src;
      goto out;
    }
    out->bytes_moved += plan.bytes_loaded;
    out->bytes_offloaded += plan.bytes_offloaded;
    out->loads += plan.loads;
    out->partial_loads += plan.partial_loads;
    out->offloads += plan.offloads;
    out->partial_offloads += plan.partial_offloads;
    if (src == 0)
      out->peak_device_bytes = HR_MAX(out->peak_device_bytes, plan.used_bytes);
    else
      out->failed_steps++;
    if (fn) fn(k, t->name, src, &plan, r, arg);
    hr_plan_free(&plan);
  }
out:
  hr_plan_free(&plan);
  hr_residency_destroy(r);
  free(s.resident);
  free(ids);
  free(la_ids);
  free(la_steps);
  free(la_work);
  return rc;
}
