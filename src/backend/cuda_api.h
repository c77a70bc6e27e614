/* Our own declarations of the CUDA driver API calls the cuda backend loads
 * with dlopen, so the build needs no CUDA toolkit. Enums are unsigned int
 * (the type GCC gives an enum without negative values) and handles keep the
 * driver's struct tags, so tests/unit/test_backend_cuda.c can check every
 * function type against the real cuda.h where it is installed. A test that
 * includes cuda.h first defines HR_CU_PROP_T and HR_CU_ACCESS_T to the real
 * structs; the layout of ours is checked there with offsetof. */
#ifndef HR_CUDA_API_H
#define HR_CUDA_API_H

#include <stddef.h>

typedef unsigned int hr_cu_result;
typedef int hr_cu_device;
typedef struct CUctx_st *hr_cu_context;
typedef struct CUstream_st *hr_cu_stream;
typedef struct CUevent_st *hr_cu_event;
typedef unsigned long long hr_cu_deviceptr;
typedef unsigned long long hr_cu_mem_handle;

#define HR_CUDA_SUCCESS                       0u
#define HR_CUDA_ERROR_OUT_OF_MEMORY           2u
#define HR_CUDA_ERROR_NOT_READY               600u
#define HR_CU_DEVICE_ATTRIBUTE_VMM_SUPPORTED  102u
#define HR_CU_EVENT_DISABLE_TIMING            0x2u
#define HR_CU_MEM_ALLOCATION_TYPE_PINNED      0x1u
#define HR_CU_MEM_LOCATION_TYPE_DEVICE        0x1u
#define HR_CU_MEM_ACCESS_FLAGS_PROT_READWRITE 0x3u
#define HR_CU_MEM_ALLOC_GRANULARITY_MINIMUM   0x0u

/* CUmemLocation, CUmemAllocationProp and CUmemAccessDesc, field for field. */
typedef struct hr_cu_mem_location {
  unsigned int type;
  int id;
} hr_cu_mem_location;

typedef struct hr_cu_mem_prop {
  unsigned int type;
  unsigned int requestedHandleTypes;
  hr_cu_mem_location location;
  void *win32HandleMetaData;
  struct {
    unsigned char compressionType;
    unsigned char gpuDirectRDMACapable;
    unsigned short usage;
    unsigned char reserved[4];
  } allocFlags;
} hr_cu_mem_prop;

typedef struct hr_cu_mem_access {
  hr_cu_mem_location location;
  unsigned int flags;
} hr_cu_mem_access;

#ifndef HR_CU_PROP_T
#define HR_CU_PROP_T hr_cu_mem_prop
#endif
#ifndef HR_CU_ACCESS_T
#define HR_CU_ACCESS_T hr_cu_mem_access
#endif

/* X(name in the driver, our pointer type's name, return, parameters) */
#define HR_CUDA_FUNCS(X)                                                                           \
  X(cuInit, hr_cu_init_fn, (unsigned int flags))                                                   \
  X(cuDeviceGet, hr_cu_device_get_fn, (hr_cu_device * dev, int ordinal))                           \
  X(cuDevicePrimaryCtxRetain, hr_cu_ctx_retain_fn, (hr_cu_context * ctx, hr_cu_device dev))        \
  X(cuDevicePrimaryCtxRelease_v2, hr_cu_ctx_release_fn, (hr_cu_device dev))                        \
  X(cuCtxGetCurrent, hr_cu_ctx_get_current_fn, (hr_cu_context * ctx))                              \
  X(cuCtxSetCurrent, hr_cu_ctx_set_current_fn, (hr_cu_context ctx))                                \
  X(cuDeviceGetAttribute, hr_cu_device_get_attribute_fn,                                           \
    (int *value, unsigned int attrib, hr_cu_device dev))                                           \
  X(cuCtxSynchronize, hr_cu_ctx_synchronize_fn, (void))                                            \
  X(cuMemAlloc_v2, hr_cu_mem_alloc_fn, (hr_cu_deviceptr * dptr, size_t size))                      \
  X(cuMemFree_v2, hr_cu_mem_free_fn, (hr_cu_deviceptr dptr))                                       \
  X(cuMemGetInfo_v2, hr_cu_mem_get_info_fn, (size_t * free_bytes, size_t * total_bytes))           \
  X(cuEventCreate, hr_cu_event_create_fn, (hr_cu_event * ev, unsigned int flags))                  \
  X(cuEventRecord, hr_cu_event_record_fn, (hr_cu_event ev, hr_cu_stream stream))                   \
  X(cuEventQuery, hr_cu_event_query_fn, (hr_cu_event ev))                                          \
  X(cuEventDestroy_v2, hr_cu_event_destroy_fn, (hr_cu_event ev))                                   \
  X(cuMemGetAllocationGranularity, hr_cu_mem_granularity_fn,                                       \
    (size_t * granularity, const HR_CU_PROP_T *prop, unsigned int option))                         \
  X(cuMemAddressReserve, hr_cu_mem_address_reserve_fn,                                             \
    (hr_cu_deviceptr * ptr, size_t size, size_t alignment, hr_cu_deviceptr addr,                   \
     unsigned long long flags))                                                                    \
  X(cuMemAddressFree, hr_cu_mem_address_free_fn, (hr_cu_deviceptr ptr, size_t size))               \
  X(cuMemCreate, hr_cu_mem_create_fn,                                                              \
    (hr_cu_mem_handle * handle, size_t size, const HR_CU_PROP_T *prop, unsigned long long flags))  \
  X(cuMemMap, hr_cu_mem_map_fn,                                                                    \
    (hr_cu_deviceptr ptr, size_t size, size_t offset, hr_cu_mem_handle handle,                     \
     unsigned long long flags))                                                                    \
  X(cuMemSetAccess, hr_cu_mem_set_access_fn,                                                       \
    (hr_cu_deviceptr ptr, size_t size, const HR_CU_ACCESS_T *desc, size_t count))                  \
  X(cuMemUnmap, hr_cu_mem_unmap_fn, (hr_cu_deviceptr ptr, size_t size))                            \
  X(cuMemRelease, hr_cu_mem_release_fn, (hr_cu_mem_handle handle))

#define HR_CUDA_TYPEDEF_(sym, type, params) typedef hr_cu_result(*type) params;
HR_CUDA_FUNCS(HR_CUDA_TYPEDEF_)
#undef HR_CUDA_TYPEDEF_

#endif /* HR_CUDA_API_H */
