/* The probe: fixture trees under tests/fixtures/probe (one per outcome, see
 * the README there), the NVML layer through the stand-in libraries built from
 * tests/fake_nvml, the JSON against docs/status-schema.json, and the live
 * machine (this process's RssAnon, /proc/meminfo, no NVIDIA driver). */
#include "hr_test.h"
#include "probe/probe_int.h"

#include <cjson/cJSON.h>
#include <dlfcn.h>
#include <math.h>
#include <stdarg.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define KIB   1024ull
#define MIB   (1024ull * 1024)
#define GIB   (1024ull * 1024 * 1024)
#define HEX64 "3f4e5d6c7b8a99887766554433221100ffeeddccbbaa00112233445566778899"

static char fixture_buf[1024];
static const char *fixture(const char *name) {
  char rel[256];
  snprintf(rel, sizeof rel, "tests/fixtures/probe/%s", name);
  return hr_test_src(fixture_buf, sizeof fixture_buf, rel);
}

static const char *fake_nvml(char *buf, size_t n, const char *api) {
  const char *dir = getenv("HR_BINARY_DIR");
  snprintf(buf, n, "%s/helpers/libfake-nvml-v%s.so", dir ? dir : ".", api);
  return buf;
}

/* A snapshot of a fixture with no GPU library (a path that does not exist). */
static int take(const char *name, unsigned what, hr_snapshot_t **s, char *err, size_t errlen) {
  hr_probe_options_t o = {.root = fixture(name),
                          .what = what,
                          .nvml_path = "/nonexistent/libnvidia-ml.so.1",
                          .err = err,
                          .errlen = errlen};
  return hr_snapshot_take(&o, s);
}

static const hr_proc_t *find_proc(const hr_snapshot_t *s, int pid) {
  for (size_t i = 0; i < s->n_procs; i++)
    if (s->procs[i].pid == pid) return &s->procs[i];
  return NULL;
}

/* ---- parsers ------------------------------------------------------------ */

static void test_kv_scan(void) {
  uint64_t a, b, c, d, e;
  hr__kv_t k[] = {
      {"VmRSS", &a, 0}, {"RssAnon", &b, 0}, {"Bad", &c, 0}, {"Big", &d, 0}, {"Missing", &e, 0}};
  hr__kv_scan("VmRSS:\t  12 kB\nRssAnon: 5\nBad:  1x kB\nBig: 18014398509481984 kB\nVmRSSx: 9\n",
              ':', k, 5);
  CHECK_EQ_U64(a, 12 * KIB);
  CHECK_EQ_U64(b, 5);
  CHECK_EQ_INT(k[2].rc, HR_EPARSE);
  CHECK_EQ_U64(c, HR_UNKNOWN);
  CHECK_EQ_INT(k[3].rc, HR_ERANGE);
  CHECK_EQ_U64(d, HR_UNKNOWN);
  CHECK_EQ_INT(k[4].rc, HR_ENOENT);
  CHECK_EQ_U64(e, HR_UNKNOWN);
  /* "key value" files: a key that is a prefix of another is not confused. */
  hr__kv_t f[] = {{"file", &a, 0}, {"inactive_file", &b, 0}};
  hr__kv_scan("inactive_file 7\nfile 9\n", ' ', f, 2);
  CHECK_EQ_U64(a, 9);
  CHECK_EQ_U64(b, 7);
}

static void test_meminfo_parse(void) {
  hr_host_mem_t m;
  char err[128];
  CHECK_OK(hr__meminfo_parse("MemTotal: 100 kB\nMemFree: 40 kB\nMemAvailable: 60 kB\n", &m, err,
                             sizeof err));
  CHECK_EQ_U64(m.total_bytes, 100 * KIB);
  CHECK_EQ_U64(m.available_bytes, 60 * KIB);
  CHECK_EQ_U64(m.swap_total_bytes, HR_UNKNOWN);
  CHECK_RC(hr__meminfo_parse("MemFree: 4 kB\n", &m, err, sizeof err), HR_EPARSE);
  CHECK_CONTAINS(err, "MemTotal missing");
  CHECK_RC(hr__meminfo_parse("MemTotal: 4 kB\nMemFree: 8 kB\n", &m, err, sizeof err), HR_EPARSE);
  CHECK_CONTAINS(err, "MemFree is larger");
}

static void test_stat_parse(void) {
  hr_proc_t p = {0};
  uint64_t flags;
  CHECK_OK(hr__proc_parse_stat("42 (x) y)) R 7 42 42 0 -1 4194560 0 0 0 0 1 2 0 0 -20 -5 3 0 "
                               "9876 1 2 3\n",
                               &p, &flags));
  CHECK_STR(p.name, "x) y)");
  CHECK_EQ_INT(p.state, 'R');
  CHECK_EQ_INT(p.ppid, 7);
  CHECK_EQ_U64(p.start_ticks, 9876);
  CHECK_EQ_U64(flags, 4194560);
  CHECK_RC(hr__proc_parse_stat("42 (x) R 7 42", &p, &flags), HR_EPARSE);
  CHECK_RC(hr__proc_parse_stat("", &p, &flags), HR_EPARSE);
  CHECK_RC(hr__proc_parse_stat("42 x R 7", &p, &flags), HR_EPARSE);
}

/* ---- fixture trees ------------------------------------------------------ */

static void test_fixture_v2_limited(void) {
  hr_snapshot_t *s = NULL;
  char err[256] = "";
  CHECK_OK(take("v2_limited", 0, &s, err, sizeof err));
  CHECK_EQ_INT(s->host_state, HR_PROBE_OK);
  CHECK_EQ_U64(s->host.total_bytes, 16 * GIB);
  CHECK_EQ_U64(s->host.free_bytes, 8 * GIB);
  CHECK_EQ_U64(s->host.available_bytes, 12 * GIB);
  CHECK_EQ_U64(s->host.buffers_bytes, 100 * MIB);
  CHECK_EQ_U64(s->host.cached_bytes, 2 * GIB);
  CHECK_EQ_U64(s->host.swap_total_bytes, 2 * GIB);
  CHECK_EQ_U64(s->host.swap_free_bytes, 1 * GIB);
  CHECK_EQ_U64(s->host.shmem_bytes, 64 * MIB);
  const hr_cgroup_mem_t *c = &s->cgroup;
  CHECK_MSG(c->state == HR_PROBE_OK, "cgroup: %s", c->message);
  CHECK_EQ_INT(c->version, 2);
  CHECK_STR(c->path, "/user.slice/app.service");
  CHECK_EQ_U64(c->limit_bytes, 8 * GIB);
  CHECK_EQ_U64(c->own_limit_bytes, 8 * GIB);
  CHECK_EQ_U64(c->high_bytes, 7 * GIB);
  CHECK_EQ_U64(c->current_bytes, 3 * GIB);
  CHECK_EQ_U64(c->inactive_file_bytes, 512 * MIB);
  CHECK_EQ_U64(c->usage_bytes, 3 * GIB - 512 * MIB);
  CHECK_EQ_U64(c->anon_bytes, 2 * GIB);
  CHECK_EQ_U64(c->file_bytes, 1 * GIB);
  CHECK_EQ_U64(c->shmem_bytes, 4096);
  CHECK_EQ_U64(c->oom_events, 2);
  CHECK_EQ_U64(c->oom_kill_events, 1);
  CHECK(c->has_pressure);
  CHECK_NEAR(c->pressure_some.avg10, 1.5, 1e-9);
  CHECK_NEAR(c->pressure_some.avg300, 0.25, 1e-9);
  CHECK_EQ_U64(c->pressure_some.total_us, 123456);
  CHECK_NEAR(c->pressure_full.avg60, 0.25, 1e-9);
  CHECK_EQ_U64(s->n_procs, 3);
  CHECK_EQ_U64(s->n_procs_unreadable, 0);
  CHECK(s->procs[0].pid == 100 && s->procs[1].pid == 200 && s->procs[2].pid == 300);
  const hr_proc_t *p = &s->procs[0];
  CHECK_STR(p->name, "python3");
  CHECK_STR(p->cmdline, "python3 -m comfy --listen");
  CHECK_EQ_INT(p->ppid, 1);
  CHECK_EQ_INT(p->uid, 1000);
  CHECK_EQ_INT(p->nspid, 7);
  CHECK_EQ_U64(p->start_ticks, 12345);
  CHECK_EQ_U64(p->rss_bytes, 4194304 * KIB);
  CHECK_EQ_U64(p->rss_anon_bytes, 4000000 * KIB);
  CHECK_EQ_U64(p->rss_file_bytes, 194304 * KIB);
  CHECK_EQ_U64(p->pss_bytes, 4100000 * KIB);
  CHECK_STR(p->container_id, HEX64);
  CHECK_EQ_U64(s->procs[1].swap_bytes, 1024 * KIB);
  CHECK_STR(s->procs[1].container_id, "");
  CHECK_STR(s->procs[1].pod_uid, "");
  /* A pod's container under the kubelet's systemd driver. */
  CHECK_STR(s->procs[2].container_id,
            "aa11bb22cc33dd44ee55ff6600112233445566778899aabbccddeeff00112233");
  CHECK_STR(s->procs[2].pod_uid, "6f1b2a3c-0d4e-4f5a-8b6c-7d8e9f0a1b2c");
  /* The host's PSI (proc/pressure/memory of the fixture). */
  CHECK(s->host.has_pressure);
  CHECK(s->host.pressure_some.avg10 == 1.5 && s->host.pressure_full.avg10 == 0.5);
  CHECK_EQ_U64(s->host.pressure_some.total_us, 123456789);
  CHECK_EQ_INT(s->procs[1].nspid, 200);
  CHECK_EQ_INT(s->gpu_state, HR_PROBE_ABSENT);
  CHECK_CONTAINS(s->gpu_message, "nvml: library not found");
  hr_snapshot_free(s);
  /* Without HR_PROBE_PSS, smaps_rollup is not read. */
  CHECK_OK(take("v2_limited", HR_PROBE_HOST | HR_PROBE_PROCS, &s, err, sizeof err));
  CHECK_EQ_U64(s->procs[0].pss_bytes, HR_UNKNOWN);
  CHECK_EQ_INT(s->cgroup.state, HR_PROBE_ABSENT);
  hr_snapshot_free(s);
}

