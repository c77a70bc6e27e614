/* PyTorch entry points: the two functions that
 * torch.cuda.memory.CUDAPluggableAllocator loads from libheadroom. Each
 * device gets one pool on first use, configured by the option alloc_conf
 * (HEADROOM_ALLOC_CONF, or alloc_conf in the config file), on
 * the cuda backend (HEADROOM_POOL_BACKEND=sim or host picks another, for
 * tests). A device whose pool cannot be made is not retried: every later
 * call returns NULL at once, and the reason was logged the first time. */
#include "pool/pool_internal.h"

#include <stdlib.h>

#define TORCH_MAX_DEVICES 64

static pthread_mutex_t torch_lock = PTHREAD_MUTEX_INITIALIZER;
static hr_pool_t *_Atomic torch_pools[TORCH_MAX_DEVICES];
static hr_backend_t *torch_backends[TORCH_MAX_DEVICES];
static int torch_failed[TORCH_MAX_DEVICES];

/* The process-wide pool configuration: the option alloc_conf, from the
 * config file or HEADROOM_ALLOC_CONF (the environment wins). When the
 * option chain cannot be read (a bad unrelated option), the variable alone.
 * Copies into buf. */
static const char *torch_conf(char *buf, size_t n) {
  hr_options_t *o = NULL;
  char err[256];
  const char *env = getenv("HEADROOM_ALLOC_CONF");
  hr__strlcpy(buf, env ? env : "", n);
  if (hr_options_create(&o)) return buf;
  if (hr_options_load_defaults(o, NULL, err, sizeof err))
    hr__log(HR_LOG_WARN, "pool: options not read (%s); using HEADROOM_ALLOC_CONF alone", err);
  else
    hr__strlcpy(buf, hr_options_get_str(o, "alloc_conf"), n);
  hr_options_destroy(o);
  return buf;
}

static hr_pool_t *torch_pool(int device) {
  if (device < 0 || device >= TORCH_MAX_DEVICES) return NULL;
  hr_pool_t *p = torch_pools[device];
  if (p) return p;
  pthread_mutex_lock(&torch_lock);
  p = torch_pools[device];
  if (!p && !torch_failed[device]) {
    hr_pool_config_t cfg;
    char err[256], confbuf[1024];
    const char *conf = torch_conf(confbuf, sizeof confbuf);
    const char *kind = getenv("HEADROOM_POOL_BACKEND");
    int rc = hr_pool_config_parse(conf, &cfg, err, sizeof err);
    if (rc) {
      hr__log(HR_LOG_ERROR, "HEADROOM_ALLOC_CONF / alloc_conf: %s", err);
    } else {
      rc = hr_backend_create(kind && *kind ? kind : "cuda", device, 0, &torch_backends[device]);
      if (!rc) rc = hr_pool_create(&cfg, torch_backends[device], device, &p);
      if (rc) hr__log(HR_LOG_ERROR, "pool for device %d: %s", device, hr_strerror(rc));
    }
    if (rc) {
      hr_backend_destroy(torch_backends[device]);
      torch_backends[device] = NULL;
      torch_failed[device] = rc;
      p = NULL;
    } else {
      torch_pools[device] = p;
    }
  }
  pthread_mutex_unlock(&torch_lock);
  return p;
}

void *hr_torch_malloc(ssize_t size, int device, void *stream) {
  void *ptr = NULL;
  if (size < 0) return NULL;
  hr_pool_t *p = torch_pool(device);
  if (!p) return NULL;
  if (hr_pool_alloc(p, (uint64_t)size, stream, &ptr)) return NULL;
  return ptr;
}

void hr_torch_free(void *ptr, ssize_t size, int device, void *stream) {
  if (!ptr || device < 0 || device >= TORCH_MAX_DEVICES) return;
  hr_pool_t *p = torch_pools[device];
  if (p) hr_pool_free(p, ptr, stream);
}

hr_pool_t *hr_torch_pool(int device) {
  return device >= 0 && device < TORCH_MAX_DEVICES ? torch_pools[device] : NULL;
}
