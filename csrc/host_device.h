// M3D_HD marks the functions of the torch-free headers (philox.h, lineal_path_runs.h): host C++, and under
// nvcc also __host__ __device__; always inlined.
#pragma once

#ifdef __CUDACC__
#define M3D_HD __host__ __device__ __forceinline__
#else
#define M3D_HD inline __attribute__((always_inline))
#endif