static void test_read_pss(void) {
  uint64_t pss = 0;
  const char *root = fixture("procs_odd");
  CHECK_OK(hr_proc_read_pss(root, 1, &pss));
  CHECK_EQ_U64(pss, 6000 * KIB);
  CHECK_RC(hr_proc_read_pss(root, 60, &pss), HR_ENOENT); /* no smaps_rollup */
  CHECK_EQ_U64(pss, HR_UNKNOWN);
  CHECK_RC(hr_proc_read_pss(root, 81, &pss), HR_EPARSE); /* "Pss: -5 kB" */
  CHECK_RC(hr_proc_read_pss(root, 0, &pss), HR_EINVAL);
  /* This process, live: its PSS is known and not zero. */
  CHECK_OK(hr_proc_read_pss("/", (int)getpid(), &pss));
  CHECK(pss > 0 && pss != HR_UNKNOWN);
}

static void test_fixture_v2_max(void) {
  hr_snapshot_t *s = NULL;
  CHECK_OK(take("v2_max", 0, &s, NULL, 0));
  CHECK_EQ_INT(s->cgroup.state, HR_PROBE_OK);
  CHECK_EQ_INT(s->cgroup.version, 2);
  CHECK_EQ_U64(s->cgroup.limit_bytes, HR_UNLIMITED);
  CHECK_EQ_U64(s->cgroup.own_limit_bytes, HR_UNLIMITED);
  CHECK_EQ_U64(s->cgroup.high_bytes, HR_UNLIMITED);
  CHECK_EQ_U64(s->cgroup.usage_bytes, 1 * MIB);
  CHECK_EQ_U64(s->cgroup.oom_kill_events, 0);
  CHECK(!s->cgroup.has_pressure);
  hr_snapshot_free(s);
}

static void test_fixture_v1(void) {
  hr_snapshot_t *s = NULL;
  CHECK_OK(take("v1", 0, &s, NULL, 0));
  const hr_cgroup_mem_t *c = &s->cgroup;
  CHECK_MSG(c->state == HR_PROBE_OK, "cgroup: %s", c->message);
  CHECK_EQ_INT(c->version, 1);
  CHECK_STR(c->path, "/kubepods/pod1/ctr");
  /* Its own limit is the page-rounded LONG_MAX: unlimited; kubepods binds. */
  CHECK_EQ_U64(c->own_limit_bytes, HR_UNLIMITED);
  CHECK_EQ_U64(c->limit_bytes, 4 * GIB);
  CHECK_EQ_U64(c->high_bytes, HR_UNKNOWN);
  CHECK_EQ_U64(c->current_bytes, 1 * GIB);
  CHECK_EQ_U64(c->usage_bytes, 1 * GIB - 128 * MIB);
  CHECK_EQ_U64(c->anon_bytes, 768 * MIB); /* total_rss, not rss */
  CHECK_EQ_U64(c->file_bytes, 256 * MIB);
  CHECK_EQ_U64(c->shmem_bytes, 8192);
  CHECK_EQ_U64(c->oom_kill_events, 3);
  CHECK_EQ_U64(c->oom_events, HR_UNKNOWN);
  /* Pressure comes from the unified hierarchy of this hybrid machine. */
  CHECK(c->has_pressure);
  CHECK_NEAR(c->pressure_some.avg10, 2.0, 1e-9);
  CHECK_EQ_U64(c->pressure_some.total_us, 999);
  hr_snapshot_free(s);
}

static void test_fixture_v2_nested(void) {
  hr_snapshot_t *s = NULL;
  CHECK_OK(take("v2_nested", 0, &s, NULL, 0));
  const hr_cgroup_mem_t *c = &s->cgroup;
  CHECK_MSG(c->state == HR_PROBE_OK, "cgroup: %s", c->message);
  CHECK_STR(c->path, "/a/b/c");
  CHECK_EQ_U64(c->own_limit_bytes, 6 * GIB);
  CHECK_EQ_U64(c->limit_bytes, 2 * GIB); /* the parent (the mount's root, /a) is tighter */
  CHECK_EQ_U64(c->current_bytes, 1 * GIB);
  CHECK_EQ_U64(c->usage_bytes, 0); /* all of it inactive file cache */
  hr_snapshot_free(s);
}

/* A watcher on the host reads a pod's cgroup, named by the pid of a process
 * in it, by its directory under the mount or by its hierarchy path; its own
 * cgroup (unlimited) must not be what it reports. */
static void test_cgroup_named(void) {
  const char *root = fixture("v2_host");
  hr_cgroup_mem_t c;
  const char *ways[] = {NULL, "/sys/fs/cgroup/kubepods.slice/pod1.slice/ctr.scope",
                        "/kubepods.slice/pod1.slice/ctr.scope",
                        "/sys/fs/cgroup/kubepods.slice/pod1.slice/ctr.scope/"};
  for (size_t i = 0; i < HR_ARRAY_LEN(ways); i++) {
    hr__cgroup_read_at(root, ways[i], ways[i] ? 0 : 4242, &c);
    CHECK_MSG(c.state == HR_PROBE_OK, "way %zu: %s", i, c.message);
    CHECK_EQ_INT(c.version, 2);
    CHECK_STR(c.path, "/kubepods.slice/pod1.slice/ctr.scope");
    CHECK_EQ_U64(c.own_limit_bytes, HR_UNLIMITED);
    CHECK_EQ_U64(c.limit_bytes, 2 * GIB); /* pod1.slice binds */
    CHECK_EQ_U64(c.current_bytes, 1536 * MIB);
    CHECK_EQ_U64(c.usage_bytes, 1280 * MIB);
    CHECK_EQ_U64(c.oom_kill_events, 1);
  }
  hr__cgroup_read_at(root, NULL, 0, &c); /* its own: the service, no limit */
  CHECK_STR(c.path, "/system.slice/headroom.service");
  CHECK_EQ_U64(c.limit_bytes, HR_UNLIMITED);
  hr__cgroup_read_at(root, "", 0, &c); /* "" is the option's default: its own */
  CHECK_STR(c.path, "/system.slice/headroom.service");

  /* A v1 memory mount is found by its directory, its parents' limits bind. */
  hr__cgroup_read_at(fixture("v1"), "/sys/fs/cgroup/memory/kubepods/pod1/ctr", 0, &c);
  CHECK_MSG(c.state == HR_PROBE_OK, "v1: %s", c.message);
  CHECK_EQ_INT(c.version, 1);
  CHECK_STR(c.path, "/kubepods/pod1/ctr");
  CHECK_EQ_U64(c.limit_bytes, 4 * GIB);
  /* Its place in the unified hierarchy is unknown: no pressure is guessed
   * (the reader's own is in another cgroup). */
  CHECK(!c.has_pressure);

  /* What must not read as an unlimited cgroup. */
  hr__cgroup_read_at(root, NULL, 4243, &c); /* no such process */
  CHECK_EQ_INT(c.state, HR_PROBE_ABSENT);
  CHECK_CONTAINS(c.message, "proc/4243/cgroup");
  CHECK_EQ_U64(c.limit_bytes, HR_UNKNOWN);
  hr__cgroup_read_at(root, "/sys/fs/cgroup/kubepods.slice/gone", 0, &c);
  CHECK_EQ_INT(c.state, HR_PROBE_ABSENT);
  CHECK_CONTAINS(c.message, "no such directory");
  CHECK_EQ_U64(c.limit_bytes, HR_UNKNOWN);
  const char *bad[] = {"/sys/fs/cgroup/../../etc", "/sys/fs/cgroup/kubepods.slice/..",
                       "kubepods.slice", "/sys/fs/cgroup/./x"};
  for (size_t i = 0; i < HR_ARRAY_LEN(bad); i++) {
    hr__cgroup_read_at(root, bad[i], 0, &c);
    CHECK_EQ_INT(c.state, HR_PROBE_ERROR);
    CHECK_CONTAINS(c.message, "without '..'");
  }
  hr__cgroup_read_at(root, "/kubepods.slice", 4242, &c);
  CHECK_EQ_INT(c.state, HR_PROBE_ERROR);
  CHECK_CONTAINS(c.message, "both set");
  char huge[3000];
  memset(huge, 'a', sizeof huge - 1), huge[0] = '/', huge[sizeof huge - 1] = '\0';
  hr__cgroup_read_at(root, huge, 0, &c);
  CHECK(c.state != HR_PROBE_OK);
}

