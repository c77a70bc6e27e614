/* The vLLM adapter, for a server started with --enable-sleep-mode (and
 * VLLM_SERVER_DEV_MODE=1, which exposes these endpoints):
 *   refresh  GET /is_sleeping;
 *   release  POST /sleep?level=1 (weights offloaded, KV cache dropped);
 *   wake     POST /wake_up, when the lease it made room for ends, or at
 *            once when that reservation is refused.
 * Its size is not known, and pressure never puts it to sleep: no lease
 * would wake it. */
#include "broker/broker_int.h"

#include <cjson/cJSON.h>
#include <string.h>

static bool next(hr__badapter_t *a, hr__bjob_t *j, hr__breq_http_t *r) {
  (void)a;
  if (j->step > 0) return false;
  switch (j->kind) {
  case HR__JOB_REFRESH:
    hr__strlcpy(r->target, "/is_sleeping", sizeof r->target);
    return true;
  case HR__JOB_RELEASE:
    r->method = "POST";
    hr__strlcpy(r->target, "/sleep?level=1", sizeof r->target);
    hr__strlcpy(j->msg, "POST /sleep?level=1: weights offloaded, KV cache dropped", sizeof j->msg);
    return true;
  case HR__JOB_WAKE:
    r->method = "POST";
    hr__strlcpy(r->target, "/wake_up", sizeof r->target);
    return true;
  default:
    return false;
  }
}

static bool reply(hr__badapter_t *a, hr__bjob_t *j, const char *body, size_t len) {
  if (j->kind == HR__JOB_RELEASE) a->asleep = true;
  if (j->kind == HR__JOB_WAKE) a->asleep = false;
  if (j->kind != HR__JOB_REFRESH) return true;
  cJSON *s = cJSON_ParseWithLength(body, len);
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(s, "is_sleeping");
  bool ok = cJSON_IsBool(v);
  if (ok)
    a->asleep = cJSON_IsTrue(v);
  else
    hr__strlcpy(j->msg, "GET /is_sleeping: no is_sleeping", sizeof j->msg);
  cJSON_Delete(s);
  return ok;
}

const hr__adapter_ops_t hr__adapter_vllm = {
    .kind = "vllm", .sized = false, .sleeps = true, .next = next, .reply = reply};
