/* Brief reads (HR_PROBE_BRIEF): every process ranked by statm, the other
 * files read only for the selection and the GPU holders.
 *
 * Which files are opened is counted outside the probe: on a fixture tree
 * written here, inotify reports every open in each /proc/PID directory. The
 * processes read in full must equal a full read's, the selection too, and
 * the brief ones must carry statm's memory. On the live machine, a context
 * that holds statm files is checked against /proc/PID/status of real
 * children, and against /proc/self/fd for the files it holds and closes. */
#include "hr_test.h"
#include "probe/probe_int.h"
#include "fake_proc.h"

#include <dirent.h>
#include <signal.h>
#include <sys/inotify.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>

#define KIB 1024ull
#define MIB (1024ull * 1024)

enum { F_STAT, F_STATM, F_STATUS, F_CMDLINE, F_CGROUP, F_COMM, F_SMAPS, F_N };
static const char *const file_names[F_N] = {"stat",   "statm", "status",      "cmdline",
                                            "cgroup", "comm",  "smaps_rollup"};
#define HEX64 "3f4e5d6c7b8a99887766554433221100ffeeddccbbaa00112233445566778899"
/* pid % 16 is the index: the first refresh of status, staggered by pid
 * (HR__STATUS_EVERY), comes after the snapshots these tests take. */
#define FIRST_PID 96
#define P(i)      (FIRST_PID + (i))
#define N_PROCS   12

/* Opens per process (pid FIRST_PID + i) and file, from inotify. */
typedef struct opens {
  int fd;
  int wd[N_PROCS];
  int n[N_PROCS][F_N];
} opens_t;

static void opens_start(opens_t *o) {
  memset(o, 0, sizeof *o);
  o->fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  CHECK(o->fd >= 0);
  for (int i = 0; i < N_PROCS; i++) {
    char dir[512];
    snprintf(dir, sizeof dir, "%s/proc/%d", tree, FIRST_PID + i);
    o->wd[i] = inotify_add_watch(o->fd, dir, IN_OPEN);
    CHECK(o->wd[i] >= 0);
  }
}

/* Counts the events waiting since the last call (zeroing the counts first). */
static void opens_take(opens_t *o) {
  char buf[8192] __attribute__((aligned(__alignof__(struct inotify_event))));
  memset(o->n, 0, sizeof o->n);
  ssize_t len;
  while ((len = read(o->fd, buf, sizeof buf)) > 0) {
    for (char *p = buf; p < buf + len;) {
      const struct inotify_event *e = (const struct inotify_event *)p;
      p += sizeof *e + e->len;
      int i = 0;
      while (i < N_PROCS && o->wd[i] != e->wd) i++;
      for (int f = 0; i < N_PROCS && e->len && f < F_N; f++)
        if (strcmp(e->name, file_names[f]) == 0) o->n[i][f]++;
    }
  }
}

static void opens_stop(opens_t *o) {
  close(o->fd);
}

/* The tree: processes P(0)..P(11) with RSS growing with the pid; P(5) is in
 * a Docker container; P(7)'s command line holds "special". */
static void write_procs(void) {
  for (int i = 0; i < N_PROCS; i++) {
    int pid = FIRST_PID + i;
    put_proc(pid, 1000 + (uint64_t)i, pid == P(7) ? "python special.py" : "worker run",
             (unsigned)(i + 1) * 1000, 400, 8, true);
  }
  put_str("proc/101/cgroup", "0::/system.slice/docker-" HEX64 ".scope\n");
}

static const char *fake_nvml(char *buf, size_t n) {
  const char *dir = getenv("HR_BINARY_DIR");
  snprintf(buf, n, "%s/helpers/libfake-nvml-v3.so", dir ? dir : ".");
  return buf;
}

/* A snapshot of the tree; P(3) holds 512 MiB on the stand-in GPU. */
static hr_snapshot_t *take(hr_probe_t *ctx, unsigned extra, size_t top, const char *filter) {
  char lib[1024];
  setenv("FAKE_NVML_GPUS", "1", 1);
  setenv("FAKE_NVML_PROCS", "0:99:512", 1);
  hr_probe_options_t o = {.root = tree,
                          .what = (HR_PROBE_ALL & ~(unsigned)HR_PROBE_PSS) | extra,
                          .nvml_path = fake_nvml(lib, sizeof lib),
                          .filter = filter,
                          .top = top};
  hr_snapshot_t *s = NULL;
  int rc = hr_probe_snapshot(ctx, &o, &s);
  if (rc) fprintf(stderr, "  hr_probe_snapshot: %s\n", hr_err_name(rc));
  return s;
}

