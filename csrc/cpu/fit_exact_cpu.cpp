// fit_single_exact (see fit_exact_cpu.h): no padding lanes, so inf and NaN propagate exactly as in the reference.
#include "fit_exact_cpu.h"

#include <algorithm>
#include <vector>

#include "../common/poly_math.h"

namespace pykernels {

template <typename scalar_t>
void fit_single_exact(const scalar_t* x, const scalar_t* y, int64_t n, int64_t degree, scalar_t lr, int64_t steps,
                      int64_t record_every, int64_t& until_record, scalar_t* coeffs, scalar_t*& trace) {
  const double inv_n = 1.0 / static_cast<double>(n);
  std::vector<double> sums(degree + 2);
  for (int64_t step = 0; step < steps; ++step) {
    std::fill(sums.begin(), sums.end(), 0.0);
    for (int64_t i = 0; i < n; ++i) {
      const scalar_t r = horner(coeffs, degree, x[i]) - y[i];
      sums[0] += static_cast<double>(r * r);  // products in scalar_t, as the SIMD loops form them
      accumulate_powers(sums.data() + 1, 1, degree, x[i], r);
    }
    if (--until_record == 0) {
      *trace++ = static_cast<scalar_t>(sums[0] * inv_n);
      until_record = record_every;
    }
    for (int64_t k = 0; k <= degree; ++k) coeffs[k] -= lr * static_cast<scalar_t>(2.0 * inv_n * sums[k + 1]);
  }
}


template void fit_single_exact<float>(const float*, const float*, int64_t, int64_t, float, int64_t, int64_t, int64_t&,
                                      float*, float*&);
template void fit_single_exact<double>(const double*, const double*, int64_t, int64_t, double, int64_t, int64_t,
                                       int64_t&, double*, double*&);

}  // namespace pykernels
