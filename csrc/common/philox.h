// Counter-based standard-normal samples: Philox4x32-10 (Salmon et al., SC'11; the generator of cuRAND and
// torch's CUDA RNG) turned into normals by Box-Muller. Torch-free and written once for every backend: the math
// is templated on a "lane" type, a scalar (CUDA threads, host tests) or a SIMD vector (the CPU kernels).
//
// The sample is a pure function of (seed, stream, index), so a kernel can regenerate it instead of storing it:
//   element i = 64 m + 16 k + l  is output k (0..3) of the Philox block with counter j = 16 m + l (l = 0..15),
//   counter words (j_lo, j_hi, stream_lo, stream_hi), key words (seed_lo, seed_hi);
//   outputs (0, 1) and (2, 3) are Box-Muller pairs: z_even = r cos(theta), z_odd = r sin(theta) with
//   r = sqrt(-2 ln u), u = ((bits0 >> 1) + 0.5) 2^-31 in float32 (so 0 < u <= 1 and r <= 6.67), and theta
//   uniform from all 32 bits of the odd output (2 bits pick the quadrant, 30 the angle within it).
// The 16-wide layout matches one AVX-512 register of floats; it is part of the definition, not of a backend.
// The scalar and the SIMD instance give the same bits on one CPU build (same operations, correctly rounded sqrt);
// other builds and devices agree to float32 rounding (FMA contraction may differ).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "host_device.h"

