// The reference's fit loop, for the segments of a fit the SIMD loops of fit_cpu.cpp cannot certify (values that are
// not finite, or intermediates that could overflow). Compiled on its own, without FMA contraction (unlike
// fit_cpu.cpp), so every product is rounded as the reference rounds it.
#pragma once

#include <cstdint>

namespace pykernels {

// `steps` steps of gradient descent on one series, one point at a time, in the reference's order: r = p(x) - y by
// Horner, loss = mean(r^2), c_k -= lr 2/N sum r x^k (products in scalar_t, sums in float64). until_record counts
// down to the next recorded loss; trace advances past the losses written.
template <typename scalar_t>
void fit_single_exact(const scalar_t* x, const scalar_t* y, int64_t n, int64_t degree, scalar_t lr, int64_t steps,
                      int64_t record_every, int64_t& until_record, scalar_t* coeffs, scalar_t*& trace);

}  // namespace pykernels
