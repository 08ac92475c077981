// CUDA kernels of the fused multi-plane step (DESIGN.md 1.3). Torch-free: compiles with bare nvcc.
// Same arithmetic as the CPU kernels (philox.h: IEEE single-rounding ops), so CPU and CUDA give the same bits.
//   identity:          one thread per Philox group of 4 elements, 16-byte vector loads/stores when aligned.
//   rotation:          32 x 32 (d, w) shared-memory tiles (+1 padding): read along w, written along d.
//   in-place rotation: one block per 3-cycle of 8^3 cubes (a, b, c) -> (b, c, a), staged in shared memory.
// In the rotations, a block first draws the Philox groups of its rows into shared memory (one thread per
// group, not per element), then combines them with x and eps.
#include <cuda_fp16.h>

#include <algorithm>

#include "cuda/fused_step_kernel.h"
#include "philox.h"

namespace m3d {
namespace {

// eps element types: storage type T, 4-element vector load, conversion to float.
struct EpsF32 {
  using T = float;
  __device__ static float cvt(float v) { return v; }
  __device__ static void load4(const float* p, float e[4]) {
    const float4 v = *reinterpret_cast<const float4*>(p);
    e[0] = v.x, e[1] = v.y, e[2] = v.z, e[3] = v.w;
  }
};
template <bool kBF16>
struct Eps16 {
  using T = uint16_t;
  __device__ static float cvt(uint16_t v) {
    return kBF16 ? __uint_as_float(uint32_t(v) << 16) : __half2float(__ushort_as_half(v));
  }
  __device__ static void load4(const uint16_t* p, float e[4]) {
    const uint2 v = *reinterpret_cast<const uint2*>(p);
    e[0] = cvt(uint16_t(v.x)), e[1] = cvt(uint16_t(v.x >> 16));
    e[2] = cvt(uint16_t(v.y)), e[3] = cvt(uint16_t(v.y >> 16));
  }
};

__device__ __forceinline__ float step(const StepParams& p, float x, float eps, float z) {
  return affine(p.c_x, x, p.c_eps, eps, p.c_z, z);
}

// Draws z for row runs into shared memory: run r covers flat input indices [start(r), start(r) + len(r))
// and lands at dst(r) + j. gmax bounds the groups per run; items are (run, group) pairs over the block.
template <typename Start, typename Len, typename Dst>
__device__ void philox_runs(const StepParams& p, int runs, int gmax, Start start, Len len, Dst dst) {
  const int nthreads = blockDim.x * blockDim.y * blockDim.z;
  const int tid = (threadIdx.z * blockDim.y + threadIdx.y) * blockDim.x + threadIdx.x;
  for (int item = tid; item < runs * gmax; item += nthreads) {
    const int r = item / gmax;
    const int64_t i0 = start(r), n = len(r);
    if (n <= 0) continue;
    const int64_t g = (i0 >> 2) + item % gmax;
    if (4 * g >= i0 + n) continue;
    float z[4];
    philox_normal4(p.seed, p.offset, uint64_t(g), z);
#pragma unroll
    for (int lane = 0; lane < 4; ++lane) {
      const int64_t j = 4 * g + lane - i0;
      if (j >= 0 && j < n) dst(r)[j] = z[lane];
    }
  }
}

template <typename Eps>
__global__ void __launch_bounds__(256) step_identity_kernel(StepParams p, int64_t n, bool vec) {
  const auto* eps = static_cast<const typename Eps::T*>(p.eps);
  const int64_t groups = (n + 3) / 4;
  for (int64_t g = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; g < groups; g += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = 4 * g;
    float z[4];
    if (p.noise == nullptr) philox_normal4(p.seed, p.offset, uint64_t(g), z);
    if (vec && i + 4 <= n) {
      const float4 xv = *reinterpret_cast<const float4*>(p.x + i);
      float e[4];
      Eps::load4(eps + i, e);
      if (p.noise != nullptr) {
        const float4 nv = *reinterpret_cast<const float4*>(p.noise + i);
        z[0] = nv.x, z[1] = nv.y, z[2] = nv.z, z[3] = nv.w;
      }
      *reinterpret_cast<float4*>(p.out + i) =
          make_float4(step(p, xv.x, e[0], z[0]), step(p, xv.y, e[1], z[1]), step(p, xv.z, e[2], z[2]),
                      step(p, xv.w, e[3], z[3]));
    } else {
      for (int k = 0; k < 4 && i + k < n; ++k)
        p.out[i + k] = step(p, p.x[i + k], Eps::cvt(eps[i + k]), p.noise != nullptr ? p.noise[i + k] : z[k]);
    }
  }
}

constexpr int kTile = 32;      // rotation tile side (d, w)
constexpr int kTileRows = 8;   // block = kTile x kTileRows threads

template <typename Eps>
__global__ void __launch_bounds__(kTile * kTileRows) step_rotate_kernel(StepParams p, int gmax) {
  __shared__ float tile[kTile][kTile + 1];
  const auto* eps = static_cast<const typename Eps::T*>(p.eps);
  const int64_t nw = (p.W + kTile - 1) / kTile, nd = (p.D + kTile - 1) / kTile;
  int64_t b = blockIdx.x;
  const int64_t tw = b % nw; b /= nw;
  const int64_t td = b % nd; b /= nd;
  const int64_t h = b % p.H; b /= p.H;
  const int64_t c = b % p.C, v = b / p.C;
  const int64_t d0 = td * kTile, w0 = tw * kTile;
  const int ld = int(min(int64_t(kTile), p.D - d0)), lw = int(min(int64_t(kTile), p.W - w0));
  auto row = [&](int r) { return (((v * p.D + d0 + r) * p.C + c) * p.H + h) * p.W + w0; };  // x index of tile[r][0]
  const int tx = threadIdx.x, ty = threadIdx.y;
  if (p.noise == nullptr) {
    philox_runs(p, ld, gmax, row, [&](int) { return int64_t(lw); }, [&](int r) { return &tile[r][0]; });
    __syncthreads();
  }
  for (int r = ty; r < ld; r += kTileRows) {
    if (tx < lw) {
      const int64_t i = row(r) + tx;
      tile[r][tx] = step(p, p.x[i], Eps::cvt(eps[i]), p.noise != nullptr ? p.noise[i] : tile[r][tx]);
    }
  }
  __syncthreads();
  for (int r = ty; r < lw; r += kTileRows) {
    if (tx < ld) p.out[(((v * p.H + h) * p.C + c) * p.W + w0 + r) * p.D + d0 + tx] = tile[tx][r];
  }
}

constexpr int kCube = 8;                   // in-place rotation: side of the cubes that 3-cycle
constexpr int kCubeD = kCube * kCube + 4;  // shared d-stride: rotated reads hit 32 distinct banks

__device__ __forceinline__ bool lex_less(int64_t a0, int64_t a1, int64_t a2, int64_t b0, int64_t b1, int64_t b2) {
  return a0 != b0 ? a0 < b0 : (a1 != b1 ? a1 < b1 : a2 < b2);
}

template <typename Eps>
__global__ void __launch_bounds__(256) step_rotate_inplace_kernel(StepParams p, int gmax) {
  __shared__ float blk[3][kCube * kCubeD];  // [cycle position][d * kCubeD + h * kCube + w]
  const auto* eps = static_cast<const typename Eps::T*>(p.eps);
  const int64_t N = p.D, nb = (N + kCube - 1) / kCube;
  const int64_t t = blockIdx.x;
  const int64_t a = t % nb, b = (t / nb) % nb, cc = (t / (nb * nb)) % nb, vc = t / (nb * nb * nb);
  const bool fixed = a == b && b == cc;
  // one block per cycle: its lexicographically smallest cube
  if (!fixed && !(lex_less(a, b, cc, b, cc, a) && lex_less(a, b, cc, cc, a, b))) return;
  // cube k of the cycle, axis j (0: d, 1: h, 2: w): cyc(0, .) = (a, b, cc), cyc(1, .) = (b, cc, a), ...
  auto cyc = [&](int k, int j) { const int i = (k + j) % 3; return i == 0 ? a : (i == 1 ? b : cc); };
  const int m = fixed ? 1 : 3;
  const int64_t base = (vc / p.C) * N * p.C * N * N + (vc % p.C) * N * N;
  auto index = [&](int64_t d, int64_t h, int64_t w) { return base + (d * p.C * N + h) * N + w; };
  auto side = [&](int64_t i) { return int(min(int64_t(kCube), N - i * kCube)); };
  const int tid = threadIdx.x;
  constexpr int kRuns = kCube * kCube, kElems = kRuns * kCube;
  if (p.noise == nullptr) {
    // run k * kRuns + dd * kCube + hh: the w-row (dd, hh) of cube k
    auto start = [&](int r) {
      const int k = r / kRuns, dd = (r % kRuns) / kCube, hh = r % kCube;
      return index(cyc(k, 0) * kCube + dd, cyc(k, 1) * kCube + hh, cyc(k, 2) * kCube);
    };
    auto len = [&](int r) {
      const int k = r / kRuns, dd = (r % kRuns) / kCube, hh = r % kCube;
      return int64_t(dd < side(cyc(k, 0)) && hh < side(cyc(k, 1)) ? side(cyc(k, 2)) : 0);
    };
    auto dst = [&](int r) { return &blk[r / kRuns][((r % kRuns) / kCube) * kCubeD + (r % kCube) * kCube]; };
    philox_runs(p, m * kRuns, gmax, start, len, dst);
    __syncthreads();
  }
  for (int e = tid; e < m * kElems; e += blockDim.x) {
    const int k = e / kElems, dd = (e % kElems) / kRuns, hh = (e % kRuns) / kCube, ww = e % kCube;
    if (dd < side(cyc(k, 0)) && hh < side(cyc(k, 1)) && ww < side(cyc(k, 2))) {
      const int64_t i = index(cyc(k, 0) * kCube + dd, cyc(k, 1) * kCube + hh, cyc(k, 2) * kCube + ww);
      float& s = blk[k][dd * kCubeD + hh * kCube + ww];
      s = step(p, p.x[i], Eps::cvt(eps[i]), p.noise != nullptr ? p.noise[i] : s);
    }
  }
  __syncthreads();
  // cube cyc(k, .) = (d, h, w) lands on (h, w, d) = cyc(k + 1, .); new[p0, p1, p2] = old[p2, p0, p1]
  for (int e = tid; e < m * kElems; e += blockDim.x) {
    const int k = e / kElems, p0 = (e % kElems) / kRuns, p1 = (e % kRuns) / kCube, p2 = e % kCube;
    if (p0 < side(cyc(k, 1)) && p1 < side(cyc(k, 2)) && p2 < side(cyc(k, 0)))
      p.out[index(cyc(k, 1) * kCube + p0, cyc(k, 2) * kCube + p1, cyc(k, 0) * kCube + p2)] =
          blk[k][p2 * kCubeD + p0 * kCube + p1];
  }
}

// Calls fn(Eps{}) for p.eps_type.
template <typename Fn>
cudaError_t dispatch_eps(EpsType t, Fn&& fn) {
  switch (t) {
    case EpsType::kBFloat16: return fn(Eps16<true>{});
    case EpsType::kFloat16: return fn(Eps16<false>{});
    default: return fn(EpsF32{});
  }
}

bool aligned(const void* ptr, uintptr_t bytes) { return reinterpret_cast<uintptr_t>(ptr) % bytes == 0; }

// Groups that cover a run of `len` elements: len / 4 when runs start 4-aligned, else one or two more.
int max_groups(int len, bool runs_aligned) { return runs_aligned ? (len + 3) / 4 : (len + 2) / 4 + 1; }

}  // namespace

cudaError_t launch_fused_step(const StepParams& p, bool rotate, cudaStream_t stream) {
  const int64_t n = p.V * p.D * p.C * p.H * p.W;
  if (n == 0) return cudaSuccess;
  return dispatch_eps(p.eps_type, [&](auto eps) {
    using Eps = decltype(eps);
    if (rotate) {
      const int64_t blocks = p.V * p.C * p.H * ((p.D + kTile - 1) / kTile) * ((p.W + kTile - 1) / kTile);
      // tile rows start at multiples of W plus multiples of 32
      const int gmax = max_groups(kTile, p.W % 4 == 0);
      step_rotate_kernel<Eps><<<unsigned(blocks), dim3(kTile, kTileRows), 0, stream>>>(p, gmax);
    } else {
      const bool vec = aligned(p.x, 16) && aligned(p.out, 16) && aligned(p.eps, 4 * sizeof(typename Eps::T)) &&
                       (p.noise == nullptr || aligned(p.noise, 16));
      const int64_t blocks = std::min<int64_t>((n + 4 * 256 - 1) / (4 * 256), int64_t(1) << 20);
      step_identity_kernel<Eps><<<unsigned(blocks), 256, 0, stream>>>(p, n, vec);
    }
    return cudaGetLastError();
  });
}

cudaError_t launch_fused_step_rotate_inplace(const StepParams& p, cudaStream_t stream) {
  const int64_t nb = (p.D + kCube - 1) / kCube, n = p.V * p.D * p.C * p.H * p.W;
  if (n == 0) return cudaSuccess;
  return dispatch_eps(p.eps_type, [&](auto eps) {
    using Eps = decltype(eps);
    // cube rows start at multiples of N plus multiples of 8
    const int gmax = max_groups(kCube, p.D % 4 == 0);
    step_rotate_inplace_kernel<Eps><<<unsigned(p.V * p.C * nb * nb * nb), 256, 0, stream>>>(p, gmax);
    return cudaGetLastError();
  });
}

}  // namespace m3d
