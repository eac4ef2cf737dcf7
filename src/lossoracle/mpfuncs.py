"""mpmath building blocks shared by every oracle, and the oracle precision rule.

Precision rule: every oracle evaluates inside :func:`workprec` at :data:`ORACLE_PREC` bits
(float64 needs 53; the rest are guard bits that absorb the few roundings of a
cancellation-free formula). Inputs are converted exactly (``mpf(float)`` is exact) and
differences of inputs are formed exactly (:func:`exact_sub`), so huge logits (±1e4 against
1e-300) lose nothing. The unrounded mpf is returned; rounding happens once, in the metric.
Tests re-run oracles at :func:`precision` ``2·ORACLE_PREC`` and require identical rounding.
"""

from __future__ import annotations

import contextlib

import mpmath
import numpy as np
from mpmath import mp, mpf
from mpmath.libmp import (MPZ as _MPZ, finf, fnan, fninf, fone, fzero, from_float, from_int, from_man_exp, mpf_add,
                          mpf_cmp, mpf_div, mpf_exp, mpf_log, mpf_neg, mpf_pos, mpf_rdiv_int, mpf_sub, prec_to_dps)

__all__ = [
    "ORACLE_PREC", "precision", "workprec", "to_mp", "exact_sub", "exp", "log1pexp", "sigmoid", "mp_array", "mp_sum",
    "SoftmaxRow", "softmax_row", "softmax_rows_raw", "memo", "clear_caches", "raw", "sum_raw", "sums_except",
    "sums_except_raw",
    "stable", "to_raw", "log_raw", "certify", "certified", "log1pexp_raw", "sigmoid_raw", "exp_raw", "sum_bound",
    "cancel_bound", "mag", "EXACT",
]

ORACLE_PREC = 192
_prec = [ORACLE_PREC]


class precision:
    """Temporarily change the oracle working precision (used by the stability tests)."""

    __slots__ = ("bits",)

    def __init__(self, bits: int) -> None:
        self.bits = bits

    def __enter__(self) -> None:
        _prec.append(self.bits)

    def __exit__(self, *exc) -> bool:
        _prec.pop()
        return False


_SAME = contextlib.nullcontext()


_DPS: dict[int, int] = {}


def _set_prec(bits: int) -> None:
    """``mp.prec = bits`` for an int ``bits ≥ 1``: the same three fields its setter writes
    (``_prec``, ``_prec_rounding[0]``, ``_dps = prec_to_dps(bits)``), the decimal count kept."""
    dps = _DPS.get(bits)
    if dps is None:
        dps = _DPS[bits] = prec_to_dps(bits)
    mp._prec = mp._prec_rounding[0] = bits
    mp._dps = dps


class _AtPrec:
    """``mp.workprec(bits)`` as a block: the same precision set and restored, without the
    generic manager's other modes."""

    __slots__ = ("bits", "orig")

    def __init__(self, bits: int) -> None:
        self.bits = bits

    def __enter__(self) -> None:
        self.orig = mp._prec
        _set_prec(self.bits)

    def __exit__(self, *exc) -> bool:
        _set_prec(self.orig)
        return False


def workprec() -> contextlib.AbstractContextManager:
    """The mpmath context every oracle computes in (never mutates the global ``mp.prec``; inside
    a context already at that precision, as under :func:`stable`, nothing to change)."""
    bits = _prec[-1]
    return _SAME if mp._prec == bits else _AtPrec(bits)


# Speed without a second arithmetic: the hot helpers below call the very mpmath.libmp functions
# (``mpf_add``, ``mpf_exp``, …) that the ``mpf`` operators and ``mpmath.exp``/``log``/``log1p`` call,
# with the same precision and rounding, on the raw ``(sign, man, exp, bc)`` tuples — so every
# result is bit for bit the one of the object-level formula they replace (a test compares them),
# without the per-operation conversions and dispatch of the object layer.