/* The snapshot reads the cgroup its options name, as status and watch pass
 * --cgroup-pid and --cgroup: the pod's process, the pod's directory, else
 * the reader's own; an environment variable alone changes nothing. */
static void test_cgroup_option(void) {
  setenv("HEADROOM_CGROUP_PID", "4242", 1);
  hr_options_process_reload();
  hr_snapshot_t *s = NULL;
  hr_probe_options_t o = {
      .root = fixture("v2_host"), .what = HR_PROBE_HOST | HR_PROBE_CGROUP, .cgroup_pid = 4242};
  CHECK_OK(hr_snapshot_take(&o, &s));
  CHECK_STR(s->cgroup.path, "/kubepods.slice/pod1.slice/ctr.scope");
  CHECK_EQ_U64(s->cgroup.limit_bytes, 2 * GIB);
  hr_snapshot_free(s);
  o.cgroup_pid = 0, o.cgroup = "/kubepods.slice/pod1.slice/ctr.scope";
  CHECK_OK(hr_snapshot_take(&o, &s));
  CHECK_EQ_U64(s->cgroup.limit_bytes, 2 * GIB);
  hr_snapshot_free(s);
  o.cgroup_pid = 4242; /* both: the cgroup's error state, the snapshot still taken */
  CHECK_OK(hr_snapshot_take(&o, &s));
  CHECK(s->cgroup.state == HR_PROBE_ERROR);
  hr_snapshot_free(s);
  CHECK_OK(take("v2_host", HR_PROBE_HOST | HR_PROBE_CGROUP, &s, NULL, 0));
  CHECK_STR(s->cgroup.path, "/system.slice/headroom.service");
  hr_snapshot_free(s);
  unsetenv("HEADROOM_CGROUP_PID");
  hr_options_process_reload();
}

static void test_fixture_no_cgroup(void) {
  hr_snapshot_t *s = NULL;
  CHECK_OK(take("no_cgroup", 0, &s, NULL, 0));
  CHECK_EQ_INT(s->cgroup.state, HR_PROBE_ABSENT);
  CHECK_EQ_INT(s->cgroup.version, 0);
  CHECK_CONTAINS(s->cgroup.message, "no memory cgroup mounted");
  CHECK_EQ_U64(s->cgroup.limit_bytes, HR_UNKNOWN);
  CHECK_EQ_U64(s->host.total_bytes, 16 * GIB); /* the rest of the snapshot is there */
  hr_snapshot_free(s);
}

static void test_fixture_procs_odd(void) {
  hr_snapshot_t *s = NULL;
  CHECK_OK(take("procs_odd", 0, &s, NULL, 0));
  /* 70 (truncated stat) and 71 (empty stat) are left out and counted; 95
   * (no files: exited) is left out silently. */
  static const int want[] = {1, 2, 3, 50, 60, 80, 81, 90, 100};
  CHECK_EQ_U64(s->n_procs, HR_ARRAY_LEN(want));
  for (size_t i = 0; i < HR_ARRAY_LEN(want); i++) CHECK_EQ_INT(s->procs[i].pid, want[i]);
  CHECK_EQ_U64(s->n_procs_unreadable, 2);
  const hr_proc_t *p = find_proc(s, 1);
  CHECK(!p->kernel_thread);
  CHECK_EQ_U64(p->pss_bytes, 6000 * KIB);
  for (int pid = 2; pid <= 3; pid++) {
    p = find_proc(s, pid);
    CHECK_MSG(p->kernel_thread, "pid %d is a kernel thread", pid);
    CHECK_EQ_U64(p->rss_bytes, 0);
    CHECK_EQ_U64(p->rss_anon_bytes, 0);
    CHECK_STR(p->cmdline, "");
  }
  CHECK_STR(find_proc(s, 3)->name, "kworker/0:0-events");
  p = find_proc(s, 50);
  CHECK_EQ_INT(p->state, 'Z');
  CHECK(!p->kernel_thread);
  CHECK_EQ_U64(p->rss_bytes, 0);
  CHECK_EQ_U64(p->pss_bytes, HR_UNKNOWN);
  p = find_proc(s, 60); /* no smaps_rollup */
  CHECK_EQ_U64(p->rss_bytes, 2 * MIB);
  CHECK_EQ_U64(p->pss_bytes, HR_UNKNOWN);
  p = find_proc(s, 80); /* status cut before VmRSS */
  CHECK_EQ_U64(p->rss_bytes, HR_UNKNOWN);
  CHECK_EQ_U64(p->rss_anon_bytes, HR_UNKNOWN);
  CHECK_EQ_U64(p->pss_bytes, 100 * KIB);
  CHECK_STR(p->cmdline, "cut-status");
  p = find_proc(s, 81); /* garbage numbers */
  CHECK_EQ_U64(p->rss_bytes, HR_UNKNOWN);
  CHECK_EQ_U64(p->rss_anon_bytes, HR_UNKNOWN);
  CHECK_EQ_U64(p->rss_file_bytes, 2 * MIB);
  CHECK_EQ_U64(p->pss_bytes, HR_UNKNOWN); /* "Pss: -5 kB" */
  p = find_proc(s, 90);                   /* huge: 16 TiB is exact, 2^54 kB overflows */
  CHECK_EQ_U64(p->rss_bytes, 16ull << 40);
  CHECK_EQ_U64(p->pss_bytes, 16ull << 40);
  CHECK_EQ_U64(p->rss_anon_bytes, HR_UNKNOWN);
  CHECK_STR(find_proc(s, 100)->name, "a) (b");
  /* The root cgroup has no memory.current: usage unknown, not zero. */
  CHECK_EQ_INT(s->cgroup.version, 2);
  CHECK_EQ_U64(s->cgroup.limit_bytes, HR_UNLIMITED);
  CHECK_EQ_U64(s->cgroup.usage_bytes, HR_UNKNOWN);
  hr_snapshot_free(s);
}

static void test_fixture_meminfo(void) {
  hr_snapshot_t *s = (hr_snapshot_t *)1;
  char err[512];
  CHECK_RC(take("meminfo_empty", 0, &s, err, sizeof err), HR_EPARSE);
  CHECK(s == NULL);
  CHECK_CONTAINS(err, "meminfo_empty/proc/meminfo: empty file");
  CHECK_RC(take("meminfo_garbage", 0, &s, err, sizeof err), HR_EPARSE);
  CHECK_CONTAINS(err, "/proc/meminfo: MemTotal is not a number");
  CHECK_RC(take("meminfo_huge", 0, &s, err, sizeof err), HR_ERANGE);
  CHECK_CONTAINS(err, "MemTotal does not fit in 64 bits");
  CHECK_RC(take("no_such_fixture", 0, &s, err, sizeof err), HR_ENOENT);
  CHECK_CONTAINS(err, "no_such_fixture/proc/meminfo: not found");
  /* Truncated after MemFree: a snapshot, with what came after unknown. */
  CHECK_OK(take("meminfo_truncated", 0, &s, err, sizeof err));
  CHECK_EQ_U64(s->host.total_bytes, 16 * GIB);
  CHECK_EQ_U64(s->host.free_bytes, 8 * GIB);
  CHECK_EQ_U64(s->host.available_bytes, HR_UNKNOWN);
  CHECK_EQ_U64(s->host.swap_total_bytes, HR_UNKNOWN);
  CHECK_EQ_INT(s->cgroup.state, HR_PROBE_ABSENT);
  hr_snapshot_free(s);
}