static const hr_proc_t *find(const hr_snapshot_t *s, int pid) {
  return s ? hr_snapshot_proc(s, pid) : NULL;
}

static void same_selection(const hr_snapshot_t *a, const hr_snapshot_t *b) {
  CHECK_EQ_U64(a->n_selected, b->n_selected);
  CHECK_EQ_U64(a->n_selected_gpu, b->n_selected_gpu);
  for (size_t k = 0; k < a->n_selected && k < b->n_selected; k++) {
    const hr_proc_t *x = &a->procs[a->selected[k]], *y = &b->procs[b->selected[k]];
    CHECK(!x->brief); /* read in full, as the full read has it */
    same_proc(x, y);
  }
}

static bool in(int pid, const int *set, size_t n) {
  for (size_t k = 0; k < n; k++)
    if (set[k] == pid) return true;
  return false;
}

/* ---- without a context (status) ------------------------------------------ */

static void test_brief_reads_only_the_selection(void) {
  opens_t o;
  opens_start(&o);
  hr_snapshot_t *full = take(NULL, 0, 2, NULL);
  opens_take(&o); /* the full read's are not counted */
  opens_take(&o);
  hr_snapshot_t *s = take(NULL, HR_PROBE_BRIEF, 2, NULL);
  opens_take(&o);
  opens_stop(&o);
  CHECK(full && s);
  CHECK_EQ_U64(s->n_procs, N_PROCS);
  /* The GPU holder, then the two largest: read in full, as a full read has them. */
  same_selection(s, full);
  CHECK_EQ_U64(s->n_selected, 3);
  CHECK_EQ_INT(s->procs[s->selected[0]].pid, P(3));
  CHECK_STR(find(s, P(5))->container_id, "");
  const int shown[] = {P(3), P(10), P(11)};
  for (int i = 0; i < N_PROCS; i++) {
    int pid = FIRST_PID + i;
    bool full_read = in(pid, shown, 3);
    /* statm ranks everyone; the other files only for the rows shown. */
    CHECK_EQ_INT(o.n[i][F_STATM], 1);
    for (int f = F_STAT; f < F_N; f++)
      if (f != F_STATM && f != F_COMM && f != F_SMAPS)
        CHECK_MSG(o.n[i][f] == (full_read ? 1 : 0), "pid %d: %s opened %d times", pid,
                  file_names[f], o.n[i][f]);
    CHECK_EQ_INT(o.n[i][F_COMM], 0);
    CHECK_EQ_INT(o.n[i][F_SMAPS], 0);
    const hr_proc_t *p = find(s, pid), *q = find(full, pid);
    CHECK(p && q);
    CHECK_EQ_INT(p->brief, !full_read);
    /* A brief process has statm's memory, exact, and nothing of status. */
    CHECK_EQ_U64(p->rss_bytes, q->rss_bytes);
    CHECK_EQ_U64(p->rss_anon_bytes, q->rss_anon_bytes);
    if (!full_read) {
      CHECK_EQ_U64(p->rss_file_bytes, HR_UNKNOWN);
      CHECK_EQ_U64(p->swap_bytes, HR_UNKNOWN);
      CHECK_STR(p->cmdline, "");
    }
  }
  /* JSON of every process lists those read in full; the selection's, the selection. */
  char *j = NULL;
  CHECK_OK(hr_snapshot_json(s, &j));
  CHECK(strstr(j, "\"pid\":99,") && strstr(j, "\"pid\":107,") && !strstr(j, "\"pid\":100,"));
  free(j);
  hr_snapshot_free(full), hr_snapshot_free(s);
}