_make = mp.make_mpf
_TWO53 = float(1 << 53)
_NATIVE = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))


def _finite(t: tuple) -> bool:
    """A raw mpf tuple is finite: a non-zero mantissa, or zero (the specials have man 0, exp ≠ 0)."""
    return bool(t[1]) or not t[2]


def to_mp(a: object) -> np.ndarray:
    """Exact conversion of a number or array (floats or ints) to an object array of mpf."""
    arr = np.asarray(a)
    out = np.empty(arr.shape, dtype=object)
    flat = out.reshape(-1)
    if arr.dtype.kind == "f" and mp._prec_rounding[0] >= 53:  # mpf(float) at ≥ 53 bits: the float's exact value
        key = (arr.dtype.str, arr.shape, arr.tobytes())
        # a fresh array (callers may write into it) of shared immutable mpf
        flat[:] = _memo(_FLOATS, key, lambda: tuple(map(_make, _from_floats(arr))))
        return out
    for i, v in enumerate(arr.reshape(-1).tolist()):
        flat[i] = mpf(v)
    return out


def to_raw(a: np.ndarray) -> list | None:
    """The exact raw tuples of a float array's elements (flat, C order; kept like :func:`to_mp`),
    or None for a non-float array (the callers take the object path)."""
    if a.dtype.kind != "f":
        return None
    return _memo(_RAWS, (a.dtype.str, a.shape, a.tobytes()), _from_floats, a)


def _from_floats(a: np.ndarray) -> list:
    """``[from_float(v) for v in a]`` (flat, C order); for a larger finite float16/32/64 array by
    from_float's own steps on the whole array (frexp, the 53-bit integer mantissa, then
    ``from_man_exp``, exact for 53 bits): the same tuples."""
    if a.size >= 24 and a.dtype in _NATIVE:  # (below, NumPy's fixed costs exceed the savings)
        m, e = np.frexp(a.astype(np.float64, copy=False).reshape(-1))
        if np.isfinite(m).all():
            return list(map(from_man_exp, (m * _TWO53).astype(np.int64).tolist(), (e - 53).tolist()))
    return [from_float(v) for v in a.reshape(-1).tolist()]


def mp_array(values: list, shape: tuple[int, ...]) -> np.ndarray:
    """An object array of the given shape from a flat list of mpf."""
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out.reshape(shape)


def exact_sub(a: mpf, b: mpf) -> mpf:
    """``a − b`` without rounding for finite operands (binary floats: the result is a finite
    binary); the extended-real difference (inf, NaN) otherwise."""
    if type(a) is mpf and type(b) is mpf:
        s, t = a._mpf_, b._mpf_
        if _finite(s) and _finite(t):
            return _make(mpf_sub(s, t, 0))
    return mpmath.fsub(a, b, exact=True) if mpmath.isfinite(a) and mpmath.isfinite(b) else a - b


def raw(v) -> tuple:
    """The raw ``(sign, man, exp, bc)`` tuple of an mpf (a number is converted exactly)."""
    return v._mpf_ if type(v) is mpf else mp.convert(v)._mpf_


def sum_raw(raws, prec: int, rnd: str) -> tuple:
    """Raw ``Σ`` of raw tuples accumulated exactly while finite (rounded additions once a term or
    the total is not), not yet rounded: ``mpf_pos(sum_raw(...), prec, rnd)`` is :func:`mp_sum`."""
    acc = fzero
    for t in raws:
        acc = mpf_add(acc, t, 0) if _finite(t) and _finite(acc) else mpf_add(acc, t, prec, rnd)
    return acc


def mp_sum(values) -> mpf:
    """Sum of mpf values with a single rounding at the working precision (exact accumulation)."""
    prec, rnd = mp._prec_rounding
    return _make(mpf_pos(sum_raw(map(raw, values), prec, rnd), prec, rnd))