static void test_fixture_cgroup_broken(void) {
  hr_snapshot_t *s = NULL;
  CHECK_OK(take("cgroup_garbage", 0, &s, NULL, 0));
  CHECK_EQ_INT(s->cgroup.state, HR_PROBE_ERROR);
  CHECK_CONTAINS(s->cgroup.message, "job/memory.max: malformed input");
  CHECK_EQ_U64(s->cgroup.own_limit_bytes, HR_UNKNOWN);
  CHECK_EQ_U64(s->cgroup.limit_bytes, HR_UNKNOWN);
  CHECK_EQ_U64(s->cgroup.current_bytes, HR_UNKNOWN); /* over 64 bits */
  CHECK_EQ_U64(s->cgroup.anon_bytes, HR_UNKNOWN);    /* "anon 12x" */
  CHECK_EQ_U64(s->cgroup.file_bytes, 4096);
  CHECK(!s->cgroup.has_pressure);
  hr_snapshot_free(s);
  CHECK_OK(take("cgroup_empty", 0, &s, NULL, 0));
  CHECK_EQ_INT(s->cgroup.state, HR_PROBE_ERROR);
  CHECK_CONTAINS(s->cgroup.message, "memory.max");
  CHECK_EQ_U64(s->cgroup.limit_bytes, HR_UNKNOWN);
  CHECK_EQ_U64(s->cgroup.current_bytes, HR_UNKNOWN);
  CHECK_EQ_U64(s->cgroup.anon_bytes, HR_UNKNOWN);
  CHECK_EQ_U64(s->cgroup.oom_kill_events, HR_UNKNOWN);
  CHECK(!s->cgroup.has_pressure);
  hr_snapshot_free(s);
}

/* ---- NVML through the stand-in libraries -------------------------------- */

/* Takes a snapshot of the v2_limited fixture (pids 100, 200, 300) through
 * fake NVML library `api`, with the environment the fake reads. */
static int take_gpu(const char *api, const char *gpus, const char *procs, hr_snapshot_t **s) {
  char lib[1024];
  setenv("FAKE_NVML_GPUS", gpus, 1);
  setenv("FAKE_NVML_PROCS", procs, 1);
  hr_probe_options_t o = {.root = fixture("v2_limited"),
                          .nvml_path = fake_nvml(lib, sizeof lib, api)};
  return hr_snapshot_take(&o, s);
}

static void clear_fake_env(void) {
  unsetenv("FAKE_NVML_GPUS");
  unsetenv("FAKE_NVML_PROCS");
  unsetenv("FAKE_NVML_GROW");
  unsetenv("FAKE_NVML_LOST");
  unsetenv("FAKE_NVML_INIT");
}

/* The process list every API version must give back exactly: on GPU 0 the
 * visible pid 100 (2 GiB) and the host pid 4242, not in this /proc (512 MiB);
 * on GPU 1 pid 200 (1 GiB) and pid 100 with an unknown size. */
#define FAKE_PROCS "0:100:2048,0:4242:512,1:200:1024,1:100:99999"

static void check_gpu_procs(const hr_snapshot_t *s) {
  CHECK_EQ_U64(s->n_gpu_procs, 4);
  const hr_gpu_proc_t *g = s->gpu_procs;
  CHECK(g[0].gpu == 0 && g[0].pid == 100 && g[0].local_pid == 100);
  CHECK_EQ_U64(g[0].used_bytes, 2 * GIB);
  CHECK(g[1].gpu == 0 && g[1].pid == 4242 && g[1].local_pid == 0);
  CHECK_EQ_U64(g[1].used_bytes, 512 * MIB);
  CHECK(g[2].gpu == 1 && g[2].pid == 200 && g[2].local_pid == 200);
  CHECK_EQ_U64(g[2].used_bytes, 1 * GIB);
  CHECK(g[3].gpu == 1 && g[3].pid == 100 && g[3].local_pid == 100);
  CHECK_EQ_U64(g[3].used_bytes, HR_UNKNOWN);
  CHECK_EQ_U64(find_proc(s, 100)->gpu_bytes, 2 * GIB);
  CHECK_EQ_U64(find_proc(s, 200)->gpu_bytes, 1 * GIB);
  CHECK_EQ_U64(find_proc(s, 300)->gpu_bytes, 0);
  /* The host pid maps to the process, whose NSpid gives its container pid. */
  CHECK_EQ_INT(find_proc(s, g[0].local_pid)->nspid, 7);
}

static void test_nvml_v3(void) {
  hr_snapshot_t *s = NULL;
  CHECK_OK(take_gpu("3", "2", FAKE_PROCS, &s));
  CHECK_MSG(s->gpu_state == HR_PROBE_OK, "%s", s->gpu_message);
  CHECK_STR(s->driver_version, "999.3.fake");
  CHECK_EQ_U64(s->n_gpus, 2);
  const hr_gpu_t *g = &s->gpus[0];
  CHECK_EQ_INT(g->state, HR_PROBE_OK);
  CHECK_STR(g->name, "Fake GPU 0");
  CHECK_STR(g->uuid, "GPU-fake-0000");
  CHECK_STR(g->pci_bus_id, "00000000:10:00.0");
  CHECK_EQ_U64(g->total_bytes, 24 * GIB);
  CHECK_EQ_U64(g->reserved_bytes, 300 * MIB); /* only nvmlDeviceGetMemoryInfo_v2 has it */
  CHECK_EQ_U64(g->used_bytes, GIB / 2 + 2 * GIB + 512 * MIB);
  CHECK_EQ_U64(g->free_bytes, 24 * GIB - 300 * MIB - g->used_bytes);
  CHECK_EQ_INT(g->util_gpu, 40);
  CHECK_EQ_INT(g->util_mem, 20);
  CHECK_EQ_INT(g->temperature_c, 50);
  CHECK_EQ_INT(g->power_mw, 100000);
  CHECK_STR(s->gpus[1].pci_bus_id, "00000000:11:00.0");
  CHECK_EQ_INT(s->gpus[1].power_mw, 101000);
  check_gpu_procs(s);
  hr_snapshot_free(s);
  clear_fake_env();
}

static void test_nvml_v3_wide_records(void) {
  hr_snapshot_t *s = NULL;
  /* The driver writes 32-byte v3 records; read at 24 bytes the second record
   * would be garbage (pid 0). */
  CHECK_OK(take_gpu("33", "2", FAKE_PROCS, &s));
  CHECK_MSG(s->gpu_state == HR_PROBE_OK, "%s", s->gpu_message);
  check_gpu_procs(s);
  hr_snapshot_free(s);
  clear_fake_env();
}

static void test_nvml_v2_and_v1_fallbacks(void) {
  hr_snapshot_t *s = NULL;
  CHECK_OK(take_gpu("2", "2", FAKE_PROCS, &s)); /* no _v3: _v2 */
  CHECK_MSG(s->gpu_state == HR_PROBE_OK, "%s", s->gpu_message);
  check_gpu_procs(s);
  CHECK_EQ_U64(s->gpus[0].reserved_bytes, 300 * MIB);
  hr_snapshot_free(s);
  s = NULL;
  /* Neither _v3 nor _v2, nor nvmlDeviceGetMemoryInfo_v2, nor power. */
  CHECK_OK(take_gpu("1", "2", FAKE_PROCS, &s));
  CHECK_MSG(s->gpu_state == HR_PROBE_OK, "%s", s->gpu_message);
  check_gpu_procs(s);
  CHECK_EQ_U64(s->gpus[0].reserved_bytes, HR_UNKNOWN);
  CHECK_EQ_U64(s->gpus[0].used_bytes, GIB / 2 + 2 * GIB + 512 * MIB + 300 * MIB);
  CHECK_EQ_U64(s->gpus[0].total_bytes, 24 * GIB);
  CHECK_EQ_INT(s->gpus[0].power_mw, -1);
  CHECK_EQ_INT(s->gpus[0].temperature_c, 50);
  hr_snapshot_free(s);
  clear_fake_env();
}

static void test_nvml_without_procs(void) {
  /* GPUs alone: the GPU processes are listed, none can be matched. */
  char lib[1024];
  setenv("FAKE_NVML_PROCS", FAKE_PROCS, 1);
  setenv("FAKE_NVML_GPUS", "2", 1);
  hr_probe_options_t o = {.root = fixture("v2_limited"),
                          .what = HR_PROBE_GPUS,
                          .nvml_path = fake_nvml(lib, sizeof lib, "3")};
  hr_snapshot_t *s = NULL;
  CHECK_OK(hr_snapshot_take(&o, &s));
  CHECK_EQ_INT(s->host_state, HR_PROBE_ABSENT);
  CHECK_EQ_U64(s->host.total_bytes, HR_UNKNOWN);
  CHECK_EQ_U64(s->n_procs, 0);
  CHECK_EQ_U64(s->n_gpu_procs, 4);
  CHECK_EQ_INT(s->gpu_procs[0].local_pid, 0);
  hr_snapshot_free(s);
  clear_fake_env();
}

