// CPU (and Meta) kernels of the fused multi-plane step, DESIGN.md 1.3:
//   out = R(c_x * x - c_eps * eps + c_z * z),  x, eps, noise: (V, D, C, H, W).
// fused_step          out of place; R = rotation in[v, d, c, h, w] -> out[v, h, c, w, d] or identity.
// fused_step_         in place, R = identity.
// fused_step_rotate_  in place, R = rotation; cubic volumes (D == H == W) only.
// z is the noise tensor or the Philox draw of philox.h, indexed by the unrotated input's flat index.
#include <ATen/Parallel.h>

#include <algorithm>
#include <tuple>

#include "fused_step.h"
#include "philox.h"
#include "cpu/target_clones.h"

namespace {

constexpr int64_t kRun = 2048;   // identity: elements per task step (one Philox fill)
constexpr int64_t kTileD = 16;   // out-of-place rotation: (d, w) tiles of kTileD x kTileW
constexpr int64_t kTileW = 128;
constexpr int64_t kCube = 16;    // in-place rotation: side of the blocks that 3-cycle

int64_t divup(int64_t a, int64_t b) { return (a + b - 1) / b; }

// buf[4 j .. 4 j + 4) = the normals of group[j], j < n. The loop vectorises (compiled with -fno-math-errno);
// M3D_CLONES (target_clones.h) also emits x86-64-v3 (AVX2) and -v4 (AVX-512) clones picked at load time (v4: about
// 2.7x plain "avx512f" in a microbenchmark here, thanks to the BW/DQ/VL lane moves). Same bits in every
// clone: the arithmetic is IEEE single-rounding throughout (philox.h, -ffp-contract=off).
M3D_CLONES void philox_fill(uint64_t seed, uint64_t offset, const uint64_t* group, int64_t n, float* buf) {
  for (int64_t j = 0; j < n; ++j) m3d::philox_normal4(seed, offset, group[j], buf + 4 * j);
}

// The coefficients and noise source of one call; eps is passed separately (templated dtype).
struct Step {
  const float* noise;  // nullptr: Philox(seed, offset)
  float c_x, c_eps, c_z;
  uint64_t seed, offset;

  float operator()(float x, float eps, float z) const { return m3d::affine(c_x, x, c_eps, eps, c_z, z); }
};

// z of up to kRows runs of up to kLen consecutive flat input indices: pointers into the noise tensor, or
// Philox draws of all the runs' groups in one vectorised philox_fill call.
template <int64_t kRows, int64_t kLen>
struct NoiseRuns {
  static constexpr int64_t kGroups = kLen / 4 + 2;  // groups that cover kLen elements at any alignment
  uint64_t group[kRows * kGroups];
  alignas(64) float draw[kRows * kGroups * 4];
  const float* run[kRows];

  // run[r] -> z of flat input indices [start[r], start[r] + n), for r < rows.
  void fill(const Step& f, const int64_t* start, int64_t rows, int64_t n) {
    if (f.noise != nullptr) {
      for (int64_t r = 0; r < rows; ++r) run[r] = f.noise + start[r];
      return;
    }
    bool aligned = true;  // runs starting at multiples of 4 need n / 4 groups, others up to two more
    for (int64_t r = 0; r < rows; ++r) aligned = aligned && (start[r] & 3) == 0;
    const int64_t ng = aligned ? (n + 3) / 4 : (n + 2) / 4 + 1;
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t k = 0; k < ng; ++k) group[r * ng + k] = uint64_t(start[r] >> 2) + k;
      run[r] = draw + 4 * r * ng + (start[r] & 3);
    }
    philox_fill(f.seed, f.offset, group, rows * ng, draw);
  }
};

// out[i] = f(x[i]) for i < n; out may be x.
template <typename E>
void step_identity(const float* x, const E* eps, float* out, int64_t n, const Step& f) {
  at::parallel_for(0, divup(n, kRun), 8, [&](int64_t b0, int64_t b1) {
    NoiseRuns<1, kRun> z;
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t i0 = b * kRun, len = std::min(kRun, n - i0);
      z.fill(f, &i0, 1, len);
      for (int64_t k = 0; k < len; ++k) out[i0 + k] = f(x[i0 + k], float(eps[i0 + k]), z.run[0][k]);
    }
  });
}

