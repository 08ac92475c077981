// Torquato lineal path along one axis on CUDA (DESIGN 1.4): one thread per line scans its runs into a
// block-shared histogram (global when the line is too long for shared memory), then one thread per
// (item, z) reads L(z) off the histogram. Exact integer counts; see lineal_path_runs.h.
#include <algorithm>

#include "cuda/lineal_path_kernel.h"
#include "lineal_path_runs.h"

namespace m3d {
namespace {

// Calls emit(c) once per maximal run of nonzero values among line[0], line[stride], ...,
// line[(n - 1) * stride]. Periodic: the scan starts at the first zero, so wrapping runs come whole.
template <typename Emit>
__device__ inline void for_each_run(const uint8_t* line, int64_t n, int64_t stride, bool periodic, Emit&& emit) {
  int64_t start = 0;
  if (periodic) {
    while (start < n && line[start * stride]) ++start;
    if (start == n) {
      emit(n);
      return;
    }
  }
  int64_t run = 0;
  for (int64_t k = 0, i = start; k < n; ++k, i = (i + 1 == n) ? 0 : i + 1) {
    if (line[i * stride]) {
      ++run;
    } else if (run) {
      emit(run);
      run = 0;
    }
  }
  if (run) emit(run);
}

constexpr int kThreads = 256;
constexpr int64_t kMaxSharedBins = 6144;  // 48 KiB of 64-bit counters

__global__ void run_histogram_kernel(LinealPathParams p, bool use_shared) {
  extern __shared__ unsigned long long shared_hist[];
  const int64_t lines = p.numel / p.n;
  for (int64_t b = blockIdx.y; b < p.batch; b += gridDim.y) {
    unsigned long long* hist = use_shared ? shared_hist : p.hist + b * (p.n + 1);
    if (use_shared) {
      for (int64_t c = threadIdx.x; c <= p.n; c += blockDim.x) shared_hist[c] = 0;
      __syncthreads();
    }
    for (int64_t l = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; l < lines;
         l += static_cast<int64_t>(gridDim.x) * blockDim.x) {
      const uint8_t* line = p.x + b * p.numel + (l / p.inner) * p.n * p.inner + l % p.inner;
      for_each_run(line, p.n, p.inner, p.periodic, [&](int64_t c) { atomicAdd(&hist[c], 1ULL); });
    }
    if (use_shared) {
      __syncthreads();
      for (int64_t c = threadIdx.x; c <= p.n; c += blockDim.x)
        if (shared_hist[c]) atomicAdd(&p.hist[b * (p.n + 1) + c], shared_hist[c]);
      __syncthreads();
    }
  }
}

__global__ void lineal_path_from_runs_kernel(LinealPathParams p) {
  const int64_t nz = p.z_max + 1, lines = p.numel / p.n;
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= p.batch * nz) return;
  const int64_t b = i / nz, z = i % nz;
  p.out[(b * p.ndim + p.axis) * nz + z] = static_cast<double>(lineal_path_segments(p.hist + b * (p.n + 1), p.n, z, p.periodic)) /
                                          static_cast<double>(lines * lineal_path_windows(p.n, z, p.periodic));
}

}  // namespace

cudaError_t launch_lineal_path_axis(const LinealPathParams& p, cudaStream_t stream) {
  const int64_t lines = p.numel / p.n;
  const bool use_shared = p.n + 1 <= kMaxSharedBins;
  const size_t shared_bytes = use_shared ? static_cast<size_t>(p.n + 1) * sizeof(unsigned long long) : 0;
  const dim3 grid(static_cast<unsigned>(std::min<int64_t>((lines + kThreads - 1) / kThreads, 1024)),
                  static_cast<unsigned>(std::min<int64_t>(p.batch, 65535)));
  run_histogram_kernel<<<grid, kThreads, shared_bytes, stream>>>(p, use_shared);
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  const int64_t outputs = p.batch * (p.z_max + 1);
  lineal_path_from_runs_kernel<<<static_cast<unsigned>((outputs + kThreads - 1) / kThreads), kThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace m3d
