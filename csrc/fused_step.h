// Argument checks and output shapes of the fused-step ops, shared by their CPU, CUDA and Meta kernels
// (so every device reports the same errors). Shapes work on SymInts for torch.compile / opcheck.
//   x: (V, D, C, H, W) float32; eps: same shape, float32 / bfloat16 / float16; noise: same shape, float32.
// Out-of-place fused_step accepts any strides (inputs are made contiguous); the in-place ops need a
// contiguous x (it is updated where it lies); eps and noise may have any strides.
#pragma once
#include <ATen/ATen.h>
#include <torch/library.h>

namespace m3d {

inline void check_step_args(const char* op, const at::Tensor& x, const at::Tensor& eps,
                            const std::optional<at::Tensor>& noise) {
  TORCH_CHECK(x.dim() == 5, op, ": x must be (V, D, C, H, W) with 5 dims, got ", x.dim(), " dims");
  TORCH_CHECK(x.scalar_type() == at::kFloat, op, ": x must be float32, got ", x.scalar_type());
  TORCH_CHECK(eps.scalar_type() == at::kFloat || eps.scalar_type() == at::kBFloat16 || eps.scalar_type() == at::kHalf,
              op, ": eps must be float32, bfloat16 or float16, got ", eps.scalar_type());
  TORCH_CHECK(eps.device() == x.device(), op, ": eps must be on x's device ", x.device(), ", got ", eps.device());
  TORCH_CHECK(eps.sym_sizes() == x.sym_sizes(), op, ": eps must have x's shape ", x.sym_sizes(), ", got ",
              eps.sym_sizes());
  if (noise.has_value()) {
    TORCH_CHECK(noise->scalar_type() == at::kFloat, op, ": noise must be float32, got ", noise->scalar_type());
    TORCH_CHECK(noise->device() == x.device(), op, ": noise must be on x's device ", x.device(), ", got ",
                noise->device());
    TORCH_CHECK(noise->sym_sizes() == x.sym_sizes(), op, ": noise must have x's shape ", x.sym_sizes(), ", got ",
                noise->sym_sizes());
  }
}

inline void check_inplace_args(const char* op, const at::Tensor& x, const at::Tensor& eps,
                               const std::optional<at::Tensor>& noise) {
  check_step_args(op, x, eps, noise);
  TORCH_CHECK(x.is_contiguous(), op, ": x is updated in place and must be contiguous; call x.contiguous() first");
}

// fused_step_rotate_ keeps x's storage, so the rotated shape (V, H, C, W, D) must equal (V, D, C, H, W).
inline void check_cubic(const char* op, const at::Tensor& x) {
  const auto s = x.sym_sizes();
  TORCH_CHECK(s[1] == s[3] && s[3] == s[4], op, ": in-place rotation needs D == H == W, got (D, H, W) = (", s[1], ", ",
              s[3], ", ", s[4], "); use fused_step(..., rotate=True)");
}

inline std::optional<at::Tensor> contiguous(const std::optional<at::Tensor>& t) {
  return t.has_value() ? std::optional<at::Tensor>(t->contiguous()) : std::nullopt;
}

// (V, D, C, H, W) -> (V, H, C, W, D) when rotate, else unchanged.
inline std::vector<c10::SymInt> step_out_sizes(const at::Tensor& x, bool rotate) {
  const auto s = x.sym_sizes();
  if (!rotate) return s.vec();
  return {s[0], s[3], s[2], s[4], s[1]};
}

}  // namespace m3d