static void test_brief_filter(void) {
  opens_t o;
  opens_start(&o);
  const char *filter = "w101,special";
  hr_snapshot_t *full = take(NULL, 0, 5, filter);
  opens_take(&o);
  hr_snapshot_t *s = take(NULL, HR_PROBE_BRIEF, 5, filter);
  opens_take(&o);
  opens_stop(&o);
  CHECK(full && s);
  same_selection(s, full);
  CHECK_EQ_U64(s->n_selected, 2);
  CHECK_STR(find(s, P(5))->container_id, HEX64);
  for (int i = 0; i < N_PROCS; i++) {
    int pid = FIRST_PID + i;
    bool match = pid == P(5) || pid == P(7);
    /* The name first; the command line where the name does not match (and
     * for P(5), matched by name, when it is shown); memory only where one of
     * them matches. The GPU holder, filtered out, is read in full. */
    bool full_read = match || pid == P(3);
    CHECK_EQ_INT(o.n[i][F_COMM], 1);
    CHECK_EQ_INT(o.n[i][F_CMDLINE], 1);
    CHECK_EQ_INT(o.n[i][F_STATM], match ? 1 : 0);
    CHECK_EQ_INT(o.n[i][F_STAT], full_read ? 1 : 0);
    CHECK_EQ_INT(o.n[i][F_STATUS], full_read ? 1 : 0);
    CHECK_EQ_INT(o.n[i][F_CGROUP], full_read ? 1 : 0);
    CHECK_EQ_INT(find(s, pid)->brief, !full_read);
    if (!full_read) CHECK_EQ_U64(find(s, pid)->rss_bytes, HR_UNKNOWN);
  }
  hr_snapshot_free(full), hr_snapshot_free(s);
}

/* ---- through a context (watch) ------------------------------------------- */

/* A full read (its opens not counted), then a snapshot through ctx, whose
 * opens are counted into o; the selections must agree. */
static void step(hr_probe_t *ctx, opens_t *o, hr_snapshot_t **s, hr_snapshot_t **full) {
  *full = take(NULL, 0, 2, NULL);
  opens_take(o);
  *s = take(ctx, HR_PROBE_BRIEF, 2, NULL);
  opens_take(o);
  CHECK(*s && *full);
  same_selection(*s, *full);
}

static void test_context_reads_statm_alone(void) {
  hr_probe_t *ctx = NULL;
  CHECK_OK(hr_probe_create(&ctx));
  opens_t o;
  opens_start(&o);
  hr_snapshot_free(take(ctx, HR_PROBE_BRIEF, 2, NULL));
  opens_take(&o);
  /* Nothing moved: statm for everyone (and stat: a fixture tree is not
   * procfs, where a known inode spares it); the rows shown are complete
   * from what the context kept. */
  hr_snapshot_t *s = NULL, *full = NULL;
  step(ctx, &o, &s, &full);
  for (int i = 0; i < N_PROCS; i++) {
    CHECK_EQ_INT(o.n[i][F_STATM], 1);
    CHECK_MSG(o.n[i][F_STATUS] + o.n[i][F_CMDLINE] + o.n[i][F_CGROUP] == 0, "pid %d: %d %d %d",
              P(i), o.n[i][F_STATUS], o.n[i][F_CMDLINE], o.n[i][F_CGROUP]);
  }
  hr_snapshot_free(s), hr_snapshot_free(full);
  /* A shown process's memory moves: its status alone is read again. An
   * unshown one's: nothing but statm, which has it. */
  put_proc(P(11), 1000 + 11, "worker run", 15000, 400, 32, true);
  put_proc(P(4), 1000 + 4, "worker run", 5500, 400, 8, true);
  step(ctx, &o, &s, &full);
  CHECK_EQ_INT(o.n[11][F_STATUS], 1);
  CHECK_EQ_INT(o.n[11][F_CMDLINE] + o.n[11][F_CGROUP], 0);
  CHECK_EQ_INT(o.n[4][F_STATUS], 0);
  CHECK_EQ_U64(find(s, P(4))->rss_anon_bytes, 5500 * KIB);
  CHECK_EQ_U64(find(s, P(11))->swap_bytes, 32 * KIB);
  hr_snapshot_free(s), hr_snapshot_free(full);
  /* A process shown for the first time is read in full, once. */
  put_proc(P(0), 1000, "worker run", 20000, 400, 8, true);
  step(ctx, &o, &s, &full);
  CHECK_EQ_INT(o.n[0][F_STATUS] + o.n[0][F_CMDLINE] + o.n[0][F_CGROUP], 3);
  /* P(10), shown before and unchanged, stays complete from what was kept. */
  CHECK(!find(s, P(0))->brief && !find(s, P(10))->brief);
  CHECK_EQ_INT(o.n[10][F_STATUS], 0);
  hr_snapshot_free(s), hr_snapshot_free(full);
  opens_stop(&o);
  hr_probe_destroy(ctx);
  write_procs();
}

