// Torquato lineal path along one axis on CUDA (DESIGN 1.4). Torch-free: a params struct and a
// launcher taking a cudaStream_t; the torch glue is csrc/cuda/lineal_path_ops.cpp.
#pragma once
#include <cstdint>

#include <cuda_runtime.h>

namespace m3d {

struct LinealPathParams {
  const uint8_t* x;          // (batch, numel) contiguous; nonzero = phase
  unsigned long long* hist;  // (batch, n + 1) zero-filled workspace: runs of length c per item
  double* out;               // (batch, ndim, z_max + 1): this launch fills out[:, axis, :]
  int64_t batch;             // items
  int64_t numel;             // voxels per item
  int64_t n;                 // size of the axis (line length)
  int64_t inner;             // stride of the axis in elements (product of the sizes after it)
  int64_t axis;              // which spatial axis, 0 .. ndim - 1
  int64_t ndim;              // spatial dims
  int64_t z_max;             // largest lag
  bool periodic;             // lines wrap around
};

// Histogram of run lengths along the axis, then L(z) = segments / windows. Returns the launch error.
cudaError_t launch_lineal_path_axis(const LinealPathParams& p, cudaStream_t stream);

}  // namespace m3d
