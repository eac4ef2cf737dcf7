"""Per-element errors kept for the HTML report's plots, and the plots themselves.

**Abscissa** — what each plot puts on its x axis: a rule per kind of the spec's first argument
(:data:`KIND_RULES`: logits, probabilities, log-probabilities), overridden per spec in
:data:`RULES` — the one place where the choice is made (``reference/*.py`` is left alone so as not
to touch the condition-number cache). A rule gives a *field*, one float per entry of the spec's
main input, and the generic fitting of :func:`abscissa` maps it onto the elements of each quantity:

- an element whose quantity has the field's shape (elementwise values, every gradient of an input
  shaped like the main one) takes its entry's field;
- a row of a class axis (cross-entropy, NLL, softmax focal) takes the field at its target class
  (class index, or the largest probability target); other reductions over an axis, over trailing
  axes (Dice's spatial sums) or over everything (``mean`` / ``sum``) take the *most extreme* entry
  they reduce (largest ``|field|``), so a mean is placed where its hardest input is;
- a rule may name the exact result instead (``value="exact"``): Dice-type ratios and the
  information losses, whose row values have no single input that places them;
- whatever fits none of these (a spec with no rule of either kind, an unexpected shape) is placed
  at its exact result, labelled so.

Per family: binary and sigmoid focal — the logit ``x``, or ``logit(p) = log(p/(1 − p))`` for
probability inputs (so ``p → 0`` and ``p → 1`` both spread out); softmax, cross-entropy and
softmax focal — the margin ``x_j − max_{i≠j} x_i`` of the entry (of the target class for a row);
NLL — the log-probability (of the target); ``kl_div`` / ``kl_divergence`` — ``log(p/q)`` of the
entry; ``entropy`` — ``logit(p)`` for gradients, the exact entropy for values; Dice family —
the exact loss for values, the entry's logit / ``logit(p)`` / margin (by ``activation``) for
gradients; boxes — the largest ``|coordinate|`` of the pair (where float32 centres lose
accuracy); multi-task — the log-variance ``s`` (uncertainty weighting) or the KPI ``κ`` (DTP).

**Kept points** — only when a report asks for plots (``Options.plot_points`` > 0, ``--html``):
each row keeps at most that many elements, subsampled deterministically with the worst always
kept (:func:`subsample`), as plain lists so a journal can hold them; a cell merges its rows' points
and subsamples again. Nothing is kept, and no abscissa computed, otherwise.

matplotlib (the ``report`` extra) is imported only to draw (:func:`figure_png`, Agg, no pyplot).
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .compare import GRADES, Comparison
from .spec import Spec

__all__ = ["PLOT_POINTS", "RULES", "KIND_RULES", "Rule", "rule_for", "abscissa", "keep_points", "merge_points",
           "subsample", "require_matplotlib", "Panel", "cell_panels", "figure_png"]

PLOT_POINTS = 2000  # points kept per row and per cell quantity when --html asks for plots
EXACT_LABEL = "exact result f"
MISSING = "the HTML report's plots need matplotlib: pip install 'lossoracle[report]'"


# --------------------------------------------------------------------------------------------
# Fields over the main input


def _logit_p(p: np.ndarray) -> np.ndarray:
    """``log(p/(1 − p))`` without cancellation near 1 (±inf at 0 and 1)."""
    p = np.asarray(p, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log(p) - np.log1p(-p)


def _margin(x: np.ndarray, axis: int) -> np.ndarray:
    """``x_j − max_{i≠j} x_i`` along ``axis`` (the largest other entry: the runner-up for the maximum)."""
    x = np.moveaxis(np.asarray(x, dtype=np.float64), axis, -1)
    if x.shape[-1] < 2:
        return np.moveaxis(np.full(x.shape, np.nan), -1, axis)
    order = np.sort(x, axis=-1)
    top, second = order[..., -1:], order[..., -2:-1]
    other = np.where(x == top, second, top)  # a tied maximum's other is the tie itself
    with np.errstate(invalid="ignore"):
        return np.moveaxis(x - other, -1, axis)


def _class_axis(inputs: Mapping[str, Any], params: Mapping[str, Any]) -> int:
    """PyTorch's class axis: 1 (0 for 1-D input)."""
    return 1 if np.ndim(inputs["input"]) >= 2 else 0