static void test_nvml_missing_symbol(void) {
  hr_snapshot_t *s = NULL;
  CHECK_OK(take_gpu("0", "1", "", &s));
  CHECK_EQ_INT(s->gpu_state, HR_PROBE_ERROR);
  CHECK_CONTAINS(s->gpu_message, "symbol nvmlDeviceGetCount_v2 missing");
  CHECK_EQ_U64(s->n_gpus, 0);
  CHECK_EQ_U64(s->n_procs, 3); /* the rest of the snapshot is there */
  hr_snapshot_free(s);
  clear_fake_env();
}

static void test_nvml_list_grows(void) {
  char lib[1024];
  void *dl = dlopen(fake_nvml(lib, sizeof lib, "3"), RTLD_NOW | RTLD_LOCAL);
  CHECK_MSG(dl, "dlopen %s: %s", lib, dlerror());
  void (*reset)(void);
  void *sym = dlsym(dl, "fake_nvml_reset");
  memcpy(&reset, &sym, sizeof sym);
  CHECK(reset);
  reset();
  /* Three processes start between the size query and the fetches. */
  setenv("FAKE_NVML_GROW", "3", 1);
  hr_snapshot_t *s = NULL;
  int rc = take_gpu("3", "1", "0:100:2048", &s);
  dlclose(dl);
  CHECK_OK(rc);
  CHECK_EQ_U64(s->n_gpu_procs, 4);
  CHECK_EQ_INT(s->gpu_procs[0].pid, 100);
  for (int i = 1; i < 4; i++) {
    CHECK_EQ_INT(s->gpu_procs[i].pid, 90000 + i - 1);
    CHECK_EQ_U64(s->gpu_procs[i].used_bytes, MIB);
    CHECK_EQ_INT(s->gpu_procs[i].local_pid, 0);
  }
  hr_snapshot_free(s);
  clear_fake_env();
}

static void test_nvml_lost_gpu_and_init(void) {
  hr_snapshot_t *s = NULL;
  setenv("FAKE_NVML_LOST", "1", 1);
  CHECK_OK(take_gpu("3", "2", FAKE_PROCS, &s));
  CHECK_EQ_INT(s->gpu_state, HR_PROBE_OK);
  CHECK_EQ_U64(s->n_gpus, 2); /* the lost GPU is reported, not dropped */
  CHECK_EQ_INT(s->gpus[0].state, HR_PROBE_OK);
  CHECK_EQ_INT(s->gpus[1].state, HR_PROBE_ERROR);
  CHECK_CONTAINS(s->gpus[1].message, "GPU is lost");
  CHECK_EQ_U64(s->gpus[1].total_bytes, HR_UNKNOWN);
  hr_snapshot_free(s);
  clear_fake_env();

  /* nvmlInit failing: the same file under names not yet initialised
   * ("<dir>/../helpers/", "<dir>/../helpers/./"), so init runs again. */
  char lib[1024], path[1100];
  fake_nvml(lib, sizeof lib, "2");
  char *slash = strrchr(lib, '/');
  *slash = '\0';
  struct {
    const char *code;
    hr_probe_state_t state;
    const char *msg;
  } cases[] = {{"9", HR_PROBE_ABSENT, "Driver Not Loaded"}, {"4", HR_PROBE_DENIED, "init failed"}};
  for (size_t i = 0; i < HR_ARRAY_LEN(cases); i++) {
    snprintf(path, sizeof path, "%s/../%s/libfake-nvml-v2.so", lib, i ? "helpers/." : "helpers");
    setenv("FAKE_NVML_INIT", cases[i].code, 1);
    hr_probe_options_t o = {.root = fixture("v2_limited"), .nvml_path = path};
    CHECK_OK(hr_snapshot_take(&o, &s));
    CHECK_EQ_INT(s->gpu_state, cases[i].state);
    CHECK_CONTAINS(s->gpu_message, cases[i].msg);
    CHECK_EQ_U64(s->n_gpus, 0);
    hr_snapshot_free(s);
  }
  clear_fake_env();
}

static void test_nvml_absent_here(void) {
  void *dl = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
  if (!dl) dl = dlopen("libnvidia-ml.so", RTLD_NOW | RTLD_LOCAL);
  if (dl) {
    dlclose(dl);
    SKIP("an NVIDIA driver is installed here; the absent path is tested with a missing path");
  }
  hr_snapshot_t *s = NULL;
  hr_probe_options_t o = {.what = HR_PROBE_GPUS};
  CHECK_OK(hr_snapshot_take(&o, &s));
  CHECK_EQ_INT(s->gpu_state, HR_PROBE_ABSENT);
  CHECK_STR(s->gpu_message, "nvml: library not found");
  CHECK_EQ_U64(s->n_gpus, 0);
  hr_snapshot_free(s);
}

/* ---- JSON and its schema -------------------------------------------------- */

/* A small JSON Schema checker for the keywords docs/status-schema.json uses:
 * type, enum, minimum, required, properties, additionalProperties: false,
 * items, anyOf and local $ref. Writes the first violation into err. */
static bool schema_check(const cJSON *root, const cJSON *sch, const cJSON *v, const char *at,
                         char *err, size_t errlen);

/* Writes a violation into err; returns false for tail calls. */
static bool violation(char *err, size_t errlen, const char *fmt, ...) HR_PRINTF(3, 4);
static bool violation(char *err, size_t errlen, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
  return false;
}

static bool type_is(const cJSON *v, const char *t) {
  if (strcmp(t, "object") == 0) return cJSON_IsObject(v);
  if (strcmp(t, "array") == 0) return cJSON_IsArray(v);
  if (strcmp(t, "string") == 0) return cJSON_IsString(v);
  if (strcmp(t, "boolean") == 0) return cJSON_IsBool(v);
  if (strcmp(t, "null") == 0) return cJSON_IsNull(v);
  if (strcmp(t, "number") == 0) return cJSON_IsNumber(v);
  if (strcmp(t, "integer") == 0)
    return cJSON_IsNumber(v) && v->valuedouble == floor(v->valuedouble);
  return false;
}

static bool schema_check(const cJSON *root, const cJSON *sch, const cJSON *v, const char *at,
                         char *err, size_t errlen) {
  char sub[512];
  const cJSON *k;
  if ((k = cJSON_GetObjectItemCaseSensitive(sch, "$ref"))) {
    const char *ref = k->valuestring; /* "#/$defs/name" */
    const cJSON *defs = cJSON_GetObjectItemCaseSensitive(root, "$defs");
    const cJSON *target = defs ? cJSON_GetObjectItemCaseSensitive(defs, ref + 8) : NULL;
    if (!target) return violation(err, errlen, "%s: bad $ref %s", at, ref);
    if (!schema_check(root, target, v, at, err, errlen)) return false;
  }
  if ((k = cJSON_GetObjectItemCaseSensitive(sch, "anyOf"))) {
    const cJSON *alt;
    bool any = false;
    cJSON_ArrayForEach(alt, k) any = any || schema_check(root, alt, v, at, err, errlen);
    if (!any) return violation(err, errlen, "%s: matches no anyOf branch", at);
  }
  if ((k = cJSON_GetObjectItemCaseSensitive(sch, "type"))) {
    bool ok = false;
    if (cJSON_IsString(k))
      ok = type_is(v, k->valuestring);
    else {
      const cJSON *t;
      cJSON_ArrayForEach(t, k) ok = ok || type_is(v, t->valuestring);
    }
    if (!ok) return violation(err, errlen, "%s: wrong type", at);
  }
  if ((k = cJSON_GetObjectItemCaseSensitive(sch, "enum"))) {
    const cJSON *e;
    bool ok = false;
    cJSON_ArrayForEach(e, k) ok = ok || cJSON_Compare(e, v, true);
    if (!ok) return violation(err, errlen, "%s: not in enum", at);
  }
  if ((k = cJSON_GetObjectItemCaseSensitive(sch, "minimum")) && cJSON_IsNumber(v) &&
      v->valuedouble < k->valuedouble)
    return violation(err, errlen, "%s: below minimum", at);
  if (cJSON_IsObject(v)) {
    const cJSON *props = cJSON_GetObjectItemCaseSensitive(sch, "properties"), *r;
    cJSON_ArrayForEach(r, cJSON_GetObjectItemCaseSensitive(sch, "required")) {
      if (!cJSON_GetObjectItemCaseSensitive(v, r->valuestring))
        return violation(err, errlen, "%s: required key '%s' missing", at, r->valuestring);
    }
    const cJSON *add = cJSON_GetObjectItemCaseSensitive(sch, "additionalProperties");
    const cJSON *m;
    cJSON_ArrayForEach(m, v) {
      const cJSON *ps = props ? cJSON_GetObjectItemCaseSensitive(props, m->string) : NULL;
      snprintf(sub, sizeof sub, "%s.%s", at, m->string);
      if (!ps) {
        if (cJSON_IsFalse(add)) return violation(err, errlen, "%s: undocumented key", sub);
        continue;
      }
      if (!schema_check(root, ps, m, sub, err, errlen)) return false;
    }
  }
  if (cJSON_IsArray(v) && (k = cJSON_GetObjectItemCaseSensitive(sch, "items"))) {
    const cJSON *e;
    int i = 0;
    cJSON_ArrayForEach(e, v) {
      snprintf(sub, sizeof sub, "%s[%d]", at, i++);
      if (!schema_check(root, k, e, sub, err, errlen)) return false;
    }
  }
  return true;
}

