// CPU (and Meta) kernels of the U-Net's normalised activation, inference only:
//   out = silu(group_norm(x) * (1 + scale) + shift),   x: (N, C, H, W) f32, NCHW or channels_last;
//   weight, bias: (C,); scale, shift: (N, C) or absent (then out = silu(group_norm(x))).
// One pass reads x for the per-channel sums, a second applies a per-(n, c) affine and SiLU, so x is
// read twice and the result written once (eager PyTorch: group_norm, mul, add and silu, four ops).
// Per (n, c): y = a * (x - mean) + b folds rstd, the norm's affine and the scale / shift; SiLU uses a
// polynomial exp (Cephes expf, about 2 ulp) and a Newton reciprocal, so the result equals
// reference.group_norm_silu up to rounding.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <optional>
#include <vector>

#include "cpu/nhwc.h"
#include "cpu/target_clones.h"

namespace {

constexpr int64_t kBlock = 64;  // pixels (NHWC) or values (NCHW) summed in float before the double totals

// exp(z) for z in [-87, 87] (clamped): 2^n * p(r), z = n ln2 + r, |r| <= ln2 / 2. Branch-free, so loops vectorise:
// n is rounded by adding and subtracting 1.5 * 2^23 (no floor call), 2^n is built from its exponent bits.
inline float exp_poly(float z) {
  z = z < -87.0f ? -87.0f : z;
  z = z > 87.0f ? 87.0f : z;
  const float n = (z * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  float r = z - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

// 1 / d for d in [1, 1e38]: a bit-pattern guess refined by three Newton steps (~1 ulp). A vector division costs
// several times the whole exp on some x86 cores (measured: the op ran 2x slower with y / d).
inline float reciprocal(float d) {
  int32_t bits;
  std::memcpy(&bits, &d, sizeof bits);
  bits = 0x7EF311C7 - bits;
  float r;
  std::memcpy(&r, &bits, sizeof r);
  r = r * (2.0f - d * r);
  r = r * (2.0f - d * r);
  return r * (2.0f - d * r);
}

inline float silu_affine(float x, float m, float a, float b) {
  const float y = a * (x - m) + b;
  return y * reciprocal(1.0f + exp_poly(-y));
}

// sum[c], sq[c] += the sums of (x - k[c]) and its square over one image's channel c, k[c] = its first value
// (shifted sums: no cancellation for a mean far from 0). NHWC: x[p * C + c]; NCHW: x[c * P + p].
M3D_CLONES void sums_nhwc(const float* __restrict x, int64_t P, int64_t C, const float* __restrict k,
                          double* __restrict sum, double* __restrict sq, float* __restrict fs,
                          float* __restrict fq) {
  for (int64_t p0 = 0; p0 < P; p0 += kBlock) {
    std::fill(fs, fs + C, 0.0f);
    std::fill(fq, fq + C, 0.0f);
    for (int64_t p = p0; p < std::min(P, p0 + kBlock); ++p)
      for (int64_t c = 0; c < C; ++c) {
        const float v = x[p * C + c] - k[c];
        fs[c] += v;
        fq[c] += v * v;
      }
    for (int64_t c = 0; c < C; ++c) {
      sum[c] += fs[c];
      sq[c] += fq[c];
    }
  }
}

M3D_CLONES void sums_nchw(const float* __restrict x, int64_t P, int64_t C, const float* __restrict k,
                          double* __restrict sum, double* __restrict sq) {
  for (int64_t c = 0; c < C; ++c)
    for (int64_t p0 = 0; p0 < P; p0 += kBlock) {
      float s = 0.0f, q = 0.0f;
      for (int64_t p = p0; p < std::min(P, p0 + kBlock); ++p) {
        const float v = x[c * P + p] - k[c];
        s += v;
        q += v * v;
      }
      sum[c] += s;
      sq[c] += q;
    }
}

M3D_CLONES void apply_nhwc(const float* __restrict x, float* __restrict out, int64_t P, int64_t C,
                           const float* __restrict m, const float* __restrict a, const float* __restrict b) {
  for (int64_t p = 0; p < P; ++p)
    for (int64_t c = 0; c < C; ++c) out[p * C + c] = silu_affine(x[p * C + c], m[c], a[c], b[c]);
}

M3D_CLONES void apply_nchw(const float* __restrict x, float* __restrict out, int64_t P, int64_t C,
                           const float* __restrict m, const float* __restrict a, const float* __restrict b) {
  for (int64_t c = 0; c < C; ++c) {
    const float mc = m[c], ac = a[c], bc = b[c];
    for (int64_t p = 0; p < P; ++p) out[c * P + p] = silu_affine(x[c * P + p], mc, ac, bc);
  }
}

void check_args(const at::Tensor& x, int64_t groups, const at::Tensor& weight, const at::Tensor& bias,
                const std::optional<at::Tensor>& scale, const std::optional<at::Tensor>& shift) {
  TORCH_CHECK(x.dim() == 4 && x.scalar_type() == at::kFloat, "group_norm_silu: x must be (N, C, H, W) float32");
  const int64_t N = x.size(0), C = x.size(1);
  TORCH_CHECK(groups >= 1 && C % groups == 0, "group_norm_silu: C = ", C, " is not a multiple of groups = ", groups);
  for (const at::Tensor* t : {&weight, &bias})
    TORCH_CHECK(t->dim() == 1 && t->size(0) == C && t->scalar_type() == at::kFloat && t->device() == x.device(),
                "group_norm_silu: weight and bias must be (C,) float32 on x's device");
  TORCH_CHECK(scale.has_value() == shift.has_value(), "group_norm_silu: give both scale and shift, or neither");
  if (scale)
    for (const at::Tensor* t : {&*scale, &*shift})
      TORCH_CHECK(t->dim() == 2 && t->size(0) == N && t->size(1) == C && t->scalar_type() == at::kFloat &&
                      t->device() == x.device(),
                  "group_norm_silu: scale and shift must be (N, C) float32 on x's device");
}

at::Tensor group_norm_silu_cpu(const at::Tensor& x, int64_t groups, const at::Tensor& weight, const at::Tensor& bias,
                               double eps, const std::optional<at::Tensor>& scale,
                               const std::optional<at::Tensor>& shift) {
  check_args(x, groups, weight, bias, scale, shift);
  const bool nhwc = is_nhwc(x);
  const at::Tensor xc = nhwc ? x : x.contiguous();
  at::Tensor out = at::empty_like(xc);  // keeps the memory format
  const int64_t N = x.size(0), C = x.size(1), P = x.size(2) * x.size(3), Cg = C / groups;
  if (x.numel() == 0) return out;
  const at::Tensor w = weight.contiguous(), bi = bias.contiguous();
  const at::Tensor sc = scale ? scale->contiguous() : at::Tensor(), sh = shift ? shift->contiguous() : at::Tensor();
  const float *xp = xc.data_ptr<float>(), *wp = w.data_ptr<float>(), *bp = bi.data_ptr<float>();
  const float *scp = scale ? sc.data_ptr<float>() : nullptr, *shp = scale ? sh.data_ptr<float>() : nullptr;
  float* op = out.data_ptr<float>();
  const double count = double(Cg) * double(P);
  at::parallel_for(0, N, 1, [&](int64_t n0, int64_t n1) {
    std::vector<double> sum(C), sq(C), mean_c(C);
    std::vector<float> k(C), m(C), a(C), b(C), fs(C), fq(C);
    for (int64_t n = n0; n < n1; ++n) {
      const float* xn = xp + n * C * P;
      std::fill(sum.begin(), sum.end(), 0.0);
      std::fill(sq.begin(), sq.end(), 0.0);
      for (int64_t c = 0; c < C; ++c) k[c] = nhwc ? xn[c] : xn[c * P];
      if (nhwc)
        sums_nhwc(xn, P, C, k.data(), sum.data(), sq.data(), fs.data(), fq.data());
      else
        sums_nchw(xn, P, C, k.data(), sum.data(), sq.data());
      for (int64_t g = 0; g < groups; ++g) {
        // Per channel: mean and sum of squared deviations; then the group's (Chan et al.), all in double.
        double mean = 0.0, m2 = 0.0;
        for (int64_t c = g * Cg; c < (g + 1) * Cg; ++c) {
          mean_c[c] = k[c] + sum[c] / double(P);
          m2 += std::max(sq[c] - sum[c] * sum[c] / double(P), 0.0);
          mean += mean_c[c] / double(Cg);
        }
        for (int64_t c = g * Cg; c < (g + 1) * Cg; ++c) m2 += double(P) * (mean_c[c] - mean) * (mean_c[c] - mean);
        const double rstd = 1.0 / std::sqrt(m2 / count + eps);
        for (int64_t c = g * Cg; c < (g + 1) * Cg; ++c) {
          const double s1 = scp ? 1.0 + double(scp[n * C + c]) : 1.0, t = shp ? double(shp[n * C + c]) : 0.0;
          m[c] = float(mean);
          a[c] = float(rstd * wp[c] * s1);
          b[c] = float(bp[c] * s1 + t);
        }
      }
      if (nhwc)
        apply_nhwc(xn, op + n * C * P, P, C, m.data(), a.data(), b.data());
      else
        apply_nchw(xn, op + n * C * P, P, C, m.data(), a.data(), b.data());
    }
  });
  return out;
}

at::Tensor group_norm_silu_meta(const at::Tensor& x, int64_t groups, const at::Tensor& weight, const at::Tensor& bias,
                                double, const std::optional<at::Tensor>& scale,
                                const std::optional<at::Tensor>& shift) {
  check_args(x, groups, weight, bias, scale, shift);
  return at::empty_like(is_nhwc(x) ? x : x.contiguous());
}

}  // namespace

TORCH_LIBRARY_IMPL(micro3diff, CPU, m) { m.impl("group_norm_silu", &group_norm_silu_cpu); }

TORCH_LIBRARY_IMPL(micro3diff, Meta, m) { m.impl("group_norm_silu", &group_norm_silu_meta); }