def _log_ratio(p: np.ndarray, q: np.ndarray, log_p: bool = False, log_q: bool = False) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        lp = np.asarray(p, np.float64) if log_p else np.log(np.asarray(p, np.float64))
        lq = np.asarray(q, np.float64) if log_q else np.log(np.asarray(q, np.float64))
        return lp - lq


@dataclass(frozen=True)
class Rule:
    """How one spec's elements are placed on the x axis.

    ``field(inputs, params)`` — one float per entry of the main input (the array every quantity
    is fitted from); ``label`` its axis label (or a function of the inputs and parameters);
    ``axis(inputs, params)`` the class / row axis; ``pick(inputs, params)`` the index along that
    axis a row is placed at (its target class; negative or out of range: not placed);
    ``value="exact"`` places value elements at the exact result instead; ``place(inputs, params,
    quantity, shape)`` replaces the generic fitting altogether (boxes).
    """

    field: Callable[[Mapping[str, Any], Mapping[str, Any]], np.ndarray] | None
    label: str | Callable[[Mapping[str, Any], Mapping[str, Any]], str]
    axis: Callable[[Mapping[str, Any], Mapping[str, Any]], int] | None = None
    pick: Callable[[Mapping[str, Any], Mapping[str, Any]], np.ndarray | None] | None = None
    value: str = "field"
    place: Callable[[Mapping[str, Any], Mapping[str, Any], str, tuple], np.ndarray | None] | None = None


def _arg(name: str, transform: Callable[[np.ndarray], np.ndarray] | None = None):
    def field(inputs, params):
        a = np.asarray(inputs[name], dtype=np.float64)
        return transform(a) if transform else a
    return field


def _target_pick(inputs, params) -> np.ndarray | None:
    """The target class of each row: class indices, or the largest probability target."""
    t, x = inputs.get("target"), inputs["input"]
    if t is None:
        return None
    if np.asarray(t).dtype.kind == "f" and np.shape(t) == np.shape(x):
        return np.argmax(np.asarray(t), axis=_class_axis(inputs, params))
    return np.asarray(t)


def _dim(inputs, params) -> int:
    return int(params.get("dim", -1))


def _softmax_margin(inputs, params):
    return _margin(inputs["input"], _class_axis(inputs, params))


def _dice_field(inputs, params):
    """By activation: the logit (sigmoid), the margin over the class axis (softmax), ``logit(p)`` (none)."""
    x = np.asarray(inputs["input"], np.float64)
    act = params.get("activation", "none")
    if act == "sigmoid":
        return x
    if act == "softmax":
        return _margin(x, 1)
    return _logit_p(x)


def _dice_label(inputs, params) -> str:
    return {"sigmoid": "logit x", "softmax": "margin x_j − max_{i≠j} x_i"}.get(
        params.get("activation", "none"), "logit(p) = log(p/(1−p))")


def _kl_div_field(inputs, params):
    log_target = bool(params.get("log_target", False))
    return _log_ratio(inputs["target"], inputs["input"], log_p=log_target, log_q=True)


def _box_extent(b) -> np.ndarray:
    b = np.asarray(b, np.float64)
    return np.max(np.abs(b), axis=-1) if b.size else np.zeros(b.shape[:-1])


def _boxes(pairwise: bool) -> Rule:
    """The largest |coordinate| of each pair of boxes (N×M pairs, or N aligned ones); a box's
    gradient row at its own (pairwise) or its pair's (aligned) extent; reductions at the extreme pair."""
    def place(inputs, params, quantity: str, shape: tuple) -> np.ndarray | None:
        m1, m2 = _box_extent(inputs["boxes1"]), _box_extent(inputs["boxes2"])
        if quantity.startswith("grad:"):
            own = m1 if quantity == "grad:boxes1" else m2
            f = own if pairwise else np.maximum(m1, m2)
            return np.broadcast_to(f[..., None], shape) if f.shape + shape[-1:] == shape else None
        f = np.maximum(m1[:, None], m2[None, :]) if pairwise else np.maximum(m1, m2)
        return _fit(f, shape, None, None)
    return Rule(None, "largest |coordinate| of the pair", place=place)


LOGIT, LOGIT_P = "logit x", "logit(p) = log(p/(1−p))"
MARGIN = "margin x_j − max_{i≠j} x_i (at the target for a row)"
_softmax = Rule(lambda i, p: _margin(i["input"], _dim(i, p)), "margin x_j − max_{i≠j} x_i", axis=_dim)
_ce = Rule(_softmax_margin, MARGIN, axis=_class_axis, pick=_target_pick)
_dice = Rule(_dice_field, _dice_label, value="exact")