def sums_except_raw(raws: list, prec: int, rnd: str) -> list:
    """``[Σ_{k≠j} v_k for j]`` as :func:`mp_sum` gives them (raw, rounded): for finite values in
    O(n), the exact total minus ``v_j`` (exact) rounded once — the same numbers."""
    if not all(_finite(t) for t in raws):
        return [mpf_pos(sum_raw((t for k, t in enumerate(raws) if k != j), prec, rnd), prec, rnd)
                for j in range(len(raws))]
    total = fzero
    for t in raws:
        total = mpf_add(total, t, 0)
    return [mpf_pos(mpf_sub(total, t, 0), prec, rnd) for t in raws]


def sums_except(values: list) -> list:
    """``[mp_sum(values without v_j) for j]`` (see :func:`sums_except_raw`)."""
    prec, rnd = mp._prec_rounding
    return [_make(t) for t in sums_except_raw([raw(v) for v in values], prec, rnd)]


_MEMO_MAX = 1 << 15  # entries per cache; a full cache is emptied (a case's rows and elements fit)
_FLOATS: dict[tuple, tuple] = {}  # to_mp of float arrays: the value and the VJP convert the same inputs
_EXP: dict[tuple, tuple] = {}
_LOG1P: dict[tuple, tuple] = {}
_LOG: dict[tuple, tuple] = {}
_RAWS: dict[tuple, list] = {}


def _memo(table: dict, key, fn, *args):
    """``table[key]``, else ``fn(*args)`` kept there (a full table is emptied first)."""
    out = table.get(key)
    if out is None:
        if len(table) >= _MEMO_MAX:
            table.clear()
        out = table[key] = fn(*args)
    return out


def _kept(table: dict, fn, t: tuple, prec: int, rnd: str) -> tuple:
    """``fn(t, prec, rnd)``, kept in ``table`` by argument and precision."""
    return _memo(table, (t, prec, rnd), fn, t, prec, rnd)


def log_raw(t: tuple, prec: int, rnd: str) -> tuple:
    """``mpmath.log`` of a raw ``t ≥ 0`` (``mpf_log``: −inf at 0), kept by argument and precision."""
    return _kept(_LOG, mpf_log, t, prec, rnd)


_ONE = from_int(1)


def exp_raw(t: tuple, prec: int, rnd: str) -> tuple:
    """``mpf_exp``, kept by argument and precision: σ(x), σ(−x), softplus(±x) of one element
    need only ``e^{±x}``, and the value and the VJP ask for the same ones."""
    return _kept(_EXP, mpf_exp, t, prec, rnd)


def _log1p_raw(t: tuple, prec: int, rnd: str) -> tuple:
    """``mpmath.log1p`` of a finite raw ``t > −1`` with ``|t|`` not below 2^−(prec+10): its own
    steps (10 guard bits, ``log(1 + t)`` with ``1 + t`` at twice that precision, one final
    rounding); kept by argument and precision."""
    return _kept(_LOG1P, _log1p_steps, t, prec, rnd)


def _log1p_steps(t: tuple, prec: int, rnd: str) -> tuple:
    wp = prec + 10
    return mpf_pos(mpf_log(mpf_add(fone, t, 2 * wp, rnd), wp, rnd), prec, rnd)



def exp(x: mpf) -> mpf:
    """``mpmath.exp(x)``, kept by argument and precision (see :func:`exp_raw`)."""
    if type(x) is mpf:
        prec, rnd = mp._prec_rounding
        return _make(exp_raw(x._mpf_, prec, rnd))
    return mpmath.exp(x)


def log1pexp(x: mpf) -> mpf:
    """``log(1 + e^x)`` (softplus) without overflow for large x:
    ``x + log1p(e^{−x})`` for ``x > 0``, ``log1p(e^x)`` otherwise."""
    if type(x) is mpf:
        prec, rnd = mp._prec_rounding
        out = log1pexp_raw(x._mpf_, prec, rnd)
        if out is not None:
            return _make(out)
    if x > 0:
        return x + mpmath.log1p(mpmath.exp(-x))
    return mpmath.log1p(mpmath.exp(x))


