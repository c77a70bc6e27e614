/* The pool's reclaimers, added and taken back: calls in the order added,
 * a reclaimer taken back is never called again, HR_ENOENT for one never
 * added, the sixteen-slot limit, a reclaimer that takes itself back during
 * its own call, and taking one back while another thread is inside it:
 * hr_pool_remove_reclaimer() returns only after that call ended (run under
 * ThreadSanitizer too: label "threads"). */
#include "hr_test.h"

#include <pthread.h>
#include <stdatomic.h>
#include <unistd.h>

#define MiB (1ull << 20)

typedef struct calls {
  char order[64]; /* the name of each reclaimer called, in order */
} calls_t;

typedef struct named {
  char name;
  calls_t *calls;
  hr_pool_t *self_remove; /* takes itself back from this pool when called */
  int rc_remove;
} named_t;

static int note(hr_pool_t *p, uint64_t needed, uint64_t *freed, void *arg) {
  named_t *n = arg;
  size_t at = strlen(n->calls->order);
  if (at + 1 < sizeof n->calls->order) n->calls->order[at] = n->name;
  if (n->self_remove) n->rc_remove = hr_pool_remove_reclaimer(n->self_remove, note, n);
  *freed = 0;
  return HR_ENOSPC;
}

/* A pool on a 64 MiB sim device, and an allocation it cannot serve. */
static hr_pool_t *small_pool(hr_backend_t **be) {
  hr_pool_t *p = NULL;
  if (hr_backend_create("sim", 0, 64 * MiB, be) != 0) return NULL;
  if (hr_pool_create(NULL, *be, 0, &p) != 0) hr_backend_destroy(*be);
  return p;
}

static int too_big(hr_pool_t *p) {
  void *ptr = NULL;
  return hr_pool_alloc(p, 128 * MiB, NULL, &ptr);
}

static void test_order_and_removal(void) {
  hr_backend_t *be;
  hr_pool_t *p = small_pool(&be);
  CHECK(p);
  calls_t c = {0};
  named_t a = {.name = 'a', .calls = &c}, b = {.name = 'b', .calls = &c},
          d = {.name = 'd', .calls = &c};
  CHECK_OK(hr_pool_add_reclaimer(p, note, &a));
  CHECK_OK(hr_pool_add_reclaimer(p, note, &b));
  CHECK_OK(hr_pool_add_reclaimer(p, note, &d));
  CHECK_RC(too_big(p), HR_ENOMEM);
  CHECK_STR(c.order, "abd");
  CHECK_OK(hr_pool_remove_reclaimer(p, note, &b));
  CHECK_RC(hr_pool_remove_reclaimer(p, note, &b), HR_ENOENT);
  CHECK_RC(hr_pool_remove_reclaimer(p, NULL, &b), HR_EINVAL);
  CHECK_RC(hr_pool_remove_reclaimer(NULL, note, &b), HR_EINVAL);
  CHECK_OK(hr_pool_add_reclaimer(p, note, &b)); /* back in, now last */
  CHECK_RC(too_big(p), HR_ENOMEM);
  CHECK_STR(c.order, "abdadb");
  hr_pool_stats_t st = {.size = sizeof st};
  CHECK_OK(hr_pool_stats(p, &st));
  CHECK_EQ_U64(st.num_alloc_retries, 6); /* one retry per reclaimer called */
  /* Sixteen at most; taking one back makes room. */
  named_t more[13];
  for (int i = 0; i < 13; i++) {
    more[i] = (named_t){.name = 'm', .calls = &c};
    CHECK_OK(hr_pool_add_reclaimer(p, note, &more[i]));
  }
  CHECK_RC(hr_pool_add_reclaimer(p, note, &a), HR_ENOSPC);
  CHECK_OK(hr_pool_remove_reclaimer(p, note, &more[5]));
  CHECK_OK(hr_pool_add_reclaimer(p, note, &a));
  hr_pool_destroy(p);
  hr_backend_destroy(be);
}