# By the kind of the spec's first argument (binary, sigmoid focal, and any new elementwise loss) ...
KIND_RULES: dict[str, Callable[[str], Rule]] = {
    "logits": lambda name: Rule(_arg(name), LOGIT),
    "probabilities": lambda name: Rule(_arg(name, _logit_p), LOGIT_P),
    "log_probabilities": lambda name: Rule(_arg(name), "log-probability"),
}
# ... and per spec where the elements need another abscissa (module docstring).
RULES: dict[str, Rule] = {
    "log_softmax": _softmax,
    "softmax": _softmax,
    "cross_entropy": _ce,
    "softmax_focal_loss": _ce,
    "nll_loss": Rule(_arg("input"), "log-probability (at the target for a row)", axis=_class_axis, pick=_target_pick),
    "kl_div": Rule(_kl_div_field, "log(p/q) (target p, input log q)"),
    "kl_divergence": Rule(lambda i, p: _log_ratio(i["p"], i["q"]), "log(p/q)", axis=_dim, value="exact"),
    "entropy": Rule(_arg("p", _logit_p), LOGIT_P, axis=_dim, value="exact"),
    "dice_loss": _dice,
    "jaccard_loss": _dice,
    "tversky_loss": _dice,
    "generalized_dice_loss": _dice,
    "box_iou": _boxes(pairwise=True),
    "generalized_box_iou": _boxes(pairwise=True),
    "generalized_box_iou_loss": _boxes(pairwise=False),
    "distance_box_iou_loss": _boxes(pairwise=False),
    "complete_box_iou_loss": _boxes(pairwise=False),
    "uncertainty_weighted_loss": Rule(_arg("log_vars"), "log-variance s"),
    "dynamic_task_priority": Rule(_arg("kpis"), "KPI κ"),
}


# --------------------------------------------------------------------------------------------
# Fitting a field onto a quantity's elements


def _extreme(a: np.ndarray, axis=None) -> np.ndarray:
    """The entry of largest magnitude (signed) along ``axis`` (all axes: None); NaN where all are NaN."""
    a = np.asarray(a, np.float64)
    if axis is None:
        a, axis = a.reshape(-1), 0
    if a.shape[axis] == 0:
        return np.full(np.delete(np.array(a.shape), axis).tolist(), np.nan)
    mag = np.where(np.isnan(a), -1.0, np.abs(a))
    i = np.expand_dims(np.argmax(mag, axis=axis), axis)
    return np.squeeze(np.take_along_axis(a, i, axis), axis)


def _fit(f: np.ndarray, shape: tuple, axis: int | None, pick: np.ndarray | None) -> np.ndarray | None:
    """``f`` (one entry per main-input entry) mapped onto an output of ``shape`` (None: no rule fits)."""
    if f.shape == shape:
        return f
    if axis is not None and f.ndim:
        ax = axis % f.ndim
        rows = np.delete(np.array(f.shape), ax).tolist()
        if pick is not None and tuple(np.shape(pick)) == tuple(rows):
            idx = np.asarray(pick, dtype=np.int64)
            ok = (idx >= 0) & (idx < f.shape[ax])
            at = np.expand_dims(np.where(ok, idx, 0), ax)
            f = np.where(ok, np.squeeze(np.take_along_axis(f, at, ax), ax), np.nan)
        else:
            f = _extreme(f, ax) if tuple(rows) == shape else f
        if f.shape == shape:
            return f
    if shape == ():
        return np.asarray(_extreme(f))
    if len(shape) < f.ndim and f.shape[:len(shape)] == shape:  # reduced over trailing axes
        return _extreme(f.reshape(*shape, -1), -1)
    return None


def rule_for(spec: Spec) -> Rule | None:
    """The spec's own rule, else its first argument's kind's (None: placed at the exact result)."""
    if spec.name in RULES:
        return RULES[spec.name]
    first = spec.args[0] if spec.args else None
    return KIND_RULES[first.kind](first.name) if first is not None and first.kind in KIND_RULES else None


