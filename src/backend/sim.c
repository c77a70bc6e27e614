/* sim backend: address space only. Segments and granules are ranges of a
 * private 64-bit address space handed out by a bump pointer; nothing is
 * touched, so an 80 GB trace replays on a laptop. Usage is counted against
 * a capacity. Events complete at once unless a test holds them. */
#include "backend/backend.h"

#include <stdatomic.h>
#include <stdlib.h>

#define SIM_GRANULE (2ull << 20)
#define SIM_BASE    (1ull << 40)

typedef struct sim {
  _Atomic uint64_t used; /* bytes of segments and mapped granules */
  _Atomic uint64_t next; /* bump pointer of the address space */
  _Atomic uint64_t event_seq, done_seq;
  _Atomic int fail_next;
  _Atomic bool hold;
} sim_t;

static int sim_take(hr_backend_t *b, uint64_t size) {
  sim_t *s = b->priv;
  if (atomic_load(&s->fail_next) > 0) {
    atomic_fetch_sub(&s->fail_next, 1);
    return HR_ENOMEM;
  }
  return hr__backend_take(b, &s->used, true, size);
}

static uint64_t sim_va(sim_t *s, uint64_t size, uint64_t align) {
  /* Round each range up to its alignment; a gap of one granule between
   * ranges keeps neighbours from looking contiguous. */
  uint64_t span = (size + align - 1) / align * align + SIM_GRANULE;
  uint64_t a = atomic_fetch_add(&s->next, span);
  return (a + align - 1) / align * align;
}

static int sim_seg_alloc(hr_backend_t *b, uint64_t size, void *stream, uint64_t *addr) {
  int rc = sim_take(b, size);
  if (rc) return rc;
  *addr = sim_va(b->priv, size, SIM_GRANULE);
  return 0;
}

static int sim_seg_free(hr_backend_t *b, uint64_t addr, uint64_t size) {
  sim_t *s = b->priv;
  hr__backend_give(&s->used, size);
  return 0;
}

static int sim_mem_info(hr_backend_t *b, uint64_t *free_bytes, uint64_t *total_bytes) {
  hr__backend_counted_info(b, &((sim_t *)b->priv)->used, free_bytes, total_bytes);
  return 0;
}

static int sim_va_reserve(hr_backend_t *b, uint64_t size, uint64_t *addr) {
  *addr = sim_va(b->priv, size, SIM_GRANULE);
  return 0;
}

static int sim_va_release(hr_backend_t *b, uint64_t addr, uint64_t size) {
  return 0;
}

static int sim_map(hr_backend_t *b, uint64_t addr, uint64_t size, uint64_t *handle) {
  int rc = sim_take(b, size);
  if (rc) return rc;
  *handle = addr;
  return 0;
}

static int sim_unmap(hr_backend_t *b, uint64_t addr, uint64_t size, uint64_t handle) {
  sim_t *s = b->priv;
  hr__backend_give(&s->used, size);
  return 0;
}

static int sim_event_record(hr_backend_t *b, void *stream, uint64_t *ev) {
  sim_t *s = b->priv;
  uint64_t seq = atomic_fetch_add(&s->event_seq, 1) + 1;
  if (!atomic_load(&s->hold)) {
    uint64_t done = atomic_load(&s->done_seq);
    while (done < seq && !atomic_compare_exchange_weak(&s->done_seq, &done, seq)) {
    }
  }
  *ev = seq;
  return 0;
}

static int sim_event_query(hr_backend_t *b, uint64_t ev) {
  sim_t *s = b->priv;
  return ev <= atomic_load(&s->done_seq) ? 0 : HR_EBUSY;
}

static const hr_backend_ops_t sim_ops = {
    .name = "sim",
    .seg_alloc = sim_seg_alloc,
    .seg_free = sim_seg_free,
    .mem_info = sim_mem_info,
    .va_reserve = sim_va_reserve,
    .va_release = sim_va_release,
    .map = sim_map,
    .unmap = sim_unmap,
    .event_record = sim_event_record,
    .event_query = sim_event_query,
    .event_destroy = hr__backend_event_nothing,
    .synchronize = hr__backend_synchronized,
    .destroy = hr__backend_free_priv,
};

int hr__backend_sim_create(int device, uint64_t capacity, hr_backend_t **out) {
  hr_backend_t *b = calloc(1, sizeof *b);
  sim_t *s = calloc(1, sizeof *s);
  if (!b || !s) {
    free(b);
    free(s);
    return HR_ENOMEM;
  }
  atomic_init(&s->next, SIM_BASE);
  b->ops = &sim_ops;
  b->device = device;
  b->capacity = capacity ? capacity : (80ull << 30);
  b->granularity = SIM_GRANULE;
  b->priv = s;
  *out = b;
  return 0;
}

void hr__sim_hold_events(hr_backend_t *b, bool hold) {
  sim_t *s = b->priv;
  atomic_store(&s->hold, hold);
  if (!hold) hr__sim_complete_events(b);
}

void hr__sim_complete_events(hr_backend_t *b) {
  sim_t *s = b->priv;
  atomic_store(&s->done_seq, atomic_load(&s->event_seq));
}

void hr__sim_fail_next(hr_backend_t *b, int n) {
  sim_t *s = b->priv;
  atomic_store(&s->fail_next, n);
}