def log1pexp_raw(t: tuple, prec: int, rnd: str) -> tuple | None:
    """:func:`log1pexp` of a raw finite non-zero ``t`` by the formula's own libmp steps (None
    elsewhere, and in log1p's series branch: the object formula). Within 5·2^−prec relative:
    ``e^{−|x|}`` within 2u (see :func:`stable`), which moves ``log1p`` by at most as much relatively;
    ``1 + e`` rounded at twice the precision, ``mpf_log`` at prec + 10 and the final rounding add
    ≤ 1.01u; ``x + log1p(e^{−x})`` adds two positive terms (one rounding)."""
    if not t[1]:
        return None
    e = exp_raw(mpf_neg(t, prec, rnd) if not t[0] else t, prec, rnd)  # e^{−|x|}
    if not e[1] or e[2] + e[3] < -(prec + 10):  # log1p's series branch
        return None
    r = _log1p_raw(e, prec, rnd)
    return mpf_add(t, r, prec, rnd) if not t[0] else r


def sigmoid_raw(t: tuple, prec: int, rnd: str) -> tuple:
    """:func:`sigmoid` of a raw value: ``1/(e^{−x} + 1)``, within 4.1·2^−prec relative (e^{−x}
    within 2u, the sum and the quotient rounded once)."""
    d = mpf_add(exp_raw(mpf_neg(t, prec, rnd), prec, rnd), _ONE, prec, rnd)
    return mpf_rdiv_int(1, d, prec, rnd)


def sigmoid(x: mpf) -> mpf:
    """``σ(x) = 1/(1 + e^{−x})``."""
    if type(x) is mpf:
        prec, rnd = mp._prec_rounding
        return _make(sigmoid_raw(x._mpf_, prec, rnd))
    return 1 / (1 + mpmath.exp(-x))


