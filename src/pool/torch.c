/* PyTorch entry points: the two functions that
 * torch.cuda.memory.CUDAPluggableAllocator loads from libheadroom. Each
 * device gets one pool on first use, configured by the option alloc_conf
 * (HEADROOM_ALLOC_CONF, or alloc_conf in the config file), on
 * the cuda backend (HEADROOM_POOL_BACKEND=sim or host picks another, for
 * tests). A device whose pool cannot be made is not retried: every later
 * call fails at once with the reason recorded the first time.
 *
 * Failure is the delicate part. PyTorch's CUDAPluggableAllocator does not
 * check what the allocation function returns: NULL becomes a tensor whose
 * data pointer is 0, and the first kernel that touches it ends the CUDA
 * context with an illegal memory access. So a failure must not return: it
 * calls the raise hook (hr_torch_set_oom_raise), which the Python layer sets
 * to libc10's c10::detail::torchCheckFail. That function throws c10::Error,
 * which unwinds through hr_torch_malloc (this file is built with unwind
 * tables and -fexceptions, and holds no lock when it calls the hook) back
 * into PyTorch, and Python sees a RuntimeError. Without a hook the old
 * behaviour stays, NULL, with an error logged once. */
#include "pool/pool_internal.h"

#include <inttypes.h>
#include <stdatomic.h>
#include <stdlib.h>

#define TORCH_MAX_DEVICES 64

static pthread_mutex_t torch_lock = PTHREAD_MUTEX_INITIALIZER;
static hr_pool_t *_Atomic torch_pools[TORCH_MAX_DEVICES];
static hr_backend_t *torch_backends[TORCH_MAX_DEVICES];
static int torch_failed[TORCH_MAX_DEVICES];
/* Why the pool of a device could not be made; written once under
 * torch_lock, before torch_failed is set. */
static char torch_why[TORCH_MAX_DEVICES][320];

/* Read only when an allocation fails, so the hot path does not pay for it. */
static _Atomic(hr_torch_raise_fn) torch_raise;
static atomic_flag torch_null_warned = ATOMIC_FLAG_INIT;

void hr_torch_set_oom_raise(hr_torch_raise_fn fn) {
  atomic_store(&torch_raise, fn);
}

/* The process's options (config file, then HEADROOM_* variables), read once
 * per process. When the chain cannot be read (a bad unrelated option), the
 * defaults plus what was read before the error, with a warning. */
static const hr_options_t *torch_options(void) {
  const hr_options_t *o;
  char err[256];
  if (hr_options_process(&o, err, sizeof err))
    hr__log(HR_LOG_WARN, "pool: options not all read (%s)", err);
  return o;
}

/* Makes the pool of `device`; on failure records why in torch_why. Needs
 * torch_lock. */
static int torch_pool_create_locked(int device, hr_pool_t **out) {
  hr_pool_config_t cfg;
  char err[256];
  const hr_options_t *o = torch_options();
  const char *conf = hr_options_get_str(o, HR_OPTION_alloc_conf);
  const char *kind = hr_options_get_str(o, HR_OPTION_pool_backend);
  int rc = hr_pool_config_parse(conf, &cfg, err, sizeof err);
  if (rc) {
    snprintf(torch_why[device], sizeof torch_why[device], "HEADROOM_ALLOC_CONF / alloc_conf: %s",
             err);
    goto out;
  }
  rc = hr_backend_create(kind, device, 0, &torch_backends[device]);
  if (rc) {
    snprintf(torch_why[device], sizeof torch_why[device], "%s backend for device %d: %s", kind,
             device, hr_strerror(rc));
    goto out;
  }
  rc = hr_pool_create(&cfg, torch_backends[device], device, out);
  if (rc)
    snprintf(torch_why[device], sizeof torch_why[device], "pool for device %d: %s", device,
             hr_strerror(rc));
out:
  if (rc) {
    hr__log(HR_LOG_ERROR, "%s", torch_why[device]);
    hr_backend_destroy(torch_backends[device]);
    torch_backends[device] = NULL;
    torch_failed[device] = rc;
  }
  return rc;
}

/* The pool of `device`, made on first use; NULL when it cannot be made. */
static hr_pool_t *torch_pool(int device) {
  if (device < 0 || device >= TORCH_MAX_DEVICES) return NULL;
  hr_pool_t *p = torch_pools[device];
  if (p) return p;
  pthread_mutex_lock(&torch_lock);
  p = torch_pools[device];
  if (!p && !torch_failed[device] && !torch_pool_create_locked(device, &p)) torch_pools[device] = p;
  pthread_mutex_unlock(&torch_lock);
  return p;
}