static void test_removal_from_inside(void) {
  hr_backend_t *be;
  hr_pool_t *p = small_pool(&be);
  CHECK(p);
  calls_t c = {0};
  named_t a = {.name = 'a', .calls = &c}, d = {.name = 'd', .calls = &c};
  named_t b = {.name = 'b', .calls = &c, .self_remove = p, .rc_remove = 1};
  CHECK_OK(hr_pool_add_reclaimer(p, note, &a));
  CHECK_OK(hr_pool_add_reclaimer(p, note, &b));
  CHECK_OK(hr_pool_add_reclaimer(p, note, &d));
  CHECK_RC(too_big(p), HR_ENOMEM);
  CHECK_EQ_INT(b.rc_remove, 0);
  CHECK_STR(c.order, "abd"); /* the walk went on past it */
  CHECK_RC(too_big(p), HR_ENOMEM);
  CHECK_STR(c.order, "abdad");
  hr_pool_destroy(p);
  hr_backend_destroy(be);
}

/* A reclaimer that stays inside its call until told to leave. */
typedef struct gate {
  atomic_int inside, leave, left;
} gate_t;

static int held(hr_pool_t *p, uint64_t needed, uint64_t *freed, void *arg) {
  gate_t *g = arg;
  atomic_store(&g->inside, 1);
  while (!atomic_load(&g->leave)) usleep(1000);
  atomic_store(&g->left, 1);
  *freed = 0;
  return HR_ENOSPC;
}

typedef struct remover {
  hr_pool_t *p;
  gate_t *g;
  atomic_int done;
  int rc, left_when_done;
} remover_t;

static void *remove_it(void *arg) {
  remover_t *r = arg;
  r->rc = hr_pool_remove_reclaimer(r->p, held, r->g);
  r->left_when_done = atomic_load(&r->g->left);
  atomic_store(&r->done, 1);
  return NULL;
}

static void *alloc_it(void *arg) {
  intptr_t rc = too_big(arg);
  return (void *)rc;
}

static void test_removal_waits_for_a_call_under_way(void) {
  hr_backend_t *be;
  hr_pool_t *p = small_pool(&be);
  CHECK(p);
  gate_t g = {0};
  CHECK_OK(hr_pool_add_reclaimer(p, held, &g));
  pthread_t alloc, rem;
  CHECK(pthread_create(&alloc, NULL, alloc_it, p) == 0);
  double deadline = hr_test_now() + 60;
  while (!atomic_load(&g.inside) && hr_test_now() < deadline) usleep(1000);
  CHECK(atomic_load(&g.inside));
  remover_t r = {.p = p, .g = &g};
  CHECK(pthread_create(&rem, NULL, remove_it, &r) == 0);
  /* The remover cannot be done while the call is under way, however long
   * we look; then the call ends and it returns. */
  for (int i = 0; i < 50; i++) {
    usleep(2000);
    CHECK(!atomic_load(&r.done));
  }
  atomic_store(&g.leave, 1);
  void *rc;
  pthread_join(alloc, &rc);
  pthread_join(rem, NULL);
  CHECK_EQ_INT((int)(intptr_t)rc, HR_ENOMEM);
  CHECK_OK(r.rc);
  CHECK_EQ_INT(r.left_when_done, 1);
  /* Gone: the next failure calls nothing. */
  atomic_store(&g.inside, 0);
  CHECK_RC(too_big(p), HR_ENOMEM);
  CHECK_EQ_INT(atomic_load(&g.inside), 0);
  hr_pool_destroy(p);
  hr_backend_destroy(be);
}

int main(void) {
  HR_RUN(test_order_and_removal);
  HR_RUN(test_removal_from_inside);
  HR_RUN(test_removal_waits_for_a_call_under_way);
  return hr_test_finish("test_pool_reclaim");
}