class SoftmaxRow:
    """Exact softmax quantities of one row of logits, free of cancellation.

    With ``m = max x`` and ``s = Σ e^{x_j − m}`` (exact differences):
    ``−log p_c = (m − x_c) + log s`` — both terms ≥ 0 — except at the arg-max, where
    ``−log p_c = log1p(Σ_{j≠c} e^{x_j − m})``; likewise ``1 − p_c = (s − e^{x_c−m})/s`` with the
    numerator summed without the c-term. The sum of the ``e_j`` is kept exact, so each
    ``Σ_{j≠c}`` is that sum minus ``e_c`` (exact), rounded once: the same number as summing the
    others, in O(1). Each quantity is computed once per class and kept.
    """

    def __init__(self, row, raw: list | None = None) -> None:
        """``row``: the logits (mpf, or numbers); or ``raw``: their raw tuples instead (the same row)."""
        prec, rnd = self._pr = tuple(mp._prec_rounding)
        if raw is not None:
            xs = self._x = [t if t[3] <= prec else mpf_pos(t, prec, rnd) for t in raw]
        else:
            xs = self._x = [(t if t[3] <= prec else mpf_pos(t, prec, rnd)) if type(v) is mpf and (t := v._mpf_)
                            else mpf(v)._mpf_ for v in row]  # mpf(v): rounded to the working precision
        C = len(xs)
        self.bad = fnan in xs or finf in xs or xs.count(fninf) == C
        if self.bad:
            return
        m = next(t for t in xs if t != fninf)
        for t in xs:
            if t != fninf and mpf_cmp(t, m) > 0:
                m = t
        self._m = m
        e = self._e = [(exp_raw(mpf_sub(t, m, 0), prec, rnd) if t != m else fone) if t != fninf else fzero
                       for t in xs]  # (e^0 = 1: what mpf_exp returns for 0)
        total = fzero
        for t in e:  # exact: every e_j is finite
            total = mpf_add(total, t, 0)
        self._total, self._s = total, mpf_pos(total, prec, rnd)
        self._log_s = None
        self._L: list = [None] * C
        self._p: list = [None] * C
        self._q: list = [None] * C

    @property
    def x(self) -> list:
        """The logits (mpf)."""
        return [_make(t) for t in self._x]

    @property
    def e(self) -> list:
        """``e^{x_j − m}`` (mpf)."""
        return [_make(t) for t in self._e]

    @property
    def m(self) -> mpf:
        return _make(self._m)

    @property
    def s(self) -> mpf:
        return _make(self._s)

    def _sum_except_raw(self, c: int) -> tuple:
        return mpf_pos(mpf_sub(self._total, self._e[c], 0), *self._pr)

    def sum_except_raw(self, c: int) -> tuple:
        """Raw ``Σ_{j≠c} e_j`` (rounded once)."""
        return self._sum_except_raw(c)

    @property
    def e_raw(self) -> list:
        """Raw ``e^{x_j − m}`` (read only)."""
        return self._e

    def argmax(self) -> int:
        """The first index of the largest logit (a row that is not bad)."""
        return self._x.index(self._m)

    def sum_except(self, c: int) -> mpf:
        """``Σ_{j≠c} e_j`` (rounded once)."""
        return _make(self._sum_except_raw(c))

    def neg_log_p_raw(self, c: int) -> tuple:
        """Raw ``−log p_c`` (see :meth:`neg_log_p`)."""
        if self.bad:
            return fnan
        out = self._L[c]
        if out is None:
            prec, rnd = self._pr
            xc = self._x[c]
            if xc == fninf:
                out = finf
            elif xc == self._m:
                rest = self._sum_except_raw(c)
                # log1p's own steps where it takes them (its series branch for a tiny sum: mpmath)
                out = (_log1p_raw(rest, prec, rnd) if rest[1] and rest[2] + rest[3] >= -(prec + 10)
                       else mpmath.log1p(_make(rest))._mpf_)
            else:
                if self._log_s is None:
                    self._log_s = mpf_log(self._s, prec, rnd)
                out = mpf_add(mpf_sub(self._m, xc, 0), self._log_s, prec, rnd)
            self._L[c] = out
        return out

    def p_raw(self, c: int) -> tuple:
        if self.bad:
            return fnan
        out = self._p[c]
        if out is None:
            out = self._p[c] = mpf_div(self._e[c], self._s, *self._pr)
        return out

    def one_minus_p_raw(self, c: int) -> tuple:
        if self.bad:
            return fnan
        out = self._q[c]
        if out is None:
            out = self._q[c] = mpf_div(self._sum_except_raw(c), self._s, *self._pr)
        return out

    def bound(self, c: int) -> int:
        """The certificate (:func:`certify`) of ``−log p_c``, ``p_c`` and ``1 − p_c`` alike: 3 bits
        (≤ 8u, u = 2^−P), EXACT for a bad row or a −inf logit. Each ``e_j`` is within 2u
        (``mpf_exp``; ``e^0 = 1`` exact), so the exact total and every sum-except are within 2u
        and ``s`` (rounded) within 3.01u; ``p_c = e_c/s`` within 6.1u, ``1 − p_c`` within 7.1u;
        at the arg-max ``log1p`` of the rounded sum-except (3.01u) adds its own 1.01u (or its
        series' few u); elsewhere ``(m − x_c) + log s`` adds two non-negative terms with absolute
        error ≤ (2·log s + 3.01)u and ``L = log(e^{m − x_c}·s) ≥ log(1 + e^{x_c − m}) + (m − x_c)
        ≥ log 2``, log s ≤ L: ≤ (2 + 3.01/log 2 + 1)u < 7.4u."""
        return EXACT if self.bad or self._x[c] == fninf else 3

    def bounds(self) -> list:
        """:meth:`bound` of every class of the row."""
        xs = self._x
        if self.bad:
            return [EXACT] * len(xs)
        return [EXACT if t == fninf else 3 for t in xs] if fninf in xs else [3] * len(xs)

    def neg_log_p(self, c: int) -> mpf:
        """``−log p_c`` (+inf for a −inf logit; NaN for a row with NaN or +inf)."""
        return _make(self.neg_log_p_raw(c))

    def p(self, c: int) -> mpf:
        return _make(self.p_raw(c))

    def one_minus_p(self, c: int) -> mpf:
        return _make(self.one_minus_p_raw(c))


