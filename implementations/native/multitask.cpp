// Multi-task weighting of float32 tasks in one pass per direction (multitask_torch.py: the paths, their
// error bounds and their fallbacks). Blocks of kBlock tasks stay in L1; the transcendentals come from
// PyTorch (torch.log, torch.exp: MKL's VML where it is built with it, twice SLEEF's speed here), the
// conversions and range checks run in plain loops the compiler vectorises, the sums in float64 vector
// lanes of ATen's Vectorized (any order: the bounds assumed are order-free).
// A range check that fails returns NaN: the caller then takes its checked path (a named error, or NaN
// propagated), so no out-of-range input reaches a result from here.
#include <torch/extension.h>

#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <cfloat>
#include <limits>
#include <optional>

namespace {

using Vd = at::vec::Vectorized<double>;
constexpr int64_t kBlock = 1024;
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

void require(const at::Tensor& t, int64_t k, const char* name, at::ScalarType type = at::kFloat) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == type && t.dim() == 1 && t.size(0) == k && t.is_contiguous(),
              name, " must be a contiguous 1-D ", type, " CPU tensor of ", k, " entries");
}

double lanes(const Vd& v) {
  alignas(64) double a[Vd::size()];
  v.store(a);
  double s = 0.0;
  for (int i = 0; i < Vd::size(); ++i) s += a[i];
  return s;
}

// acc0 + acc1 += x[0..n) (two accumulators; lanes beyond n zero-filled)
void sum_into(const double* x, int64_t n, Vd& acc0, Vd& acc1) {
  int64_t j = 0;
  for (; j + 2 * Vd::size() <= n; j += 2 * Vd::size()) {
    acc0 += Vd::loadu(x + j);
    acc1 += Vd::loadu(x + j + Vd::size());
  }
  for (; j < n; j += Vd::size()) acc0 += Vd::loadu(x + j, static_cast<int>(std::min<int64_t>(Vd::size(), n - j)));
}

// Dynamic Task Prioritization, γ = 1: ``w`` holds log κ_i on entry (torch.log: PyTorch's float32 log,
// MKL's where built with it, twice as fast as SLEEF's here; within 1 ULP either way) and the weights
// w_i = fl(fl(κ_i − 1)·w_i) on return (the eager kernels' roundings); returns Σ w_i·L_i in float64
// (each product exact: two float32 significands), or NaN unless every 0 ≤ L_i < ∞ and 0 < κ_i ≤ 1.
double dtp_forward(const at::Tensor& L, const at::Tensor& kap, at::Tensor& w) {
  const int64_t k = L.size(0);
  require(L, k, "losses");
  require(kap, k, "kpis");
  require(w, k, "w");
  const float* l = L.data_ptr<float>();
  const float* q = kap.data_ptr<float>();
  float* wp = w.data_ptr<float>();
  alignas(64) double t[kBlock];
  Vd acc0(0.0), acc1(0.0);
  unsigned ok = 1;  // an unsigned AND without branches: the loop vectorises (a bool does not)
  for (int64_t i = 0; i < k; i += kBlock) {
    const int64_t n = std::min(kBlock, k - i);
    for (int64_t j = 0; j < n; ++j) {
      const float lj = l[i + j], qj = q[i + j];
      ok &= unsigned(lj >= 0.0f) & unsigned(lj <= FLT_MAX) & unsigned(qj > 0.0f) & unsigned(qj <= 1.0f);  // NaN fails
      const float wj = (qj - 1.0f) * wp[i + j];
      wp[i + j] = wj;
      t[j] = static_cast<double>(wj) * static_cast<double>(lj);
    }
    sum_into(t, n, acc0, acc1);
  }
  return ok ? lanes(acc0 + acc1) : kNaN;
}

// Uncertainty weighting, kendall/simplified, before the exponential: writes −s_i (float64) to e and
// returns Σ s_i in float64, or NaN unless every 0 ≤ L_i < ∞ and |s_i| < ∞. The caller then takes
// e ← e^e in place with torch.exp (MKL's VML where PyTorch is built with it, twice SLEEF's speed here;
// within 1 ULP either way) and Σ L_i·e_i with uw_dot.
double uw_prepare(const at::Tensor& L, const at::Tensor& s, at::Tensor& e) {
  const int64_t k = L.size(0);
  require(L, k, "losses");
  require(s, k, "log_vars");
  require(e, k, "e", at::kDouble);
  const float* l = L.data_ptr<float>();
  const float* sp = s.data_ptr<float>();
  double* ep = e.data_ptr<double>();
  Vd acc0(0.0), acc1(0.0);
  unsigned ok = 1;  // an unsigned AND without branches: the loop vectorises (a bool does not)
  for (int64_t i = 0; i < k; i += kBlock) {
    const int64_t n = std::min(kBlock, k - i);
    for (int64_t j = 0; j < n; ++j) {
      const float lj = l[i + j], sj = sp[i + j];
      ok &= unsigned(lj >= 0.0f) & unsigned(lj <= FLT_MAX) & unsigned(sj >= -FLT_MAX) & unsigned(sj <= FLT_MAX);
      ep[i + j] = -static_cast<double>(sj);
    }
    sum_into(ep + i, n, acc0, acc1);
  }
  return ok ? -lanes(acc0 + acc1) : kNaN;
}