// out[v, h, c, w, d] = f(x[v, d, c, h, w]): for each (v, c, h) a transpose of the (d, w) plane by tiles of
// kTileD rows (d) x kTileW columns (w), read along w and written along d. Tiles are visited with the d-strip
// outermost, so each of the strip's kTileD input rows is read as one long sequential stream.
template <typename E>
void step_rotate(const float* x, const E* eps, float* out, const int64_t* s, const Step& f) {
  const int64_t V = s[0], D = s[1], C = s[2], H = s[3], W = s[4];
  const int64_t nd = divup(D, kTileD), nw = divup(W, kTileW);
  at::parallel_for(0, V * nd * C * H * nw, 4, [&](int64_t t0, int64_t t1) {
    alignas(64) float tile[kTileD][kTileW + 1];
    NoiseRuns<kTileD, kTileW> z;
    int64_t start[kTileD];
    for (int64_t t = t0; t < t1; ++t) {
      int64_t r = t;
      const int64_t tw = r % nw; r /= nw;
      const int64_t h = r % H; r /= H;
      const int64_t c = r % C; r /= C;
      const int64_t td = r % nd, v = r / nd;
      const int64_t d0 = td * kTileD, w0 = tw * kTileW;
      const int64_t ld = std::min(kTileD, D - d0), lw = std::min(kTileW, W - w0);
      for (int64_t dd = 0; dd < ld; ++dd) start[dd] = (((v * D + d0 + dd) * C + c) * H + h) * W + w0;
      z.fill(f, start, ld, lw);
      for (int64_t dd = 0; dd < ld; ++dd) {
        const float* xr = x + start[dd];
        const E* er = eps + start[dd];
        for (int64_t ww = 0; ww < lw; ++ww) tile[dd][ww] = f(xr[ww], float(er[ww]), z.run[dd][ww]);
      }
      for (int64_t ww = 0; ww < lw; ++ww) {
        float* o = out + (((v * H + h) * C + c) * W + w0 + ww) * D + d0;
        for (int64_t dd = 0; dd < ld; ++dd) o[dd] = tile[dd][ww];
      }
    }
  });
}

// In-place rotation of cubic volumes: new[h, w, d] = f(old[d, h, w]) per (v, c). The element map
// (d, h, w) -> (h, w, d) is a product of 3-cycles; so is the map of kCube^3 blocks (a, b, c) -> (b, c, a).
// Each task loads the (up to) three blocks of one block cycle, applies f, and stores each rotated into
// the next block of the cycle; tasks touch disjoint blocks, so they run in parallel without races.
template <typename E>
void step_rotate_inplace(float* x, const E* eps, const int64_t* s, const Step& f) {
  const int64_t VC = s[0] * s[2], C = s[2], N = s[1];
  const int64_t nb = divup(N, kCube);
  at::parallel_for(0, VC * nb * nb * nb, 4, [&](int64_t t0, int64_t t1) {
    alignas(64) float blk[3][kCube][kCube][kCube];  // [cycle position][d][h][w]
    NoiseRuns<kCube * kCube, kCube> z;
    int64_t start[kCube * kCube];
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t a = t % nb, b = (t / nb) % nb, cc = (t / (nb * nb)) % nb, vc = t / (nb * nb * nb);
      const bool fixed = a == b && b == cc;
      // visit each cycle once, from its lexicographically smallest block
      if (!fixed && !(std::make_tuple(a, b, cc) < std::make_tuple(b, cc, a) &&
                      std::make_tuple(a, b, cc) < std::make_tuple(cc, a, b)))
        continue;
      const int64_t cyc[3][3] = {{a, b, cc}, {b, cc, a}, {cc, a, b}};
      const int m = fixed ? 1 : 3;
      // flat index of element (d, h, w) of volume vc: ((v * N + d) * C + c) * N * N + h * N + w
      const int64_t base = (vc / C) * N * C * N * N + (vc % C) * N * N;
      auto index = [&](int64_t d, int64_t h, int64_t w) { return base + d * C * N * N + h * N + w; };
      auto side = [&](int64_t blockidx) { return std::min(kCube, N - blockidx * kCube); };
      for (int k = 0; k < m; ++k) {
        const int64_t d0 = cyc[k][0] * kCube, h0 = cyc[k][1] * kCube, w0 = cyc[k][2] * kCube;
        const int64_t sd = side(cyc[k][0]), sh = side(cyc[k][1]), sw = side(cyc[k][2]);
        for (int64_t dd = 0; dd < sd; ++dd)
          for (int64_t hh = 0; hh < sh; ++hh) start[dd * sh + hh] = index(d0 + dd, h0 + hh, w0);
        z.fill(f, start, sd * sh, sw);
        for (int64_t dd = 0; dd < sd; ++dd)
          for (int64_t hh = 0; hh < sh; ++hh) {
            const int64_t i0 = start[dd * sh + hh];
            const float* zr = z.run[dd * sh + hh];
            for (int64_t ww = 0; ww < sw; ++ww) blk[k][dd][hh][ww] = f(x[i0 + ww], float(eps[i0 + ww]), zr[ww]);
          }
      }
      for (int k = 0; k < m; ++k) {
        // block cyc[k] = (d-block, h-block, w-block) lands on (h-block, w-block, d-block) = cyc[(k + 1) % 3]
        const int64_t d0 = cyc[k][1] * kCube, h0 = cyc[k][2] * kCube, w0 = cyc[k][0] * kCube;
        const int64_t sd = side(cyc[k][1]), sh = side(cyc[k][2]), sw = side(cyc[k][0]);
        for (int64_t dd = 0; dd < sd; ++dd)
          for (int64_t hh = 0; hh < sh; ++hh) {
            float* o = x + index(d0 + dd, h0 + hh, w0);
            for (int64_t ww = 0; ww < sw; ++ww) o[ww] = blk[k][ww][dd][hh];
          }
      }
    }
  });
}

