/* The cuda backend: our own declarations of the driver API checked against
 * the real cuda.h where one is installed (at compile time: a mismatch fails
 * the build of this test), the "driver not found" path, and, where a driver
 * and a device exist, one pool allocation through it. */
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

#include <stddef.h>

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

static char logbuf[1024];
static void log_capture(hr_log_level_t lvl, const char *msg, void *arg) {
  hr__strlcpy(logbuf, msg, sizeof logbuf);
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
  CHECK_RC(hr_backend_create("cuda", 0, 0, &b), HR_ENODRIVER);
  unsetenv("HEADROOM_LIBCUDA");
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
  HR_RUN(test_real_driver);
  return hr_test_finish("backend_cuda");
}
