// Torch-free portability macros: the same inline math compiles as plain C++ (cpu/) and as CUDA (cuda/).
#pragma once

#if defined(__CUDACC__) || defined(__HIPCC__)
#define PK_HOST_DEVICE __host__ __device__
#define PK_INLINE __host__ __device__ __forceinline__
#else
#define PK_HOST_DEVICE
// Always inlined: these helpers are compiled under different FMA-contraction settings in different files
// (gram_cpu.cpp, fit_cpu.cpp keep it), so an out-of-line copy the linker might share between them would not do.
#define PK_INLINE inline __attribute__((always_inline))
#endif