namespace pykernels {
namespace philox {

constexpr uint32_t kMultiplier0 = 0xD2511F53u;
constexpr uint32_t kMultiplier1 = 0xCD9E8D57u;
constexpr uint32_t kWeyl0 = 0x9E3779B9u;  // key schedule increments
constexpr uint32_t kWeyl1 = 0xBB67AE85u;
constexpr int kRounds = 10;
constexpr int kBlockLanes = 16;                    // counters per sample block
constexpr int kBlockSize = 4 * kBlockLanes;        // normals per sample block

// How a word type multiplies: 32x32 -> 64-bit product split into halves. Specialized by the CPU's SIMD words.
template <typename W>
struct PhiloxWords;

template <>
struct PhiloxWords<uint32_t> {
  static PK_INLINE void mulhilo(uint32_t a, uint32_t multiplier, uint32_t& hi, uint32_t& lo) {
    const uint64_t product = static_cast<uint64_t>(a) * multiplier;
    hi = static_cast<uint32_t>(product >> 32);
    lo = static_cast<uint32_t>(product);
  }
};

// The ten rounds on kSets independent counters (or sets of SIMD lanes of counters: W with its PhiloxWords),
// round by round so that the sets' multiplies overlap.
template <int kSets, typename W>
PK_INLINE void philox4x32_10(W (*c)[4], uint32_t key0, uint32_t key1) {
  for (int round = 0; round < kRounds; ++round) {
    for (int set = 0; set < kSets; ++set) {
      W hi0, lo0, hi1, lo1;
      PhiloxWords<W>::mulhilo(c[set][0], kMultiplier0, hi0, lo0);
      PhiloxWords<W>::mulhilo(c[set][2], kMultiplier1, hi1, lo1);
      c[set][0] = hi1 ^ c[set][1] ^ key0;
      c[set][1] = lo1;
      c[set][2] = hi0 ^ c[set][3] ^ key1;
      c[set][3] = lo0;
    }
    key0 += kWeyl0;
    key1 += kWeyl1;
  }
}

template <typename To, typename From>
PK_INLINE To bit_cast(const From& from) {
  static_assert(sizeof(To) == sizeof(From), "bit_cast needs equal sizes");
  To to;
  std::memcpy(&to, &from, sizeof(To));
  return to;
}

// Scalar lanes; the CPU kernels supply a SIMD twin with the same members.
struct ScalarLanes {
  using Float = float;
  using Int = int32_t;
  using UInt = uint32_t;
  static PK_INLINE Float to_float(Int v) { return static_cast<Float>(v); }
  static PK_INLINE Int to_int(UInt v) { return static_cast<Int>(v); }
  static PK_INLINE Float splat(float c) { return c; }
  static PK_INLINE Int splat_int(int32_t c) { return c; }
  static PK_INLINE Float sqrt(Float v) { return ::sqrtf(v); }  // correctly rounded, like the SIMD twin's
};

// ln(x) for normal, positive float32 x (Cephes logf: range reduction to [sqrt(1/2), sqrt(2)) and a polynomial
// of degree 8; about 1 ulp). Only + - * and bit operations, so that it vectorizes and is deterministic.
template <typename L>
PK_INLINE typename L::Float log_positive(typename L::Float x) {
  using F = typename L::Float;
  using I = typename L::Int;
  const I bits = bit_cast<I>(x);
  I exponent = ((bits >> 23) & L::splat_int(0xff)) - L::splat_int(126);
  F m = bit_cast<F>((bits & L::splat_int(0x007fffff)) | L::splat_int(0x3f000000));  // in [0.5, 1)
  const auto small = m < L::splat(0.707106781186547524f);
  exponent = small ? exponent - L::splat_int(1) : exponent;
  m = small ? m + m - L::splat(1.0f) : m - L::splat(1.0f);
  const F e = L::to_float(exponent);
  const F z = m * m;
  // the Cephes polynomial c_0 + c_1 m + ... + c_8 m^8 by Estrin's scheme (a short dependency chain)
  const F z2 = z * z;
  const F q01 = L::splat(-2.4999993993e-1f) * m + L::splat(3.3333331174e-1f);
  const F q23 = L::splat(-1.6668057665e-1f) * m + L::splat(2.0000714765e-1f);
  const F q45 = L::splat(-1.2420140846e-1f) * m + L::splat(1.4249322787e-1f);
  const F q67 = L::splat(-1.1514610310e-1f) * m + L::splat(1.1676998740e-1f);
  const F p = (q23 * z + q01) + (q67 * z + q45) * z2 + L::splat(7.0376836292e-2f) * (z2 * z2);
  F y = p * m * z;
  y = y + e * L::splat(-2.12194440e-4f);
  y = y - L::splat(0.5f) * z;
  return m + y + e * L::splat(0.693359375f);
}

// One Box-Muller pair from two 32-bit words (see the header comment).
template <typename L>
PK_INLINE void box_muller(typename L::UInt radius_bits, typename L::UInt angle_bits, typename L::Float& z_even,
                          typename L::Float& z_odd) {
  using F = typename L::Float;
  using I = typename L::Int;
  const F u = (L::to_float(L::to_int(radius_bits >> 1)) + L::splat(0.5f)) * L::splat(4.656612873077393e-10f);
  const F radius = L::sqrt(L::splat(-2.0f) * log_positive<L>(u));
  // theta = quadrant * pi/2 + a, a = (f - 1/2) pi/2 in [-pi/4, pi/4]: short polynomials suffice (Cephes sinf/cosf)
  const I quadrant = L::to_int(angle_bits >> 30);
  const F f = L::to_float(L::to_int(angle_bits & 0x3fffffffu)) * L::splat(9.313225746154785e-10f);
  const F a = (f - L::splat(0.5f)) * L::splat(1.5707963267948966f);
  const F a2 = a * a;
  const F sin_a = ((L::splat(-1.9515295891e-4f) * a2 + L::splat(8.3321608736e-3f)) * a2 +
                   L::splat(-1.6666654611e-1f)) * a2 * a + a;
  const F cos_a = ((L::splat(2.443315711809948e-5f) * a2 + L::splat(-1.388731625493765e-3f)) * a2 +
                   L::splat(4.166664568298827e-2f)) * a2 * a2 - L::splat(0.5f) * a2 + L::splat(1.0f);
  // rotate (cos a, sin a) by quadrant * pi/2: odd quadrants swap the two, and the signs follow the quadrant
  const auto odd = (quadrant & L::splat_int(1)) != L::splat_int(0);
  const F x = odd ? sin_a : cos_a;
  const F y = odd ? cos_a : sin_a;
  const I cos_sign = ((quadrant + L::splat_int(1)) & L::splat_int(2)) << 30;
  const I sin_sign = (quadrant & L::splat_int(2)) << 30;
  z_even = radius * bit_cast<F>(bit_cast<I>(x) ^ cos_sign);
  z_odd = radius * bit_cast<F>(bit_cast<I>(y) ^ sin_sign);
}

// The four normals of counter j (elements 64 m + 16 k + l for j = 16 m + l): one CUDA thread's share.
PK_INLINE void normals_of_counter(uint64_t seed, uint64_t stream, uint64_t counter, float out[4]) {
  uint32_t words[1][4] = {{static_cast<uint32_t>(counter), static_cast<uint32_t>(counter >> 32),
                           static_cast<uint32_t>(stream), static_cast<uint32_t>(stream >> 32)}};
  philox4x32_10<1>(words, static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
  box_muller<ScalarLanes>(words[0][0], words[0][1], out[0], out[1]);
  box_muller<ScalarLanes>(words[0][2], words[0][3], out[2], out[3]);
}

}  // namespace philox
}  // namespace pykernels
