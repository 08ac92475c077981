// Counter-based standard normals shared by the CPU and CUDA kernels: Philox4x32-10 + Box-Muller.
// Torch-free; compiles as C++17 and as CUDA (functions are __host__ __device__ under nvcc).
// micro3diff.reference.philox_normal is the pure-PyTorch twin of philox_normal4 below.
//
// Convention (DESIGN.md 1.3). Element i, the flat index into the UNROTATED (V, D, C, H, W) input,
// takes lane i % 4 of group g = i / 4:
//   (r0, r1, r2, r3) = Philox4x32-10(counter = (g lo, g hi, offset lo, offset hi), key = (seed lo, seed hi))
//   u(r)     = ((r >> 8) + 1) * 2^-24                          in (0, 1], exact in float32
//   theta(r) = q * pi/2 + a,  k = r >> 8, q = k >> 22, a = ((k mod 2^22) - 2^21) * 2pi/2^24 in [-pi/4, pi/4)
//   lanes (0, 1) = sqrt(-2 ln u(r0)) * (cos, sin) theta(r1);  lanes (2, 3) = same with (r2, r3).
// seed and offset are 64-bit words (two's complement of the torch int64 arguments). One call consumes
// groups 0 .. ceil(n/4) - 1 of stream `offset`: give every call its own offset (e.g. the step index).
//
// Bit-exactness: ln, sin and cos are fixed polynomials evaluated with single IEEE round-to-nearest
// float32 operations (no libm, no FMA contraction: on CUDA through __f*_rn intrinsics, on the host the
// extension is compiled with -ffp-contract=off), so the CPU kernels, the CUDA kernels and the PyTorch
// twin (one torch op per operation, same order) give the same bits. Draws are bounded:
// |z| <= sqrt(2 ln 2^24) = 5.77.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

#include "host_device.h"

#ifdef __CUDACC__
#define M3D_UNROLL _Pragma("unroll")
#else
#define M3D_UNROLL _Pragma("GCC unroll 16")
#endif

