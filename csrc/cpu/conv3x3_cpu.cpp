// CPU (and Meta) kernels of the U-Net's 3x3 convolution (stride 1, padding 1, zero or circular), inference only,
// by Winograd's minimal filtering F(4x4, 3x3) (Lavin & Gray, "Fast algorithms for convolutional neural
// networks", 2016; interpolation points 0, 1, -1, 2, -2). Per 4x4 output tile:
//   V = B^T d B (the tile's 6x6 input patch d, per channel), U = G g G^T (each 3x3 filter g, once per call),
//   M[k] = sum_c V[k, c] U[k, c, o] for the 36 positions k of the 6x6 grid, Y = A^T M A + bias:
// 36 multiply-adds per 16 outputs instead of 144. Tiles run in blocks: the block's V is built in cache, its 36
// products go through a 6x16 AVX2/FMA register kernel (plain loops without AVX2), and A^T M A writes the outputs.
// Edge tiles read zeros (or the wrapped input) past the border and drop the outputs there, so any H, W work.
// ``upsample``: the convolution of x upsampled 2x by nearest neighbour, read in place (patch pixel (iy, ix) of the
// upsampled image is x[iy / 2, ix / 2]): the U-Net decoder's upsampling, without the 4x-sized input.
// Equal to conv2d up to rounding (the transforms scale by 1, 2, 4, 5 and 8).
// x: (N, C, H, W) f32, channels_last or NCHW (out keeps it); weight: (O, C, 3, 3); bias: (O,);
// out: (N, O, H, W), or (N, O, 2H, 2W) with upsample.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define M3D_AVX2 1
#endif

#include "cpu/nhwc.h"
#include "cpu/target_clones.h"