static cJSON *load_schema(void) {
  char path[1024], *buf = malloc(1 << 20);
  if (!buf) return NULL;
  hr_test_src(path, sizeof path, "docs/status-schema.json");
  ssize_t n = hr__read_file(path, buf, 1 << 20);
  cJSON *j = n > 0 ? cJSON_Parse(buf) : NULL;
  free(buf);
  return j;
}

/* Validates JSON text against the schema; returns an error text or NULL. */
static const char *validate(const char *text, char *err, size_t errlen) {
  cJSON *schema = load_schema(), *doc = cJSON_Parse(text);
  const char *res = NULL;
  if (!schema)
    res = "cannot read docs/status-schema.json";
  else if (!doc)
    res = "output is not JSON";
  else if (!schema_check(schema, schema, doc, "$", err, errlen))
    res = err;
  cJSON_Delete(schema);
  cJSON_Delete(doc);
  return res;
}

static void test_schema_checker_can_fail(void) {
  char err[256];
  /* The checker itself must reject what the schema forbids. */
  CHECK(validate("{\"schema_version\":1}", err, sizeof err) != NULL);
  CHECK_CONTAINS(err, "required key 'time' missing");
  hr_snapshot_t *s = NULL;
  char *json = NULL;
  CHECK_OK(take("v2_limited", 0, &s, NULL, 0));
  CHECK_OK(hr_snapshot_json(s, &json));
  hr_snapshot_free(s);
  CHECK(validate(json, err, sizeof err) == NULL);
  char *bad = malloc(strlen(json) + 64);
  /* An undocumented key, and a size that is a string. */
  char *brace = strrchr(json, '}');
  sprintf(bad, "%.*s,\"extra_bytes\":1}", (int)(brace - json), json);
  const char *r1 = validate(bad, err, sizeof err);
  bool undocumented = r1 && strstr(err, "extra_bytes: undocumented key");
  char *t = strstr(json, "\"total_bytes\":");
  sprintf(bad, "%.*s\"total_bytes\":\"12\"%s", (int)(t - json), json, strchr(t, ','));
  const char *r2 = validate(bad, err, sizeof err);
  free(bad);
  free(json);
  CHECK(undocumented);
  CHECK(r2 != NULL);
  CHECK_CONTAINS(err, "host.total_bytes: wrong type");
}

static void test_json_fixtures(void) {
  char err[512];
  const char *names[] = {"v2_limited",        "v2_max",         "v1",
                         "v2_nested",         "no_cgroup",      "procs_odd",
                         "meminfo_truncated", "cgroup_garbage", "cgroup_empty"};
  for (size_t i = 0; i < HR_ARRAY_LEN(names); i++) {
    hr_snapshot_t *s = NULL;
    char *json = NULL;
    CHECK_OK(take(names[i], 0, &s, NULL, 0));
    CHECK_OK(hr_snapshot_json(s, &json));
    const char *bad = validate(json, err, sizeof err);
    CHECK_MSG(!bad, "%s: %s", names[i], bad);
    cJSON *j = cJSON_Parse(json);
    const cJSON *cg = cJSON_GetObjectItem(j, "cgroup");
    const cJSON *lim = cJSON_GetObjectItem(cg, "limit_bytes");
    /* Sizes are exact integers, unknowns null, "no limit" the string "max". */
    if (strcmp(names[i], "v2_limited") == 0) {
      CHECK(cJSON_IsNumber(lim) && lim->valuedouble == 8.0 * GIB);
      CHECK_CONTAINS(json, "\"rss_bytes\":4294967296,");
      CHECK_CONTAINS(json, "\"container_id\":\"" HEX64 "\"");
    }
    if (strcmp(names[i], "v2_max") == 0)
      CHECK(cJSON_IsString(lim) && !strcmp(lim->valuestring, "max"));
    if (strcmp(names[i], "no_cgroup") == 0) CHECK(cJSON_IsNull(lim));
    if (strcmp(names[i], "procs_odd") == 0) {
      CHECK_CONTAINS(json, "\"processes_unreadable\":2}");
      CHECK_CONTAINS(json, "\"rss_bytes\":17592186044416,"); /* 16 TiB, exact */
      CHECK_CONTAINS(json, "\"name\":\"a) (b\"");
    }
    cJSON_Delete(j);
    free(json);
    hr_snapshot_free(s);
  }
  /* With GPUs. */
  hr_snapshot_t *s = NULL;
  char *json = NULL;
  CHECK_OK(take_gpu("33", "2", FAKE_PROCS, &s));
  CHECK_OK(hr_snapshot_json(s, &json));
  const char *bad = validate(json, err, sizeof err);
  CHECK_MSG(!bad, "gpu: %s", bad);
  CHECK_CONTAINS(json, "\"pid\":4242,\"local_pid\":0,\"used_bytes\":536870912");
  CHECK_CONTAINS(json, "\"reserved_bytes\":314572800,");
  free(json);
  hr_snapshot_free(s);
  clear_fake_env();
}

static void test_json_strings(void) {
  /* Names and command lines are bytes: quotes, control characters, UTF-8
   * and bytes that are not UTF-8 must all come out as valid JSON. */
  hr_proc_t p = {.pid = 7, .nspid = 7, .state = 'S', .pss_bytes = HR_UNKNOWN};
  hr__strlcpy(p.name, "a\"b\\c\n\x01", sizeof p.name);
  hr__strlcpy(p.cmdline, "caf\xc3\xa9 \xff\xfe x \xe2\x82", sizeof p.cmdline);
  hr_snapshot_t s = {.n_procs = 1, .procs = &p, .cgroup = {.state = HR_PROBE_ABSENT}};
  memset(&s.host, 0xff, sizeof s.host);
  s.cgroup.limit_bytes = s.cgroup.own_limit_bytes = s.cgroup.high_bytes = HR_UNKNOWN;
  char *json = NULL, err[512];
  CHECK_OK(hr_snapshot_json(&s, &json));
  const char *bad = validate(json, err, sizeof err);
  cJSON *j = cJSON_Parse(json);
  free(json);
  CHECK_MSG(!bad, "%s", bad);
  CHECK(j);
  const cJSON *pj = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "processes"), 0);
  char name[64], cmd[128];
  hr__strlcpy(name, cJSON_GetObjectItem(pj, "name")->valuestring, sizeof name);
  hr__strlcpy(cmd, cJSON_GetObjectItem(pj, "cmdline")->valuestring, sizeof cmd);
  bool null_rss = cJSON_IsNull(cJSON_GetObjectItem(pj, "pss_bytes"));
  cJSON_Delete(j);
  CHECK_STR(name, "a\"b\\c\n\x01");
  CHECK_STR(cmd, "caf\xc3\xa9 \xef\xbf\xbd\xef\xbf\xbd x \xef\xbf\xbd\xef\xbf\xbd");
  CHECK(null_rss);
  CHECK_RC(hr_snapshot_json(NULL, &json), HR_EINVAL);
}

/* ---- the live machine and the CLI ------------------------------------------ */

static const hr_proc_t *self_in(const hr_snapshot_t *s) {
  return find_proc(s, (int)getpid());
}

static void test_live_rss_anon_grows(void) {
  hr_probe_options_t o = {.what = HR_PROBE_PROCS};
  hr_snapshot_t *a = NULL, *b = NULL;
  CHECK_OK(hr_snapshot_take(&o, &a));
  const hr_proc_t *pa = self_in(a);
  CHECK_MSG(pa, "pid %d not in the snapshot", (int)getpid());
  CHECK(pa->rss_anon_bytes != HR_UNKNOWN);
  size_t len = 256 * MIB;
  unsigned char *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  CHECK(m != MAP_FAILED);
  for (size_t i = 0; i < len; i += 4096) m[i] = (unsigned char)i | 1;
  int rc = hr_snapshot_take(&o, &b);
  const hr_proc_t *pb = rc == 0 ? self_in(b) : NULL;
  uint64_t before = pa->rss_anon_bytes, after = pb ? pb->rss_anon_bytes : 0;
  munmap(m, len);
  hr_snapshot_free(a);
  hr_snapshot_free(b);
  CHECK_OK(rc);
  CHECK(pb != NULL);
  CHECK_MSG(after >= before + 250 * MIB, "RssAnon %" PRIu64 " -> %" PRIu64 " MiB",
            (uint64_t)(before / MIB), (uint64_t)(after / MIB));
}