namespace m3d {

// ---- single-rounding float32 arithmetic (never contracted into FMA) ----
M3D_HD float fmul(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
M3D_HD float fadd(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}
M3D_HD float fsub(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fsub_rn(a, b);
#else
  return a - b;
#endif
}
M3D_HD float fdiv(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fdiv_rn(a, b);
#else
  return a / b;
#endif
}
M3D_HD float fsqrt(float a) {
#ifdef __CUDA_ARCH__
  return __fsqrt_rn(a);
#else
  return std::sqrt(a);
#endif
}
// Bit casts between float and uint32_t: the intrinsics on the device, memcpy on the host.
#ifdef __CUDA_ARCH__
M3D_HD uint32_t as_uint(float f) { return __float_as_uint(f); }
M3D_HD float as_float(uint32_t u) { return __uint_as_float(u); }
#else
template <typename To, typename From>
M3D_HD To host_bit_cast(From v) {
  To out;
  std::memcpy(&out, &v, sizeof out);
  return out;
}
M3D_HD uint32_t as_uint(float f) { return host_bit_cast<uint32_t>(f); }
M3D_HD float as_float(uint32_t u) { return host_bit_cast<float>(u); }
#endif

// The fused update c_x*x - c_eps*eps + c_z*z (DESIGN.md 1.2), rounded the way the reference twin rounds.
M3D_HD float affine(float c_x, float x, float c_eps, float eps, float c_z, float z) {
  return fadd(fsub(fmul(c_x, x), fmul(c_eps, eps)), fmul(c_z, z));
}

// ---- Philox4x32-10 (Salmon et al., SC'11) ----
struct U32x4 {
  uint32_t v[4];
};

M3D_HD U32x4 philox4x32_10(U32x4 c, uint32_t k0, uint32_t k1) {
  constexpr uint32_t kM0 = 0xD2511F53u, kM1 = 0xCD9E8D57u, kW0 = 0x9E3779B9u, kW1 = 0xBB67AE85u;
  M3D_UNROLL for (int round = 0; round < 10; ++round) {
    if (round > 0) {
      k0 += kW0;
      k1 += kW1;
    }
#ifdef __CUDA_ARCH__
    const uint32_t hi0 = __umulhi(kM0, c.v[0]), lo0 = kM0 * c.v[0];
    const uint32_t hi1 = __umulhi(kM1, c.v[2]), lo1 = kM1 * c.v[2];
#else
    const uint64_t p0 = uint64_t(kM0) * c.v[0], p1 = uint64_t(kM1) * c.v[2];
    const uint32_t hi0 = uint32_t(p0 >> 32), lo0 = uint32_t(p0);
    const uint32_t hi1 = uint32_t(p1 >> 32), lo1 = uint32_t(p1);
#endif
    c = U32x4{{hi1 ^ c.v[1] ^ k0, lo1, hi0 ^ c.v[3] ^ k1, lo0}};
  }
  return c;
}

// ---- Box-Muller on fixed polynomials ----
// ln u for u in [2^-24, 1]: u = m 2^e, m in [sqrt(1/2), sqrt(2)), ln m = 2 atanh(s), s = (m-1)/(m+1),
// atanh(s) = s + s^3/3 + ... + s^11/11 (|s| <= 0.172: truncation < 1e-10 relative).
M3D_HD float log_unit(float u) {
  uint32_t m = (as_uint(u) & 0x007FFFFFu) | 0x3F800000u;  // mantissa as a float in [1, 2)
  int e = int(as_uint(u) >> 23) - 127;
  const bool big = m > 0x3FB504F3u;  // m > sqrt(2): halve m (exact), bump e
  m = big ? m - 0x00800000u : m;
  e += big ? 1 : 0;
  const float f = fsub(as_float(m), 1.0f);  // exact (Sterbenz)
  const float s = fdiv(f, fadd(f, 2.0f));
  const float s2 = fmul(s, s);
  float p = 0.09090909f;                    // 1/11
  p = fadd(fmul(p, s2), 0.11111111f);       // 1/9
  p = fadd(fmul(p, s2), 0.14285715f);       // 1/7
  p = fadd(fmul(p, s2), 0.2f);              // 1/5
  p = fadd(fmul(p, s2), 0.33333334f);       // 1/3
  const float atanh_s = fadd(s, fmul(fmul(s, s2), p));
  return fadd(fmul(float(e), 0.6931472f), fmul(atanh_s, 2.0f));
}

// (cos, sin) of theta(r) in the convention above; Taylor polynomials on |a| <= pi/4 (truncation < 3e-9).
M3D_HD void sincos_turn(uint32_t r, float& cos_t, float& sin_t) {
  const uint32_t k = r >> 8;
  const uint32_t q = k >> 22;
  const float a = fmul(float(int32_t(k & 0x3FFFFFu) - 0x200000), 6.2831855f * 0x1p-24f);
  const float a2 = fmul(a, a);
  float ps = 2.7557319e-06f;                 // 1/9!
  ps = fadd(fmul(ps, a2), -0.0001984127f);   // -1/7!
  ps = fadd(fmul(ps, a2), 0.008333334f);     // 1/5!
  ps = fadd(fmul(ps, a2), -0.16666667f);     // -1/3!
  const float s = fadd(a, fmul(fmul(a, a2), ps));
  float pc = -2.755732e-07f;                 // -1/10!
  pc = fadd(fmul(pc, a2), 2.4801588e-05f);   // 1/8!
  pc = fadd(fmul(pc, a2), -0.0013888889f);   // -1/6!
  pc = fadd(fmul(pc, a2), 0.041666668f);     // 1/4!
  pc = fadd(fmul(pc, a2), -0.5f);
  const float c = fadd(fmul(pc, a2), 1.0f);
  // rotate (c, s) by q quarter turns
  const float x = (q & 1u) ? s : c, y = (q & 1u) ? c : s;
  cos_t = (q == 1u || q == 2u) ? -x : x;
  sin_t = (q >= 2u) ? -y : y;
}

M3D_HD float uniform_open0(uint32_t r) { return float((r >> 8) + 1u) * 0x1p-24f; }

// The four normals of group g (lanes 0..3, i.e. elements 4g .. 4g+3).
M3D_HD void philox_normal4(uint64_t seed, uint64_t offset, uint64_t g, float z[4]) {
  const U32x4 r = philox4x32_10(U32x4{{uint32_t(g), uint32_t(g >> 32), uint32_t(offset), uint32_t(offset >> 32)}},
                                uint32_t(seed), uint32_t(seed >> 32));
  M3D_UNROLL for (int pair = 0; pair < 2; ++pair) {
    const float rho = fsqrt(fmul(log_unit(uniform_open0(r.v[2 * pair])), -2.0f));
    float c, s;
    sincos_turn(r.v[2 * pair + 1], c, s);
    z[2 * pair] = fmul(rho, c);
    z[2 * pair + 1] = fmul(rho, s);
  }
}

}  // namespace m3d
