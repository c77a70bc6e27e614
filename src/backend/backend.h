/* backend: the seam under the pool. A backend hands out device memory in
 * two ways, whole segments (cuMemAlloc-like) and, when it can map, granules
 * mapped into reserved address space (CUDA virtual memory management), and
 * orders work between streams with events.
 *
 * Each backend fills one hook table, hr_backend_ops_t; the pool calls only
 * these hooks. The contract of every hook is written beside it. Hooks are
 * called under the lock of the pool that owns the memory, so a backend that
 * serves one pool needs no lock of its own; sim and host still count their
 * usage atomically because several pools may share one backend. Addresses
 * are device addresses as uint64_t (host: process addresses). */
#ifndef HR_BACKEND_H
#define HR_BACKEND_H

#include "util/util.h"

#include <stdatomic.h>

typedef struct hr_backend_ops {
  const char *name; /* "sim", "host", "cuda" */

  /* Allocates one segment of `size` bytes (a multiple of 512) usable by
   * `stream`, aligned to at least 512 bytes, and sets *addr. Returns 0,
   * HR_ENOMEM when the device (or the backend's capacity) has no room, or
   * HR_EDEVICE on any other failure. Must not touch the memory. */
  int (*seg_alloc)(hr_backend_t *b, uint64_t size, void *stream, uint64_t *addr);
  /* Frees a segment given by seg_alloc, with its exact address and size.
   * The pool has made sure no queued work still uses it. Returns 0 or
   * HR_EDEVICE. */
  int (*seg_free)(hr_backend_t *b, uint64_t addr, uint64_t size);
  /* Free and total memory of the device as the backend sees it. */
  int (*mem_info)(hr_backend_t *b, uint64_t *free_bytes, uint64_t *total_bytes);

  /* ---- mapping (optional: all NULL when the backend cannot map) ---------- */
  /* Reserves `size` bytes of address space (a multiple of b->granularity),
   * maps nothing, and sets *addr (aligned to the granularity). Costs no
   * device memory. Returns 0, HR_ENOMEM or HR_EDEVICE. */
  int (*va_reserve)(hr_backend_t *b, uint64_t size, uint64_t *addr);
  /* Releases a reservation; every granule in it has been unmapped. */
  int (*va_release)(hr_backend_t *b, uint64_t addr, uint64_t size);
  /* Maps `size` bytes (a multiple of the granularity) of fresh device
   * memory, one allocation, at `addr` (granule aligned, inside a
   * reservation, not mapped) readable and writable by the device, and sets
   * *handle to what unmap needs. One call of this hook is one device
   * allocation: the pool counts it once whatever the size. Returns 0,
   * HR_ENOMEM or HR_EDEVICE. */
  int (*map)(hr_backend_t *b, uint64_t addr, uint64_t size, uint64_t *handle);
  /* Unmaps exactly a range that one map call mapped (the driver cannot
   * unmap part of one) and returns its memory to the device. The caller
   * has synchronized: no queued work uses it. */
  int (*unmap)(hr_backend_t *b, uint64_t addr, uint64_t size, uint64_t handle);

  /* ---- ordering between streams ----------------------------------------- */
  /* Records an event on `stream` after the work queued so far; sets *ev.
   * Returns 0 or HR_EDEVICE. */
  int (*event_record)(hr_backend_t *b, void *stream, uint64_t *ev);
  /* Returns 0 when the work before the event has completed, HR_EBUSY when
   * it has not, HR_EDEVICE on failure. */
  int (*event_query)(hr_backend_t *b, uint64_t ev);
  void (*event_destroy)(hr_backend_t *b, uint64_t ev);
  /* Waits for all work queued on the device. Needed before unmapping or
   * freeing memory that another stream may still use. */
  int (*synchronize)(hr_backend_t *b);

  /* Frees the backend's own state (not `b`'s segments: the pools did). */
  void (*destroy)(hr_backend_t *b);
} hr_backend_ops_t;

struct hr_backend {
  const hr_backend_ops_t *ops;
  int device;
  uint64_t capacity;    /* bytes the backend may hand out */
  uint64_t granularity; /* mapping granule; 0 when the backend cannot map */
  void *priv;           /* the backend's own state */
};

/* Shared by the backends (backend.c). hr__backend_take counts `size` more
 * bytes in *used, refusing with HR_ENOMEM what would pass b->capacity when
 * `capped`; hr__backend_give takes them back; hr__backend_counted_info is a
 * mem_info of the capacity and those bytes. For a backend that never waits
 * (its work is done when issued) and keeps one malloc'd struct in priv:
 * hr__backend_synchronized (synchronize), hr__backend_event_nothing
 * (event_destroy) and hr__backend_free_priv (destroy). */
HR_INTERNAL int hr__backend_take(const hr_backend_t *b, _Atomic uint64_t *used, bool capped,
                                 uint64_t size);
HR_INTERNAL void hr__backend_give(_Atomic uint64_t *used, uint64_t size);
HR_INTERNAL void hr__backend_counted_info(const hr_backend_t *b, _Atomic uint64_t *used,
                                          uint64_t *free_bytes, uint64_t *total_bytes);
HR_INTERNAL int hr__backend_synchronized(hr_backend_t *b);
HR_INTERNAL void hr__backend_event_nothing(hr_backend_t *b, uint64_t ev);
HR_INTERNAL void hr__backend_free_priv(hr_backend_t *b);

/* Constructors, one per backend; each returns 0 or an HR_E* code and fills
 * *out with a backend allocated with malloc. */
HR_INTERNAL int hr__backend_sim_create(int device, uint64_t capacity, hr_backend_t **out);
HR_INTERNAL int hr__backend_host_create(int device, uint64_t capacity, hr_backend_t **out);
HR_INTERNAL int hr__backend_cuda_create(int device, uint64_t capacity, hr_backend_t **out);

/* Sim test hooks: while held, events recorded on sim stay pending until
 * hr__sim_complete_events; otherwise they complete at once. */
HR_INTERNAL void hr__sim_hold_events(hr_backend_t *b, bool hold);
HR_INTERNAL void hr__sim_complete_events(hr_backend_t *b);
/* Sim: make the next `n` seg_alloc/map calls fail with HR_ENOMEM. */
HR_INTERNAL void hr__sim_fail_next(hr_backend_t *b, int n);

#endif /* HR_BACKEND_H */