_ROWS: dict[tuple, SoftmaxRow] = {}
_CACHES: list[dict] = [_ROWS, _FLOATS, _EXP, _LOG1P, _LOG, _RAWS]


def clear_caches() -> None:
    """Empty every cache of :func:`softmax_row` and :func:`memo` (benchmarks time cold oracles)."""
    for cache in _CACHES:
        cache.clear()


def softmax_row(row) -> SoftmaxRow:
    """:class:`SoftmaxRow` of ``row`` (mpf), kept by the row's exact values and the working
    precision: the value and the VJP of a case (and the differencing of the conditioning, which
    moves one entry at a time) use the same rows."""
    key = (*mp._prec_rounding, *[v._mpf_ if type(v) is mpf else v for v in row])
    return _memo(_ROWS, key, SoftmaxRow, row)


def softmax_rows_raw(flat: list, M: int, C: int) -> list:
    """:func:`softmax_row` of each of the ``M`` rows of ``C`` raw float values in ``flat`` (exact,
    at most 53 bits: the rows :func:`softmax_row` keeps for their mpf), without mpf objects."""
    prec, rnd = mp._prec_rounding
    out = []
    for i in range(M):
        row = flat[i * C:(i + 1) * C]
        out.append(_memo(_ROWS, (prec, rnd, *row), SoftmaxRow, None, row))
    return out


def _key(a) -> object:
    """A hashable stand-in for an argument: an mpf's raw tuple, an array's dtype, shape and
    contents (object arrays of mpf by their raw tuples), a list's items; other values as they are."""
    t = type(a)
    if t is mpf:
        return a._mpf_
    if t is np.ndarray:
        if a.dtype == object:
            return a.shape, tuple([v._mpf_ if type(v) is mpf else _key(v) for v in a.reshape(-1).tolist()])
        return a.dtype.str, a.shape, a.tobytes()
    if t is list or t is tuple:
        return tuple(_key(v) for v in a)
    return a


def memo(fn):
    """``fn`` with its results kept by its arguments (see :func:`_key`: mpf and arrays by their
    exact values, the others must be hashable) and the working precision: an oracle's value and its
    VJP build the same layouts and call the same per-element functions with the same arguments, and
    the conditioning's differencing changes one input at a time. The results must not be mutated
    by the callers (mpf, tuples, objects only read)."""
    cache: dict[tuple, object] = {}
    _CACHES.append(cache)

    def wrapper(*args):
        key = (*mp._prec_rounding, *[_key(a) for a in args])
        try:
            return cache[key]
        except KeyError:
            pass
        if len(cache) >= _MEMO_MAX:
            cache.clear()
        out = cache[key] = fn(*args)
        return out

    wrapper.__wrapped__ = fn
    wrapper.__doc__ = fn.__doc__
    wrapper.__name__ = fn.__name__
    return wrapper


def _flat(result) -> list:
    if isinstance(result, dict):
        return [v for k in sorted(result) for v in _flat(result[k])]
    if isinstance(result, np.ndarray):
        return result.reshape(-1).tolist()
    return [result]


