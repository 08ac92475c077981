// Torch glue for the CUDA lineal path (DESIGN 1.4): checks, device guard, current stream, workspace.
// Built only when torch has CUDA; the kernel itself is torch-free (lineal_path_kernel.cu).
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "cuda/lineal_path_kernel.h"
#include "lineal_path.h"

namespace {

at::Tensor lineal_path_cuda(const at::Tensor& x, int64_t z_max, bool periodic) {
  m3d::check_lineal_path_args(x, z_max);
  TORCH_CHECK(x.is_cuda(), "x must be a CUDA tensor");
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t batch = x.size(0), ndim = x.dim() - 1;
  at::Tensor out = at::empty({batch, ndim, z_max + 1}, x.options().dtype(at::kDouble));
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(x.device().index());
  for (int64_t a = 0; a < ndim; ++a) {
    at::Tensor hist = at::zeros({batch, x.size(a + 1) + 1}, x.options().dtype(at::kLong));
    m3d::LinealPathParams p;
    p.x = x.data_ptr<uint8_t>();
    p.hist = reinterpret_cast<unsigned long long*>(hist.data_ptr<int64_t>());
    p.out = out.data_ptr<double>();
    p.batch = batch;
    p.numel = x.numel() / batch;
    p.n = x.size(a + 1);
    p.inner = x.stride(a + 1);
    p.axis = a;
    p.ndim = ndim;
    p.z_max = z_max;
    p.periodic = periodic;
    C10_CUDA_CHECK(m3d::launch_lineal_path_axis(p, stream));
  }
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(micro3diff, CUDA, m) { m.impl("lineal_path", &lineal_path_cuda); }
