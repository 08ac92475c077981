// M3D_CLONES: compile a loop function for AVX-512, AVX2 and baseline x86-64 and pick one at load time (GCC >= 12),
// so the default -O3 build vectorises with the host's widest units without -march=native.
#pragma once
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12
#define M3D_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define M3D_CLONES
#endif
