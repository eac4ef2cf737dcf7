// Multi-task weighting of float32 tasks in one pass per direction (multitask_torch.py: the paths, their
// error bounds and their fallbacks). Blocks of kBlock tasks stay in L1: the exponential runs on ATen's
// Vectorized (SLEEF u10: within 1 ULP), conversions and range checks in plain loops the compiler
// vectorises, sums in float64 vector lanes (any order: the bounds assumed are order-free).
// A range check that fails returns NaN: the caller then takes its checked path (a named error, or NaN
// propagated), so no out-of-range input reaches a result from here.
#include <torch/extension.h>

#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <cfloat>
#include <limits>
#include <optional>
#include <tuple>

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
    int64_t j = 0;
    for (; j + 2 * Vd::size() <= n; j += 2 * Vd::size()) {
      acc0 += Vd::loadu(t + j);
      acc1 += Vd::loadu(t + j + Vd::size());
    }
    for (; j < n; j += Vd::size()) acc0 += Vd::loadu(t + j, static_cast<int>(std::min<int64_t>(Vd::size(), n - j)));
  }
  return ok ? lanes(acc0 + acc1) : kNaN;
}

// Uncertainty weighting, kendall/simplified: writes e_i = e^{−s_i} (float64, SLEEF exp) and returns
// (Σ L_i·e_i, Σ s_i) in float64 (fused multiply-adds), or NaNs unless every 0 ≤ L_i < ∞ and |s_i| < ∞.
std::tuple<double, double> uw_forward(const at::Tensor& L, const at::Tensor& s, at::Tensor& e) {
  const int64_t k = L.size(0);
  require(L, k, "losses");
  require(s, k, "log_vars");
  require(e, k, "e", at::kDouble);
  const float* l = L.data_ptr<float>();
  const float* sp = s.data_ptr<float>();
  double* ep = e.data_ptr<double>();
  alignas(64) double ns[kBlock], ld[kBlock];
  Vd acc_a(0.0), acc_s(0.0);
  unsigned ok = 1;  // an unsigned AND without branches: the loop vectorises (a bool does not)
  for (int64_t i = 0; i < k; i += kBlock) {
    const int64_t n = std::min(kBlock, k - i);
    for (int64_t j = 0; j < n; ++j) {
      const float lj = l[i + j], sj = sp[i + j];
      ok &= unsigned(lj >= 0.0f) & unsigned(lj <= FLT_MAX) & unsigned(sj >= -FLT_MAX) & unsigned(sj <= FLT_MAX);
      ns[j] = -static_cast<double>(sj);
      ld[j] = static_cast<double>(lj);
    }
    for (int64_t j = 0; j < n; j += Vd::size()) {
      const int m = static_cast<int>(std::min<int64_t>(Vd::size(), n - j));
      const Vd x = Vd::loadu(ns + j, m);  // zero-filled beyond m: e = 1, L = 0, s = 0 add nothing
      const Vd ex = x.exp();
      ex.store(ep + i + j, m);
      acc_a = at::vec::fmadd(Vd::loadu(ld + j, m), ex, acc_a);
      acc_s -= x;
    }
  }
  if (!ok) return {kNaN, kNaN};
  return {lanes(acc_a), lanes(acc_s)};
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
  m.def("uw_forward", &uw_forward, "uncertainty weighting float32: e^{-s} into e, (Σ L·e, Σ s) (NaN: out of range)");
  m.def("uw_backward", &uw_backward, "uncertainty weighting float32: the two partials");
}