static void test_complete(void) {
  hr_snapshot_t *s = take(NULL, HR_PROBE_BRIEF, 1, NULL), *full = take(NULL, 0, 1, NULL);
  CHECK(s && full);
  size_t i = (size_t)(find(s, P(5)) - s->procs);
  CHECK(s->procs[i].brief);
  hr_probe_options_t o = {.root = tree};
  CHECK_OK(hr_probe_complete(NULL, &o, s, &i, 1));
  same_proc(&s->procs[i], find(full, P(5)));
  CHECK_STR(s->procs[i].container_id, HEX64);
  size_t bad = s->n_procs;
  CHECK_RC(hr_probe_complete(NULL, &o, s, &bad, 1), HR_EINVAL);
  CHECK_RC(hr_probe_complete(NULL, &o, NULL, &i, 1), HR_EINVAL);
  CHECK_OK(hr_probe_complete(NULL, &o, s, NULL, 0));
  hr_snapshot_free(s), hr_snapshot_free(full);
}

/* ---- watch: leak suspects outside the selection --------------------------- */

static void test_watch_completes_leak_suspects(void) {
  hr_options_t *opts = NULL;
  hr_watch_t *w = NULL;
  char err[256];
  static const char *const kv[] = {
      "root", NULL,       "top", "1", "metrics_top", "0", "leak_window", "60s", "leak_min_samples",
      "20",   "interval", "1s",  NULL};
  CHECK_OK(hr_options_create(&opts));
  for (size_t k = 0; kv[k]; k += 2)
    CHECK_OK(
        hr_options_set(opts, kv[k], kv[k + 1] ? kv[k + 1] : tree, HR_SRC_CLI, err, sizeof err));
  CHECK_OK(hr_watch_create(opts, &w, err, sizeof err));
  put_str("proc/100/cgroup", "0::/system.slice/docker-" HEX64 ".scope\n");
  /* P(4), small and never shown, leaks 2 MiB a sample (120 MiB a minute). */
  for (int i = 0; i < 40; i++) {
    put_proc(P(4), 1000 + 4, "worker run", 5000 + (unsigned)i * 2048, 400, 8, true);
    put_str("proc/100/cgroup", "0::/system.slice/docker-" HEX64 ".scope\n");
    hr_snapshot_t *s = take(NULL, HR_PROBE_BRIEF, 1, NULL);
    CHECK(s);
    s->time = 1000 + i;
    CHECK_OK(hr_watch_feed(w, s));
  }
  hr_watch_view_t v;
  hr_watch_get_view(w, &v);
  CHECK_EQ_U64(v.events_total[HR_EVENT_LEAK], 1);
  const hr_proc_t *p = find(v.snap, P(4));
  CHECK(p && !p->brief);
  char *m = NULL;
  CHECK_OK(hr_watch_metrics(w, &m));
  CHECK_CONTAINS(m,
                 "headroom_process_leak_suspected{pid=\"100\",comm=\"w100\",container_id=\"" HEX64);
  free(m);
  hr_watch_destroy(w);
  hr_options_destroy(opts);
  write_procs();
}

/* ---- the live machine: held statm files ----------------------------------- */

/* Descriptors of this process open on /proc/PID/statm. */
static int held_links(int pid) {
  char want[64], path[300], link[128];
  snprintf(want, sizeof want, "/proc/%d/statm", pid);
  DIR *d = opendir("/proc/self/fd");
  int n = 0;
  struct dirent *e;
  while (d && (e = readdir(d)) != NULL) {
    snprintf(path, sizeof path, "/proc/self/fd/%s", e->d_name);
    ssize_t len = readlink(path, link, sizeof link - 1);
    if (len <= 0) continue;
    link[len] = '\0';
    n += pid ? strcmp(link, want) == 0 : strncmp(link, "/proc/", 6) == 0 && strstr(link, "/statm");
  }
  if (d) closedir(d);
  return n;
}

/* A child holding `mib` MiB of anonymous memory, then sitting still. */
static pid_t child(size_t mib, int ready) {
  pid_t kid = fork();
  if (kid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    char *m = mmap(NULL, mib * MIB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) _exit(1);
    memset(m, 1, mib * MIB);
    if (write(ready, "x", 1) != 1) _exit(1);
    for (;;) pause();
  }
  return kid;
}

/* Waits until the child sleeps (in pause()) with the same VmRSS on two
 * reads 10 ms apart: it signals ready just before pause(), and on a loaded
 * machine (or under a sanitizer) may still fault pages in after. A deadline
 * far past its usual time, not a timing. */
