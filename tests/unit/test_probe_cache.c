/* The probe context (hr_probe_t): a process is read in full once per (pid,
 * start time) and the short way (stat, statm) after that. Checked on fixture
 * trees written here and changed between snapshots (a reused pid, a changed
 * command line, a new process, an exit, memory that moves or not), against
 * hr_snapshot_take() on the shipped fixtures, and on the live machine, where
 * statm's RssAnon must equal status's for a child that sits still. */
#include "hr_test.h"
#include "probe/probe_int.h"
#include "fake_proc.h"

#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define KIB 1024ull
#define MIB (1024ull * 1024)

static hr_snapshot_t *snap(hr_probe_t *ctx) {
  hr_probe_options_t o = {.root = tree, .what = HR_PROBE_HOST | HR_PROBE_PROCS};
  hr_snapshot_t *s = NULL;
  int rc = hr_probe_snapshot(ctx, &o, &s);
  if (rc) fprintf(stderr, "  hr_probe_snapshot: %s\n", hr_err_name(rc));
  return s; /* NULL on failure: the callers' checks then fail */
}

static const hr_proc_t *find(const hr_snapshot_t *s, int pid) {
  for (size_t i = 0; s && i < s->n_procs; i++)
    if (s->procs[i].pid == pid) return &s->procs[i];
  return NULL;
}

/* ---- identity: read once per (pid, start time) --------------------------- */

static void test_identity_reuse_new_and_exit(void) {
  hr_probe_t *ctx = NULL;
  CHECK_RC(hr_probe_create(NULL), HR_EINVAL);
  CHECK_OK(hr_probe_create(&ctx));
  CHECK_EQ_U64(hr_probe_cached(ctx), 0);
  put_proc(100, 5000, "python train.py", 1000, 400, 0, true);
  put_proc(200, 6000, "sleep 100", 800, 400, 0, true);

  hr_snapshot_t *s = snap(ctx);
  CHECK(s != NULL && find(s, 100) != NULL);
  CHECK_EQ_U64(s->n_procs, 2);
  CHECK_STR(find(s, 100)->cmdline, "python train.py");
  CHECK_EQ_U64(hr_probe_cached(ctx), 2);
  hr_snapshot_free(s);

  /* Same pid, same start: the command line is not read again. */
  put_proc(100, 5000, "python renamed.py", 1000, 400, 0, true);
  s = snap(ctx);
  CHECK_STR(find(s, 100)->cmdline, "python train.py");
  hr_snapshot_free(s);

  /* Same pid, another start time: another process, read afresh. */
  put_proc(100, 9000, "python reused.py", 1000, 400, 0, true);
  s = snap(ctx);
  const hr_proc_t *p = find(s, 100);
  CHECK(p != NULL);
  if (p) {
    CHECK_STR(p->cmdline, "python reused.py");
    CHECK_EQ_U64(p->start_ticks, 9000);
  }
  hr_snapshot_free(s);

  /* A new process is read in full; one that exited leaves the cache. */
  put_proc(300, 7000, "new proc", 100, 40, 0, true);
  remove_proc(200);
  s = snap(ctx);
  CHECK_EQ_U64(s->n_procs, 2);
  CHECK(find(s, 200) == NULL);
  CHECK(find(s, 300) != NULL && strcmp(find(s, 300)->cmdline, "new proc") == 0);
  CHECK_EQ_U64(hr_probe_cached(ctx), 2);
  hr_snapshot_free(s);

  /* Many processes come and go: the cache holds only the last read's. */
  for (int round = 0; round < 3; round++) {
    for (int i = 0; i < 50; i++)
      put_proc(1000 + round * 100 + i, 100 + (uint64_t)i, "x", 4, 4, 0, true);
    if (round > 0)
      for (int i = 0; i < 50; i++) remove_proc(1000 + (round - 1) * 100 + i);
    hr_snapshot_free(snap(ctx));
    CHECK_EQ_U64(hr_probe_cached(ctx), 52);
  }

  /* A snapshot without processes keeps the cache; another root empties it. */
  hr_probe_options_t o = {.root = tree, .what = HR_PROBE_HOST};
  CHECK_OK(hr_probe_snapshot(ctx, &o, &s));
  CHECK_EQ_U64(s->n_procs, 0);
  CHECK_EQ_U64(hr_probe_cached(ctx), 52);
  hr_snapshot_free(s);
  o.root = "/nonexistent-root"; /* no /proc there: no processes, nothing cached */
  o.what = HR_PROBE_PROCS;
  CHECK_OK(hr_probe_snapshot(ctx, &o, &s));
  CHECK_EQ_U64(s->n_procs, 0);
  CHECK_EQ_U64(hr_probe_cached(ctx), 0);
  hr_snapshot_free(s);
  /* Without a context, every process is read in full each time. */
  o.root = tree;
  CHECK_OK(hr_probe_snapshot(NULL, &o, &s));
  CHECK_EQ_U64(s->n_procs, 52);
  CHECK_STR(find(s, 100)->cmdline, "python reused.py");
  hr_snapshot_free(s);
  for (int i = 0; i < 50; i++) remove_proc(1200 + i);
  remove_proc(100);
  remove_proc(300);
  hr_probe_destroy(ctx);
  hr_probe_destroy(NULL);
}