namespace {

constexpr int64_t kRows = 6;  // register kernel: 6 tiles x 16 output channels
constexpr int64_t kCols = 16;
constexpr int64_t kBlockFloats = 6144;  // tiles per block ~ this / C (the block's V[k] stays in L1 / L2)

constexpr float kG[6][3] = {{1 / 4.0f, 0, 0},
                            {-1 / 6.0f, -1 / 6.0f, -1 / 6.0f},
                            {-1 / 6.0f, 1 / 6.0f, -1 / 6.0f},
                            {1 / 24.0f, 1 / 12.0f, 1 / 6.0f},
                            {1 / 24.0f, -1 / 12.0f, 1 / 6.0f},
                            {0, 0, 1}};

// u[(k * C + c) * Op + o] = (G g G^T)[k] of filter (o, c), for one input channel c and every o < O;
// wc[tap * O + o] = the filter taps (the weight as (C, 9, O)). The loop over o vectorises.
M3D_CLONES void transform_filters(const float* __restrict wc, int64_t O, int64_t C, int64_t Op, int64_t c,
                                  float* __restrict u) {
  for (int64_t o = 0; o < O; ++o) {
    float t[6][3];  // G g
    for (int i = 0; i < 6; ++i)
      for (int s = 0; s < 3; ++s)
        t[i][s] = kG[i][0] * wc[s * O + o] + kG[i][1] * wc[(3 + s) * O + o] + kG[i][2] * wc[(6 + s) * O + o];
    for (int i = 0; i < 6; ++i)
      for (int j = 0; j < 6; ++j)
        u[((6 * i + j) * C + c) * Op + o] = t[i][0] * kG[j][0] + t[i][1] * kG[j][1] + t[i][2] * kG[j][2];
  }
}

// The transforms run on 8 channels at a time (GCC vector extension: AVX in the x86-64-v3/v4 clones) or one;
// vectors go by reference only, so no vector ABI is involved.
typedef float v8 __attribute__((vector_size(32)));
template <class T>
__attribute__((always_inline)) inline void load(const float* p, T& r) {
  std::memcpy(&r, p, sizeof r);
}
template <class T>
__attribute__((always_inline)) inline void store(float* p, const T& v) {
  std::memcpy(p, &v, sizeof v);
}

// r[0..6) = B^T d for one column d[0..6) (stride 1 in the arrays given).
template <class T>
__attribute__((always_inline)) inline void bt6(const T* d, T* r) {
  const T p = d[3] + d[4] - T(d[1] + d[2]) * 4.0f, q = d[4] - d[3] + T(d[1] - d[2]) * 4.0f;
  const T e = d[4] - d[2], f = T(d[3] - d[1]) * 2.0f;
  r[0] = d[0] * 4.0f - d[2] * 5.0f + d[4];
  r[1] = p;
  r[2] = q;
  r[3] = e + f;
  r[4] = e - f;
  r[5] = d[1] * 4.0f - d[3] * 5.0f + d[5];
}

// r[0..4) = A^T m for one column m[0..6).
template <class T>
__attribute__((always_inline)) inline void at6(const T* m, T* r) {
  const T s12 = m[1] + m[2], d12 = m[1] - m[2], s34 = m[3] + m[4], d34 = m[3] - m[4];
  r[0] = s12 + s34 + m[0];
  r[1] = d12 + d34 * 2.0f;
  r[2] = s12 + s34 * 4.0f;
  r[3] = d12 + d34 * 8.0f + m[5];
}

// v[k * ks + c ...] = (B^T d B)[k] for one tile and the channels at c; d[q] points at patch pixel q (row-major 6x6).
template <class T>
__attribute__((always_inline)) inline void input_channels(const float* const* d, int64_t c, float* v, int64_t ks) {
  T col[6], t[6][6];  // t[i][s] = (B^T d)[i][s]
#pragma GCC unroll 6
  for (int s = 0; s < 6; ++s) {
    T r[6];
#pragma GCC unroll 6
    for (int i = 0; i < 6; ++i) load(d[6 * i + s] + c, col[i]);
    bt6(col, r);
#pragma GCC unroll 6
    for (int i = 0; i < 6; ++i) t[i][s] = r[i];
  }
#pragma GCC unroll 6
  for (int i = 0; i < 6; ++i) {
    T r[6];
    bt6(t[i], r);
#pragma GCC unroll 6
    for (int j = 0; j < 6; ++j) store(v + (6 * i + j) * ks + c, r[j]);
  }
}

M3D_CLONES void input_transform(const float* const* d, int64_t C, float* v, int64_t ks) {
  int64_t c = 0;
  for (; c + 8 <= C; c += 8) input_channels<v8>(d, c, v, ks);
  for (; c < C; ++c) input_channels<float>(d, c, v, ks);
}

// y[4 a + b][o ...] = (A^T M A)[a][b] + bias for one tile and the channels at o; m[k * ks + o] = M[k].
template <class T>
__attribute__((always_inline)) inline void output_channels(const float* m, int64_t ks, int64_t o, const float* bias,
                                                           float* const* y) {
  T col[6], t[4][6];  // t[a][j] = (A^T M)[a][j]
#pragma GCC unroll 6
  for (int j = 0; j < 6; ++j) {
    T r[4];
#pragma GCC unroll 6
    for (int i = 0; i < 6; ++i) load(m + (6 * i + j) * ks + o, col[i]);
    at6(col, r);
#pragma GCC unroll 4
    for (int a = 0; a < 4; ++a) t[a][j] = r[a];
  }
  T b;
  load(bias + o, b);
#pragma GCC unroll 4
  for (int a = 0; a < 4; ++a) {
    T r[4];
    at6(t[a], r);
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) store(y[4 * a + j] + o, r[j] + b);
  }
}

M3D_CLONES void output_transform(const float* m, int64_t ks, int64_t O, const float* bias, float* const* y) {
  int64_t o = 0;
  for (; o + 8 <= O; o += 8) output_channels<v8>(m, ks, o, bias, y);
  for (; o < O; ++o) output_channels<float>(m, ks, o, bias, y);
}

// c (rows, Op) = a (rows, K) @ b (K, Op), all row-major; Op a multiple of kCols.
void gemm_plain(int64_t rows, int64_t K, int64_t Op, const float* a, const float* b, float* c) {
  for (int64_t i = 0; i < rows; ++i) {
    float* ci = c + i * Op;
    std::fill(ci, ci + Op, 0.0f);
    for (int64_t p = 0; p < K; ++p)
      for (int64_t j = 0; j < Op; ++j) ci[j] += a[i * K + p] * b[p * Op + j];
  }
}

#ifdef M3D_AVX2
// c[i, 0:16] = a[i, :] @ b[:, 0:16] for i < R (12 accumulators in registers); lda = K, ldb = ldc = Op.
template <int R>
__attribute__((target("avx2,fma"))) inline void kernel_avx2(const float* a, int64_t K, const float* b, int64_t Op,
                                                           float* c) {
  __m256 lo[R], hi[R];  // fully unrolled loops, so the arrays live in registers
#pragma GCC unroll 6
  for (int i = 0; i < R; ++i) lo[i] = hi[i] = _mm256_setzero_ps();
  for (int64_t p = 0; p < K; ++p) {
    const __m256 b0 = _mm256_loadu_ps(b + p * Op), b1 = _mm256_loadu_ps(b + p * Op + 8);
#pragma GCC unroll 6
    for (int i = 0; i < R; ++i) {
      const __m256 ai = _mm256_broadcast_ss(a + i * K + p);
      lo[i] = _mm256_fmadd_ps(ai, b0, lo[i]);
      hi[i] = _mm256_fmadd_ps(ai, b1, hi[i]);
    }
  }
#pragma GCC unroll 6
  for (int i = 0; i < R; ++i) {
    _mm256_storeu_ps(c + i * Op, lo[i]);
    _mm256_storeu_ps(c + i * Op + 8, hi[i]);
  }
}

