/* What the probe remembers of an NVML library that could not be loaded:
 * not found, a symbol missing, or nvmlInit failing. Such a library is tried
 * again at most once a minute (HR__NVML_RETRY_S), or at the next snapshot
 * after hr_probe_retry_gpus(); in between a snapshot gets the failure's
 * state and message without a dlopen. Without the memo a host without the
 * driver searched the whole library path on every sample (about fifteen
 * failed opens each time).
 *
 * The log hears of a failure once per library: the first time, and again
 * only when a retry fails for another reason or the library loads after
 * all. hr_probe_retry_gpus() bumps a generation counter, a lock-free atomic,
 * so a signal handler may call it; an entry made under an older generation
 * no longer holds. The table itself is guarded by the NVML libraries' lock
 * (nvml.c), which every function here but that one needs. */
#include "probe/probe_int.h"

#include <stdatomic.h>
#include <string.h>

typedef struct nvml_miss {
  char key[256]; /* the path asked for; "" for the default search */
  double at;     /* when the load last failed (hr__now_mono) */
  unsigned gen;  /* the retry generation it failed under */
  hr_probe_state_t state;
  char message[160];
  bool used;
} nvml_miss_t;

static nvml_miss_t misses[8];
static atomic_uint retry_gen;
static double (*memo_now)(void) = hr__now_mono;

void hr_probe_retry_gpus(void) {
  atomic_fetch_add(&retry_gen, 1u);
}

void hr__nvml_memo_clock(double (*now)(void)) {
  memo_now = now ? now : hr__now_mono;
}

static nvml_miss_t *find(const char *key) {
  for (size_t i = 0; i < HR_ARRAY_LEN(misses); i++)
    if (misses[i].used && strcmp(misses[i].key, key) == 0) return &misses[i];
  return NULL;
}

bool hr__nvml_memo_hit_locked(const char *path, hr_snapshot_t *s) {
  const nvml_miss_t *m = find(path ? path : "");
  if (!m || m->gen != atomic_load(&retry_gen) || memo_now() - m->at >= HR__NVML_RETRY_S)
    return false;
  s->gpu_state = m->state;
  hr__strlcpy(s->gpu_message, m->message, sizeof s->gpu_message);
  return true;
}

/* The entry for a new key: a free one, else the one that failed longest
 * ago (more than eight libraries failing at once is not a real case). */
static nvml_miss_t *take_slot(void) {
  nvml_miss_t *old = &misses[0];
  for (size_t i = 0; i < HR_ARRAY_LEN(misses); i++) {
    if (!misses[i].used) return &misses[i];
    if (misses[i].at < old->at) old = &misses[i];
  }
  return old;
}

void hr__nvml_memo_note_locked(const char *path, const hr_snapshot_t *s, bool loaded) {
  const char *key = path ? path : "";
  nvml_miss_t *m = find(key);
  if (loaded) {
    if (m) {
      hr__log(HR_LOG_INFO, "%s: NVML loaded after all", *key ? key : "libnvidia-ml.so.1");
      m->used = false;
    }
    return;
  }
  if (strlen(key) >= sizeof m->key) return; /* refused before any dlopen */
  bool news = !m || m->state != s->gpu_state || strcmp(m->message, s->gpu_message) != 0;
  if (!m) m = take_slot();
  *m = (nvml_miss_t){
      .at = memo_now(), .gen = atomic_load(&retry_gen), .state = s->gpu_state, .used = true};
  hr__strlcpy(m->key, key, sizeof m->key);
  hr__strlcpy(m->message, s->gpu_message, sizeof m->message);
  if (news)
    hr__log(s->gpu_state == HR_PROBE_ABSENT ? HR_LOG_INFO : HR_LOG_WARN,
            "%s; tried again at most once a minute", s->gpu_message);
}
