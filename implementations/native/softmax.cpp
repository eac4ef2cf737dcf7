// Softmax and log-softmax rows, forward and backward, each row in L1 (implementations/softmax_torch.py).
//
// The mathematics is softmax_torch's row kernels (_shifted_rows, _lsm_rows, _sm_rows and their VJPs):
// per row of C logits, m = max x, d_j = fl(x_j − m) (float32), the maxima counted (d_j = 0) and
//     r = Σ_{j: d_j ≠ 0} e^{d_j} + (#{d_j = 0} − 1),
// the sum of every term but one maximum's, so that 1 + r is never rounded and a tiny r keeps its
// relative accuracy. Then log p_j = d_j − log1p r, p_j = e^{d_j}/(1 + r); the arg-max k of a row with
// r < 1 (p_k > 1/2: a unique maximum) takes the VJP forms free of 1 − p_k:
//     log-softmax: (g_k r − Σ_{i≠k} g_i)/(1 + r)        softmax: p_k Σ_{i≠k} p_i (g_k − g_i).
// A NaN, a +inf or a row of −inf makes m, d or r NaN and the row NaN (as PyTorch's kernels).
//
// Passes per row (the row stays in L1 after the first): its maximum; e^{d_j} (SLEEF expf, u10) summed in
// float64 (row_r: the maxima counted exactly); the output. half/bfloat16 rows are widened to float32
// once into a row buffer and the output rounded once to the input's dtype. The softmax backward reads
// the output p of float32 rows and recomputes p of half rows from the logits.
//
// Error (u = 2^-24, float32; U = 2^-53; W lanes):
//  * d_j rounds once, u|d_j|: within the conditioning (PyTorch's own x − m).
//  * each e^{d_j} is within 1 ULP ≤ 2u relative (SLEEF's documented u10 bound); the float64 sum of the
//    non-negative terms adds at most 2^-30 relative to r (row_r's test, else the masked sum, whose
//    (⌈C/W⌉ + W)·U is as small for C < 2^20): r errs by ≤ 2u(1 + 2^-6) relative — the sum adds nothing
//    at float32's scale (a float32 sum of 1,000 terms could add up to ~63u in the worst case, beyond the
//    4-ULP faithful budget of log p_k = −log1p r ≈ −r).
//  * L = log1p r in float64 (glibc, < 1 ULP double), relative condition r/((1 + r) log1p r) ≤ 1, so L
//    carries r's relative error ≤ 2u(1 + 2^-6) plus 2U; Lf = fl32(L) adds u. log p_k = −Lf (arg-max):
//    ≤ 3u + … relative ≤ 3 ULP. Other j: d_j ≤ 0 ≤ L, so |log p_j| = |d_j| + L ≥ max(|d_j|, L) and
//    fl(d_j − Lf) errs by ≤ u|log p_j| (rounding) + u|d_j| + (3u)L ≤ 5u|log p_j| — the same formula
//    and bound as the compiled kernel's float32 form with a sum at least as accurate.
//  * p_j = e^{d_j}·fl32(1/(1 + r)) (1/(1 + r) in float64): 1 ULP (exp) + r's 2u·r/(1 + r) + 2 roundings
//    ≤ 4u relative plus the u|d_j| of d_j — as PyTorch's e^{d}·(1/s).
//  * VJPs: Σ g (and Σ g_i p_i) in float64 lanes (products of two float32 exact in float64), so the sums
//    err by ≤ (⌈C/W⌉ + W)·U·Σ|…| — far below the float32 sums of the compiled kernels; the bulk
//    g_j − p_j·fl32(Σg) (one FMA; p_j = e^{log p_j}, the forward's log p recomputed bit for bit) and
//    p_j (g_j − fl32(Σ g p)) (p the forward's float32 p, as the compiled kernels' saved or recomputed p) are the
//    compiled kernels' formulas; the arg-max forms above are evaluated in float64 and rounded once.
// Never compiled with -ffast-math: the exact counts, the float64 sums and the FMA need IEEE arithmetic.

#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>
#include <ATen/cpu/vec/functional.h>

#include <cmath>
#include <limits>
#include <tuple>
#include <type_traits>
#include <vector>

