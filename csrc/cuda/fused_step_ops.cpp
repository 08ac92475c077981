// Torch glue of the CUDA fused-step kernels (built only when torch has CUDA): argument checks shared with
// the CPU kernels (fused_step.h), device guard, current stream. The kernels are in fused_step_kernel.cu.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "cuda/fused_step_kernel.h"
#include "fused_step.h"

namespace {

m3d::EpsType eps_type(at::ScalarType t) {
  switch (t) {
    case at::kBFloat16: return m3d::EpsType::kBFloat16;
    case at::kHalf: return m3d::EpsType::kFloat16;
    default: return m3d::EpsType::kFloat32;
  }
}

// x, eps, noise contiguous (checked by the caller's m3d::check_* and .contiguous()).
m3d::StepParams make_params(const at::Tensor& x, const at::Tensor& eps, const std::optional<at::Tensor>& noise,
                            const at::Tensor& out, double c_x, double c_eps, double c_z, int64_t seed, int64_t offset) {
  const auto s = x.sizes();
  return m3d::StepParams{x.data_ptr<float>(), eps.data_ptr(), eps_type(eps.scalar_type()),
                         noise.has_value() ? noise->data_ptr<float>() : nullptr, out.data_ptr<float>(),
                         s[0], s[1], s[2], s[3], s[4], float(c_x), float(c_eps), float(c_z),
                         uint64_t(seed), uint64_t(offset)};
}

at::Tensor fused_step_cuda(const at::Tensor& x, const at::Tensor& eps, double c_x, double c_eps, double c_z,
                           bool rotate, const std::optional<at::Tensor>& noise, int64_t seed, int64_t offset) {
  m3d::check_step_args("fused_step", x, eps, noise);
  const c10::cuda::CUDAGuard guard(x.device());
  const at::Tensor xc = x.contiguous(), ec = eps.contiguous();
  const auto nc = m3d::contiguous(noise);
  at::Tensor out = at::empty_symint(m3d::step_out_sizes(x, rotate), x.options());
  const auto p = make_params(xc, ec, nc, out, c_x, c_eps, c_z, seed, offset);
  C10_CUDA_CHECK(m3d::launch_fused_step(p, rotate, c10::cuda::getCurrentCUDAStream()));
  return out;
}

void fused_step__cuda(at::Tensor& x, const at::Tensor& eps, double c_x, double c_eps, double c_z,
                      const std::optional<at::Tensor>& noise, int64_t seed, int64_t offset) {
  m3d::check_inplace_args("fused_step_", x, eps, noise);
  const c10::cuda::CUDAGuard guard(x.device());
  const at::Tensor ec = eps.contiguous();
  const auto nc = m3d::contiguous(noise);
  const auto p = make_params(x, ec, nc, x, c_x, c_eps, c_z, seed, offset);
  C10_CUDA_CHECK(m3d::launch_fused_step(p, false, c10::cuda::getCurrentCUDAStream()));
}

void fused_step_rotate__cuda(at::Tensor& x, const at::Tensor& eps, double c_x, double c_eps, double c_z,
                             const std::optional<at::Tensor>& noise, int64_t seed, int64_t offset) {
  m3d::check_inplace_args("fused_step_rotate_", x, eps, noise);
  m3d::check_cubic("fused_step_rotate_", x);
  const c10::cuda::CUDAGuard guard(x.device());
  const at::Tensor ec = eps.contiguous();
  const auto nc = m3d::contiguous(noise);
  const auto p = make_params(x, ec, nc, x, c_x, c_eps, c_z, seed, offset);
  C10_CUDA_CHECK(m3d::launch_fused_step_rotate_inplace(p, c10::cuda::getCurrentCUDAStream()));
}

}  // namespace

TORCH_LIBRARY_IMPL(micro3diff, CUDA, m) {
  m.impl("fused_step", &fused_step_cuda);
  m.impl("fused_step_", &fused_step__cuda);
  m.impl("fused_step_rotate_", &fused_step_rotate__cuda);
}
