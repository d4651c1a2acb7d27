// Turns the runtime polynomial degree into a compile-time constant for the common small degrees, so that
// Horner and the per-power sums unroll into registers; other degrees run the same code with kDegree = -1.
#pragma once

#include <cstdint>
#include <type_traits>
#include <utility>

#include "host_device.h"

namespace pykernels {

constexpr int kDynamicDegree = -1;
constexpr int kMaxUnrolledDegree = 8;

template <int kDegree>
using DegreeConstant = std::integral_constant<int, kDegree>;

// The degree a kernel instantiated for kDegree runs with.
template <int kDegree>
PK_HOST_DEVICE constexpr int64_t effective_degree(int64_t runtime_degree) {
  return kDegree == kDynamicDegree ? runtime_degree : kDegree;
}

template <typename Fn>
void dispatch_degree(int64_t degree, Fn&& fn) {
  switch (degree) {
    case 0: return fn(DegreeConstant<0>{});
    case 1: return fn(DegreeConstant<1>{});
    case 2: return fn(DegreeConstant<2>{});
    case 3: return fn(DegreeConstant<3>{});
    case 4: return fn(DegreeConstant<4>{});
    case 5: return fn(DegreeConstant<5>{});
    case 6: return fn(DegreeConstant<6>{});
    case 7: return fn(DegreeConstant<7>{});
    case 8: return fn(DegreeConstant<8>{});
    default: return fn(DegreeConstant<kDynamicDegree>{});
  }
}

template <typename Fn, int... kDegrees>
void dispatch_degree_among(int64_t degree, Fn&& fn, std::integer_sequence<int, kDegrees...>) {
  ((degree == kDegrees && (fn(DegreeConstant<kDegrees>{}), true)) || ...);
}

// Every degree 0..kMaxDegree as a compile-time constant, none at run time (the caller checks the bound): for the
// CUDA reductions, whose per-power sums must stay in registers (a runtime count of them would live in local
// memory).
template <int kMaxDegree, typename Fn>
void dispatch_every_degree(int64_t degree, Fn&& fn) {
  dispatch_degree_among(degree, fn, std::make_integer_sequence<int, kMaxDegree + 1>{});
}

}  // namespace pykernels