// Calls fn(E{}) with E the C++ type of eps's dtype (checked before).
template <typename Fn>
void dispatch_eps(at::ScalarType t, Fn&& fn) {
  switch (t) {
    case at::kBFloat16: return fn(c10::BFloat16{});
    case at::kHalf: return fn(c10::Half{});
    default: return fn(float{});
  }
}

Step make_step(const std::optional<at::Tensor>& noise, double c_x, double c_eps, double c_z, int64_t seed,
               int64_t offset) {
  return Step{noise.has_value() ? noise->data_ptr<float>() : nullptr, float(c_x), float(c_eps), float(c_z),
              uint64_t(seed), uint64_t(offset)};
}

at::Tensor fused_step_cpu(const at::Tensor& x, const at::Tensor& eps, double c_x, double c_eps, double c_z,
                          bool rotate, const std::optional<at::Tensor>& noise, int64_t seed, int64_t offset) {
  m3d::check_step_args("fused_step", x, eps, noise);
  const at::Tensor xc = x.contiguous(), ec = eps.contiguous();
  const auto nc = m3d::contiguous(noise);
  at::Tensor out = at::empty_symint(m3d::step_out_sizes(x, rotate), x.options());
  if (x.numel() == 0) return out;
  const Step f = make_step(nc, c_x, c_eps, c_z, seed, offset);
  dispatch_eps(ec.scalar_type(), [&](auto tag) {
    using E = decltype(tag);
    if (rotate)
      step_rotate(xc.data_ptr<float>(), ec.data_ptr<E>(), out.data_ptr<float>(), xc.sizes().data(), f);
    else
      step_identity(xc.data_ptr<float>(), ec.data_ptr<E>(), out.data_ptr<float>(), xc.numel(), f);
  });
  return out;
}

void fused_step__cpu(at::Tensor& x, const at::Tensor& eps, double c_x, double c_eps, double c_z,
                     const std::optional<at::Tensor>& noise, int64_t seed, int64_t offset) {
  m3d::check_inplace_args("fused_step_", x, eps, noise);
  const at::Tensor ec = eps.contiguous();
  const auto nc = m3d::contiguous(noise);
  const Step f = make_step(nc, c_x, c_eps, c_z, seed, offset);
  dispatch_eps(ec.scalar_type(), [&](auto tag) {
    using E = decltype(tag);
    step_identity(x.data_ptr<float>(), ec.data_ptr<E>(), x.data_ptr<float>(), x.numel(), f);
  });
}

void fused_step_rotate__cpu(at::Tensor& x, const at::Tensor& eps, double c_x, double c_eps, double c_z,
                            const std::optional<at::Tensor>& noise, int64_t seed, int64_t offset) {
  m3d::check_inplace_args("fused_step_rotate_", x, eps, noise);
  m3d::check_cubic("fused_step_rotate_", x);
  const at::Tensor ec = eps.contiguous();
  const auto nc = m3d::contiguous(noise);
  const Step f = make_step(nc, c_x, c_eps, c_z, seed, offset);
  dispatch_eps(ec.scalar_type(), [&](auto tag) {
    using E = decltype(tag);
    step_rotate_inplace(x.data_ptr<float>(), ec.data_ptr<E>(), x.sizes().data(), f);
  });
}

// Meta kernels (shapes and checks only): torch.compile, FakeTensor and opcheck use them.
at::Tensor fused_step_meta(const at::Tensor& x, const at::Tensor& eps, double, double, double, bool rotate,
                           const std::optional<at::Tensor>& noise, int64_t, int64_t) {
  m3d::check_step_args("fused_step", x, eps, noise);
  return at::empty_symint(m3d::step_out_sizes(x, rotate), x.options());
}

void fused_step__meta(at::Tensor& x, const at::Tensor& eps, double, double, double,
                      const std::optional<at::Tensor>& noise, int64_t, int64_t) {
  m3d::check_inplace_args("fused_step_", x, eps, noise);
}

void fused_step_rotate__meta(at::Tensor& x, const at::Tensor& eps, double, double, double,
                             const std::optional<at::Tensor>& noise, int64_t, int64_t) {
  m3d::check_inplace_args("fused_step_rotate_", x, eps, noise);
  m3d::check_cubic("fused_step_rotate_", x);
}

}  // namespace

TORCH_LIBRARY_IMPL(micro3diff, CPU, m) {
  m.impl("fused_step", &fused_step_cpu);
  m.impl("fused_step_", &fused_step__cpu);
  m.impl("fused_step_rotate_", &fused_step_rotate__cpu);
}

TORCH_LIBRARY_IMPL(micro3diff, Meta, m) {
  m.impl("fused_step", &fused_step_meta);
  m.impl("fused_step_", &fused_step__meta);
  m.impl("fused_step_rotate_", &fused_step_rotate__meta);
}
