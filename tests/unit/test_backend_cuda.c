/* The cuda backend: our own declarations of the driver API checked against
 * the real cuda.h where one is installed (at compile time: a mismatch fails
 * the build of this test), the "driver not found" path, the backend on the
 * tests' fake driver (tests/fake_cuda: contexts given back, capacity,
 * devices that cannot map, failed calls named, the device walk of
 * test_pool_cuda run whole), the embedded PTX assembled by ptxas where
 * the toolkit is installed, and, where a driver and a device exist, one
 * pool allocation through it. */
#if defined(__has_include)
#if __has_include("/usr/local/cuda/include/cuda.h")
#include "/usr/local/cuda/include/cuda.h"
#define HR_HAVE_CUDA_H 1
#define HR_CU_PROP_T   CUmemAllocationProp
#define HR_CU_ACCESS_T CUmemAccessDesc
#endif
#endif

#include "hr_test.h"
#include "backend/backend.h"
#include "backend/cuda_api.h"

#include "pattern_ptx.h"

#include <dlfcn.h>
#include <stddef.h>
#include <sys/stat.h>
#include <unistd.h>

#ifdef HR_HAVE_CUDA_H
/* Each of our function types is the real prototype's type. */
#define SAME_TYPE_(sym, type, params)                                                              \
  _Static_assert(__builtin_types_compatible_p(type, __typeof__(&sym)),                             \
                 "our declaration of " #sym " differs from cuda.h");
HR_CUDA_FUNCS(SAME_TYPE_)
#undef SAME_TYPE_
/* Our copies of the structs have the real layout. */
#define SAME_FIELD_(ours, theirs, field)                                                           \
  _Static_assert(offsetof(ours, field) == offsetof(theirs, field) &&                               \
                     sizeof(((ours *)0)->field) == sizeof(((theirs *)0)->field),                   \
                 #theirs "." #field " differs");
_Static_assert(sizeof(hr_cu_mem_prop) == sizeof(CUmemAllocationProp), "prop size");
SAME_FIELD_(hr_cu_mem_prop, CUmemAllocationProp, type)
SAME_FIELD_(hr_cu_mem_prop, CUmemAllocationProp, requestedHandleTypes)
SAME_FIELD_(hr_cu_mem_prop, CUmemAllocationProp, location)
SAME_FIELD_(hr_cu_mem_prop, CUmemAllocationProp, win32HandleMetaData)
SAME_FIELD_(hr_cu_mem_prop, CUmemAllocationProp, allocFlags)
_Static_assert(sizeof(hr_cu_mem_access) == sizeof(CUmemAccessDesc), "access size");
SAME_FIELD_(hr_cu_mem_access, CUmemAccessDesc, location)
SAME_FIELD_(hr_cu_mem_access, CUmemAccessDesc, flags)
SAME_FIELD_(hr_cu_mem_location, CUmemLocation, type)
SAME_FIELD_(hr_cu_mem_location, CUmemLocation, id)
_Static_assert(sizeof(hr_cu_result) == sizeof(CUresult), "CUresult size");
_Static_assert(HR_CUDA_ERROR_OUT_OF_MEMORY == CUDA_ERROR_OUT_OF_MEMORY, "codes");
_Static_assert(HR_CUDA_ERROR_NOT_READY == CUDA_ERROR_NOT_READY, "codes");
_Static_assert(HR_CU_EVENT_DISABLE_TIMING == CU_EVENT_DISABLE_TIMING, "flags");
_Static_assert(HR_CU_MEM_ALLOCATION_TYPE_PINNED == CU_MEM_ALLOCATION_TYPE_PINNED, "enums");
_Static_assert(HR_CU_MEM_LOCATION_TYPE_DEVICE == CU_MEM_LOCATION_TYPE_DEVICE, "enums");
_Static_assert(HR_CU_MEM_ACCESS_FLAGS_PROT_READWRITE == CU_MEM_ACCESS_FLAGS_PROT_READWRITE,
               "enums");
_Static_assert(HR_CU_MEM_ALLOC_GRANULARITY_MINIMUM == CU_MEM_ALLOC_GRANULARITY_MINIMUM, "enums");
#endif

static char logbuf[1024], logall[8192];
static void log_capture(hr_log_level_t lvl, const char *msg, void *arg) {
  hr__strlcpy(logbuf, msg, sizeof logbuf);
  size_t n = strlen(logall);
  snprintf(logall + n, sizeof logall - n, "%s\n", msg);
}

#define MiB ((uint64_t)1 << 20)

/* ---- the embedded PTX ------------------------------------------------------ */

#define PTXAS "/usr/local/cuda/bin/ptxas"

/* Runs ptxas on `text` for `arch`; returns its exit status (-1: not run). */
static int ptxas(const char *text, const char *arch) {
  char dir[] = "/tmp/hr-ptx-XXXXXX", src[64], bin[64], cmd[256];
  if (!mkdtemp(dir)) return -1;
  snprintf(src, sizeof src, "%s/k.ptx", dir);
  snprintf(bin, sizeof bin, "%s/k.cubin", dir);
  FILE *f = fopen(src, "w");
  if (!f) return -1;
  fputs(text, f);
  fclose(f);
  snprintf(cmd, sizeof cmd, PTXAS " -arch=%s -o %s %s 2>&1", arch, bin, src);
  int rc = system(cmd);
  struct stat st;
  if (rc == 0 && (stat(bin, &st) || st.st_size == 0)) rc = 99; /* no code came out */
  unlink(bin);
  unlink(src);
  rmdir(dir);
  return rc == -1 ? -1 : WEXITSTATUS(rc);
}

/* The kernels test_pool_cuda loads are valid PTX for the H100 (sm_90) and
 * for the target they name (sm_80); a broken copy is refused, so the check
 * can fail. */
static void test_ptx_assembles(void) {
  if (access(PTXAS, X_OK)) SKIP(PTXAS " is not installed");
  char *ptx = hr_pattern_ptx();
  CHECK(ptx);
  CHECK_CONTAINS(ptx, ".entry hr_fill(");
  CHECK_CONTAINS(ptx, ".entry hr_verify(");
  CHECK_CONTAINS(ptx, ".version 7.8\n.target sm_80\n");
  int a = ptxas(ptx, "sm_90"), b = ptxas(ptx, "sm_80");
  char *broken = strstr(ptx, "atom.global.add.u64");
  if (broken) memcpy(broken, "atom.global.mul", 15);
  int c = ptxas(ptx, "sm_90");
  free(ptx);
  CHECK_EQ_INT(a, 0);
  CHECK_EQ_INT(b, 0);
  CHECK(broken != NULL);
  CHECK_MSG(c != 0 && c != -1, "ptxas took broken PTX (status %d)", c);
}

/* ---- the fake driver --------------------------------------------------------- */

static char fake_path[1024];
static void *fake;
static int fake_expected; /* breaches the tests commit on purpose */
static int (*fake_violations)(void), (*fake_live)(int);
static const char *(*fake_last)(void);
static hr_cu_result (*fake_get_current)(hr_cu_context *);
static hr_cu_result (*fake_set_current)(hr_cu_context);

/* Loads the fake driver and points the backend at it; false when absent. */
static bool fake_open(void) {
  const char *bin = getenv("HR_BINARY_DIR");
  if (!bin) return false;
  snprintf(fake_path, sizeof fake_path, "%s/helpers/libfake-cuda.so", bin);
  if (!fake) {
    setenv("FAKE_CUDA_TOTAL", "4294967296", 1);
    fake = dlopen(fake_path, RTLD_NOW | RTLD_LOCAL);
    if (!fake) return false;
    void *s[5] = {dlsym(fake, "fake_cuda_violations"), dlsym(fake, "fake_cuda_live"),
                  dlsym(fake, "fake_cuda_last_violation"), dlsym(fake, "cuCtxGetCurrent"),
                  dlsym(fake, "cuCtxSetCurrent")};
    for (int i = 0; i < 5; i++)
      if (!s[i]) return false;
    memcpy(&fake_violations, &s[0], sizeof s[0]);
    memcpy(&fake_live, &s[1], sizeof s[1]);
    memcpy(&fake_last, &s[2], sizeof s[2]);
    memcpy(&fake_get_current, &s[3], sizeof s[3]);
    memcpy(&fake_set_current, &s[4], sizeof s[4]);
  }
  setenv("HEADROOM_LIBCUDA", fake_path, 1);
  hr_options_process_reload();
  return true;
}

#define FAKE_CLEAN()                                                                               \
  do {                                                                                             \
    CHECK_MSG(fake_violations() == fake_expected, "fake driver: %s", fake_last());                 \
    CHECK_EQ_INT(fake_live(0), 0);                                                                 \
  } while (0)

/* A thread that had its own context current finds it current again after
 * every kind of backend call, and every call ran in the primary context
 * (the fake refuses memory calls made in another). */
static void test_fake_context_given_back(void) {
  if (!fake_open()) SKIP("fake driver not built (HR_BINARY_DIR/helpers/libfake-cuda.so)");
  hr_backend_t *b = NULL;
  hr_pool_t *p = NULL;
  hr_cu_context mine = (hr_cu_context)&mine, cur = NULL;
  CHECK_OK(fake_set_current(mine));
  CHECK_OK(hr_backend_create("cuda", 0, 0, &b));
  CHECK_EQ_U64(b->granularity, 2 * MiB);
  const char *confs[] = {"pytorch", "default", "pytorch,expandable_segments:True"};
  for (int i = 0; i < 3; i++) {
    hr_pool_config_t c;
    void *x = NULL, *y = NULL;
    CHECK_OK(hr_pool_config_parse(confs[i], &c, NULL, 0));
    CHECK_OK(hr_pool_create(&c, b, 0, &p));
    CHECK_OK(hr_pool_alloc(p, 3 << 20, NULL, &x));
    CHECK_OK(hr_pool_alloc(p, 100 << 20, NULL, &y));
    CHECK_OK(hr_pool_record_stream(p, x, (void *)0)); /* own stream: a no-op */
    CHECK_OK(hr_pool_free(p, x, NULL));
    CHECK_OK(hr_pool_free(p, y, NULL));
    CHECK_OK(hr_pool_release_cached(p));
    hr_pool_destroy(p);
    CHECK_OK(fake_get_current(&cur));
    CHECK_MSG(cur == mine, "%s: the thread's context was not given back", confs[i]);
  }
  hr_backend_destroy(b);
  CHECK_OK(fake_set_current(NULL));
  FAKE_CLEAN();
}

/* A capacity is a hard limit on what the backend holds, and mem_info
 * reports it as the total; without one, the device's own numbers. */
static void test_fake_capacity(void) {
  if (!fake_open()) SKIP("fake driver not built");
  hr_backend_t *b = NULL;
  uint64_t a1 = 0, a2 = 0, h = 0, f, t;
  CHECK_OK(hr_backend_create("cuda", 0, 64 * MiB, &b));
  CHECK_OK(hr_backend_mem_info(b, &f, &t));
  CHECK_EQ_U64(t, 64 * MiB);
  CHECK_EQ_U64(f, 64 * MiB);
  CHECK_OK(b->ops->seg_alloc(b, 40 * MiB, NULL, &a1));
  CHECK_RC(b->ops->seg_alloc(b, 30 * MiB, NULL, &a2), HR_ENOMEM);
  CHECK_OK(hr_backend_mem_info(b, &f, &t));
  CHECK_EQ_U64(f, 24 * MiB);
  uint64_t va = 0;
  CHECK_OK(b->ops->va_reserve(b, 64 * MiB, &va));
  CHECK_EQ_U64(va % (2 * MiB), 0);
  CHECK_RC(b->ops->map(b, va, 32 * MiB, &h), HR_ENOMEM);
  CHECK_OK(b->ops->map(b, va, 24 * MiB, &h));
  CHECK_OK(hr_backend_mem_info(b, &f, &t));
  CHECK_EQ_U64(f, 0);
  CHECK_OK(b->ops->unmap(b, va, 24 * MiB, h));
  CHECK_OK(b->ops->va_release(b, va, 64 * MiB));
  CHECK_OK(b->ops->seg_free(b, a1, 40 * MiB));
  CHECK_OK(hr_backend_mem_info(b, &f, &t));
  CHECK_EQ_U64(f, 64 * MiB);
  hr_backend_destroy(b);
  CHECK_OK(hr_backend_create("cuda", 0, 0, &b));
  CHECK_OK(hr_backend_mem_info(b, &f, &t));
  CHECK_EQ_U64(t, 4096 * MiB);
  CHECK_EQ_U64(b->capacity, 4096 * MiB);
  hr_backend_destroy(b);
  FAKE_CLEAN();
}

/* A failed driver call is logged by name with its CUresult: out of memory
 * at debug level only, as the pool handles it. A device that cannot map
 * gets no granularity, and an expandable configuration plain segments. */
static void test_fake_errors_and_no_vmm(void) {
  if (!fake_open()) SKIP("fake driver not built");
  hr_backend_t *b = NULL;
  hr_pool_t *p = NULL;
  uint64_t a = 0;
  logall[0] = '\0';
  hr_set_log(log_capture, NULL, HR_LOG_DEBUG);
  CHECK_OK(hr_backend_create("cuda", 0, 0, &b));
  CHECK_RC(b->ops->seg_alloc(b, 8192 * MiB, NULL, &a), HR_ENOMEM);
  CHECK_CONTAINS(logall, "cuda: cuMemAlloc_v2(&p, size) failed: CUresult 2");
  CHECK_RC(b->ops->seg_free(b, 12345, 512), HR_EDEVICE);
  fake_expected++;
  CHECK_CONTAINS(logall, "cuMemFree_v2(addr) failed: CUresult 1");
  hr_backend_destroy(b);
  setenv("FAKE_CUDA_NO_VMM", "1", 1);
  CHECK_OK(hr_backend_create("cuda", 0, 0, &b));
  unsetenv("FAKE_CUDA_NO_VMM");
  hr_set_log(NULL, NULL, HR_LOG_WARN);
  CHECK_EQ_U64(b->granularity, 0);
  CHECK_CONTAINS(logall, "cannot map memory");
  hr_pool_config_t c;
  void *x = NULL;
  CHECK_OK(hr_pool_config_parse("default", &c, NULL, 0));
  CHECK_OK(hr_pool_create(&c, b, 0, &p));
  CHECK_OK(hr_pool_alloc(p, 5 << 20, NULL, &x));
  hr_pool_stats_t st = {.size = sizeof st};
  CHECK_OK(hr_pool_stats(p, &st));
  CHECK_EQ_U64(st.reserved_bytes.current, 20 * MiB); /* a plain 20 MiB segment */
  CHECK_OK(hr_pool_free(p, x, NULL));
  hr_pool_destroy(p);
  hr_backend_destroy(b);
  /* No device: the backend says it cannot open device 0. */
  setenv("FAKE_CUDA_NO_DEVICE", "1", 1);
  logbuf[0] = '\0';
  hr_set_log(log_capture, NULL, HR_LOG_ERROR);
  CHECK_RC(hr_backend_create("cuda", 0, 0, &b), HR_EDEVICE);
  hr_set_log(NULL, NULL, HR_LOG_WARN);
  unsetenv("FAKE_CUDA_NO_DEVICE");
  CHECK_CONTAINS(logbuf, "CUDA device 0 cannot be opened");
  FAKE_CLEAN();
}

/* test_pool_cuda, the device walk, run whole on the fake driver (few
 * operations): its kernels run on the host there, so this checks the
 * walk's own logic and accounting, not a device. */
static void test_fake_device_walk(void) {
  if (!fake_open()) SKIP("fake driver not built");
  char cmd[2048], out[8192];
  const char *bin = getenv("HR_BINARY_DIR");
  snprintf(cmd, sizeof cmd,
           "HEADROOM_LIBCUDA='%s' FAKE_CUDA_TOTAL=4294967296 HR_CUDA_OPS=%d '%s/test_pool_cuda' "
           "2>&1; echo \"exit=$?\"",
           fake_path,
#ifdef HR_SANITIZE_BUILD
           150,
#else
           400,
#endif
           bin);
  FILE *f = popen(cmd, "r");
  CHECK(f);
  size_t n = 0, k;
  char line[1024];
  int walks = 0;
  out[0] = '\0';
  while (fgets(line, sizeof line, f)) {
    walks += !strncmp(line, "cuda-walk ", 10);
    k = strlen(line);
    if (n + k < sizeof out) memcpy(out + n, line, k + 1), n += k;
  }
  pclose(f);
  if (!strstr(out, "exit=0")) fprintf(stderr, "%s", out);
  CHECK_CONTAINS(out, "pool_cuda: 5 passed, 0 failed, 0 skipped");
  CHECK_CONTAINS(out, "exit=0");
  CHECK_CONTAINS(out, "cuda-walk phase=device-oom");
  CHECK_EQ_INT(walks, 15); /* five configurations, three phases each */
}

static void test_declarations_match_cuda_h(void) {
#ifdef HR_HAVE_CUDA_H
  /* The checks ran when this file compiled; one at run time for the log. */
  CHECK(__builtin_types_compatible_p(hr_cu_mem_alloc_fn, __typeof__(&cuMemAlloc_v2)));
#else
  SKIP("/usr/local/cuda/include/cuda.h is not installed");
#endif
}

static void test_driver_not_found(void) {
  hr_backend_t *b = (hr_backend_t *)0x1;
  logbuf[0] = '\0';
  hr_set_log(log_capture, NULL, HR_LOG_ERROR);
  setenv("HEADROOM_LIBCUDA", "/nonexistent/libcuda.so.1", 1);
  hr_options_process_reload();
  CHECK_RC(hr_backend_create("cuda", 0, 0, &b), HR_ENODRIVER);
  unsetenv("HEADROOM_LIBCUDA");
  hr_options_process_reload();
  hr_set_log(NULL, NULL, HR_LOG_WARN);
  CHECK(b == NULL);
  CHECK_CONTAINS(logbuf, "CUDA driver not found");
  /* An unknown backend is refused by name. */
  CHECK_RC(hr_backend_create("opencl", 0, 0, &b), HR_EINVAL);
}

static void test_real_driver(void) {
  hr_backend_t *b = NULL;
  hr_pool_t *p = NULL;
  int rc = hr_backend_create("cuda", 0, 0, &b);
  if (rc == HR_ENODRIVER) SKIP("no CUDA driver on this machine (libcuda.so.1 not found)");
  if (rc == HR_EDEVICE) SKIP("CUDA driver present but device 0 cannot be opened");
  CHECK_OK(rc);
  uint64_t f, t;
  CHECK_OK(hr_backend_mem_info(b, &f, &t));
  CHECK(t > 0 && f <= t);
  const char *confs[] = {"pytorch", "default"};
  for (int i = 0; i < 2; i++) {
    hr_pool_config_t c;
    CHECK_OK(hr_pool_config_parse(confs[i], &c, NULL, 0));
    CHECK_OK(hr_pool_create(&c, b, 0, &p));
    void *x = NULL, *y = NULL;
    CHECK_OK(hr_pool_alloc(p, 3 << 20, NULL, &x));
    CHECK_OK(hr_pool_alloc(p, 100 << 20, NULL, &y));
    CHECK(x && y);
    CHECK_OK(hr_pool_record_stream(p, x, (void *)0)); /* own stream: a no-op */
    CHECK_OK(hr_pool_free(p, x, NULL));
    CHECK_OK(hr_pool_free(p, y, NULL));
    CHECK_OK(hr_pool_check(p));
    CHECK_OK(hr_pool_release_cached(p));
    hr_pool_destroy(p);
  }
  hr_backend_destroy(b);
}

int main(void) {
  HR_RUN(test_declarations_match_cuda_h);
  HR_RUN(test_driver_not_found);
  HR_RUN(test_ptx_assembles);
  HR_RUN(test_fake_context_given_back);
  HR_RUN(test_fake_capacity);
  HR_RUN(test_fake_errors_and_no_vmm);
  HR_RUN(test_fake_device_walk);
  unsetenv("HEADROOM_LIBCUDA");
  hr_options_process_reload();
  HR_RUN(test_real_driver);
  return hr_test_finish("backend_cuda");
}
