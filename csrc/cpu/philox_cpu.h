// The CPU's SIMD instance of common/philox.h: whole sample blocks (64 normals each), the 16 counters of a block in
// vector lanes (AVX-512 zmm registers with -march supporting it; GCC splits the vectors otherwise).
#pragma once

#include <cmath>
#include <cstdint>

#ifdef __AVX512F__
#include <immintrin.h>
#endif

#include "../common/philox.h"

namespace pykernels {
namespace philox {

typedef float FloatLanes __attribute__((vector_size(kBlockLanes * sizeof(float))));
typedef int32_t IntLanes __attribute__((vector_size(kBlockLanes * sizeof(int32_t))));
typedef uint32_t UIntLanes __attribute__((vector_size(kBlockLanes * sizeof(uint32_t))));
// Philox words of 8 counters in 64-bit lanes: only the low 32 bits are meaningful (the multiply reads those).
typedef uint64_t WordLanes __attribute__((vector_size(8 * sizeof(uint64_t))));
typedef uint32_t HalfUIntLanes __attribute__((vector_size(8 * sizeof(uint32_t))));

template <>
struct PhiloxWords<WordLanes> {
  // only the low 32 bits of a word are meaningful, and the low 32 bits of `lo` are the low half
  static inline void mulhilo(WordLanes a, uint32_t multiplier, WordLanes& hi, WordLanes& lo) {
#ifdef __AVX512F__
    // GCC writes the generic form below as vpandq + vpmullq; vpmuludq multiplies the low halves by itself
    lo = (WordLanes)_mm512_mul_epu32((__m512i)a, _mm512_set1_epi64(multiplier));
#else
    lo = (a & 0xffffffffu) * multiplier;
#endif
    hi = lo >> 32;
  }
};

struct VectorLanes {
  using Float = FloatLanes;
  using Int = IntLanes;
  using UInt = UIntLanes;
  static inline Float to_float(Int v) { return __builtin_convertvector(v, Float); }
  static inline Int to_int(UInt v) { return __builtin_convertvector(v, Int); }
  static inline Float splat(float c) { return Float{} + c; }
  static inline Int splat_int(int32_t c) { return Int{} + c; }
  static inline Float sqrt(Float v) {
#ifdef __AVX512F__
    return (Float)_mm512_sqrt_ps((__m512)v);
#else
    for (int lane = 0; lane < kBlockLanes; ++lane) v[lane] = std::sqrt(v[lane]);
    return v;
#endif
  }
};

inline UIntLanes join_low_words(WordLanes first, WordLanes second) {
  const HalfUIntLanes a = __builtin_convertvector(first, HalfUIntLanes);
  const HalfUIntLanes b = __builtin_convertvector(second, HalfUIntLanes);
  return __builtin_shufflevector(a, b, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
}

// kBlocks consecutive sample blocks of (seed, stream) from `first_block` on: out[b][k][l] is element
// 64 (first_block + b) + 16 k + l. Several blocks per call keep enough independent multiplies in flight.
template <int kBlocks>
inline void normal_blocks(uint64_t seed, uint64_t stream, uint64_t first_block, FloatLanes (*out)[4]) {
  constexpr int kSets = 2 * kBlocks;  // sets of 8 counters
  const WordLanes lane_index = {0, 1, 2, 3, 4, 5, 6, 7};
  WordLanes words[kSets][4];
  for (int set = 0; set < kSets; ++set) {
    const WordLanes counter = lane_index + (first_block * kBlockLanes + 8 * set);
    words[set][0] = counter;
    words[set][1] = counter >> 32;
    words[set][2] = WordLanes{} + (stream & 0xffffffffu);
    words[set][3] = WordLanes{} + (stream >> 32);
  }
  philox4x32_10<kSets>(words, static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
  for (int block = 0; block < kBlocks; ++block) {
    UIntLanes bits[4];
    for (int k = 0; k < 4; ++k) bits[k] = join_low_words(words[2 * block][k], words[2 * block + 1][k]);
    box_muller<VectorLanes>(bits[0], bits[1], out[block][0], out[block][1]);
    box_muller<VectorLanes>(bits[2], bits[3], out[block][2], out[block][3]);
  }
}

}  // namespace philox
}  // namespace pykernels
