/* The Ollama adapter:
 *   refresh  GET /api/ps: each loaded model's size and size_vram (size_vram
 *            on a GPU, size - size_vram on the host), soonest to expire
 *            (least recently used) first; what they hold counts against the
 *            budget like a client's memory;
 *   release  GET /api/ps again, then POST /api/generate
 *            {"model":NAME,"keep_alive":0} for one model after another, in
 *            that order, until enough came back; all within one deadline.
 * It reports what it unloaded (the models' sizes). */
#include "broker/broker_int.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
  hr__bmodel_t m;
  char expires[48];
} listed_t;

static int by_expiry(const void *x, const void *y) {
  return strcmp(((const listed_t *)x)->expires, ((const listed_t *)y)->expires);
}

static uint64_t bytes_on(const hr__badapter_t *a, const cJSON *m) {
  const cJSON *size = cJSON_GetObjectItemCaseSensitive(m, "size");
  const cJSON *vram = cJSON_GetObjectItemCaseSensitive(m, "size_vram");
  double s = cJSON_IsNumber(size) ? size->valuedouble : 0;
  double v = cJSON_IsNumber(vram) ? vram->valuedouble : 0;
  double x = strcmp(a->device, "host") == 0 ? s - v : v;
  return x > 0 && x < 9.2e18 ? (uint64_t)x : 0;
}

/* The models of an /api/ps answer, soonest to expire first. */
static bool read_models(hr__badapter_t *a, hr__bjob_t *j, const char *body, size_t len) {
  cJSON *ps = cJSON_ParseWithLength(body, len), *m;
  const cJSON *models = cJSON_GetObjectItemCaseSensitive(ps, "models");
  if (!cJSON_IsArray(models)) {
    hr__strlcpy(j->msg, "GET /api/ps: no models list", sizeof j->msg);
    cJSON_Delete(ps);
    return false;
  }
  listed_t l[HR_BROKER_MAX_MODELS];
  size_t n = 0;
  cJSON_ArrayForEach(m, models) {
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(m, "name");
    const cJSON *exp = cJSON_GetObjectItemCaseSensitive(m, "expires_at");
    if (n == HR_BROKER_MAX_MODELS || !cJSON_IsString(name)) continue;
    l[n] = (listed_t){.m.bytes = bytes_on(a, m)};
    hr__strlcpy(l[n].m.name, name->valuestring, sizeof l[n].m.name);
    hr__strlcpy(l[n].expires, cJSON_IsString(exp) ? exp->valuestring : "", sizeof l[n].expires);
    n++;
  }
  cJSON_Delete(ps);
  qsort(l, n, sizeof *l, by_expiry);
  a->used = 0;
  for (size_t i = 0; i < n; i++) a->models[i] = l[i].m, a->used += l[i].m.bytes;
  a->n_models = n;
  return true;
}

static bool next(hr__badapter_t *a, hr__bjob_t *j, hr__breq_http_t *r) {
  if (j->kind != HR__JOB_REFRESH && j->kind != HR__JOB_RELEASE) return false;
  if (j->step == 0) {
    hr__strlcpy(r->target, "/api/ps", sizeof r->target);
    return true;
  }
  if (j->kind == HR__JOB_REFRESH) return false;
  while (j->cursor < a->n_models && a->models[j->cursor].bytes == 0) j->cursor++;
  if (j->got >= j->bytes || j->cursor >= a->n_models) return false;
  hr__buf_t q = {0};
  hr__buf_puts(&q, "{\"model\":");
  hr__buf_json_str(&q, a->models[j->cursor].name);
  hr__buf_puts(&q, ",\"keep_alive\":0}");
  bool ok = !q.failed && q.len < sizeof r->body;
  if (ok) memcpy(r->body, q.s, q.len + 1);
  hr__buf_free(&q);
  r->method = "POST";
  hr__strlcpy(r->target, "/api/generate", sizeof r->target);
  return ok;
}

static bool reply(hr__badapter_t *a, hr__bjob_t *j, const char *body, size_t len) {
  if (j->step == 1) return read_models(a, j, body, len);
  const hr__bmodel_t *m = &a->models[j->cursor++];
  j->got += m->bytes;
  size_t l = strlen(j->msg);
  snprintf(j->msg + l, sizeof j->msg - l, "%sunloaded %s", l ? ", " : "", m->name);
  return true;
}

const hr__adapter_ops_t hr__adapter_ollama = {
    .kind = "ollama", .sized = true, .sleeps = false, .next = next, .reply = reply};
