// Torquato's lineal path L(z) from run lengths (DESIGN 1.4), shared by the CPU and CUDA kernels.
// Torch-free, so that csrc/cuda/lineal_path_kernel.cu compiles with bare nvcc.
//
// The kernels scan each line of n voxels along an axis for maximal runs of phase voxels (nonzero
// bytes) and count runs by length. A run of length c holds max(0, c - z) segments of z + 1
// consecutive voxels. Non-periodic lines have n - z windows of that length; periodic lines wrap
// around (a run may cross the line's end) and have n windows for every z, so a line entirely in the
// phase (counted as one run of length n) holds n segments for every z.
#pragma once
#include <cstdint>

#include "host_device.h"

namespace m3d {

// Windows of z + 1 voxels per line: n - z, or n when periodic.
M3D_HD int64_t lineal_path_windows(int64_t n, int64_t z, bool periodic) { return periodic ? n : n - z; }

// Segments of z + 1 voxels inside the phase, from hist[c] = number of runs of length c (c = 1..n).
template <typename Count>
M3D_HD int64_t lineal_path_segments(const Count* hist, int64_t n, int64_t z, bool periodic) {
  int64_t total = static_cast<int64_t>(hist[n]) * lineal_path_windows(n, z, periodic);
  for (int64_t c = z + 1; c < n; ++c) total += static_cast<int64_t>(hist[c]) * (c - z);
  return total;
}

}  // namespace m3d