def abscissa(spec: Spec, inputs: Mapping[str, Any], params: Mapping[str, Any], quantity: str,
             exact) -> tuple[np.ndarray, str]:
    """The x of every element of ``quantity`` (flat float64, NaN: not placed) and its axis label."""
    shape = tuple(np.shape(exact))
    rule = rule_for(spec)
    x = None
    label = EXACT_LABEL
    if rule is not None and not (quantity == "value" and rule.value == "exact"):
        try:
            x, label = _rule_x(rule, inputs, params, quantity, shape)
        except (KeyError, ValueError, IndexError):  # an input the rule does not know: fall back, labelled
            x = None
        if x is None:
            label = EXACT_LABEL
    if x is None:
        x = np.array([float(v) for v in np.asarray(exact, dtype=object).reshape(-1)], dtype=np.float64)
    return np.asarray(x, np.float64).reshape(-1), label


def _rule_x(rule: Rule, inputs, params, quantity: str, shape: tuple) -> tuple[np.ndarray | None, str]:
    label = rule.label(inputs, params) if callable(rule.label) else rule.label
    if rule.place is not None:
        return rule.place(inputs, params, quantity, shape), label
    value = quantity == "value"
    axis = rule.axis(inputs, params) if rule.axis else None
    pick = rule.pick(inputs, params) if rule.pick and value else None
    return _fit(rule.field(inputs, params), shape, axis, pick), label


# --------------------------------------------------------------------------------------------
# Kept points


def _severity(grade: np.ndarray, uc: np.ndarray, ulp: np.ndarray) -> np.ndarray:
    """Indices from the least to the most severe element (grade, then err/(u·c), then ULP)."""
    uc = np.nan_to_num(uc, nan=np.inf, posinf=1e308)
    ulp = np.nan_to_num(ulp, nan=np.inf, posinf=1e308)
    return np.lexsort((ulp, uc, grade))


