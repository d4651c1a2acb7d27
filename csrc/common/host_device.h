// Torch-free portability macros: the same inline math compiles as plain C++ (cpu/) and as CUDA (cuda/).
#pragma once

#if defined(__CUDACC__) || defined(__HIPCC__)
#define PK_HOST_DEVICE __host__ __device__
#define PK_INLINE __host__ __device__ __forceinline__
#else
#define PK_HOST_DEVICE
#define PK_INLINE inline
#endif