/* ---- memory: what is fresh each snapshot ---------------------------------- */

static void test_memory_freshness(void) {
  hr_probe_t *ctx = NULL;
  CHECK_OK(hr_probe_create(&ctx));
  put_proc(400, 100, "a", 1000, 400, 0, true);  /* with statm */
  put_proc(500, 100, "b", 1000, 400, 0, false); /* without: status every time */
  hr_snapshot_free(snap(ctx));

  /* Anon memory grows: VmRSS and RssAnon are fresh through statm. */
  put_proc(400, 100, "a", 2000, 400, 8, true);
  put_proc(500, 100, "b", 2000, 400, 8, false);
  hr_snapshot_t *s = snap(ctx);
  const hr_proc_t *p = find(s, 400), *q = find(s, 500);
  CHECK(p && q);
  if (p && q) {
    CHECK_EQ_U64(p->rss_anon_bytes, 2000 * KIB);
    CHECK_EQ_U64(p->rss_bytes, 2400 * KIB);
    CHECK_EQ_U64(p->rss_file_bytes, 400 * KIB);
    CHECK_EQ_U64(p->swap_bytes, 8 * KIB); /* statm moved: status was read too */
    CHECK_EQ_U64(q->rss_anon_bytes, 2000 * KIB);
    CHECK_EQ_U64(q->swap_bytes, 8 * KIB);
  }
  hr_snapshot_free(s);

  /* Only swap moves (statm does not): without statm it is seen at once; with
   * statm within HR__STATUS_EVERY snapshots, and not at the next one. */
  put_proc(400, 100, "a", 2000, 400, 64, true);
  put_proc(500, 100, "b", 2000, 400, 64, false);
  s = snap(ctx);
  p = find(s, 400), q = find(s, 500);
  CHECK(p && q);
  if (p && q) {
    CHECK_EQ_U64(p->swap_bytes, 8 * KIB);
    CHECK_EQ_U64(p->rss_anon_bytes, 2000 * KIB);
    CHECK_EQ_U64(q->swap_bytes, 64 * KIB);
  }
  hr_snapshot_free(s);
  unsigned seen_after = 0;
  for (unsigned i = 2; i <= HR__STATUS_EVERY + 1 && !seen_after; i++) {
    s = snap(ctx);
    p = find(s, 400);
    if (p && p->swap_bytes == 64 * KIB) seen_after = i;
    hr_snapshot_free(s);
  }
  CHECK(seen_after >= 2 && seen_after <= HR__STATUS_EVERY);

  /* A malformed statm falls back to status. */
  put_str("proc/400/statm", "garbage\n");
  put_proc(500, 100, "b", 3000, 400, 0, false);
  s = snap(ctx);
  p = find(s, 400);
  CHECK(p && p->rss_anon_bytes == 2000 * KIB && p->swap_bytes == 64 * KIB);
  hr_snapshot_free(s);
  remove_proc(400);
  remove_proc(500);
  hr_probe_destroy(ctx);
}

/* ---- the same answers as a full read -------------------------------------- */

static void same_procs(const hr_snapshot_t *a, const hr_snapshot_t *b) {
  CHECK_EQ_U64(a->n_procs, b->n_procs);
  CHECK_EQ_U64(a->n_procs_unreadable, b->n_procs_unreadable);
  for (size_t i = 0; i < a->n_procs && i < b->n_procs; i++) same_proc(&a->procs[i], &b->procs[i]);
}