namespace {

using Vec = at::vec::Vectorized<float>;
constexpr int64_t W = Vec::size();
constexpr int64_t GRAIN = 16;  // rows per parallel task

// float64 lane sums of float32 vectors: lane i of every vector goes to lane i of the accumulators
// (fixed order, no reassociation), and the lanes are added at the end.
#if defined(CPU_CAPABILITY_AVX512)
struct LaneSum {
  __m512d lo = _mm512_setzero_pd(), hi = _mm512_setzero_pd();
  static __m512d low(__m512 v) { return _mm512_cvtps_pd(_mm512_castps512_ps256(v)); }
  static __m512d high(__m512 v) { return _mm512_cvtps_pd(_mm512_extractf32x8_ps(v, 1)); }
  void add(const Vec& v) {
    lo = _mm512_add_pd(lo, low(v));
    hi = _mm512_add_pd(hi, high(v));
  }
  void add_product(const Vec& a, const Vec& b) {  // Σ a_i b_i: each product exact in float64
    lo = _mm512_fmadd_pd(low(a), low(b), lo);
    hi = _mm512_fmadd_pd(high(a), high(b), hi);
  }
  void add_product_diff(const Vec& a, double c, const Vec& b) {  // Σ a_i (c − b_i) in float64
    const __m512d vc = _mm512_set1_pd(c);
    lo = _mm512_fmadd_pd(low(a), _mm512_sub_pd(vc, low(b)), lo);
    hi = _mm512_fmadd_pd(high(a), _mm512_sub_pd(vc, high(b)), hi);
  }
  double total() const {
    double t[16];
    _mm512_storeu_pd(t, lo);
    _mm512_storeu_pd(t + 8, hi);
    double s = 0.0;
    for (double v : t) s += v;
    return s;
  }
};
#elif defined(CPU_CAPABILITY_AVX2)
struct LaneSum {
  __m256d lo = _mm256_setzero_pd(), hi = _mm256_setzero_pd();
  static __m256d low(__m256 v) { return _mm256_cvtps_pd(_mm256_castps256_ps128(v)); }
  static __m256d high(__m256 v) { return _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)); }
  void add(const Vec& v) {
    lo = _mm256_add_pd(lo, low(v));
    hi = _mm256_add_pd(hi, high(v));
  }
  void add_product(const Vec& a, const Vec& b) {
    lo = _mm256_fmadd_pd(low(a), low(b), lo);
    hi = _mm256_fmadd_pd(high(a), high(b), hi);
  }
  void add_product_diff(const Vec& a, double c, const Vec& b) {
    const __m256d vc = _mm256_set1_pd(c);
    lo = _mm256_fmadd_pd(low(a), _mm256_sub_pd(vc, low(b)), lo);
    hi = _mm256_fmadd_pd(high(a), _mm256_sub_pd(vc, high(b)), hi);
  }
  double total() const {
    double t[8];
    _mm256_storeu_pd(t, lo);
    _mm256_storeu_pd(t + 4, hi);
    double s = 0.0;
    for (double v : t) s += v;
    return s;
  }
};
#else
struct LaneSum {
  double acc[W] = {};
  void add(const Vec& v) {
    float t[W];
    v.store(t);
    for (int64_t i = 0; i < W; ++i) acc[i] += static_cast<double>(t[i]);
  }
  void add_product(const Vec& a, const Vec& b) {
    float ta[W], tb[W];
    a.store(ta);
    b.store(tb);
    for (int64_t i = 0; i < W; ++i) acc[i] += static_cast<double>(ta[i]) * static_cast<double>(tb[i]);
  }
  void add_product_diff(const Vec& a, double c, const Vec& b) {
    float ta[W], tb[W];
    a.store(ta);
    b.store(tb);
    for (int64_t i = 0; i < W; ++i) acc[i] += static_cast<double>(ta[i]) * (c - static_cast<double>(tb[i]));
  }
  double total() const {
    double s = 0.0;
    for (int64_t i = 0; i < W; ++i) s += acc[i];
    return s;
  }
};
#endif

inline Vec load(const float* p, int64_t n, float pad) {  // n ≤ W lanes, the rest ``pad``
  return n == W ? Vec::loadu(p) : Vec::set(Vec(pad), Vec::loadu(p, n), n);
}

float row_max(const float* x, int64_t C) {  // NaN propagates
  Vec acc(-std::numeric_limits<float>::infinity());
  for (int64_t j = 0; j < C; j += W) acc = at::vec::maximum(acc, load(x + j, std::min(W, C - j), -INFINITY));
  float t[W];
  acc.store(t);
  float m = t[0];
  for (int64_t i = 1; i < W; ++i) m = (std::isnan(t[i]) || t[i] > m) ? t[i] : m;
  return m;
}

