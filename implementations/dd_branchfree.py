"""The :data:`.doubledouble.SHORT` functions (``exp``, ``log``, ``log1p``) and ``ldexp`` for torch
tensors without a data-dependent branch or a host round trip, so that a double-double kernel
built from them and the arithmetic of :mod:`.doubledouble` traces into one ``torch.compile`` graph.

No ``frexp`` (whose integer exponent Inductor cannot lower): ``exp`` reduces ``t = n·ln2/64 + r``
with rounding to integers only, and every power of two is built from its bits,
``2^h = ((h + 1023) << 52)`` viewed as float64, in two normal factors (one rounding). The table
of ``2^{j/64}`` is a CPU tensor (64 numbers, copied to another device on use; no NumPy array in
the traced code).

Same bits as :data:`.doubledouble.SHORT` and :func:`.doubledouble.ldexp` wherever the exponent
lies in [−2044, 2046]; :func:`ldexp` clamps it there, which for ``|x| ≤ 2`` (every caller here
scales an ``E ∈ [0.7, 1.42]`` or a quantity at most that large) still underflows to 0 below; the
callers' exponents never exceed 2046 (``e^t`` for ``t ≤ 710`` times at most ``2^600``).
"""

from __future__ import annotations

import torch

from . import doubledouble as dd

__all__ = ["ldexp", "exp", "log", "log1p"]

Tensor = torch.Tensor
DD = tuple[Tensor, Tensor]

_POW2 = tuple(torch.from_numpy(t.copy()) for t in dd._POW2_T)  # T_j = 2^{j/64}, j = −32…31 (CPU; copied to
# another device on each use, 64 numbers)


def ldexp(x: Tensor | DD, k: Tensor) -> Tensor | DD:
    """``x·2^k`` (both parts of a double-double alike) for integer-valued ``k`` clamped to
    [−2044, 2046]: ``x·2^⌊k/2⌋·2^(k − ⌊k/2⌋)``, both powers normal, built from their bits."""
    k = k.to(torch.int64).clamp(-2044, 2046)
    h = k >> 1
    p1 = ((h + 1023) << 52).view(torch.float64)
    p2 = ((k - h + 1023) << 52).view(torch.float64)
    if isinstance(x, tuple):
        return x[0] * p1 * p2, x[1] * p1 * p2
    return x * p1 * p2


def exp(t: Tensor | DD) -> tuple[DD, Tensor]:
    """:data:`.doubledouble.SHORT` ``exp``: ``e^t = E·2^k``, ``E ∈ [0.7, 1.42]`` (about 2^-68 relative)."""
    r, j, k = dd._exp_reduce(t, short=True)
    uh, ul = dd._u_short(r)
    s, e = dd._fast_two_sum(1.0, uh)
    th, tl = (t.to(uh.device) for t in _POW2)
    idx = (j + 32.0).to(torch.int64)
    return dd.mul((th[idx], tl[idx]), dd._fast_two_sum(s, e + ul)), k


def log(x: Tensor | DD) -> DD:
    """:data:`.doubledouble.SHORT` ``log`` of a positive normal ``x``: one Newton step
    ``l + x·e^(−l) − 1`` from the hardware ``l = log(hi)``."""
    hi, lo = x if isinstance(x, tuple) else (x, None)
    l0 = torch.log(hi)
    E, k = exp(-l0)
    p = dd.mul(E, x) if lo is not None else dd.mul_d(E, x)
    return dd.add_d(dd.add_d(ldexp(p, k), -1.0), l0)


def log1p(f: Tensor | DD) -> DD:
    """:data:`.doubledouble.SHORT` ``log1p`` of a finite ``f ∈ (−1, 2^500]``, full relative accuracy
    also for tiny ``f``: one Newton step ``l + (e^(−l) − 1) + f·e^(−l)`` from ``l = log1p(hi)``."""
    fh, fl = f if isinstance(f, tuple) else (f, None)
    l0 = torch.log1p(fh)
    E, k = exp(-l0)
    E = ldexp(E, k)
    fE = dd.mul(f, E) if fl is not None else dd.mul_d(E, f)
    return dd.add_d(dd.add(dd.add_d(E, -1.0), fE), l0)
