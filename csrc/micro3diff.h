// Shared declarations for the micro3diff ops.
//
// Layout conventions (documented once here):
//   volumes: (V, D, C, H, W) contiguous float32. V volumes, C channels, spatial (D, H, W).
//   The rotation R maps in[v, d, c, h, w] -> out[v, h, c, w, d]  (shape (V, H, C, W, D)).
#pragma once
#include <torch/library.h>
#include <ATen/ATen.h>

#define M3D_CHECK_CONTIGUOUS(t) TORCH_CHECK((t).is_contiguous(), #t " must be contiguous")
#define M3D_CHECK_FLOAT(t) TORCH_CHECK((t).scalar_type() == at::kFloat, #t " must be float32, got ", (t).scalar_type())
#define M3D_CHECK_DIM(t, n) TORCH_CHECK((t).dim() == (n), #t " must have ", (n), " dims, got ", (t).dim())
#define M3D_CHECK_SAME_SHAPE(a, b) \
  TORCH_CHECK((a).sizes() == (b).sizes(), #a " and " #b " must have the same shape, got ", (a).sizes(), " and ", (b).sizes())
#define M3D_CHECK_SAME_DEVICE(a, b) \
  TORCH_CHECK((a).device() == (b).device(), #a " and " #b " must be on the same device, got ", (a).device(), " and ", (b).device())

// lineal_path(x, z_max, periodic): x (B, *spatial) uint8 contiguous, nonzero = phase, 1 to 3 spatial
// dims; 0 <= z_max < every spatial size. Returns L: (B, ndim, z_max + 1) float64, L[b, a, z] along axis a.
inline void m3d_check_lineal_path(const at::Tensor& x, int64_t z_max) {
  M3D_CHECK_CONTIGUOUS(x);
  TORCH_CHECK(x.scalar_type() == at::kByte, "x must be uint8, got ", x.scalar_type());
  TORCH_CHECK(x.dim() >= 2 && x.dim() <= 4, "x must be (B, *spatial) with 1 to 3 spatial dims, got ", x.sizes());
  TORCH_CHECK(x.numel() > 0, "x must not be empty, got ", x.sizes());
  for (int64_t d = 1; d < x.dim(); ++d)
    TORCH_CHECK(z_max >= 0 && z_max < x.size(d), "z_max must be in [0, ", x.size(d) - 1, "], got ", z_max);
}
