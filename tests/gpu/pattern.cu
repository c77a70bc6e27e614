// Two kernels that prove a block of device memory usable over its whole
// size: hr_fill writes byte o of the block as byte (o % 8) of the 64-bit
// word (stamp ^ (o / 8)), and hr_verify counts the bytes that differ into
// bad[0] and keeps the lowest differing word index in bad[1]. Compiled once
// to PTX by gen-pattern-ptx.sh; the PTX is embedded in
// tests/unit/pattern_ptx.h, so the build needs no CUDA toolkit.
typedef unsigned long long u64;

extern "C" __global__ void hr_fill(u64 *p, u64 size, u64 stamp) {
  u64 n = size / 8, step = (u64)gridDim.x * blockDim.x;
  for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += step) p[i] = stamp ^ i;
  if (blockIdx.x == 0 && threadIdx.x < size % 8) {
    u64 w = stamp ^ n;
    ((unsigned char *)p)[n * 8 + threadIdx.x] = (unsigned char)(w >> (8 * threadIdx.x));
  }
}

extern "C" __global__ void hr_verify(const u64 *p, u64 size, u64 stamp, u64 *bad) {
  u64 n = size / 8, step = (u64)gridDim.x * blockDim.x, miss = 0, first = ~0ull;
  for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += step)
    if (p[i] != (stamp ^ i)) {
      miss++;
      if (i < first) first = i;
    }
  if (blockIdx.x == 0 && threadIdx.x < size % 8) {
    u64 w = stamp ^ n;
    if (((const unsigned char *)p)[n * 8 + threadIdx.x] != (unsigned char)(w >> (8 * threadIdx.x))) {
      miss++;
      if (n < first) first = n;
    }
  }
  if (miss) {
    atomicAdd(&bad[0], miss);
    atomicMin(&bad[1], first);
  }
}