// Σ L_i·e_i in float64 by fused multiply-adds (e = e^{−s}: uw_prepare, then torch.exp).
double uw_dot(const at::Tensor& L, const at::Tensor& e) {
  const int64_t k = L.size(0);
  require(L, k, "losses");
  require(e, k, "e", at::kDouble);
  const float* l = L.data_ptr<float>();
  const double* ep = e.data_ptr<double>();
  alignas(64) double ld[kBlock];
  Vd acc0(0.0), acc1(0.0);
  for (int64_t i = 0; i < k; i += kBlock) {
    const int64_t n = std::min(kBlock, k - i);
    for (int64_t j = 0; j < n; ++j) ld[j] = static_cast<double>(l[i + j]);
    int64_t j = 0;
    for (; j + 2 * Vd::size() <= n; j += 2 * Vd::size()) {
      acc0 = at::vec::fmadd(Vd::loadu(ld + j), Vd::loadu(ep + i + j), acc0);
      acc1 = at::vec::fmadd(Vd::loadu(ld + j + Vd::size()), Vd::loadu(ep + i + j + Vd::size()), acc1);
    }
    for (; j < n; j += Vd::size()) {
      const int m = static_cast<int>(std::min<int64_t>(Vd::size(), n - j));  // zero-filled beyond m
      acc0 = at::vec::fmadd(Vd::loadu(ld + j, m), Vd::loadu(ep + i + j, m), acc0);
    }
  }
  return lanes(acc0 + acc1);
}

// Its backward: ∂/∂L_i = fl32(gc·e_i), ∂/∂s_i = fl32(fma(−gc·L_i, e_i, gr)) with gc = g'·c, gr = g'·r'
// (g' the cotangent, or g/K for a mean); an output passed as None is skipped.
void uw_backward(const at::Tensor& e, const at::Tensor& L, double gc, double gr, std::optional<at::Tensor> gL,
                 std::optional<at::Tensor> gs) {
  const int64_t k = L.size(0);
  require(L, k, "losses");
  require(e, k, "e", at::kDouble);
  if (gL) require(*gL, k, "gL");
  if (gs) require(*gs, k, "gs");
  const double* ep = e.data_ptr<double>();
  const float* l = L.data_ptr<float>();
  float* gLp = gL ? gL->data_ptr<float>() : nullptr;
  float* gsp = gs ? gs->data_ptr<float>() : nullptr;
  alignas(64) double a[kBlock], b[kBlock];
  const Vd vgc(gc), vgr(gr);
  for (int64_t i = 0; i < k; i += kBlock) {
    const int64_t n = std::min(kBlock, k - i);
    if (gLp != nullptr) {
      for (int64_t j = 0; j < n; j += Vd::size()) {
        const int m = static_cast<int>(std::min<int64_t>(Vd::size(), n - j));
        (Vd::loadu(ep + i + j, m) * vgc).store(a + j, m);
      }
      for (int64_t j = 0; j < n; ++j) gLp[i + j] = static_cast<float>(a[j]);
    }
    if (gsp != nullptr) {
      for (int64_t j = 0; j < n; ++j) b[j] = -gc * static_cast<double>(l[i + j]);
      for (int64_t j = 0; j < n; j += Vd::size()) {
        const int m = static_cast<int>(std::min<int64_t>(Vd::size(), n - j));
        at::vec::fmadd(Vd::loadu(b + j, m), Vd::loadu(ep + i + j, m), vgr).store(b + j, m);
      }
      for (int64_t j = 0; j < n; ++j) gsp[i + j] = static_cast<float>(b[j]);
    }
  }
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("dtp_forward", &dtp_forward, "DTP γ = 1 float32: weights into w, Σ w·L in float64 (NaN: out of range)");
  m.def("uw_prepare", &uw_prepare, "uncertainty weighting float32: -s into e (float64), Σ s (NaN: out of range)");
  m.def("uw_dot", &uw_dot, "uncertainty weighting float32: Σ L·e in float64");
  m.def("uw_backward", &uw_backward, "uncertainty weighting float32: the two partials");
}