__attribute__((target("avx2,fma"))) void gemm_avx2(int64_t rows, int64_t K, int64_t Op, const float* a,
                                                  const float* b, float* c) {
  for (int64_t j = 0; j < Op; j += kCols)
    for (int64_t i = 0; i < rows; i += kRows) {
      const float *ai = a + i * K, *bj = b + j;
      float* cij = c + i * Op + j;
      switch (std::min(kRows, rows - i)) {
        case 6: kernel_avx2<6>(ai, K, bj, Op, cij); break;
        case 5: kernel_avx2<5>(ai, K, bj, Op, cij); break;
        case 4: kernel_avx2<4>(ai, K, bj, Op, cij); break;
        case 3: kernel_avx2<3>(ai, K, bj, Op, cij); break;
        case 2: kernel_avx2<2>(ai, K, bj, Op, cij); break;
        default: kernel_avx2<1>(ai, K, bj, Op, cij); break;
      }
    }
}

// AVX2 + FMA present and not turned off by M3D_CPU_GEMM=plain (the portable loops every other CPU runs; tests).
bool use_avx2() {
  static const bool yes = [] {
    const char* mode = std::getenv("M3D_CPU_GEMM");
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && !(mode && !std::strcmp(mode, "plain"));
  }();
  return yes;
}
#endif

void gemm(int64_t rows, int64_t K, int64_t Op, const float* a, const float* b, float* c) {
#ifdef M3D_AVX2
  if (use_avx2()) return gemm_avx2(rows, K, Op, a, b, c);
#endif
  gemm_plain(rows, K, Op, a, b, c);
}

// One call's sizes: H x W is the output's (the input's, or twice it with upsample); tiles are numbered (n, ty, tx)
// row-major, th x tw = ceil(H / 4) x ceil(W / 4) per image.
struct Geometry {
  int64_t N, C, H, W, O, Op, th, tw;
  bool circular;
  int up;  // 1, or 2: the input is H / 2 x W / 2
};

// Per-thread buffers of one block of tiles: V (36, block, C), M (36, block, Op), a zero pixel and a sink pixel.
struct Scratch {
  std::vector<float> v, m, zeros, sink;
  Scratch(const Geometry& g, int64_t block)
      : v(36 * block * g.C), m(36 * block * g.Op), zeros(g.C, 0.0f), sink(g.O) {}
};

// out (N, H, W, O) at tiles [t0, t0 + nt) = conv(x (N, H, W, C)) + bias; u (36, C, Op) from transform_filters.
void conv_tiles(const Geometry& g, const float* x, const float* u, const float* bias, int64_t t0, int64_t nt,
                int64_t block, Scratch& s, float* out) {
  const float* d[36];
  float* y[16];
  for (int64_t t = 0; t < nt; ++t) {
    const int64_t n = (t0 + t) / (g.th * g.tw), ty = (t0 + t) / g.tw % g.th, tx = (t0 + t) % g.tw;
    for (int r = 0; r < 6; ++r)
      for (int q = 0; q < 6; ++q) {
        int64_t iy = 4 * ty - 1 + r, ix = 4 * tx - 1 + q;
        const bool inside = iy >= 0 && iy < g.H && ix >= 0 && ix < g.W;
        if (g.circular) {  // tiles reach at most 3 past the border; the inputs of real outputs wrap correctly
          iy = (iy % g.H + g.H) % g.H;
          ix = (ix % g.W + g.W) % g.W;
        }
        const int64_t pixel = (n * (g.H / g.up) + iy / g.up) * (g.W / g.up) + ix / g.up;
        d[6 * r + q] = inside || g.circular ? x + pixel * g.C : s.zeros.data();
      }
    input_transform(d, g.C, s.v.data() + t * g.C, block * g.C);
  }
  for (int k = 0; k < 36; ++k)
    gemm(nt, g.C, g.Op, s.v.data() + k * block * g.C, u + k * g.C * g.Op, s.m.data() + k * block * g.Op);
  for (int64_t t = 0; t < nt; ++t) {
    const int64_t n = (t0 + t) / (g.th * g.tw), ty = (t0 + t) / g.tw % g.th, tx = (t0 + t) % g.tw;
    for (int a = 0; a < 4; ++a)
      for (int b = 0; b < 4; ++b) {
        const int64_t oy = 4 * ty + a, ox = 4 * tx + b;
        y[4 * a + b] = oy < g.H && ox < g.W ? out + ((n * g.H + oy) * g.W + ox) * g.O : s.sink.data();
      }
    output_transform(s.m.data() + t * g.Op, block * g.Op, g.O, bias, y);
  }
}