def _same_float64(x, y) -> bool:
    """``x`` and ``y`` round to the same float64 (both NaN counts as the same). Fast paths: equal
    raw values; or both finite, non-zero and, rounded to 53 bits (ties to even), in the normal
    range — where that rounding is the float64 rounding. Otherwise :func:`floats.round_exact`."""
    if type(x) is mpf and type(y) is mpf:
        a, b = x._mpf_, y._mpf_
        if a == b:
            return True
        if a[1] and b[1]:
            ra, rb = mpf_pos(a, 53, "n"), mpf_pos(b, 53, "n")
            if all(-1022 <= r[2] + r[3] - 1 <= 1023 for r in (ra, rb)):
                return ra == rb
    from .floats import FORMATS, round_exact

    u, v = round_exact(x, FORMATS["float64"]), round_exact(y, FORMATS["float64"])
    return (u == v) or (mpmath.isnan(u) and mpmath.isnan(v))


# Certified agreement. An oracle's raw path may state, for each output v of its result, a bound on
# its error at every working precision P ≥ ORACLE_PREC: ``|v_P − f| ≤ 2^k·2^−P·|f|`` (f the exact
# value), as the integer k (a few bits for a cancellation-free formula, plus the magnitudes lost to
# cancellation otherwise), or EXACT: the same value at every precision (an exact result, or an
# infinity/NaN that the inputs alone produce). The bounds use only the guarantees of the libmp calls:
# additions, multiplications and divisions are correctly rounded (≤ 2^−P relative); ``mpf_log`` and
# ``mpf_exp`` are within 2·2^−P relative (they round once a fixed-point value
# carrying 20 and 14 guard bits, whose own truncation error is a few hundred units of the last
# guard bit plus |mag| units for the ln 2 multiple — below 2^−(P+4) relative; near log's x = 1 the
# guard bits grow with the cancellation). :func:`stable` then evaluates at 2P first and checks,
# from that value alone, that every point within the two bounds of it has one float64 rounding:
# the P evaluation would have agreed, so it need not run, and the result is the 2P value as before.

EXACT = -1  # a certificate entry: the output is the same at every working precision
_ARMED = object()
_CERT: list = []


def certify(result, bounds: list) -> None:
    """State the error bounds of ``result`` (the object the oracle returns; ``bounds`` in the order
    of its flattened outputs: dict keys sorted, arrays in C order), for :func:`stable`; a no-op
    outside it. An entry of None means no bound."""
    if _CERT and _CERT[-1] is _ARMED:
        _CERT[-1] = (result, bounds)
    elif _CERT:
        _CERT[-1] = None  # a second certificate during one evaluation: trust neither


def certified(fn) -> tuple:
    """``fn()`` and the bounds it certified for that very result (None if it certified none)."""
    _CERT.append(_ARMED)
    try:
        out = fn()
    finally:
        cert = _CERT.pop()
    return out, (cert[1] if type(cert) is tuple and cert[0] is out else None)


def mag(t: tuple) -> int:
    """``|t| ∈ [2^(mag−1), 2^mag)`` for a finite non-zero raw ``t``."""
    return t[2] + t[3]


def sum_bound(errs: list, total: tuple):
    """Certificate of ``total``, the once-rounded exact sum of terms where ``errs`` holds, for each
    inexact term, E with ``|its error| ≤ 2^E·2^−P``: ``|err| ≤ 2^−P·(n·2^max E + |total|)`` with
    ``|total| ≥ 2^(mag total − 1)``. EXACT for an infinite or NaN total (the callers' specials come
    from the inputs alone); None where the computed sum is 0 but some term is inexact."""
    if not total[1]:
        if total[2]:
            return EXACT
        return 0 if not errs else None
    if not errs:
        return 0
    return max(len(errs).bit_length() + max(errs) - total[2] - total[3] + 1, 0) + 1


