// Torch-free CUDA launchers of the fused multi-plane step (DESIGN.md 1.3); torch glue: fused_step_ops.cpp.
//   out = R(c_x * x - c_eps * eps + c_z * z), z = noise or the Philox draw of philox.h.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace m3d {

enum class EpsType : int32_t { kFloat32 = 0, kBFloat16 = 1, kFloat16 = 2 };

// x, eps, noise: (V, D, C, H, W) contiguous on one device. out: (V, H, C, W, D) for the out-of-place
// rotation, else x's shape; out may be x for the identity and is x for the in-place rotation.
struct StepParams {
  const float* x;
  const void* eps;  // eps_type elements
  EpsType eps_type;
  const float* noise;  // nullptr: Philox(seed, offset)
  float* out;
  int64_t V, D, C, H, W;
  float c_x, c_eps, c_z;
  uint64_t seed, offset;
};

// R = rotation in[v, d, c, h, w] -> out[v, h, c, w, d] when rotate, else identity.
cudaError_t launch_fused_step(const StepParams& p, bool rotate, cudaStream_t stream);

// In-place rotation of cubic volumes (D == H == W), p.out == p.x.
cudaError_t launch_fused_step_rotate_inplace(const StepParams& p, cudaStream_t stream);

}  // namespace m3d
