// Argument checks of the lineal_path op, shared by its CPU and CUDA kernels (so every device reports the
// same errors). The run-length arithmetic itself is torch-free: lineal_path_runs.h.
//   lineal_path(x, z_max, periodic): x (B, *spatial) uint8 contiguous, nonzero = phase, 1 to 3 spatial dims;
//   0 <= z_max < every spatial size. Returns L: (B, ndim, z_max + 1) float64, L[b, a, z] along axis a.
#pragma once
#include <ATen/ATen.h>
#include <torch/library.h>

namespace m3d {

inline void check_lineal_path_args(const at::Tensor& x, int64_t z_max) {
  TORCH_CHECK(x.is_contiguous(), "x must be contiguous");
  TORCH_CHECK(x.scalar_type() == at::kByte, "x must be uint8, got ", x.scalar_type());
  TORCH_CHECK(x.dim() >= 2 && x.dim() <= 4, "x must be (B, *spatial) with 1 to 3 spatial dims, got ", x.sizes());
  TORCH_CHECK(x.numel() > 0, "x must not be empty, got ", x.sizes());
  for (int64_t d = 1; d < x.dim(); ++d)
    TORCH_CHECK(z_max >= 0 && z_max < x.size(d), "z_max must be in [0, ", x.size(d) - 1, "], got ", z_max);
}

}  // namespace m3d