/* Runs the CLI with `args` (through sh), capturing stdout (and stderr when
 * `merge`) into a malloc'd string; returns the exit status or -1. */
static int run_cli(const char *args, bool merge, char **out) {
  const char *cli = getenv("HR_CLI");
  char cmd[4096];
  *out = NULL;
  if (!cli) return -1;
  snprintf(cmd, sizeof cmd, "'%s' %s%s", cli, args, merge ? " 2>&1" : " 2>/dev/null");
  FILE *f = popen(cmd, "r");
  if (!f) return -1;
  size_t cap = 1 << 16, len = 0;
  char *buf = malloc(cap);
  size_t r;
  while (buf && (r = fread(buf + len, 1, cap - len - 1, f)) > 0) {
    len += r;
    if (len + 1 == cap) {
      char *nb = realloc(buf, cap *= 2);
      if (!nb) break;
      buf = nb;
    }
  }
  int st = pclose(f);
  if (buf) buf[len] = '\0';
  *out = buf;
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static uint64_t meminfo_kb(const char *key) {
  char buf[8192], want[64];
  buf[0] = '\n'; /* so that the first line starts with a newline too */
  if (hr__read_file("/proc/meminfo", buf + 1, sizeof buf - 1) <= 0) return HR_UNKNOWN;
  snprintf(want, sizeof want, "\n%s:", key);
  const char *p = strstr(buf, want);
  return p ? strtoull(p + strlen(want), NULL, 10) : HR_UNKNOWN;
}

static void test_cli_live_json(void) {
  if (!getenv("HR_CLI")) SKIP("HR_CLI is not set (run under CTest)");
  char *out = NULL, err[512];
  int st = run_cli("status --json --top 100000", false, &out);
  CHECK_EQ_INT(st, 0);
  const char *bad = validate(out, err, sizeof err);
  CHECK_MSG(!bad, "live status --json: %s", bad);
  cJSON *j = cJSON_Parse(out);
  free(out);
  CHECK(j);
  const cJSON *host = cJSON_GetObjectItem(j, "host");
  double total = cJSON_GetObjectItem(host, "total_bytes")->valuedouble;
  double swap = cJSON_GetObjectItem(host, "swap_total_bytes")->valuedouble;
  const cJSON *gpu = cJSON_GetObjectItem(j, "gpu");
  char gstate[32], gmsg[160];
  hr__strlcpy(gstate, cJSON_GetObjectItem(gpu, "state")->valuestring, sizeof gstate);
  hr__strlcpy(gmsg, cJSON_GetObjectItem(gpu, "message")->valuestring, sizeof gmsg);
  bool self = false;
  const cJSON *p;
  cJSON_ArrayForEach(p, cJSON_GetObjectItem(j, "processes")) self =
      self || (int)cJSON_GetObjectItem(p, "pid")->valuedouble == (int)getpid();
  cJSON_Delete(j);
  CHECK_EQ_U64((uint64_t)total, meminfo_kb("MemTotal") * KIB);
  CHECK_EQ_U64((uint64_t)swap, meminfo_kb("SwapTotal") * KIB);
  CHECK_MSG(self, "this test's pid is not among the processes");
  void *dl = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
  if (dl) {
    dlclose(dl);
    SKIP("an NVIDIA driver is installed: the not-found case does not apply");
  }
  CHECK_STR(gstate, "absent");
  CHECK_STR(gmsg, "nvml: library not found");
}

static void test_cli_table_and_errors(void) {
  if (!getenv("HR_CLI")) SKIP("HR_CLI is not set (run under CTest)");
  char *out = NULL, args[2048];
  /* The table: no colour through a pipe, the GPU line says not found. */
  snprintf(args, sizeof args, "--root '%s' status", fixture("v2_limited"));
  CHECK_EQ_INT(run_cli(args, false, &out), 0);
  CHECK_CONTAINS(out, "gpu      nvml: library not found");
  CHECK_CONTAINS(out, "usage 2.50 GiB of 8.00 GiB (31%)");
  CHECK_CONTAINS(out, "python3 -m comfy --listen");
  CHECK(!strchr(out, '\033'));
  free(out);
  snprintf(args, sizeof args, "--color always --root '%s' status", fixture("v2_limited"));
  CHECK_EQ_INT(run_cli(args, false, &out), 0);
  CHECK(strchr(out, '\033') != NULL);
  free(out);
  /* --top and --filter choose the rows, in the table and in the JSON. */
  snprintf(args, sizeof args, "--root '%s' status --json --top 1", fixture("v2_limited"));
  CHECK_EQ_INT(run_cli(args, false, &out), 0);
  CHECK_CONTAINS(out, "\"processes\":[{\"pid\":100,");
  CHECK_CONTAINS(out, "\"pss_bytes\":null,"); /* PSS only when asked for */
  CHECK(!strstr(out, "\"pid\":200,"));
  free(out);
  snprintf(args, sizeof args, "--root '%s' status --json --top 1 --pss", fixture("v2_limited"));
  CHECK_EQ_INT(run_cli(args, false, &out), 0);
  CHECK_CONTAINS(out, "\"pss_bytes\":4198400000,");
  free(out);
  snprintf(args, sizeof args, "--root '%s' status --pss", fixture("procs_odd"));
  CHECK_EQ_INT(run_cli(args, false, &out), 0);
  CHECK_CONTAINS(out, "  5.86 MiB "); /* pid 1's PSS column */
  /* Kernel threads hold nothing: not among the processes shown
   * (hr_snapshot_select), as in watch, history and the exporter. */
  CHECK(!strstr(out, "kworker"));
  CHECK_CONTAINS(out, "(2 processes left out: malformed /proc files)");
  free(out);
  snprintf(args, sizeof args, "--root '%s' status --filter OLLAMA,nothing", fixture("v2_limited"));
  CHECK_EQ_INT(run_cli(args, false, &out), 0);
  CHECK_CONTAINS(out, "ollama serve");
  CHECK(!strstr(out, "comfy"));
  free(out);
  /* GPU holders come first, whatever their RSS. */
  char lib[1024], env[1400];
  snprintf(env, sizeof env,
           "FAKE_NVML_GPUS=1 FAKE_NVML_PROCS=0:300:100 HEADROOM_NVML_LIBRARY='%s' '%s' --root '%s' "
           "status --json --top 1",
           fake_nvml(lib, sizeof lib, "3"), getenv("HR_CLI"), fixture("v2_limited"));
  FILE *f = popen(env, "r");
  char buf[65536] = "";
  size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
  buf[n] = '\0';
  CHECK(f && pclose(f) == 0);
  CHECK_CONTAINS(buf, "\"processes\":[{\"pid\":300,");
  CHECK_CONTAINS(buf, "{\"pid\":100,");
  CHECK_CONTAINS(buf, "\"name\":\"Fake GPU 0\"");
  /* A snapshot that cannot be taken: exit 1 and a message naming the file. */
  snprintf(args, sizeof args, "--root '%s' status", fixture("meminfo_garbage"));
  CHECK_EQ_INT(run_cli(args, true, &out), 1);
  CHECK_CONTAINS(out, "meminfo_garbage/proc/meminfo: MemTotal is not a number");
  free(out);
  CHECK_EQ_INT(run_cli("status --top 0", true, &out), 2);
  CHECK_CONTAINS(out, "option top: '0' is out of range");
  free(out);
  CHECK_EQ_INT(run_cli("status stray", true, &out), 2);
  free(out);
}

static void test_proc_matches(void) {
  hr_proc_t p;
  memset(&p, 0, sizeof p);
  snprintf(p.name, sizeof p.name, "python3");
  snprintf(p.cmdline, sizeof p.cmdline, "python3 ComfyUI/main.py --listen");
  CHECK(hr_proc_matches(&p, ""));
  CHECK(hr_proc_matches(&p, "comfy"));
  CHECK(hr_proc_matches(&p, "java,PYTHON"));
  CHECK(hr_proc_matches(&p, ",,main.py,"));
  CHECK(!hr_proc_matches(&p, "java,node"));
  CHECK(!hr_proc_matches(&p, ","));
}

/* The one selection: GPU holders first (most GPU memory first, whatever
 * their RSS), then the top N by RSS among the others; kernel threads,
 * processes holding nothing, the filtered-out and, under a filter, the
 * caller itself are left out. */
static void test_select(void) {
  hr_proc_t procs[7];
  memset(procs, 0, sizeof procs);
  static const uint64_t rss[] = {50, 400, 300, 0, 200, 100, 900};
  static const uint64_t gpu[] = {0, 0, 0, 0, 70, 80, 0};
  for (int i = 0; i < 7; i++) {
    procs[i].pid = 10 + i;
    procs[i].rss_bytes = rss[i] * MIB;
    procs[i].gpu_bytes = gpu[i] * MIB;
    snprintf(procs[i].name, sizeof procs[i].name, "p%d", i);
  }
  procs[3].rss_bytes = HR_UNKNOWN; /* holds nothing known */
  procs[6].kernel_thread = true;
  hr_snapshot_t s = {.procs = procs, .n_procs = 7};
  CHECK_OK(hr_snapshot_select(&s, 2, NULL));
  CHECK_EQ_U64(s.n_selected, 4);
  CHECK_EQ_U64(s.n_selected_gpu, 2);
  static const size_t want[] = {5, 4, 1, 2};
  for (size_t i = 0; i < 4; i++) CHECK_EQ_U64(s.selected[i], want[i]);
  CHECK_OK(hr_snapshot_select(&s, 0, ""));
  CHECK_EQ_U64(s.n_selected, 2); /* GPU holders are always shown */
  CHECK_OK(hr_snapshot_select(&s, 100, ""));
  CHECK_EQ_U64(s.n_selected, 5);
  CHECK_OK(hr_snapshot_select(&s, 1, "p0,p4"));
  CHECK_EQ_U64(s.n_selected, 2);
  CHECK_EQ_U64(s.n_selected_gpu, 1);
  CHECK_EQ_U64(s.selected[0], 4);
  CHECK_EQ_U64(s.selected[1], 0);
  /* Under a filter the caller never matches, as with pgrep. */
  procs[1].pid = (int)getpid();
  snprintf(procs[1].cmdline, sizeof procs[1].cmdline, "headroom status --filter p0");
  CHECK_OK(hr_snapshot_select(&s, 5, "p0"));
  CHECK_EQ_U64(s.n_selected, 1);
  CHECK_EQ_U64(s.selected[0], 0);
  CHECK_OK(hr_snapshot_select(&s, 5, ""));
  CHECK_EQ_U64(s.n_selected, 5); /* no filter: the caller is a process like any other */
  hr_snapshot_t empty = {0};
  CHECK_OK(hr_snapshot_select(&empty, 5, NULL));
  CHECK(empty.selected != NULL); /* selected, and none of them */
  CHECK_EQ_U64(empty.n_selected, 0);
  free(empty.selected);
  hr_snapshot_t broken = {.n_procs = 3};
  CHECK_RC(hr_snapshot_select(&broken, 5, NULL), HR_EINVAL);
  CHECK_RC(hr_snapshot_select(NULL, 5, NULL), HR_EINVAL);
  /* Lookup by pid in the pid-sorted list: every one found, a gap not. */
  procs[1].pid = 11;
  for (int i = 0; i < 7; i++) CHECK(hr_snapshot_proc(&s, 10 + i) == &procs[i]);
  CHECK(hr_snapshot_proc(&s, 9) == NULL && hr_snapshot_proc(&s, 17) == NULL);
  CHECK(hr_snapshot_proc(&empty, 10) == NULL && hr_snapshot_proc(NULL, 10) == NULL);
  free(s.selected);
}

/* The probe selects as it takes the snapshot, with its options' filter
 * and top, and the selected JSON holds those processes alone, in order. */
static void test_probe_selects(void) {
  hr_probe_options_t o = {
      .root = fixture("v2_limited"), .nvml_path = "/nonexistent/libnvidia-ml.so.1", .top = 1};
  hr_snapshot_t *s = NULL;
  CHECK_OK(hr_snapshot_take(&o, &s));
  CHECK(s->selected != NULL);
  CHECK_EQ_U64(s->n_selected, 1);
  CHECK_EQ_U64(s->n_selected_gpu, 0);
  CHECK_EQ_INT(s->procs[s->selected[0]].pid, 100);
  char *j = NULL;
  CHECK_OK(hr_snapshot_json_selected(s, &j));
  CHECK_CONTAINS(j, "\"processes\":[{\"pid\":100,");
  CHECK(!strstr(j, "\"pid\":200,") && !strstr(j, "\"pid\":300,"));
  free(j);
  hr_snapshot_free(s);
  o.filter = "OLLAMA", o.top = 5;
  CHECK_OK(hr_snapshot_take(&o, &s));
  CHECK(s->n_selected >= 1);
  for (size_t i = 0; i < s->n_selected; i++)
    CHECK(hr_proc_matches(&s->procs[s->selected[i]], "ollama"));
  hr_snapshot_t hand = *s;
  hand.selected = NULL;
  CHECK_RC(hr_snapshot_json_selected(&hand, &j), HR_EINVAL);
  hr_snapshot_free(s);
}

/* Container ids and pod UIDs from the cgroup paths each runtime and the
 * kubelet's two cgroup drivers write, and paths that only look like them. */
static void test_cgroup_ids(void) {
  static const char id[] = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
  static const char uid[] = "6f1b2a3c-0d4e-4f5a-8b6c-7d8e9f0a1b2c";
  static const struct {
    const char *text;
    bool container, pod;
  } cases[] = {
      {"0::/docker/%s\n", true, false},
      {"0::/system.slice/docker-%s.scope\n", true, false},
      {"0::/machine.slice/libpod-%s.scope\n", true, false},
      {"0::/system.slice/crio-%s.scope\n", true, false},
      /* cgroupfs driver, v1 hierarchies: the pod, then the bare id. */
      {"12:memory:/kubepods/burstable/pod6f1b2a3c-0d4e-4f5a-8b6c-7d8e9f0a1b2c/%s\n"
       "11:cpu:/kubepods/burstable/pod6f1b2a3c-0d4e-4f5a-8b6c-7d8e9f0a1b2c/%s\n",
       true, true},
      /* systemd driver: '-' in the UID escaped as '_'. */
      {"0::/kubepods.slice/kubepods-besteffort.slice/"
       "kubepods-besteffort-pod6f1b2a3c_0d4e_4f5a_8b6c_7d8e9f0a1b2c.slice/"
       "cri-containerd-%s.scope\n",
       true, true},
      {"0::/kubepods.slice/kubepods-pod6f1b2a3c_0d4e_4f5a_8b6c_7d8e9f0a1b2c.slice/crio-%s.scope\n",
       true, true},
      {"0::/user.slice/user-1000.slice/session-2.scope\n", false, false},
      {"0::/\n", false, false},
      {"", false, false},
      /* 63 and 65 hex digits, a pod UID one short: none of them. */
      {"0::/docker/%.63s\n", false, false},
      {"0::/docker/%sf\n", false, false},
      {"0::/kubepods/pod6f1b2a3c-0d4e-4f5a-8b6c-7d8e9f0a1b2/x\n", false, false},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char text[1024], c[80], p[40];
    snprintf(text, sizeof text, cases[i].text, id, id);
    hr__proc_parse_cgroup(text, c, sizeof c, p, sizeof p);
    CHECK_MSG(strcmp(c, cases[i].container ? id : "") == 0, "case %zu: container '%s'", i, c);
    CHECK_MSG(strcmp(p, cases[i].pod ? uid : "") == 0, "case %zu: pod '%s'", i, p);
  }
}

int main(void) {
  HR_RUN(test_cgroup_ids);
  HR_RUN(test_proc_matches);
  HR_RUN(test_select);
  HR_RUN(test_probe_selects);
  HR_RUN(test_kv_scan);
  HR_RUN(test_meminfo_parse);
  HR_RUN(test_stat_parse);
  HR_RUN(test_fixture_v2_limited);
  HR_RUN(test_read_pss);
  HR_RUN(test_fixture_v2_max);
  HR_RUN(test_fixture_v1);
  HR_RUN(test_fixture_v2_nested);
  HR_RUN(test_fixture_no_cgroup);
  HR_RUN(test_fixture_procs_odd);
  HR_RUN(test_fixture_meminfo);
  HR_RUN(test_fixture_cgroup_broken);
  HR_RUN(test_nvml_v3);
  HR_RUN(test_nvml_v3_wide_records);
  HR_RUN(test_nvml_v2_and_v1_fallbacks);
  HR_RUN(test_nvml_without_procs);
  HR_RUN(test_nvml_missing_symbol);
  HR_RUN(test_nvml_list_grows);
  HR_RUN(test_nvml_lost_gpu_and_init);
  HR_RUN(test_nvml_absent_here);
  HR_RUN(test_schema_checker_can_fail);
  HR_RUN(test_json_fixtures);
  HR_RUN(test_json_strings);
  HR_RUN(test_live_rss_anon_grows);
  HR_RUN(test_cli_live_json);
  HR_RUN(test_cli_table_and_errors);
  HR_RUN(test_cgroup_named);
  HR_RUN(test_cgroup_option);
  return hr_test_finish("probe");
}