// r = Σ_{d_j ≠ 0} e^{d_j} + (#{d_j = 0} − 1) in float64, every term but one maximum's: the maxima
// masked out of the sum and counted; ``e`` (may be null) receives every e^{d_j}.
double row_r_masked(const float* x, float m, int64_t C, float* e) {
  const Vec vm(m), zero(0.0f);
  LaneSum s;
  int64_t ties = 0;
  for (int64_t j = 0; j < C; j += W) {
    const int64_t n = std::min(W, C - j);
    const Vec d = load(x + j, n, -INFINITY) - vm;  // padding: −inf − m = −inf (e = 0, not a maximum)
    const Vec ed = d.exp();
    if (e) ed.store(e + j, n);
    const Vec top = d == zero;  // all ones where d = 0
    ties += __builtin_popcount(static_cast<unsigned>(~top.zero_mask()) & ((1u << W) - 1u));
    s.add(Vec::blendv(ed, zero, top));
  }
  return s.total() + static_cast<double>(ties - 1);
}

// Whether this build's e^0 is exactly 1 (each maximum's term in an unmasked sum is then exactly 1).
const bool EXP0_IS_ONE = [] {
  float t[W];
  Vec(0.0f).exp().store(t);
  for (float v : t)
    if (v != 1.0f) return false;
  return true;
}();

// The same r, usually without the mask: S = Σ_j e^{d_j} in float64 lanes (each maximum adds exactly
// 1), r = S − 1. All terms are ≥ 0, so the lane sums (≤ ⌈C/W⌉ additions each), the W-lane total and
// the subtraction err by at most n·2^-53·S·(1 + 2^-40) with n = ⌈C/W⌉ + W + 1; where that is at most
// 2^-30·r (the sum then adds < 2^-30 relative, next to each term's 2^-23) r is kept, otherwise (r tiny:
// a confident row; or NaN) the row is summed again with the maxima masked out, exactly as defined.
double row_r(const float* x, float m, int64_t C, float* e) {
  if (!EXP0_IS_ONE) return row_r_masked(x, m, C, e);
  const Vec vm(m);
  LaneSum s;
  for (int64_t j = 0; j < C; j += W) {
    const int64_t n = std::min(W, C - j);
    const Vec ed = (load(x + j, n, -INFINITY) - vm).exp();
    if (e) ed.store(e + j, n);
    s.add(ed);
  }
  const double S = s.total(), r = S - 1.0;
  const double n = static_cast<double>((C + W - 1) / W + W + 1);
  if (n * 0x1p-53 * S * (1.0 + 0x1p-40) <= 0x1p-30 * r) return r;
  return row_r_masked(x, m, C, e);
}

// L = log1p r in float64, rounded once to float32 (log p_j = d_j − L; the forward and the backward's
// recomputed log p agree bit for bit).
inline float lse_tail(double r) { return static_cast<float>(std::log1p(r)); }

int64_t index_of(const float* x, float v, int64_t C) {  // the first j with x_j = v (−1: none)
  const Vec vv(v);
  const unsigned all = (1u << W) - 1u;
  for (int64_t j = 0; j < C; j += W) {
    const int64_t n = std::min(W, C - j);
    const unsigned hit = ~static_cast<unsigned>((load(x + j, n, NAN) == vv).zero_mask()) & all;
    if (hit) return j + __builtin_ctz(hit);
  }
  return -1;
}

template <typename T>
const float* widen(const T* src, float* buf, int64_t C) {  // the row as float32 (itself for float)
  if constexpr (std::is_same_v<T, float>) {
    return src;
  } else {
    using VT = at::vec::Vectorized<T>;
    static_assert(VT::size() == 2 * W, "a half vector widens to two float vectors");
    for (int64_t j = 0; j < C; j += VT::size()) {
      const int64_t n = std::min<int64_t>(VT::size(), C - j);
      auto [lo, hi] = at::vec::convert_to_float<T>(VT::loadu(src + j, n));
      lo.store(buf + j, std::min(W, n));
      if (n > W) hi.store(buf + j + W, n - W);
    }
    return buf;
  }
}

template <typename T>
void narrow(const float* buf, T* dst, int64_t C) {  // round once to T (nothing for float)
  if constexpr (!std::is_same_v<T, float>) at::vec::convert(buf, dst, C);
}

template <typename T>
float* out_row(T* dst, float* buf) {  // where a float32 result row is written before ``narrow``
  if constexpr (std::is_same_v<T, float>) return dst; else return buf;
}