static void settle(pid_t kid) {
  uint64_t last = 0;
  for (int i = 0; i < 6000; i++) {
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)kid);
    const char *paren = hr__read_file(path, buf, sizeof buf) > 0 ? strrchr(buf, ')') : NULL;
    uint64_t rss = status_bytes(kid, "VmRSS");
    if (paren && paren[2] == 'S' && rss == last) return;
    last = rss;
    usleep(10000);
  }
}

static hr_snapshot_t *live(hr_probe_t *ctx) {
  hr_probe_options_t o = {.root = "/",
                          .what = HR_PROBE_HOST | HR_PROBE_PROCS | HR_PROBE_BRIEF,
                          .nvml_path = "/nonexistent/libnvidia-ml.so.1",
                          .top = 1};
  hr_snapshot_t *s = NULL;
  int rc = hr_probe_snapshot(ctx, &o, &s);
  if (rc) fprintf(stderr, "  hr_probe_snapshot: %s\n", hr_err_name(rc));
  return s;
}

static void check_kid(const hr_snapshot_t *s, pid_t kid, size_t mib) {
  const hr_proc_t *p = find(s, kid);
  CHECK(p);
  /* statm read through a held file is status's figure, to the page. */
  CHECK(p->rss_anon_bytes >= mib * MIB);
  CHECK_EQ_U64(p->rss_anon_bytes, status_bytes(kid, "RssAnon"));
  CHECK_EQ_U64(p->rss_bytes, status_bytes(kid, "VmRSS"));
  CHECK(p->start_ticks > 0 && p->name[0]); /* stat, read when first seen */
  CHECK_EQ_INT(held_links(kid), 1);
}

static void test_live_held_files(void) {
  int ready[2];
  CHECK(pipe(ready) == 0);
  const size_t mib[3] = {8, 16, 24};
  pid_t kids[3];
  char c;
  for (int k = 0; k < 3; k++) kids[k] = child(mib[k], ready[1]);
  for (int k = 0; k < 3; k++) CHECK(read(ready[0], &c, 1) == 1);
  for (int k = 0; k < 3; k++) settle(kids[k]);
  hr_probe_t *ctx = NULL;
  CHECK_OK(hr_probe_create(&ctx));
  hr_probe_hold_files(ctx, 100000);
  for (int round = 0; round < 3; round++) {
    hr_snapshot_t *s = live(ctx);
    CHECK(s);
    for (int k = 0; k < 3; k++) check_kid(s, kids[k], mib[k]);
    CHECK_EQ_U64(hr_probe_held(ctx), (uint64_t)held_links(0));
    hr_snapshot_free(s);
  }
  /* Reaped: gone from the snapshot, its file closed. */
  kill(kids[0], SIGKILL);
  waitpid(kids[0], NULL, 0);
  hr_snapshot_t *s = live(ctx);
  CHECK(s && find(s, kids[0]) == NULL);
  CHECK_EQ_INT(held_links(kids[0]), 0);
  hr_snapshot_free(s);
  /* Killed, not reaped: a zombie, no memory, its state read at once. */
  kill(kids[1], SIGKILL);
  CHECK_EQ_INT(wait_zombie(kids[1]), 'Z');
  s = live(ctx);
  const hr_proc_t *z = find(s, kids[1]);
  CHECK(z);
  CHECK_EQ_INT(z->state, 'Z');
  CHECK_EQ_U64(z->rss_bytes, 0);
  hr_snapshot_free(s);
  waitpid(kids[1], NULL, 0);
  /* A lower limit closes the files at the next snapshot. */
  hr_probe_hold_files(ctx, 0);
  s = live(ctx);
  CHECK(s && find(s, kids[2]));
  CHECK_EQ_U64(hr_probe_held(ctx), 0);
  CHECK_EQ_INT(held_links(0), 0);
  hr_snapshot_free(s);
  hr_probe_destroy(ctx);
  kill(kids[2], SIGKILL);
  waitpid(kids[2], NULL, 0);
  close(ready[0]), close(ready[1]);
}

int main(void) {
  make_tree();
  write_procs();
  HR_RUN(test_brief_reads_only_the_selection);
  HR_RUN(test_brief_filter);
  HR_RUN(test_context_reads_statm_alone);
  HR_RUN(test_complete);
  HR_RUN(test_watch_completes_leak_suspects);
  drop_tree();
  HR_RUN(test_live_held_files);
  return hr_test_finish("test_probe_brief");
}
