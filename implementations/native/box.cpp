// The box losses' kernel (implementations/box_core.py, pair_kernel) for float64 boxes on the CPU, per pair
// in x87 long double (64-bit significand, 15-bit exponent), value and VJP in one pass, rounded once to float64.
//
// Each line below is box_core's expression with the same operations in the same order (Python's left-to-right
// associativity kept), so every result is bit for bit the NumPy long double path's (tests/test_box_native.py
// compares them): the same IEEE operations on the same operands give the same roundings, x87 has no FMA to
// contract into, and atan2l is the libm function NumPy's longdouble arctan2 calls. Masks (0, 1/2, 1) and
// their products are exact in any order.
//
// Error bound (a-priori; per element, the conformance tests grade these very numbers, the long double
// kernel's, against the oracle, and tests/test_box_native.py runs the catalogue through this kernel).
// u = 2^-64 per operation (no overflow or underflow: products of at most four float64 coordinates lie
// within long double's range, 2^±16382), atan2l within 1 ULP. Every quantity of box_core is a sum of
// non-negative terms or a difference of two inputs rounded once (the cancellation-free formulation in its
// docstring): the value is at most ~40 operations deep (CIoU), so its error is below
// γ_40 = 40u/(1 − 40u) < 2^-58.6 times the sum S of the magnitudes of its terms; a VJP entry (up to ~60
// deep) below γ_60 < 2^-58 times its own S. With |f| < 2^53 ULP(f), that is < S/|f| · 2^-5 ULP; rounding
// to float64 adds ≤ 0.5 ULP. Where the conditioning is modest (c ≤ 4|f|, the faithful grade) S/|f| stays
// small for these single-signed formulas (S/|f| ≤ 48 keeps the value within 2 ULP, ≤ 112 the gradient
// within 4); elsewhere (a tie weight's cancellation, an ill-conditioned CIoU angle) the error is γ_60·S,
// far inside the "stable" bound k·u·c. Pairwise VJPs sum M (or N) per-pair terms t with Neumaier's
// compensated summation in long double: ≤ 2u·Σ|t| + O(M u²)·Σ|t| more.
#include <torch/extension.h>

#include <cfloat>
#include <cmath>
#include <cstdint>
#include <limits>

// The bound above needs x87's 64-bit significand: where long double is float64 (MSVC) or another format,
// the build fails and native.module returns None, so the long double NumPy/torch path runs instead.
static_assert(LDBL_MANT_DIG == 64, "box.cpp needs x87 80-bit long double");

