/* The ComfyUI adapter: a ComfyUI that loads no agent (the node pack's
 * agent reports sizes and is better), asked through its own API:
 *   refresh  GET /queue: at work while queue_running lists a prompt;
 *   release  POST /free {"unload_models":true,"free_memory":true}, which
 *            ComfyUI acts on between prompts (at once when idle).
 * It does not say what it holds or what /free gave back, so the broker asks
 * it after everything of known size, and it cannot take the flags back: a
 * busy one is asked last. */
#include "broker/broker_int.h"

#include <cjson/cJSON.h>
#include <string.h>

static bool next(hr__badapter_t *a, hr__bjob_t *j, hr__breq_http_t *r) {
  (void)a;
  if (j->step > 0) return false;
  if (j->kind == HR__JOB_REFRESH) {
    hr__strlcpy(r->target, "/queue", sizeof r->target);
    return true;
  }
  if (j->kind != HR__JOB_RELEASE) return false;
  r->method = "POST";
  hr__strlcpy(r->target, "/free", sizeof r->target);
  hr__strlcpy(r->body, "{\"unload_models\":true,\"free_memory\":true}", sizeof r->body);
  hr__strlcpy(j->msg, "POST /free: models unload between prompts", sizeof j->msg);
  return true;
}

static bool reply(hr__badapter_t *a, hr__bjob_t *j, const char *body, size_t len) {
  if (j->kind != HR__JOB_REFRESH) return true;
  cJSON *q = cJSON_ParseWithLength(body, len);
  const cJSON *run = cJSON_GetObjectItemCaseSensitive(q, "queue_running");
  bool ok = cJSON_IsArray(run);
  if (ok)
    a->busy = cJSON_GetArraySize(run) > 0;
  else
    hr__strlcpy(j->msg, "GET /queue: no queue_running list", sizeof j->msg);
  cJSON_Delete(q);
  return ok;
}

const hr__adapter_ops_t hr__adapter_comfyui = {
    .kind = "comfyui", .sized = false, .sleeps = false, .next = next, .reply = reply};