template <typename F>
void dispatch(const torch::Tensor& x, F&& f) {  // f(T{}) for x's dtype T: float, Half or BFloat16
  switch (x.scalar_type()) {
    case at::kFloat: return f(float{});
    case at::kHalf: return f(at::Half{});
    case at::kBFloat16: return f(at::BFloat16{});
    default: TORCH_CHECK(false, "softmax rows: float32, float16 or bfloat16");
  }
}

void check_rows(const torch::Tensor& x, const char* name) {
  TORCH_CHECK(x.dim() == 2 && x.is_contiguous() && x.device().is_cpu(), name, ": contiguous CPU rows (R, C)");
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kHalf || x.scalar_type() == at::kBFloat16,
              name, ": float32, float16 or bfloat16");
}

// Forward: log p (``log``) or p of rows x (R, C) in x's dtype, and each row's m (float32) and r (float64).
std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> forward(const torch::Tensor& x, bool log) {
  check_rows(x, "x");
  const int64_t R = x.size(0), C = x.size(1);
  auto out = torch::empty_like(x);
  auto m = torch::empty({R, 1}, x.options().dtype(at::kFloat));
  auto r = torch::empty({R, 1}, x.options().dtype(at::kDouble));
  const bool wide = x.scalar_type() != at::kFloat;
  float* mp = m.data_ptr<float>();
  double* rp = r.data_ptr<double>();
  dispatch(x, [&](auto tag) {
    using T = decltype(tag);
    const T* xp = x.data_ptr<T>();
    T* op = out.data_ptr<T>();
    at::parallel_for(0, R, GRAIN, [&](int64_t begin, int64_t end) {
      std::vector<float> xb(wide ? C : 0), ob(wide ? C : 0);
      for (int64_t i = begin; i < end; ++i) {
        const float* xr = widen(xp + i * C, xb.data(), C);
        float* o = out_row(op + i * C, ob.data());  // the float32 result row
        const float mi = row_max(xr, C);
        const double ri = row_r(xr, mi, C, log ? nullptr : o);
        mp[i] = mi;
        rp[i] = ri;
        if (log) {
          const Vec vm(mi), vl(lse_tail(ri));
          for (int64_t j = 0; j < C; j += W) {
            const int64_t n = std::min(W, C - j);
            ((Vec::loadu(xr + j, n) - vm) - vl).store(o + j, n);
          }
        } else {
          const Vec inv(static_cast<float>(1.0 / (1.0 + ri)));
          for (int64_t j = 0; j < C; j += W) {
            const int64_t n = std::min(W, C - j);
            (Vec::loadu(o + j, n) * inv).store(o + j, n);
          }
        }
        narrow(o, op + i * C, C);
      }
    });
  });
  return {out, m, r};
}

// The log-softmax VJP g − p Σg from the logits x and the forward's m, r (g in x's dtype), in x's dtype.
torch::Tensor log_softmax_backward(const torch::Tensor& x, const torch::Tensor& g, const torch::Tensor& m,
                                   const torch::Tensor& r) {
  check_rows(x, "x");
  TORCH_CHECK(g.sizes() == x.sizes() && g.scalar_type() == x.scalar_type(), "g: the shape and dtype of x");
  const auto gc = g.contiguous();
  const int64_t R = x.size(0), C = x.size(1);
  auto gx = torch::empty_like(x);
  const float* mp = m.data_ptr<float>();
  const double* rp = r.data_ptr<double>();
  dispatch(x, [&](auto tag) {
    using T = decltype(tag);
    const T* xp = x.data_ptr<T>();
    const T* gp = gc.data_ptr<T>();
    T* op = gx.data_ptr<T>();
    at::parallel_for(0, R, GRAIN, [&](int64_t begin, int64_t end) {
      const bool wide = !std::is_same_v<T, float>;
      std::vector<float> xb(wide ? C : 0), gb(wide ? C : 0), ob(wide ? C : 0);
      for (int64_t i = begin; i < end; ++i) {
        const float* xr = widen(xp + i * C, xb.data(), C);
        const float* gr = widen(gp + i * C, gb.data(), C);
        float* o = out_row(op + i * C, ob.data());
        LaneSum s;
        for (int64_t j = 0; j < C; j += W) s.add(Vec::loadu(gr + j, std::min(W, C - j)));
        const double S = s.total(), ri = rp[i];
        const Vec vm(mp[i]), vl(lse_tail(ri)), vs(static_cast<float>(S));
        for (int64_t j = 0; j < C; j += W) {
          const int64_t n = std::min(W, C - j);
          const Vec p = ((Vec::loadu(xr + j, n) - vm) - vl).exp();  // e^{log p}: the forward's log p
          at::vec::fmadd(p, -vs, Vec::loadu(gr + j, n)).store(o + j, n);
        }
        if (ri < 1.0) {  // p_k > 1/2: (g_k r − Σ_{i≠k} g_i)/(1 + r), no 1 − p_k
          const int64_t k = index_of(xr, mp[i], C);
          const double gk = gr[k];
          o[k] = static_cast<float>((gk * ri - (S - gk)) / (1.0 + ri));
        }
        narrow(o, op + i * C, C);
      }
    });
  });
  return gx;
}