// Tiles per block: about kBlockFloats / C, and small enough for 4 blocks per thread (a multiple of kRows).
int64_t block_tiles(int64_t C, int64_t tiles) {
  const int64_t share = (tiles + 4 * at::get_num_threads() - 1) / (4 * at::get_num_threads());
  return std::max(kRows, std::min(kBlockFloats / C, share) / kRows * kRows);
}

void check_args(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) {
  TORCH_CHECK(x.device().is_cpu() || x.device().is_meta(), "conv3x3: x must be on the CPU");
  TORCH_CHECK(x.dim() == 4 && x.scalar_type() == at::kFloat, "conv3x3: x must be (N, C, H, W) float32");
  TORCH_CHECK(weight.dim() == 4 && weight.size(1) == x.size(1) && weight.size(2) == 3 && weight.size(3) == 3 &&
                  weight.scalar_type() == at::kFloat && weight.device() == x.device(),
              "conv3x3: weight must be (O, C, 3, 3) float32 on x's device, C = ", x.size(1));
  TORCH_CHECK(bias.dim() == 1 && bias.size(0) == weight.size(0) && bias.scalar_type() == at::kFloat &&
                  bias.device() == x.device(),
              "conv3x3: bias must be (O,) float32 on x's device");
}

at::Tensor empty_out(const at::Tensor& x, int64_t O, bool upsample) {
  const auto fmt = is_nhwc(x) ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  const int64_t up = upsample ? 2 : 1;
  return at::empty({x.size(0), O, up * x.size(2), up * x.size(3)}, x.options().memory_format(fmt));
}

at::Tensor conv3x3_cpu(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias, bool circular,
                       bool upsample) {
  check_args(x, weight, bias);
  at::Tensor out = empty_out(x, weight.size(0), upsample);
  if (out.numel() == 0) return out;
  const int64_t N = x.size(0), C = x.size(1), O = weight.size(0), H = out.size(2), W = out.size(3);
  const Geometry g{N, C, H, W, O, (O + kCols - 1) / kCols * kCols, (H + 3) / 4, (W + 3) / 4, circular,
                   upsample ? 2 : 1};
  const at::Tensor xc = x.contiguous(at::MemoryFormat::ChannelsLast);
  const at::Tensor oc = is_nhwc(out) ? out : at::empty_like(out, at::MemoryFormat::ChannelsLast);
  const at::Tensor wt = weight.permute({1, 2, 3, 0}).contiguous();  // (C, 3, 3, O)
  std::vector<float> u(36 * C * g.Op, 0.0f);  // (36, C, Op): U = G g G^T, zero columns past O
  at::parallel_for(0, C, 8, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) transform_filters(wt.data_ptr<float>() + c * 9 * O, O, C, g.Op, c, u.data());
  });
  const at::Tensor bc = bias.contiguous();
  const int64_t tiles = N * g.th * g.tw, block = block_tiles(C, tiles);
  at::parallel_for(0, (tiles + block - 1) / block, 1, [&](int64_t b0, int64_t b1) {
    Scratch s(g, block);
    for (int64_t b = b0; b < b1; ++b)
      conv_tiles(g, xc.data_ptr<float>(), u.data(), bc.data_ptr<float>(), b * block,
                 std::min(block, tiles - b * block), block, s, oc.data_ptr<float>());
  });
  if (!oc.is_same(out)) out.copy_(oc);
  return out;
}

at::Tensor conv3x3_meta(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias, bool,
                        bool upsample) {
  check_args(x, weight, bias);
  return empty_out(x, weight.size(0), upsample);
}

}  // namespace

TORCH_LIBRARY_IMPL(micro3diff, CPU, m) { m.impl("conv3x3", &conv3x3_cpu); }

TORCH_LIBRARY_IMPL(micro3diff, Meta, m) { m.impl("conv3x3", &conv3x3_meta); }