def subsample(grade: Sequence[int], uc: Sequence[float], ulp: Sequence[float], limit: int) -> np.ndarray:
    """At most ``limit`` indices, in increasing order: the ``limit // 4`` most severe always, the
    rest evenly spaced over the others (deterministic: no random draw)."""
    n = len(grade)
    if n <= limit:
        return np.arange(n)
    order = _severity(np.asarray(grade), np.asarray(uc, np.float64), np.asarray(ulp, np.float64))
    worst = order[n - max(1, limit // 4):]
    rest = np.setdiff1d(np.arange(n), worst)
    spread = rest[np.linspace(0, rest.size - 1, limit - worst.size).round().astype(np.int64)]
    return np.union1d(worst, spread)


def keep_points(spec: Spec, inputs: Mapping[str, Any], params: Mapping[str, Any], quantity: str,
                cmp: Comparison, exact, limit: int) -> dict[str, Any]:
    """The plot's points of one row: ``{"label", "x", "ulp", "uc", "grade"}`` (plain lists, ≤ ``limit``;
    ``grade`` indexes :data:`~lossoracle.compare.GRADES`)."""
    x, label = abscissa(spec, inputs, params, quantity, exact)
    grade = [GRADES.index(g) for g in cmp.grade.reshape(-1).tolist()]
    ulp, uc = cmp.ulp.reshape(-1), cmp.cond_err.reshape(-1)
    i = subsample(grade, uc, ulp, limit)
    return {"label": label, "x": x[i].tolist(), "ulp": ulp[i].tolist(), "uc": uc[i].tolist(),
            "grade": [grade[j] for j in i]}


def merge_points(parts: Sequence[dict[str, Any]], limit: int = PLOT_POINTS) -> dict[str, np.ndarray]:
    """Rows' kept points (of one quantity and label) as one subsampled set of arrays; ``row`` says
    which part each point came from."""
    cols = {k: np.concatenate([np.asarray(p[k], dtype=np.float64) for p in parts]) for k in ("x", "ulp", "uc")}
    grade = np.concatenate([np.asarray(p["grade"], dtype=np.int64) for p in parts])
    row = np.concatenate([np.full(len(p["grade"]), j, dtype=np.int64) for j, p in enumerate(parts)])
    i = subsample(grade, cols["uc"], cols["ulp"], limit)
    return {**{k: v[i] for k, v in cols.items()}, "grade": grade[i], "row": row[i]}


# --------------------------------------------------------------------------------------------
# Drawing


def require_matplotlib() -> None:
    """Raise ImportError with the install hint when matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as e:
        raise ImportError(MISSING) from e


COLOURS = {"correctly_rounded": "#1a9850", "faithful": "#66bd63", "stable": "#4575b4", "tail": "#f39c12",
           "deviates": "#d73027"}


@dataclass
class Panel:
    """One quantity's points, with the bounds drawn in: the ULP budget and ``k`` (their least values;
    a reduction adds ``log2 n`` to both, so a larger one is marked too)."""

    quantity: str
    label: str
    points: dict[str, np.ndarray]
    budget: tuple[float, float]
    k: tuple[float, float]
    cases: Sequence[str] = ()  # the case of each part (``points["row"]`` indexes it)


FLOORS = {"ulp": 1e-3, "uc": 1e-4}  # errors below these (exact ones too) are drawn at the floor
_LARGEST = 1e300  # coordinates are clipped here: the axis ends (a few times beyond) must stay finite


def _y_axis(v: np.ndarray, floor: float) -> tuple[np.ndarray, float, np.ndarray, np.ndarray]:
    """Errors for a log axis: those below ``floor`` (0 included) drawn at it, ∞/NaN at a ceiling
    above the finite maximum; returns (y, ceiling, non-finite mask, at-floor mask)."""
    v = np.minimum(v, _LARGEST)
    finite = v[np.isfinite(v)]
    hi = min(max(float(finite.max()) if finite.size else 1.0, floor) * 30, _LARGEST)
    bad = ~np.isfinite(v)
    low = ~bad & (v < floor)
    return np.where(bad, hi, np.maximum(v, floor)), hi, bad, low


def _x_axis(ax, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """x with ±inf drawn at the axis ends; a log or symlog scale where the values span decades."""
    x = np.where(np.isfinite(x), np.clip(x, -_LARGEST, _LARGEST), x)
    finite = x[np.isfinite(x)]
    big = float(np.max(np.abs(finite))) if finite.size else 1.0
    inf = np.isinf(x)
    pos = finite[finite > 0]
    if finite.size and np.all(finite >= 0) and pos.size and pos.max() / pos.min() > 1e3:
        ax.set_xscale("log")
        return np.where(inf, max(big, 1.0) * 8, np.where(x > 0, x, pos.min() / 4)), inf
    end = max(big, 1.0) * (8 if big > 50 else 1.3)
    if big > 50:
        ax.set_xscale("symlog", linthresh=1.0)
    return np.where(np.isposinf(x), end, np.where(np.isneginf(x), -end, x)), inf


def _tick(v: float, _pos=None) -> str:
    """Plain tick labels (1e-3, 0.1, 10, 1e6): matplotlib's default for log axes is mathtext,
    whose parser is most of a figure's drawing time."""
    if v == 0 or not math.isfinite(v):
        return f"{v:g}"
    e = math.floor(math.log10(abs(v)) + 1e-9)
    if -1 <= e <= 3:
        return f"{v:g}"
    m = v / 10.0**e
    return f"{'-' if v < 0 else ''}1e{e}" if abs(abs(m) - 1) < 1e-6 else f"{v:.0e}"


def _png(fig) -> bytes:
    """The figure as a PNG with an adaptive 128-colour palette (pillow comes with matplotlib): a
    third of the size of the RGBA one, and the report embeds one per cell."""
    from PIL import Image

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    buf.seek(0)
    img = Image.open(buf).convert("RGB").quantize(128, method=Image.Quantize.FASTOCTREE)
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


def figure_png(panels: Sequence[Panel], title: str) -> bytes:
    """One PNG: per quantity, the error in ULP and in units of u·c against the abscissa (log y), each
    element coloured by its grade, the bounds drawn in, the worst element circled."""
    require_matplotlib()
    from matplotlib.figure import Figure  # no pyplot: no global state, the Agg canvas by default
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FuncFormatter, LogLocator, NullLocator

    height = 1.0 + 2.8 * len(panels)
    fig = Figure(figsize=(10, height), dpi=72)  # fixed margins: a layout engine measures every label many times
    fig.subplots_adjust(left=0.07, right=0.985, bottom=0.55 / height, top=1 - 0.75 / height, wspace=0.16,
                        hspace=0.6 * 2.7 / 2.2)
    axes = fig.subplots(len(panels), 2, squeeze=False)
    fig.suptitle(title, fontsize=10, y=1 - 0.12 / height)
    seen: set[int] = set()
    for row, p in zip(axes, panels):
        pts = p.points
        keep = ~np.isnan(pts["x"])
        grades = np.asarray(pts["grade"], np.int64)[keep]
        seen.update(np.unique(grades).tolist())
        order = np.lexsort((np.nan_to_num(pts["ulp"][keep], posinf=1e308),
                            np.nan_to_num(pts["uc"][keep], nan=np.inf, posinf=1e308), grades))
        for ax, key, bound, name in ((row[0], "ulp", p.budget, "error in ULP; budget"),
                                     (row[1], "uc", p.k, "error / (u·c); k =")):
            x, inf_x = _x_axis(ax, pts["x"][keep])
            y, hi, bad, low = _y_axis(pts[key][keep], FLOORS[key])
            colours = [COLOURS[GRADES[g]] for g in grades]
            ax.scatter(x[~bad], y[~bad], s=12, c=[c for c, b in zip(colours, bad) if not b], edgecolors="none")
            if bad.any():
                ax.scatter(x[bad], y[bad], s=36, c=[c for c, b in zip(colours, bad) if b], marker="x")
            ax.axhline(bound[0], color="k", ls="--", lw=1)
            with_n = ""
            if bound[1] > bound[0]:
                ax.axhline(bound[1], color="k", ls=":", lw=1)
                with_n = f" (+ log2 n: ≤ {bound[1]:.3g})"
            if order.size:
                w = order[-1]
                ax.scatter([x[w]], [y[w]], s=110, facecolors="none", edgecolors="k", lw=1.4)
                case = p.cases[pts["row"][keep][w]] if len(p.cases) else ""
                if case:  # named on the side with more room
                    right = x[w] > np.median(x)
                    ax.annotate(case, (x[w], y[w]), xytext=(-10 if right else 10, -3), textcoords="offset points",
                                fontsize=7, ha="right" if right else "left", va="top")
            ax.set_yscale("log")
            ax.yaxis.set_major_locator(LogLocator(numticks=7))
            ax.yaxis.set_minor_locator(NullLocator())  # minor ticks over hundreds of decades cost seconds
            ax.xaxis.set_minor_locator(NullLocator())
            ax.xaxis.set_major_formatter(FuncFormatter(_tick))
            ax.yaxis.set_major_formatter(FuncFormatter(_tick))
            ax.set_ylim(FLOORS[key] / 3, min(max(hi, bound[1] * 10), _LARGEST) * 3)
            # an explicit y: matplotlib otherwise measures every tick label to place the title
            ax.set_title(f"{p.quantity}: {name} {bound[0]:.3g}{with_n}", fontsize=9, y=1.0, pad=4)
            notes = ["±inf at the ends"] * bool(inf_x.any()) + [f"≤ {FLOORS[key]:g} at the bottom"] * bool(low.any())
            if (~keep).any():
                notes.append(f"{int((~keep).sum())} not placed")
            ax.set_xlabel(p.label + (f"\n({'; '.join(notes)})" if notes else ""), fontsize=8)
            ax.tick_params(labelsize=7)
            ax.grid(True, which="major", alpha=0.3)
    handles = [Line2D([], [], ls="", marker="o", color=COLOURS[GRADES[g]], label=GRADES[g]) for g in sorted(seen)]
    handles += [Line2D([], [], ls="", marker="x", color="k", label="NaN/inf mismatch"),
                Line2D([], [], ls="", marker="o", mfc="none", mec="k", ms=9, label="worst (its case)"),
                Line2D([], [], ls="--", color="k", lw=1, label="ULP budget / k"),
                Line2D([], [], ls=":", color="k", lw=1, label="with log2 n of a sum")]
    fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 1 - 0.32 / height), ncol=len(handles),
               fontsize=7, frameon=False)
    return _png(fig)


def cell_panels(rows: Sequence[Any], limit: int = PLOT_POINTS) -> list[Panel]:
    """The panels of one cell's rows (Results with kept points), value first, then each gradient."""
    groups: dict[tuple[str, str], list[Any]] = {}
    for r in rows:
        if getattr(r, "points", None) and r.points.get("x"):
            groups.setdefault((r.quantity, r.points["label"]), []).append(r)
    order = sorted(groups, key=lambda q: (q[0] != "value", q))
    panels = []
    for quantity, label in order:
        rs = groups[(quantity, label)]
        budgets = [r.budget for r in rs if r.budget is not None] or [math.nan]
        ks = [r.k for r in rs if r.k is not None] or [math.nan]
        panels.append(Panel(quantity, label, merge_points([r.points for r in rs], limit),
                            (min(budgets), max(budgets)), (min(ks), max(ks)), [r.case for r in rs]))
    return panels