// The softmax VJP p (g − Σ g p), p_k Σ_{i≠k} p_i (g_k − g_i) at the arg-max k of rows with r < 1. ``a``: the
// forward's output p of float32 rows (read, no exponential redone), or the logits x of half rows (p
// recomputed in float32 from x, m, r as the forward, bit for bit: a half-rounded p is not accurate enough
// for the grades, and a kept float32 p would double the peak memory); g and the result in the input's dtype.
torch::Tensor softmax_backward(const torch::Tensor& a, const torch::Tensor& g, const torch::Tensor& m,
                               const torch::Tensor& r) {
  check_rows(a, "a");
  TORCH_CHECK(g.sizes() == a.sizes() && g.scalar_type() == a.scalar_type(), "g: the shape and dtype of a");
  const auto gc = g.contiguous();
  const int64_t R = a.size(0), C = a.size(1);
  auto gx = torch::empty_like(a);
  const float* mp = m.data_ptr<float>();
  const double* rp = r.data_ptr<double>();
  dispatch(a, [&](auto tag) {
    using T = decltype(tag);
    constexpr bool wide = !std::is_same_v<T, float>;
    const T* ap = a.data_ptr<T>();
    const T* gp = gc.data_ptr<T>();
    T* op = gx.data_ptr<T>();
    at::parallel_for(0, R, GRAIN, [&](int64_t begin, int64_t end) {
      std::vector<float> pb(wide ? C : 0), gb(wide ? C : 0), ob(wide ? C : 0);
      for (int64_t i = begin; i < end; ++i) {
        const float* pr;
        if constexpr (wide) {  // p = e^{x − m}·fl32(1/(1 + r)), as the forward (in place of the widened x)
          float* xr = pb.data();
          widen(ap + i * C, xr, C);
          const Vec vm(mp[i]), inv(static_cast<float>(1.0 / (1.0 + rp[i])));
          for (int64_t j = 0; j < C; j += W) {
            const int64_t n = std::min(W, C - j);
            ((Vec::loadu(xr + j, n) - vm).exp() * inv).store(xr + j, n);
          }
          pr = xr;
        } else {
          pr = ap + i * C;
        }
        const float* gr = widen(gp + i * C, gb.data(), C);
        float* o = out_row(op + i * C, ob.data());
        LaneSum s;
        for (int64_t j = 0; j < C; j += W) {
          const int64_t n = std::min(W, C - j);
          s.add_product(Vec::loadu(pr + j, n), Vec::loadu(gr + j, n));
        }
        const Vec vd(static_cast<float>(s.total()));
        for (int64_t j = 0; j < C; j += W) {
          const int64_t n = std::min(W, C - j);
          (Vec::loadu(pr + j, n) * (Vec::loadu(gr + j, n) - vd)).store(o + j, n);
        }
        if (rp[i] < 1.0) {  // p_k > 1/2: p_k Σ_{i≠k} p_i (g_k − g_i) (the term i = k is 0)
          const int64_t k = index_of(pr, row_max(pr, C), C);  // the arg-max (any largest p: the form is exact)
          const double gk = gr[k];
          LaneSum rest;
          for (int64_t j = 0; j < C; j += W) {
            const int64_t n = std::min(W, C - j);
            rest.add_product_diff(Vec::loadu(pr + j, n), gk, Vec::loadu(gr + j, n));
          }
          o[k] = static_cast<float>(static_cast<double>(pr[k]) * rest.total());
        }
        narrow(o, op + i * C, C);
      }
    });
  });
  return gx;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, mod) {
  mod.def("forward", &forward, "log p (log) or p of rows x, and each row's m (float32) and r (float64)");
  mod.def("log_softmax_backward", &log_softmax_backward, "the log-softmax VJP from x, m, r");
  mod.def("softmax_backward", &softmax_backward, "the softmax VJP from p (float32 rows) or x (half rows), m, r");
}