def cancel_bound(errmag: int, d: tuple, extra: int):
    """Certificate of ``d``, a once-rounded sum whose operands carry an absolute error of at most
    ``2^errmag·2^−P``, followed by further roundings worth ``2^extra`` relative (the sum's own
    included): ``2^errmag/|d| + 2^extra``. EXACT for an infinite or NaN ``d`` (from the inputs
    alone, as the callers ensure); None for a computed 0 (no relative bound)."""
    if not d[1]:
        return EXACT if d[2] else None
    return max(errmag - d[2] - d[3] + 1, extra) + 1


def _certified(values, bounds: list, bits: int) -> bool:
    """Every output's P = ``bits`` evaluation rounds to the float64 of its 2P value (see
    :func:`certify`): ``|v_P − v_2P| ≤ 2^(k+1)·2^−P·|v_2P|`` lies strictly between two float64
    rounding boundaries (midpoints of the normal range: rounding is monotone, so both ends
    rounding alike is enough; the binades ±2^−1020 … 2^1023 keep clear of subnormals and overflow)."""
    flat = _flat(values)
    if len(flat) != len(bounds):
        return False
    top, exact, windows = bits - 64, EXACT, _WINDOWS
    for y, k in zip(flat, bounds):
        if k == exact:
            continue
        if k is None or k > top or type(y) is not mpf:
            return False
        _, man, e, bc = y._mpf_
        if not man:
            if e:
                return False  # an infinity or NaN without EXACT: no promise
            continue  # 0 with a relative bound: 0 at every precision
        if not -1020 <= e + bc <= 1023:
            return False
        if bc <= 53:
            continue  # a float64 itself, and the neighbours within 2^−60 relative round to it
        # the rounding boundary: the bits below the 53rd equal to 2^half (half = bc − 54); the bound
        # is below 2^d units of the last bit (d = bc + k + 1 − bits; 0 units for d < 0): too close
        # where |those bits − 2^half| ≤ 2^d
        d = bc + k + 1 - bits
        if d < 0:
            d = -1
        mask, lo, hi = windows.get((bc, d)) or _window(bc, d)
        if lo <= man & mask <= hi:
            return False
    return True


_WINDOWS: dict[tuple[int, int], tuple] = {}


def _window(bc: int, d: int) -> tuple:
    """``(2^(half+1) − 1, 2^half − r, 2^half + r)`` as mpz, ``half = bc − 54``, ``r = 2^d`` (0 for
    d = −1): the mask of the bits below a ``bc``-bit mantissa's 53rd and the window around the
    float64 rounding boundary that :func:`_certified` rejects (kept: a few (bc, d) pairs recur)."""
    return _memo(_WINDOWS, (bc, d), _window_masks, bc, d)


def _window_masks(bc: int, d: int) -> tuple:
    half, r = bc - 54, (1 << d) if d >= 0 else 0
    return _MPZ((2 << half) - 1), _MPZ((1 << half) - r), _MPZ((1 << half) + r)


def stable(fn, max_doublings: int = 3):
    """Evaluate ``fn()`` at the working precision, then at doubled precisions until the
    float64 roundings of every output agree between two consecutive precisions.

    This is the precision rule's runtime check: a cancellation the formula did not remove
    shows up as a disagreement and buys more bits. Returns the higher-precision result.
    The doubled evaluation runs first; where ``fn`` certifies its error bounds
    (:func:`certify`) and they prove the agreement, the working-precision evaluation is skipped
    (its float64 roundings are those of the doubled one, so the loop would return the same).
    """
    bits = _prec[-1]
    with precision(2 * bits), workprec():
        first, bounds = certified(fn)
    if bounds is not None and _certified(first, bounds, bits):
        return first
    with workprec():
        prev = fn()
    for i in range(max_doublings):
        bits *= 2
        if i:
            with precision(bits), workprec():
                cur = fn()
        else:
            cur = first
        if all(_same_float64(x, y) for x, y in zip(_flat(prev), _flat(cur))):
            return cur
        prev = cur
    return prev