/* The message of an out-of-memory failure, in the shape of PyTorch's own
 * ("CUDA out of memory. Tried to allocate ..."), around the diagnosis the
 * pool recorded under its lock when it failed (hr_pool_last_diagnosis):
 * its figures are the ones the failure saw. */
static void torch_oom_message(hr_pool_t *p, uint64_t size, int device, char *msg, size_t n) {
  char req[32], diag[sizeof p->diag];
  hr__size_text(req, sizeof req, size);
  if (hr_pool_last_diagnosis(p, diag, sizeof diag)) hr__strlcpy(diag, "no diagnosis", sizeof diag);
  snprintf(msg, n,
           "CUDA out of memory. Tried to allocate %s on device %d. headroom's pool: %s. Hint: "
           "free tensors that are no longer needed (del them, then headroom.free_memory()) or "
           "use a smaller batch; if cached but unusable memory is large, the pool is "
           "fragmented: keep expandable_segments on in HEADROOM_ALLOC_CONF; memory_fraction "
           "and reserve_mb there set the pool's limit.",
           req, device, diag);
}

/* Fails an allocation: through the raise hook when there is one (it does
 * not return), else NULL with an error logged once. No lock is held here:
 * the hook throws through this frame. */
static void *torch_fail(const char *msg) {
  hr_torch_raise_fn raise = atomic_load(&torch_raise);
  if (raise) raise("hr_torch_malloc", __FILE__, (uint32_t)__LINE__, msg);
  if (!atomic_flag_test_and_set(&torch_null_warned))
    hr__log(HR_LOG_ERROR,
            "%s -- returning NULL because no raise hook is set (hr_torch_set_oom_raise); "
            "PyTorch does not check for NULL and will crash with an illegal memory access",
            msg);
  return NULL;
}

/* The failure path of hr_torch_malloc, kept out of line so that the
 * allocation path carries none of its buffers. `p` is NULL when the pool
 * of `device` cannot be made. Does not return when a hook is set. */
__attribute__((noinline, cold)) static void *torch_malloc_failed(hr_pool_t *p, int rc,
                                                                 uint64_t size, int device) {
  char msg[4096];
  if (p && rc == HR_ENOMEM) {
    torch_oom_message(p, size, device, msg, sizeof msg);
  } else if (p) {
    snprintf(msg, sizeof msg, "headroom: allocating %" PRIu64 " bytes on device %d failed: %s",
             size, device, hr_strerror(rc));
  } else if (device < 0 || device >= TORCH_MAX_DEVICES) {
    snprintf(msg, sizeof msg, "headroom: device %d is out of range (0 to %d)", device,
             TORCH_MAX_DEVICES - 1);
  } else {
    pthread_mutex_lock(&torch_lock);
    snprintf(msg, sizeof msg, "headroom: no pool for device %d: %s", device, torch_why[device]);
    pthread_mutex_unlock(&torch_lock);
  }
  return torch_fail(msg);
}

void *hr_torch_malloc(ssize_t size, int device, void *stream) {
  void *ptr = NULL;
  /* PyTorch's own allocator hands out no memory for 0 bytes either. */
  if (!size) return NULL;
  hr_pool_t *p = torch_pool(device);
  /* PyTorch passes a size_t: a negative size is a request past 8 EiB,
   * which the pool refuses as out of memory. */
  int rc = p ? hr_pool_alloc(p, (uint64_t)size, stream, &ptr) : HR_ENOENT;
  if (!rc) return ptr;
  return torch_malloc_failed(p, rc, (uint64_t)size, device);
}

/* PyTorch frees through its metadata of our allocations, so a pointer the
 * pool does not know means two allocators got mixed up: said, not hidden. */
void hr_torch_free(void *ptr, ssize_t size, int device, void *stream) {
  if (!ptr) return;
  hr_pool_t *p = device >= 0 && device < TORCH_MAX_DEVICES ? torch_pools[device] : NULL;
  int rc = p ? hr_pool_free(p, ptr, stream) : HR_ENOENT;
  if (rc)
    hr__log(HR_LOG_ERROR,
            "hr_torch_free: %p (%zd bytes) is not a live block of device %d's pool: %s", ptr, size,
            device, hr_strerror(rc));
}

hr_pool_t *hr_torch_pool(int device) {
  return device >= 0 && device < TORCH_MAX_DEVICES ? torch_pools[device] : NULL;
}