static void test_matches_full_read(void) {
  const char *names[] = {"v2_limited", "procs_odd", "v1", "v2_max"};
  for (size_t i = 0; i < HR_ARRAY_LEN(names); i++) {
    char rel[256], root[1024];
    snprintf(rel, sizeof rel, "tests/fixtures/probe/%s", names[i]);
    hr_test_src(root, sizeof root, rel);
    hr_probe_options_t o = {
        .root = root, .what = HR_PROBE_ALL, .nvml_path = "/nonexistent/libnvidia-ml.so.1"};
    hr_probe_t *ctx = NULL;
    hr_snapshot_t *full = NULL, *c1 = NULL, *c2 = NULL;
    CHECK_OK(hr_probe_create(&ctx));
    CHECK_OK(hr_snapshot_take(&o, &full));
    CHECK_OK(hr_probe_snapshot(ctx, &o, &c1));
    CHECK_OK(hr_probe_snapshot(ctx, &o, &c2)); /* every process known now */
    if (full && c1 && c2) {
      same_procs(full, c1);
      same_procs(full, c2);
    }
    hr_snapshot_free(full), hr_snapshot_free(c1), hr_snapshot_free(c2);
    hr_probe_destroy(ctx);
  }
}

/* ---- the live machine ----------------------------------------------------- */

static void test_live_statm_is_status(void) {
  int fds[2], go[2];
  CHECK(pipe(fds) == 0 && pipe(go) == 0);
  pid_t kid = fork();
  if (kid == 0) {
    /* A failed check returns early: the child must not outlive the test. */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    size_t n = 48 * MIB;
    char *m = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) _exit(1);
    memset(m, 1, n);
    if (write(fds[1], "x", 1) != 1) _exit(1);
    /* Each byte on `go`: 16 MiB more anonymous memory, then a byte back. */
    char b;
    while (read(go[0], &b, 1) == 1) {
      char *more = mmap(NULL, 16 * MIB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (more == MAP_FAILED) _exit(1);
      memset(more, 2, 16 * MIB);
      if (write(fds[1], "y", 1) != 1) _exit(1);
    }
    for (;;) pause();
  }
  char c;
  CHECK(read(fds[0], &c, 1) == 1);
  hr_probe_t *ctx = NULL;
  CHECK_OK(hr_probe_create(&ctx));
  hr_probe_options_t o = {.root = "/", .what = HR_PROBE_PROCS | HR_PROBE_HOST};
  uint64_t want = 48 * MIB;
  for (int round = 0; round < 6; round++) {
    if (round == 2 || round == 4) { /* the memory moves between snapshots */
      CHECK(write(go[1], "g", 1) == 1 && read(fds[0], &c, 1) == 1);
      want += 16 * MIB;
    }
    hr_snapshot_t *s = NULL;
    CHECK_OK(hr_probe_snapshot(ctx, &o, &s));
    const hr_proc_t *p = NULL;
    for (size_t i = 0; s && i < s->n_procs; i++)
      if (s->procs[i].pid == kid) p = &s->procs[i];
    CHECK(p != NULL);
    if (p) {
      /* The child sits still: statm's numbers are status's, to the page. */
      CHECK(p->rss_anon_bytes >= want);
      CHECK_EQ_U64(p->rss_anon_bytes, status_bytes(kid, "RssAnon"));
      CHECK_EQ_U64(p->rss_bytes, status_bytes(kid, "VmRSS"));
      CHECK(p->cmdline[0] != '\0');
    }
    CHECK(hr_probe_cached(ctx) == (s ? s->n_procs : 0));
    hr_snapshot_free(s);
  }
  close(fds[0]), close(fds[1]), close(go[0]), close(go[1]);
  /* Killed but not reaped: a zombie frees its memory, so its state is read
   * at once even where the inode is unchanged. */
  kill(kid, SIGKILL);
  CHECK_EQ_INT(wait_zombie(kid), 'Z');
  hr_snapshot_t *z = NULL;
  CHECK_OK(hr_probe_snapshot(ctx, &o, &z));
  const hr_proc_t *zp = NULL;
  for (size_t i = 0; z && i < z->n_procs; i++)
    if (z->procs[i].pid == kid) zp = &z->procs[i];
  CHECK(zp != NULL);
  if (zp) {
    CHECK_EQ_INT(zp->state, 'Z');
    CHECK_EQ_U64(zp->rss_anon_bytes, 0);
    CHECK(zp->cmdline[0] != '\0'); /* kept from the live process */
  }
  hr_snapshot_free(z);
  waitpid(kid, NULL, 0);
  /* The child is gone from the next snapshot and from the cache. */
  hr_snapshot_t *s = NULL;
  CHECK_OK(hr_probe_snapshot(ctx, &o, &s));
  for (size_t i = 0; s && i < s->n_procs; i++) CHECK(s->procs[i].pid != kid);
  hr_snapshot_free(s);
  hr_probe_destroy(ctx);
}

int main(void) {
  make_tree();
  HR_RUN(test_identity_reuse_new_and_exit);
  HR_RUN(test_memory_freshness);
  drop_tree();
  HR_RUN(test_matches_full_read);
  HR_RUN(test_live_statm_is_status);
  return hr_test_finish("test_probe_cache");
}