namespace {

using T = long double;

enum Kind : int64_t { IOU = 0, GIOU = 1, GIOU_LOSS = 2, DIOU_LOSS = 3, CIOU_LOSS = 4 };

// np.maximum / np.minimum (the first operand where it compares so) on the operands they take here: never
// NaN (differences of finite float64 coordinates, in long double's range)
inline T vmax(T a, T b) { return a >= b ? a : b; }
inline T vmin(T a, T b) { return a <= b ? a : b; }

struct Axis {
  T p1, p2, q1, q2, dl, dr, w1, w2, r, i, c, e1, e2, dc;
  Axis(T p1_, T p2_, T q1_, T q2_) : p1(p1_), p2(p2_), q1(q1_), q2(q2_) {
    const T zero = 0;
    dl = p1 - q1;
    dr = p2 - q2;
    w1 = p2 - p1;
    w2 = q2 - q1;
    r = vmin(p2, q2) - vmax(p1, q1);
    i = vmax(r, zero);
    c = vmax(p2, q2) - vmin(p1, q1);
    e1 = vmax(-dl, zero) + vmax(dr, zero);
    e2 = vmax(dl, zero) + vmax(-dr, zero);
    dc = (dl + dr) * T(0.5);
  }
};

struct SU {
  T s, u;
};

// box_core._Axis.weights: (s, u) of p1, p2, q1, q2
struct Weights {
  SU p1, p2, q1, q2;
};

// The masks' sums and halvings in integers: the same values (0, 1/2, 1, all +0 where 0) as box_core's products.
inline SU mean_of(bool flat, int s_plus, int s_minus, int u_plus, int u_minus, bool left) {
  if (flat) return left ? SU{T(s_minus), T(u_minus)} : SU{T(s_plus), T(u_plus)};
  return {T(0.5 * (s_plus + s_minus)), T(0.5 * (u_plus + u_minus))};
}

inline SU upper(T a, T b, T w, bool pos, bool nonneg) {
  return mean_of(w == 0, (a < b) && nonneg, (a <= b) && pos, a >= b, a > b, false);
}

inline SU lower(T a, T b, T w, bool pos, bool nonneg) {
  return mean_of(w == 0, (a >= b) && pos, (a > b) && nonneg, a < b, a <= b, true);
}

inline Weights weights(const Axis& a) {
  bool pos = a.r > 0, nonneg = a.r >= 0;
  return {lower(a.p1, a.q1, a.w1, pos, nonneg), upper(a.p2, a.q2, a.w1, pos, nonneg),
          lower(a.q1, a.p1, a.w2, pos, nonneg), upper(a.q2, a.p2, a.w2, pos, nonneg)};
}

struct Params {
  int64_t kind;
  T eps, ie;  // ε of the enclosure terms; ε of the IoU term
  bool exact_alpha;
};

inline T posv(T t) { return vmax(t, T(0)); }

inline T q_other(const Axis& ax) {  // c − 2|Δc| from coordinate differences
  T up = (posv(ax.q2 - ax.p2) + posv(ax.q1 - ax.p1)) + (ax.q2 - ax.p1);
  T down = (posv(ax.p2 - ax.q2) + posv(ax.p1 - ax.q1)) + (ax.p2 - ax.q1);
  return ax.dc >= 0 ? up : down;
}

// Numerators of d[ρ²/(c² + ε)] for p1, p2, q1, q2 of axis ax (ox the other axis).
inline void t3_axis(const Axis& ax, const Axis& ox, T u1, T u2, T uq1, T uq2, T c2n, T ie, T out[4]) {
  T qo = q_other(ox);
  T tail = ((ax.c * qo) * (ox.c + 2 * std::fabs(ox.dc))) * T(0.5);
  T diff = (ax.c - ox.c) * (ax.c + ox.c);
  auto phi = [&](T q) { return (q * (q * ax.c - diff)) * T(0.5) - tail; };
  T base = ax.dc * c2n;
  T q_p1 = (ax.p2 - ax.q1) + posv(ax.p2 - ax.q2);
  T q_p2 = (ax.q2 - ax.p1) + posv(ax.q1 - ax.p1);
  T q_q1 = (ax.q2 - ax.p1) + posv(ax.q2 - ax.p2);
  T q_q2 = (ax.p2 - ax.q1) + posv(ax.p1 - ax.q1);
  T e = ax.dc * ie;
  out[0] = ((1 - u1) * base + u1 * phi(q_p1)) + e;
  out[1] = ((1 - u2) * base - u2 * phi(q_p2)) + e;
  out[2] = ((-(1 - uq1)) * base + uq1 * phi(q_q1)) - e;
  out[3] = ((-(1 - uq2)) * base - uq2 * phi(q_q2)) - e;
}

// One pair: b1 = (x1, y1, x2, y2), b2 likewise. Returns the value; with grad, the 8 VJP entries
// (x1, y1, x2, y2 of box 1, then of box 2) times cot.
inline T pair(const double* b1, const double* b2, const Params& P, bool grad, T cot, T g[8]) {
  const Axis x(b1[0], b1[2], b2[0], b2[2]);
  const Axis y(b1[1], b1[3], b2[1], b2[3]);
  const T zero = 0;
  const T A = x.w1 * y.w1, B = x.w2 * y.w2, I = x.i * y.i;
  const bool both = (x.r >= 0) && (y.r >= 0);
  const T P1 = both ? x.e1 * y.w1 + y.e1 * x.i : A;
  const T P2 = both ? x.e2 * y.w2 + y.e2 * x.i : B;
  const T U = (I + P1) + P2;
  const T C = x.c * y.c;
  T E;
  {
    bool oL = x.dl < 0, oR = x.dr > 0, oB = y.dl < 0, oT = y.dr > 0;
    T eL = std::fabs(x.dl), eR = std::fabs(x.dr), eB = std::fabs(y.dl), eT = std::fabs(y.dr);
    if (both) {
      // box_core's mask·(e·e) terms: a 0 mask gives +0 (the products are ≥ 0), as here
      E = (((oL != oB ? eL * eB : zero) + (oL != oT ? eL * eT : zero)) + (oR != oB ? eR * eB : zero)) +
          (oR != oT ? eR * eT : zero);
    } else if (x.r < 0) {
      E = (x.w1 * y.e2 + x.w2 * y.e1) + (-x.r) * y.c;
    } else {
      E = (y.w1 * x.e2 + y.w2 * x.e1) + (-y.r) * x.c;
    }
  }
  const int64_t kind = P.kind;
  const T eps = P.eps;
  const T ie = (kind == IOU || kind == GIOU) ? eps : P.ie;
  const T N1 = (P1 + P2) + ie, D1 = U + ie;
  T value, rho2 = 0, c2 = 0, theta = 0, kk = 0, v = 0, a = 0;
  if (kind == IOU) {
    value = I / D1;
  } else if (kind == GIOU) {
    value = I / D1 - E / (C + eps);
  } else {
    value = N1 / D1;
    if (kind == GIOU_LOSS) {
      value = value + E / (C + eps);
    } else {
      rho2 = x.dc * x.dc + y.dc * y.dc;
      c2 = (x.c * x.c + y.c * y.c) + ie;
      value = value + rho2 / c2;
      if (kind == CIOU_LOSS) {
        T p = (x.dl - x.dr) * y.w1 - x.w1 * (y.dl - y.dr);
        T q = y.w1 * y.w2 + x.w1 * x.w2;
        bool point = (x.w1 == 0 && y.w1 == 0) || (x.w2 == 0 && y.w2 == 0);
        theta = point ? std::numeric_limits<T>::quiet_NaN() : atan2l(p, q);
        kk = 0.40528473456935108577551785283891056L;  // 4/π², rounded once
        v = kk * (theta * theta);
        T t1 = N1 / D1;
        a = v == 0 ? zero : v / ((t1 + v) + eps);
        value = value + a * v;
      }
    }
  }
  if (!grad) return value;

  const Weights wx = weights(x), wy = weights(y);
  auto t1_num = [&](T s, T cross, T e_self, T len_self, T other_area) {
    return ((1 - s) * (I * len_self) - s * (cross * other_area)) - (s * cross) * (e_self * len_self + ie);
  };
  T n[8];
  n[0] = -t1_num(wx.p1.s, y.i, x.e1, y.w1, B);  // x1
  n[1] = -t1_num(wy.p1.s, x.i, y.e1, x.w1, B);  // y1
  n[2] = t1_num(wx.p2.s, y.i, x.e1, y.w1, B);   // x2
  n[3] = t1_num(wy.p2.s, x.i, y.e1, x.w1, B);   // y2
  n[4] = -t1_num(wx.q1.s, y.i, x.e2, y.w2, A);  // X1
  n[5] = -t1_num(wy.q1.s, x.i, y.e2, x.w2, A);  // Y1
  n[6] = t1_num(wx.q2.s, y.i, x.e2, y.w2, A);   // X2
  n[7] = t1_num(wy.q2.s, x.i, y.e2, x.w2, A);   // Y2
  T dt1[8];
  for (int k = 0; k < 8; ++k) {
    dt1[k] = (n[k] / D1) / D1;
    g[k] = (kind == IOU || kind == GIOU) ? -dt1[k] : dt1[k];
  }
  if (kind == GIOU || kind == GIOU_LOSS) {
    const T ce = C + eps;
    const T hx1 = y.r >= 0 ? y.e1 : y.w1, hx2 = y.r >= 0 ? y.e2 : y.w2;
    const T wy1 = x.r >= 0 ? x.e1 : x.w1, wy2 = x.r >= 0 ? x.e2 : x.w2;
    auto t2 = [&](T u, T s, T across, T length, T part, T p_other, T excess_other, T excess_across) {
      T m = ((u - 1) + s) * length - s * part;
      return ((u * (across * (p_other - length * excess_other) + eps * excess_across) + m * ce) / ce) / ce;
    };
    T d2[8];
    d2[0] = -t2(wx.p1.u, wx.p1.s, y.c, y.w1, hx1, P2, x.e2, y.e2);
    d2[1] = -t2(wy.p1.u, wy.p1.s, x.c, x.w1, wy1, P2, y.e2, x.e2);
    d2[2] = t2(wx.p2.u, wx.p2.s, y.c, y.w1, hx1, P2, x.e2, y.e2);
    d2[3] = t2(wy.p2.u, wy.p2.s, x.c, x.w1, wy1, P2, y.e2, x.e2);
    d2[4] = -t2(wx.q1.u, wx.q1.s, y.c, y.w2, hx2, P1, x.e1, y.e1);
    d2[5] = -t2(wy.q1.u, wy.q1.s, x.c, x.w2, wy2, P1, y.e1, x.e1);
    d2[6] = t2(wx.q2.u, wx.q2.s, y.c, y.w2, hx2, P1, x.e1, y.e1);
    d2[7] = t2(wy.q2.u, wy.q2.s, x.c, x.w2, wy2, P1, y.e1, x.e1);
    for (int k = 0; k < 8; ++k) g[k] = g[k] + (kind == GIOU ? -d2[k] : d2[k]);
  }
  if (kind == DIOU_LOSS || kind == CIOU_LOSS) {
    const T c2n = x.c * x.c + y.c * y.c;
    T nx[4], ny[4];
    t3_axis(x, y, wx.p1.u, wx.p2.u, wx.q1.u, wx.q2.u, c2n, ie, nx);
    t3_axis(y, x, wy.p1.u, wy.p2.u, wy.q1.u, wy.q2.u, c2n, ie, ny);
    const T d3n[8] = {nx[0], ny[0], nx[1], ny[1], nx[2], ny[2], nx[3], ny[3]};
    for (int k = 0; k < 8; ++k) g[k] = g[k] + (d3n[k] / c2) / c2;
  }
  if (kind == CIOU_LOSS) {
    const T r1 = x.w1 * x.w1 + y.w1 * y.w1;
    const T r2 = x.w2 * x.w2 + y.w2 * y.w2;
    const T dw1 = (-y.w1) / r1, dh1 = x.w1 / r1;
    const T dw2 = y.w2 / r2, dh2 = (-x.w2) / r2;
    const T dtheta[8] = {-dw1, -dh1, dw1, dh1, -dw2, -dh2, dw2, dh2};
    const T k2 = (2 * kk) * theta;
    for (int k = 0; k < 8; ++k) {
      T d4 = P.exact_alpha ? a * ((2 - a) * (k2 * dtheta[k]) - a * dt1[k]) : a * (k2 * dtheta[k]);
      g[k] = g[k] + (v == 0 ? zero : d4);
    }
  }
  for (int k = 0; k < 8; ++k) g[k] = g[k] * cot;
  return value;
}

void check_boxes(const torch::Tensor& b, const char* name) {
  TORCH_CHECK(b.device().is_cpu() && b.scalar_type() == torch::kFloat64 && b.dim() == 2 && b.size(1) == 4 &&
                  b.is_contiguous(),
              name, " must be a contiguous CPU float64 (n, 4) tensor");
}

Params params(int64_t kind, double eps, double iou_eps, bool exact_alpha) {
  TORCH_CHECK(kind >= IOU && kind <= CIOU_LOSS, "unknown box kernel kind ", kind);
  return {kind, T(eps), T(iou_eps), exact_alpha};
}

// Paired boxes (n, 4) × (n, 4): the values (n,) in float64.
torch::Tensor paired_value(torch::Tensor b1, torch::Tensor b2, int64_t kind, double eps, double iou_eps,
                           bool exact_alpha) {
  check_boxes(b1, "boxes1");
  check_boxes(b2, "boxes2");
  TORCH_CHECK(b1.size(0) == b2.size(0), "boxes1 and boxes2 must hold as many boxes");
  const Params P = params(kind, eps, iou_eps, exact_alpha);
  const int64_t n = b1.size(0);
  auto out = torch::empty({n}, b1.options());
  const double *p = b1.data_ptr<double>(), *q = b2.data_ptr<double>();
  double* o = out.data_ptr<double>();
  at::parallel_for(0, n, 2048, [&](int64_t lo, int64_t hi) {
    T g[8];
    for (int64_t k = lo; k < hi; ++k) o[k] = static_cast<double>(pair(p + 4 * k, q + 4 * k, P, false, 0, g));
  });
  return out;
}

// Paired boxes: the VJPs (g1, g2), each (n, 4) float64, for the cotangent cot (n,) (any stride, 0 included).
std::vector<torch::Tensor> paired_grad(torch::Tensor b1, torch::Tensor b2, torch::Tensor cot, int64_t kind,
                                       double eps, double iou_eps, bool exact_alpha) {
  check_boxes(b1, "boxes1");
  check_boxes(b2, "boxes2");
  const int64_t n = b1.size(0);
  TORCH_CHECK(b2.size(0) == n && cot.dim() == 1 && cot.size(0) == n && cot.scalar_type() == torch::kFloat64 &&
                  cot.device().is_cpu(),
              "cot must be a CPU float64 tensor of one entry per pair");
  const Params P = params(kind, eps, iou_eps, exact_alpha);
  auto g1 = torch::empty({n, 4}, b1.options()), g2 = torch::empty({n, 4}, b1.options());
  const double *p = b1.data_ptr<double>(), *q = b2.data_ptr<double>(), *c = cot.data_ptr<double>();
  const int64_t cs = cot.stride(0);
  double *o1 = g1.data_ptr<double>(), *o2 = g2.data_ptr<double>();
  at::parallel_for(0, n, 2048, [&](int64_t lo, int64_t hi) {
    T g[8];
    for (int64_t k = lo; k < hi; ++k) {
      pair(p + 4 * k, q + 4 * k, P, true, T(c[k * cs]), g);
      for (int j = 0; j < 4; ++j) {
        o1[4 * k + j] = static_cast<double>(g[j]);
        o2[4 * k + j] = static_cast<double>(g[4 + j]);
      }
    }
  });
  return {g1, g2};
}

// Pairwise (N, 4) × (M, 4) (ε = 0): the values (N, M) in float64.
torch::Tensor pairwise_value(torch::Tensor b1, torch::Tensor b2, int64_t kind) {
  check_boxes(b1, "boxes1");
  check_boxes(b2, "boxes2");
  const Params P = params(kind, 0.0, 0.0, true);
  const int64_t n = b1.size(0), m = b2.size(0);
  auto out = torch::empty({n, m}, b1.options());
  const double *p = b1.data_ptr<double>(), *q = b2.data_ptr<double>();
  double* o = out.data_ptr<double>();
  at::parallel_for(0, n, std::max<int64_t>(1, 4096 / std::max<int64_t>(m, 1)), [&](int64_t lo, int64_t hi) {
    T g[8];
    for (int64_t i = lo; i < hi; ++i)
      for (int64_t j = 0; j < m; ++j) o[i * m + j] = static_cast<double>(pair(p + 4 * i, q + 4 * j, P, false, 0, g));
  });
  return out;
}

// Neumaier's compensated sum in long double
struct Acc {
  T s = 0, c = 0;
  inline void add(T t) {
    T u = s + t;
    c += std::fabs(s) >= std::fabs(t) ? (s - u) + t : (t - u) + s;
    s = u;
  }
  inline double get() const { return static_cast<double>(s + c); }
};

// Pairwise: the VJPs (g1 (N, 4), g2 (M, 4)) for the cotangent cot (N, M) (any strides): each entry the
// compensated long double sum of its M (or N) per-pair terms, rounded once.
std::vector<torch::Tensor> pairwise_grad(torch::Tensor b1, torch::Tensor b2, torch::Tensor cot, int64_t kind) {
  check_boxes(b1, "boxes1");
  check_boxes(b2, "boxes2");
  const int64_t n = b1.size(0), m = b2.size(0);
  TORCH_CHECK(cot.dim() == 2 && cot.size(0) == n && cot.size(1) == m && cot.scalar_type() == torch::kFloat64 &&
                  cot.device().is_cpu(),
              "cot must be a CPU float64 (N, M) tensor");
  const Params P = params(kind, 0.0, 0.0, true);
  auto g1 = torch::empty({n, 4}, b1.options()), g2 = torch::empty({m, 4}, b1.options());
  const double *p = b1.data_ptr<double>(), *q = b2.data_ptr<double>(), *c = cot.data_ptr<double>();
  const int64_t s0 = cot.stride(0), s1 = cot.stride(1);
  double *o1 = g1.data_ptr<double>(), *o2 = g2.data_ptr<double>();
  std::vector<Acc> cols(4 * m);
  T g[8];
  for (int64_t i = 0; i < n; ++i) {
    Acc row[4];
    for (int64_t j = 0; j < m; ++j) {
      pair(p + 4 * i, q + 4 * j, P, true, T(c[i * s0 + j * s1]), g);
      for (int k = 0; k < 4; ++k) {
        row[k].add(g[k]);
        cols[4 * j + k].add(g[4 + k]);
      }
    }
    for (int k = 0; k < 4; ++k) o1[4 * i + k] = row[k].get();
  }
  for (int64_t j = 0; j < 4 * m; ++j) o2[j] = cols[j].get();
  return {g1, g2};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "box losses' kernel per pair in long double (implementations/box_core.py's formulas)";
  m.def("paired_value", &paired_value);
  m.def("paired_grad", &paired_grad);
  m.def("pairwise_value", &pairwise_value);
  m.def("pairwise_grad", &pairwise_grad);
}
