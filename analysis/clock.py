"""Clock alignment between hosts' traces, with guaranteed bounds (see docs/clock-alignment.md).

Entry point, called by `mbrec analyze`::

    align(traces, method="auto", reference=None, window_s=None) -> Alignment
    Alignment.report_section() -> dict (JSON-ready), Alignment.text_lines() -> terminal lines
    Alignment.pair(a, b).map(t_a) -> (estimate, lo, hi) of b's clock;
    Alignment.transforms[host].to_reference(t) -> (estimate, lo, hi) of the reference's clock

and the command-line options that feed it (the analyze command adds them and passes them through):

    --clock auto|shared|realtime|packets   -> method      (default auto)
    --reference HOST                       -> reference   (default: the first trace's host)
    --clock-window S                       -> window_s    (default: one fit over the whole trace)

Model, per host pair (A, B): ``t_B = alpha * t_A + beta`` over a window. A frame A->B sent at A-time s
and received at B-time r gives ``r >= alpha*s + beta`` (the line passes below the point (s, r)); a
frame B->A sent at B-time s' and received at A-time r' gives ``s' <= alpha*r' + beta`` (the line
passes above (r', s')). Every line that satisfies all constraints is *feasible*; the true one is
among them. The feasible lines form a convex polygon in (alpha, beta); we find it from the lower
convex hull of the A->B points and the upper hull of the B->A points, so the work is one O(n) to
O(n log n) hull pass per direction and then work proportional to the hull size.

Outputs per pair: the extreme slopes (alpha_min, alpha_max); as the estimate, the feasible line
with the widest equal room to both directions' constraints (it makes the two minimum one-way
delays equal, so it assumes they are: its error is half their difference; the bisector of the
two extreme lines, which Trace Compass uses, assumes the same but moves with whichever frames
happen to pin the extreme slopes), and, for any time t, the exact range of values the feasible lines give
(``lo(t) <= true t_B <= hi(t)``). That range is a guarantee under the model (an affine clock
relation within a window, and positive one-way delays); it is not a statistical interval.

Everything below works in centred coordinates: int64 nanoseconds minus an int64 reference point,
then float64, so offsets of days and drifts of hundreds of ppm lose no precision.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mbrec.analysis.match import host_names, match_traces
from mbrec.errors import MbrecError

METHODS = ("auto", "shared", "realtime", "packets")
PLAUSIBLE_DRIFT = (2e-3, 5e-2)  # slope ranges tried first (+-2000 ppm, +-5%): never assumed
ASSUMPTION = ("the estimate is the line midway between the two directions' tightest frames, "
              "which makes their minimum one-way delays equal: it assumes equal minimum one-way "
              "delays in both directions, and is off by half their difference (the guaranteed "
              "interval holds either way)")


# --------------------------------------------------------------------------------------------
# Convex hulls (pure numpy, iterative quickhull: exact, and cheap on time-series data)

def lower_hull(x: np.ndarray, y: np.ndarray, slopes: tuple[float, float] | None = None
               ) -> np.ndarray:
    """Indices of the lower convex hull's vertices, sorted by x (strictly increasing x).

    Quickhull keeps, at each step, only the points below the current chord (compressed into
    new contiguous arrays), so on clock data (points close to a line, few hull vertices) it
    touches each point a handful of times. slopes=(m1, m2) asks only for the part of the hull
    that supports lines with slopes in [m1, m2]: the chain between the two support points,
    found with one pass each, which discards almost every point at once.
    """
    n = len(x)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if slopes is None:
        left = np.flatnonzero(x == x.min())
        a = int(left[np.argmin(y[left])])
        right = np.flatnonzero(x == x.max())
        b = int(right[np.argmin(y[right])])
    else:
        a = int(np.argmin(y - slopes[0] * x))
        b = int(np.argmin(y - slopes[1] * x))
    if a == b or x[a] >= x[b]:
        return np.array([a], dtype=np.int64)
    out = [a, b]
    xa, ya = x[a], y[a]
    cross = (x[b] - xa) * (y - ya) - (y[b] - ya) * (x - xa)
    keep = cross < 0
    if slopes is not None:
        keep &= (x > xa) & (x < x[b])
    idx = np.flatnonzero(keep)
    stack = [(a, b, x[idx], y[idx], idx, cross[idx])]
    while stack:
        a, b, xs, ys, idx, cr = stack.pop()
        if cr is None:
            xa, ya = x[a], y[a]
            cr = (x[b] - xa) * (ys - ya) - (y[b] - ya) * (xs - xa)
            keep = cr < 0
            xs, ys, idx, cr = xs[keep], ys[keep], idx[keep], cr[keep]
        if len(idx) == 0:
            continue
        k = int(np.argmin(cr))
        kk = int(idx[k])
        out.append(kk)
        lo, hi = xs < xs[k], xs > xs[k]
        stack.append((a, kk, xs[lo], ys[lo], idx[lo], None))
        stack.append((kk, b, xs[hi], ys[hi], idx[hi], None))
    hull = np.array(out, dtype=np.int64)
    return hull[np.argsort(x[hull], kind="stable")]


def upper_hull(x: np.ndarray, y: np.ndarray, slopes: tuple[float, float] | None = None
               ) -> np.ndarray:
    """Indices of the upper convex hull's vertices, sorted by x (slopes: as lower_hull)."""
    return lower_hull(x, -y, None if slopes is None else (-slopes[1], -slopes[0]))


# --------------------------------------------------------------------------------------------
# Lines and envelopes

@dataclass
class Envelope:
    """The max (upper=True) or min of a few lines y = m*x + c, evaluated by searchsorted."""

    m: np.ndarray
    c: np.ndarray
    breaks: np.ndarray  # x where the active line changes; len(m) - 1 of them
    upper: bool

    @classmethod
    def of(cls, m, c, upper: bool) -> "Envelope":
        m = np.asarray(m, dtype=np.float64)
        c = np.asarray(c, dtype=np.float64)
        if not upper:
            e = cls.of(-m, -c, True)
            return cls(-e.m, -e.c, e.breaks, False)
        if len(m) == 0:
            return cls(m, c, np.zeros(0), True)
        order = np.lexsort((c, m))
        m, c = m[order], c[order]
        # equal slopes: keep the highest intercept (the last of each run)
        last = np.r_[m[1:] != m[:-1], True]
        m, c = m[last], c[last]
        hm: list = []
        hc: list = []
        hb: list = []
        for mi, ci in zip(m.tolist(), c.tolist()):
            while hm:
                xb = (hc[-1] - ci) / (mi - hm[-1])  # where the new line overtakes the top one
                if hb and xb <= hb[-1]:
                    hm.pop(), hc.pop(), hb.pop()
                    continue
                break
            if hm:
                hb.append((hc[-1] - ci) / (mi - hm[-1]))
            hm.append(mi)
            hc.append(ci)
        return cls(np.array(hm), np.array(hc), np.array(hb), True)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if len(self.m) == 0:
            return np.full(x.shape, np.inf if self.upper else -np.inf)
        k = np.searchsorted(self.breaks, x)
        return self.m[k] * x + self.c[k]

    def inverse(self) -> "Envelope":
        """The inverse function (increasing lines only): a max of lines inverts to a min."""
        if len(self.m) and not np.all(self.m > 0):
            return Envelope(np.zeros(0), np.zeros(0), np.zeros(0), not self.upper)
        return Envelope.of(1.0 / self.m, -self.c / self.m, not self.upper)


# --------------------------------------------------------------------------------------------
# The two-variable LP over the hulls

@dataclass
class _Hulls:
    px: np.ndarray  # lower hull of the A->B points (s, r), centred
    py: np.ndarray
    qx: np.ndarray  # upper hull of the B->A points (r', s'), centred
    qy: np.ndarray

    def __post_init__(self):
        self.ps = np.diff(self.py) / np.diff(self.px) if len(self.px) > 1 else np.zeros(0)
        self.qs = np.diff(self.qy) / np.diff(self.qx) if len(self.qx) > 1 else np.zeros(0)

    def upper_b(self, alpha):
        """U(alpha) = min over A->B points of (y - alpha x): the highest feasible intercept."""
        alpha = np.asarray(alpha, dtype=np.float64)
        if len(self.px) == 0:
            return np.full(alpha.shape, np.inf)
        k = np.searchsorted(self.ps, alpha)
        return self.py[k] - alpha * self.px[k]

    def lower_b(self, alpha):
        """L(alpha) = max over B->A points of (y - alpha x): the lowest feasible intercept."""
        alpha = np.asarray(alpha, dtype=np.float64)
        if len(self.qx) == 0:
            return np.full(alpha.shape, -np.inf)
        k = np.searchsorted(-self.qs, -alpha)
        return self.qy[k] - alpha * self.qx[k]

    def _active(self, alpha):
        return (int(np.searchsorted(self.ps, alpha)) if len(self.px) else None,
                int(np.searchsorted(-self.qs, -alpha)) if len(self.qx) else None)

    def _root(self, alpha_inside):
        """The alpha where U = L, on the linear piece that contains alpha_inside."""
        k, j = self._active(alpha_inside)
        return (self.py[k] - self.qy[j]) / (self.px[k] - self.qx[j])

    def widest(self):
        """(alpha, b) of the line midway between the two directions' tightest constraints.

        g(alpha) = U - L is the room a line of slope alpha has between the A->B points above it
        and the B->A points below it; the line at the maximum of g, placed in the middle of
        that room, leaves both directions the same smallest one-way delay, g/2, as large as the
        data allow. g is concave and piecewise linear, so its maximum is at a breakpoint (a hull
        edge's slope), or on a flat piece between two, whose middle is taken. Only meaningful
        when the feasible slopes are bounded.
        """
        br = np.unique(np.concatenate([self.ps, self.qs]))
        g = self.upper_b(br) - self.lower_b(br)
        top = np.flatnonzero(g >= g.max() - 1e-9 * max(1.0, abs(g.max())))
        alpha = 0.5 * (br[top[0]] + br[top[-1]])
        return alpha, 0.5 * float(self.upper_b(alpha) + self.lower_b(alpha))

    def feasible_alpha(self):
        """(alpha_min, alpha_max, evidence): the feasible slopes, +-inf where unbounded.

        g(alpha) = U - L is concave and piecewise linear with breakpoints at the hull edges'
        slopes; the feasible slopes are where g >= 0. Returns None bounds and the evidence
        (the most nearly satisfied pair of constraints) when nothing is feasible.
        """
        if len(self.px) == 0 or len(self.qx) == 0:
            return -np.inf, np.inf, None
        br = np.unique(np.concatenate([self.ps, self.qs, [1.0]]))
        g = self.upper_b(br) - self.lower_b(br)
        slope_left = self.qx[-1] - self.px[0]   # dg/dalpha below every breakpoint
        slope_right = self.qx[0] - self.px[-1]  # and above
        pos = np.flatnonzero(g >= 0)
        if len(pos):
            i, j = pos[0], pos[-1]
            if i > 0:
                lo = self._root(0.5 * (br[i - 1] + br[i]))
            else:
                lo = -np.inf if slope_left <= 0 else self._root(br[0] - 1.0)
            if j < len(br) - 1:
                hi = self._root(0.5 * (br[j] + br[j + 1]))
            else:
                hi = np.inf if slope_right >= 0 else self._root(br[-1] + 1.0)
            return lo, hi, None
        if slope_right > 0:
            return self._root(br[-1] + 1.0), np.inf, None
        if slope_left < 0:
            return -np.inf, self._root(br[0] - 1.0), None
        best = int(np.argmax(g))
        k, jq = self._active(br[best])
        return None, None, {"alpha": float(br[best]), "gap_ns": float(-g[best]),
                            "p": (float(self.px[k]), float(self.py[k])),
                            "q": (float(self.qx[jq]), float(self.qy[jq]))}


# --------------------------------------------------------------------------------------------
# One fit: a window of one pair

@dataclass
class LineFit:
    """One window's result, centred: (t_to - t0_to) = alpha * (t_from - t0_from) + b.

    ``lo`` and ``hi`` are envelopes of feasible lines in the same centred coordinates: for a
    from-time x, every line consistent with the data maps it into [lo(x), hi(x)].
    """

    alpha: float
    b: float
    alpha_min: float
    alpha_max: float
    lo: Envelope
    hi: Envelope
    quality: str           # exact | accurate | approximate | failed
    n_fwd: int = 0         # constraints from->to
    n_bwd: int = 0         # constraints to->from
    span: tuple = (0.0, 0.0)  # centred from-time range of the constraints
    note: str = ""
    evidence: dict | None = None
    hulls: _Hulls | None = None

    def est(self, x):
        return self.alpha * np.asarray(x, dtype=np.float64) + self.b

    def width_ns(self) -> float:
        """The widest bound (hi - lo) over the data span of this window."""
        xs = np.array([self.span[0], self.span[1]], dtype=np.float64)
        inner = np.concatenate([self.lo.breaks, self.hi.breaks])
        xs = np.concatenate([xs, inner[(inner > xs[0]) & (inner < xs[1])]])
        return float(np.max(self.hi(xs) - self.lo(xs)))

    def inverse(self) -> "LineFit":
        span = tuple(sorted(float(v) for v in self.est(np.array(self.span))))
        return LineFit(alpha=1.0 / self.alpha, b=-self.b / self.alpha,
                       alpha_min=(1.0 / self.alpha_max if self.alpha_max > 0 else 0.0),
                       alpha_max=(1.0 / self.alpha_min if self.alpha_min > 0 else np.inf),
                       lo=self.hi.inverse(), hi=self.lo.inverse(), quality=self.quality,
                       n_fwd=self.n_bwd, n_bwd=self.n_fwd, span=span, note=self.note,
                       evidence=self.evidence)


def _identity_fit(quality="exact", note="") -> LineFit:
    line = Envelope.of([1.0], [0.0], True)
    return LineFit(1.0, 0.0, 1.0, 1.0, Envelope.of([1.0], [0.0], False), line, quality,
                   span=(-np.inf, np.inf), note=note)


def fit_window(px: np.ndarray, py: np.ndarray, qx: np.ndarray, qy: np.ndarray,
               fallback: tuple[float, float] | None = None) -> LineFit:
    """Fit one window from centred float64 constraint points.

    px, py: from->to frames (send time, receive time); qx, qy: to->from frames (receive time on
    the from host, send time on the to host). fallback: (alpha, b) from another source (the
    realtime anchors) used when the packets leave the line unbounded.
    """
    n_f, n_b = len(px), len(qx)
    span = (min(float(v.min()) for v in (px, qx) if len(v)),
            max(float(v.max()) for v in (px, qx) if len(v))) if n_f + n_b else (0.0, 0.0)
    # First only the hull chains that support slopes within PLAUSIBLE_DRIFT of 1 (then a wider
    # range): exact when the feasible slopes turn out to lie strictly inside the range tried;
    # otherwise the whole hulls are built.
    amin = None
    for drift in PLAUSIBLE_DRIFT:
        if not (n_f and n_b):
            break
        m1, m2 = 1.0 - drift, 1.0 + drift
        hp, hq = lower_hull(px, py, (m1, m2)), upper_hull(qx, qy, (m1, m2))
        h = _Hulls(px[hp], py[hp], qx[hq], qy[hq])
        amin, amax, evidence = h.feasible_alpha()
        if amin is not None and m1 < amin and amax < m2:
            break
        amin = None
    if amin is None:
        hp, hq = lower_hull(px, py), upper_hull(qx, qy)
        h = _Hulls(px[hp], py[hp], qx[hq], qy[hq])
        amin, amax, evidence = h.feasible_alpha()
    if amin is None:
        return LineFit(np.nan, np.nan, np.nan, np.nan, Envelope.of([], [], False),
                       Envelope.of([], [], True), "failed", n_f, n_b, span,
                       note=(f"no line satisfies every constraint: a frame in one direction and "
                             f"one in the other disagree by {evidence['gap_ns']:.0f} ns (a clock "
                             "step, a non-linear drift, or a wrong match)"),
                       evidence=evidence, hulls=h)
    amin = max(amin, 0.0)  # clocks run forward
    bounded = np.isfinite(amin) and amin > 0 and np.isfinite(amax)
    cand_hi = [a for a in (amin, amax) if np.isfinite(a)]
    cand_hi += [a for a in h.ps if amin < a < amax]
    cand_lo = [a for a in (amin, amax) if np.isfinite(a)]
    cand_lo += [a for a in h.qs if amin < a < amax]
    if bounded:
        hi = Envelope.of(cand_hi, h.upper_b(np.array(cand_hi)), True)
        lo = Envelope.of(cand_lo, h.lower_b(np.array(cand_lo)), False)
        alpha, b = h.widest()
        return LineFit(alpha, b, amin, amax, lo, hi, "accurate", n_f, n_b, span,
                       note=ASSUMPTION, hulls=h)
    # Unbounded: one direction only, or the two directions never interleave in time.
    hi = (Envelope.of(cand_hi, h.upper_b(np.array(cand_hi)), True)
          if bounded or (len(h.px) and np.isfinite(amin) and np.isfinite(amax))
          else Envelope.of([], [], True))
    lo = Envelope.of([], [], False)
    why = ("frames in one direction only" if n_f == 0 or n_b == 0 else
           "the two directions' frames do not interleave in time")
    if fallback is not None:
        alpha, b = fallback
        # keep the fallback consistent with the one-sided constraints
        if len(h.px):
            b = min(b, float(h.upper_b(alpha)))
        if len(h.qx):
            b = max(b, float(h.lower_b(alpha)))
        note = f"{why}: the estimate comes from the realtime anchors, checked against them"
    else:
        alpha, b = 1.0, (float(h.upper_b(1.0)) if len(h.px) else float(h.lower_b(1.0)))
        note = f"{why}: the estimate is the one-sided limit at zero drift"
    return LineFit(alpha, b, amin, amax, lo, hi, "approximate", n_f, n_b, span, note=note,
                   hulls=h)


# --------------------------------------------------------------------------------------------
# A pair of hosts: one or more windows

@dataclass
class PairAlignment:
    """t_to as a function of t_from, window by window, all windows sharing one centring."""

    from_host: str
    to_host: str
    method: str                # shared | packets | realtime
    t0_from: int
    t0_to: int
    edges: np.ndarray          # window starts, centred from-time (first is -inf)
    fits: list[LineFit]
    note: str = ""
    causality: dict | None = None
    evidence: dict | None = None

    @property
    def quality(self) -> str:
        order = ["exact", "accurate", "approximate", "failed"]
        return max((f.quality for f in self.fits), key=order.index) if self.fits else "failed"

    def _window(self, xc):
        return np.clip(np.searchsorted(self.edges, xc, side="right") - 1, 0, len(self.fits) - 1)

    def map_c(self, t_from):
        """(est, lo, hi) of t_to - t0_to for int64 from-times; NaN where a window failed."""
        xc = (np.asarray(t_from, dtype=np.int64) - self.t0_from).astype(np.float64)
        if len(self.fits) == 1:
            f = self.fits[0]
            if f.quality == "failed":
                nan = np.full(xc.shape, np.nan)
                return nan, nan.copy(), nan.copy()
            return f.est(xc), f.lo(xc), f.hi(xc)
        est = np.full(xc.shape, np.nan)
        lo = np.full(xc.shape, np.nan)
        hi = np.full(xc.shape, np.nan)
        w = self._window(xc)
        for i, f in enumerate(self.fits):
            sel = w == i
            if not sel.any() or f.quality == "failed":
                continue
            est[sel], lo[sel], hi[sel] = f.est(xc[sel]), f.lo(xc[sel]), f.hi(xc[sel])
        return est, lo, hi

    def map(self, t_from):
        """(est, lo, hi) in absolute to-clock nanoseconds (float64)."""
        est, lo, hi = self.map_c(t_from)
        return est + self.t0_to, lo + self.t0_to, hi + self.t0_to

    def inverse(self) -> "PairAlignment":
        fits = [f.inverse() for f in self.fits]
        starts = [f.est(e) if np.isfinite(e) and f.quality != "failed" else e
                  for e, f in zip(self.edges, self.fits)]
        return PairAlignment(self.to_host, self.from_host, self.method, self.t0_to, self.t0_from,
                             np.array(starts, dtype=np.float64), fits, self.note,
                             self.causality, self.evidence)

    @property
    def alpha(self) -> float:
        good = [f for f in self.fits if f.quality != "failed"]
        return float(np.mean([f.alpha for f in good])) if good else float("nan")

    def beta_ns(self) -> float:
        """The offset of the first usable window as t_to at t_from = 0 (absolute, may be huge)."""
        good = [f for f in self.fits if f.quality != "failed"]
        if not good:
            return float("nan")
        f = good[0]
        return float(self.t0_to + f.b - f.alpha * self.t0_from)

    def offset_ns(self) -> float:
        """t_to - t_from at the centre of the data (the number people call "the offset")."""
        good = [f for f in self.fits if f.quality != "failed"]
        if not good:
            return float("nan")
        f = good[len(good) // 2]
        x = 0.5 * (f.span[0] + f.span[1]) if np.all(np.isfinite(f.span)) else 0.0
        return float((self.t0_to - self.t0_from) + f.est(x) - x)

    def width_ns(self) -> float:
        good = [f for f in self.fits if f.quality not in ("failed",)]
        if not good:
            return float("nan")
        if self.method == "realtime":  # the anchors' read uncertainty: not a guarantee
            return max(float(f.hi(np.zeros(1))[0] - f.lo(np.zeros(1))[0]) for f in good)
        if any(f.quality == "approximate" for f in good):
            return float("inf")
        return max(0.0 if f.quality == "exact" else f.width_ns() for f in good)

    def summary(self) -> dict:
        """The JSON-ready description of this pair for the report."""
        def num(v):
            return None if v is None or not np.isfinite(v) else float(v)
        out = {
            "from": self.from_host, "to": self.to_host, "method": self.method,
            "quality": self.quality,
            "model": "t_to = alpha * t_from + beta (CLOCK_MONOTONIC ns)",
            "offset_ns": num(self.offset_ns()),
            "drift_ppm": num((self.alpha - 1.0) * 1e6),
            "beta_ns": num(self.beta_ns()),
            "bound_width_ns": num(self.width_ns()),
            "bound_guaranteed": self.method in ("shared", "packets"),
            "constraints": {"from_to": int(sum(f.n_fwd for f in self.fits)),
                            "to_from": int(sum(f.n_bwd for f in self.fits))},
            "windows": len(self.fits),
            "note": self.note or "; ".join(sorted({f.note for f in self.fits if f.note})),
        }
        if self.method == "packets":
            out["assumption"] = ASSUMPTION
            out["drift_ppm_range"] = [num((min(f.alpha_min for f in self.fits) - 1) * 1e6),
                                      num((max(f.alpha_max for f in self.fits) - 1) * 1e6)]
        if len(self.fits) > 1:
            out["per_window"] = [{"start_ns": num(e + self.t0_from), "quality": f.quality,
                                  "drift_ppm": num((f.alpha - 1) * 1e6),
                                  "bound_width_ns": num(f.width_ns())
                                  if f.quality == "accurate" else None,
                                  "constraints": [f.n_fwd, f.n_bwd]}
                                 for e, f in zip(self.edges, self.fits)]
        if self.causality is not None:
            out["causality"] = self.causality
        if self.evidence is not None:
            out["evidence"] = self.evidence
        return out


def _centre(*arrays) -> int:
    vals = [a for a in arrays if len(a)]
    if not vals:
        return 0
    lo = min(int(a.min()) for a in vals)
    hi = max(int(a.max()) for a in vals)
    return lo + (hi - lo) // 2


@dataclass
class Constraints:
    """One direction's constraint points (x: from-host time, y: to-host time, int64 ns) reduced
    to what the fit can use: the hull vertices on the side the line must pass (below the from->to
    points: lower; above the to->from points: upper), with the count and extents of all points.
    Merging is exact: the hull of a union of point sets is the hull of their hulls."""

    n: int
    lower: bool
    x: np.ndarray
    y: np.ndarray
    x_range: tuple = (0, 0)
    y_range: tuple = (0, 0)

    @classmethod
    def of(cls, x, y, lower: bool) -> "Constraints":
        x, y = np.asarray(x, np.int64), np.asarray(y, np.int64)
        if len(x) == 0:
            return cls(0, lower, x, y)
        cx, cy = _centre(x), _centre(y)
        fx, fy = (x - cx).astype(np.float64), (y - cy).astype(np.float64)
        v = lower_hull(fx, fy) if lower else upper_hull(fx, fy)
        return cls(len(x), lower, x[v], y[v], (int(x.min()), int(x.max())),
                   (int(y.min()), int(y.max())))

    @classmethod
    def merge(cls, items: list["Constraints"]) -> "Constraints":
        items = [c for c in items if c.n]
        if not items:
            return cls(0, True, np.zeros(0, np.int64), np.zeros(0, np.int64))
        c = cls.of(np.concatenate([c.x for c in items]), np.concatenate([c.y for c in items]),
                   items[0].lower)
        c.n = sum(i.n for i in items)
        c.x_range = (min(i.x_range[0] for i in items), max(i.x_range[1] for i in items))
        c.y_range = (min(i.y_range[0] for i in items), max(i.y_range[1] for i in items))
        return c


@dataclass
class PairConstraints:
    """Both directions of a trace pair: fwd from A->B frames (A send, B receive), bwd from B->A
    frames (A receive, B send). points: every frame (s_ab, r_ab, s_ba, r_ba) where the caller
    has them, for --clock-window, the realtime causality check and a failed fit's evidence."""

    fwd: Constraints
    bwd: Constraints
    points: tuple | None = None

    @classmethod
    def of(cls, s_ab, r_ab, s_ba, r_ba, keep_points: bool = True) -> "PairConstraints":
        pts = tuple(np.asarray(v, np.int64) for v in (s_ab, r_ab, s_ba, r_ba))
        return cls(Constraints.of(pts[0], pts[1], True), Constraints.of(pts[3], pts[2], False),
                   pts if keep_points else None)

    @classmethod
    def merge(cls, items: list["PairConstraints"]) -> "PairConstraints":
        return cls(Constraints.merge([c.fwd for c in items]),
                   Constraints.merge([c.bwd for c in items]))

    def need_points(self, why: str) -> tuple:
        if self.points is None:
            raise MbrecError(f"{why} needs every matched frame; the constraints hold only "
                             "their hulls")
        return self.points


def fit_pair(s_ab, r_ab, s_ba, r_ba, *, from_host="A", to_host="B", window_s=None,
             fallback: PairAlignment | None = None) -> PairAlignment:
    """Align B's clock to A's from matched frames (int64 ns, each in its own host's clock).

    s_ab/r_ab: frames A->B (A send time, B receive time); s_ba/r_ba: frames B->A (B send time,
    A receive time). window_s: fit separate windows of this many seconds of A-time (for long
    traces where NTP slews one clock). fallback: a realtime-anchor alignment used for
    windows the packets leave unbounded.
    """
    return fit_constraints(PairConstraints.of(s_ab, r_ab, s_ba, r_ba), from_host=from_host,
                           to_host=to_host, window_s=window_s, fallback=fallback)


def _centre_of(*ranges) -> int:
    lo = min(r[0] for r in ranges)
    hi = max(r[1] for r in ranges)
    return lo + (hi - lo) // 2


def fit_constraints(c: PairConstraints, *, from_host="A", to_host="B", window_s=None,
                    fallback: PairAlignment | None = None) -> PairAlignment:
    """fit_pair from constraints: one window from the hull vertices alone (exact: the fit
    depends on the points only through their hulls), or windows from every point."""
    used = [r for r, n in ((c.fwd.x_range, c.fwd.n), (c.bwd.x_range, c.bwd.n)) if n]
    t0a = _centre_of(*used) if used else 0
    used = [r for r, n in ((c.fwd.y_range, c.fwd.n), (c.bwd.y_range, c.bwd.n)) if n]
    t0b = _centre_of(*used) if used else 0
    if window_s and c.fwd.n + c.bwd.n:
        s_ab, r_ab, s_ba, r_ba = c.need_points("--clock-window")
        px, py = (s_ab - t0a).astype(np.float64), (r_ab - t0b).astype(np.float64)
        qx, qy = (r_ba - t0a).astype(np.float64), (s_ba - t0b).astype(np.float64)
    else:
        px, py = (c.fwd.x - t0a).astype(np.float64), (c.fwd.y - t0b).astype(np.float64)
        qx, qy = (c.bwd.x - t0a).astype(np.float64), (c.bwd.y - t0b).astype(np.float64)
    if window_s and len(px) + len(qx):
        lo = min(v.min() for v in (px, qx) if len(v))
        hi = max(v.max() for v in (px, qx) if len(v))
        width = float(window_s) * 1e9
        nwin = max(1, int(np.floor((hi - lo) / width)) + 1)
        edges = lo + width * np.arange(nwin)
    else:
        edges = np.zeros(1)
    if len(edges) > 1:
        wp = np.clip(np.searchsorted(edges, px, side="right") - 1, 0, len(edges) - 1)
        wq = np.clip(np.searchsorted(edges, qx, side="right") - 1, 0, len(edges) - 1)
    fits, keep = [], []
    for i in range(len(edges)):
        sp: Any
        sq: Any
        sp, sq = (wp == i, wq == i) if len(edges) > 1 else (slice(None), slice(None))
        if len(edges) > 1 and not (sp.any() or sq.any()):
            continue
        fb = None
        if fallback is not None:
            mid = np.int64(t0a + int(edges[i]) if len(edges) > 1 else t0a)
            e = fallback.map(np.array([mid]))[0][0]
            fb = (fallback.alpha, float(e - t0b))
            if len(edges) > 1:
                fb = (fb[0], fb[1] - fb[0] * float(edges[i]))
        fit = fit_window(px[sp], py[sp], qx[sq], qy[sq], fallback=fb)
        if len(edges) == 1:  # fitted from hull vertices: count every frame
            fit.n_fwd, fit.n_bwd = c.fwd.n, c.bwd.n
        fits.append(fit)
        keep.append(edges[i])
    starts = np.array(keep, dtype=np.float64)
    starts[0] = -np.inf
    pair = PairAlignment(from_host, to_host, "packets", t0a, t0b, starts, fits)
    failed = [f for f in fits if f.quality == "failed"]
    if failed:
        if c.points is not None:  # where the frames stop being consistent: needs them all
            s_ab, r_ab, s_ba, r_ba = c.points
            pair.evidence = _failure_evidence((s_ab - t0a).astype(np.float64),
                                              (r_ab - t0b).astype(np.float64),
                                              (r_ba - t0a).astype(np.float64),
                                              (s_ba - t0b).astype(np.float64), t0a, t0b,
                                              failed[0])
        else:
            pair.evidence = {"where": "no frame-level evidence kept"}
        pair.note = (f"{failed[0].note}; {pair.evidence['where']}" +
                     ("" if window_s else "; try --clock-window to fit piecewise"))
    return pair


def _failure_evidence(px, py, qx, qy, t0a, t0b, fit: LineFit) -> dict:
    """Where the constraints become inconsistent: the longest consistent prefix of the trace."""
    ev = dict(fit.evidence or {})
    times = np.unique(np.concatenate([px, qx]))
    lo, hi = 0, len(times) - 1  # prefix up to times[lo] feasible (or trivially), up to hi not
    for _ in range(40):
        if hi - lo <= 1:
            break
        mid = (lo + hi) // 2
        cut = times[mid]
        f = fit_window(px[px <= cut], py[px <= cut], qx[qx <= cut], qy[qx <= cut])
        if f.quality == "failed":
            hi = mid
        else:
            lo = mid
    out = {"gap_ns": ev.get("gap_ns"),
           "from_to_frame": {"send_ns": int(t0a + ev["p"][0]), "recv_ns": int(t0b + ev["p"][1])}
           if "p" in ev else None,
           "to_from_frame": {"recv_ns": int(t0a + ev["q"][0]), "send_ns": int(t0b + ev["q"][1])}
           if "q" in ev else None,
           "consistent_until_ns": int(t0a + times[lo]),
           "inconsistent_from_ns": int(t0a + times[hi])}
    out["where"] = (f"the frames are consistent up to {out['consistent_until_ns']} ns and not "
                    f"once the frame at {out['inconsistent_from_ns']} ns (from-host clock) is "
                    "included: a clock step or slew there")
    return out


def shared_pair(from_host: str, to_host: str) -> PairAlignment:
    return PairAlignment(from_host, to_host, "shared", 0, 0, np.array([-np.inf]),
                         [_identity_fit(note="same boot_id: one clock, offset exactly 0")],
                         note="same boot_id: one clock, offset exactly 0, drift 0")


# --------------------------------------------------------------------------------------------
# Realtime anchors

def realtime_offsets(clocks: list[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(monotonic_ns, realtime - monotonic, uncertainty_ns) of a trace's clock anchors, sorted."""
    good = [c for c in clocks if "monotonic_ns" in c and "realtime_ns" in c]
    if not good:
        return (np.zeros(0, np.int64),) * 3
    mono = np.array([int(c["monotonic_ns"]) for c in good], dtype=np.int64)
    off = np.array([int(c["realtime_ns"]) - int(c["monotonic_ns"]) for c in good], np.int64)
    unc = np.array([int(c.get("uncertainty_ns", 0)) for c in good], dtype=np.int64)
    order = np.argsort(mono, kind="stable")
    return mono[order], off[order], unc[order]


def _inverse_of_increasing(v, xp, fp):
    """The inverse at v of the piecewise-linear x -> f through (xp, fp), fp increasing.
    Beyond the first and last anchor the end segments go on (a drift is assumed to continue;
    with a single anchor, the offset is constant)."""
    out = np.interp(v, fp, xp)
    lo_m = hi_m = 1.0
    if len(xp) > 1:
        if fp[1] > fp[0]:
            lo_m = (xp[1] - xp[0]) / (fp[1] - fp[0])
        if fp[-1] > fp[-2]:
            hi_m = (xp[-1] - xp[-2]) / (fp[-1] - fp[-2])
    out = np.where(v < fp[0], xp[0] + lo_m * (v - fp[0]), out)
    return np.where(v > fp[-1], xp[-1] + hi_m * (v - fp[-1]), out)


def _simplify(x: np.ndarray, y: np.ndarray, tol: float) -> np.ndarray:
    """Indices of the knots of a polyline that keep every dropped knot within tol (ns)."""
    keep, i = [0], 0
    for j in range(2, len(x)):
        m = (y[j] - y[i]) / (x[j] - x[i])
        inner = slice(i + 1, j)
        if np.max(np.abs(y[i] + m * (x[inner] - x[i]) - y[inner])) > tol:
            keep.append(j - 1)
            i = j - 1
    if len(x) > 1:
        keep.append(len(x) - 1)
    return np.array(keep, dtype=np.int64)


def realtime_pair(from_host, to_host, clocks_from, clocks_to) -> PairAlignment | None:
    """B's clock from A's through both hosts' CLOCK_REALTIME anchors (trusts NTP/PTP).

    Each host's realtime reading is interpolated linearly between its own anchors (so an NTP
    step recorded between two anchors becomes a ramp, and a monotonic clock that drifts against
    realtime is followed): the two hosts agree on realtime, R_A(t_A) = R_B(t_B), so
    t_B = R_B^-1(R_A(t_A)). That is piecewise linear with a knot at every anchor of either
    host; it is evaluated exactly at those knots, so the answer is the same function whichever
    host comes first (and exactly its inverse when they are swapped). The interval is the
    anchors' read uncertainty: an estimate, not a guarantee.
    """
    ma, oa, ua = realtime_offsets(clocks_from)
    mb, ob, ub = realtime_offsets(clocks_to)
    if len(ma) == 0 or len(mb) == 0:
        return None
    t0a, t0b = int(ma[0]), int(mb[0])
    # centred: x = t_A - t0a, y = t_B - t0b; each host's realtime relative to one shared origin
    xa = (ma - t0a).astype(np.float64)
    ra = xa + (oa - oa[0]).astype(np.float64)
    xb = (mb - t0b).astype(np.float64)
    rb = xb + (ob - ob[0]).astype(np.float64) - float((oa[0] + t0a) - (ob[0] + t0b))
    # a realtime step backwards between two anchors: the clock is taken to have held still
    ra, rb = np.maximum.accumulate(ra), np.maximum.accumulate(rb)
    knots_r = np.unique(np.concatenate([ra, rb]))
    kx = _inverse_of_increasing(knots_r, xa, ra)
    ky = _inverse_of_increasing(knots_r, xb, rb)
    kx, first = np.unique(kx, return_index=True)
    ky = ky[first]
    keep = _simplify(kx, ky, tol=1.0)
    kx, ky = kx[keep], ky[keep]
    unc = 0.5 * float(np.max(ua) + np.max(ub))
    if len(kx) == 1:
        slopes, icpts, starts = np.array([1.0]), np.array([ky[0] - kx[0]]), [-np.inf]
    else:
        slopes = np.diff(ky) / np.diff(kx)
        icpts = ky[:-1] - slopes * kx[:-1]
        starts = np.r_[-np.inf, kx[1:-1]]
    fits = [LineFit(float(m), float(c), float(m), float(m),
                    Envelope.of([m], [c - unc], False), Envelope.of([m], [c + unc], True),
                    "approximate", note="trusts the hosts' CLOCK_REALTIME (NTP/PTP): the "
                    "interval is the anchors' read uncertainty only, an estimate, not a "
                    "guarantee")
            for m, c in zip(slopes, icpts)]
    return PairAlignment(from_host, to_host, "realtime", t0a, t0b,
                         np.asarray(starts, dtype=np.float64), fits,
                         note=f"CLOCK_REALTIME anchors ({len(ma)} + {len(mb)}), an estimate, "
                              "not a guaranteed bound")


def causality_check(pair: PairAlignment, s_ab, r_ab, s_ba, r_ba) -> dict:
    """Frames that, under this alignment, would arrive before they left: count and worst size."""
    out: dict = {}
    for name, s, r, fwd in (("from_to", s_ab, r_ab, True), ("to_from", s_ba, r_ba, False)):
        s = np.asarray(s, np.int64)
        r = np.asarray(r, np.int64)
        if fwd:
            est = pair.map_c(s)[0]
            d = (r - pair.t0_to).astype(np.float64) - est
        else:
            inv = pair.inverse()
            est = inv.map_c(s)[0]
            d = (r - inv.t0_to).astype(np.float64) - est
        bad = d < 0
        out[name] = {"frames": int(len(d)), "violations": int(bad.sum()),
                     "worst_violation_ns": float(-d[bad].min()) if bad.any() else 0.0}
    out["ok"] = all(v["violations"] == 0 for k, v in out.items() if isinstance(v, dict))
    return out


# --------------------------------------------------------------------------------------------
# Many hosts

@dataclass
class HostTransform:
    """One host's clock mapped to the reference host's, through a path of pairs."""

    host: str
    reference: str
    path: list[PairAlignment]  # each maps the previous clock to the next, ending at reference

    def to_reference(self, t):
        """(est, lo, hi) in reference-clock ns (float64) for int64 local times."""
        t = np.asarray(t, dtype=np.int64)
        if not self.path:
            f = t.astype(np.float64)
            return f, f.copy(), f.copy()
        est, lo, hi = self.path[0].map(t)
        for p in self.path[1:]:
            # the bounds are increasing functions, so they compose end to end
            est = p.map(np.round(est).astype(np.int64))[0]
            lo = p.map(np.floor(lo).astype(np.int64))[1]
            hi = p.map(np.ceil(hi).astype(np.int64))[2]
        return est, lo, hi

    def summary(self) -> dict:
        widths = [p.width_ns() for p in self.path]
        return {"host": self.host, "reference": self.reference,
                "path": [self.host] + [p.to_host for p in self.path],
                "methods": [p.method for p in self.path],
                "quality": max((p.quality for p in self.path),
                               key=["exact", "accurate", "approximate", "failed"].index)
                if self.path else "exact",
                "drift_ppm": float((np.prod([p.alpha for p in self.path]) - 1) * 1e6)
                if self.path else 0.0,
                "offset_ns": float(sum(p.offset_ns() for p in self.path)),
                "bound_width_ns": float(sum(widths)) if np.all(np.isfinite(widths)) else None}


@dataclass
class Alignment:
    """What align() returns: per-pair fits, per-host transforms to the reference, and the
    matched frames (reused by analysis.network so matching runs once)."""

    method: str
    reference: str
    hosts: list[str]
    pairs: dict = field(default_factory=dict)        # (from, to) -> PairAlignment, from < to
    transforms: dict = field(default_factory=dict)   # host -> HostTransform
    unreached: list = field(default_factory=list)
    matches: dict = field(default_factory=dict)      # (i, j) -> match.PairMatches (whole traces)
    notes: list = field(default_factory=list)

    def pair(self, a: str, b: str) -> PairAlignment | None:
        """The alignment mapping a's clock to b's (inverting the stored one if needed)."""
        if (a, b) in self.pairs:
            return self.pairs[(a, b)]
        if (b, a) in self.pairs:
            return self.pairs[(b, a)].inverse()
        return None

    def text_lines(self) -> list[str]:
        """One line per aligned pair for a terminal summary (says the estimate's assumption)."""
        out = []
        for p in self.pairs.values():
            s = p.summary()
            c = s["constraints"]
            w = s["bound_width_ns"]
            line = (f"clock {p.from_host}->{p.to_host}: {p.method}, {s['quality']}")
            if s["offset_ns"] is not None and p.method != "shared":
                line += (f", offset {s['offset_ns'] / 1e3:.1f} us, drift {s['drift_ppm']:.2f} "
                         f"ppm, bound {'unbounded' if w is None else f'{w / 1e3:.1f} us'}"
                         f"{'' if s['bound_guaranteed'] else ' (not guaranteed)'}")
            line += f"; frames {c['from_to']} / {c['to_from']}"
            if p.method == "packets" and s["quality"] in ("accurate", "approximate"):
                line += "; estimate assumes equal minimum one-way delays"
            if s["quality"] in ("failed", "approximate") or "CAUSALITY" in (s["note"] or ""):
                line += f" ({s['note']})"
            out.append(line)
        out += [f"clock: {n}" for n in self.notes]
        return out

    def report_section(self) -> dict:
        return {"method": self.method, "reference": self.reference,
                "pairs": [p.summary() for p in self.pairs.values()],
                "hosts": [t.summary() for t in self.transforms.values()],
                "unreached": list(self.unreached), "notes": list(self.notes)}


def build_transforms(hosts: list[str], pairs: dict, reference: str):
    """Reach every host from the reference through the tightest pairs (sum of bound widths)."""
    adj: dict[str, list] = {h: [] for h in hosts}
    for (a, b), p in pairs.items():
        if p.quality == "failed":
            continue
        w = p.width_ns()
        w = 1e18 if not np.isfinite(w) else w  # usable, but only when nothing better exists
        adj[a].append((w, b))
        adj[b].append((w, a))
    dist, prev = {reference: 0.0}, {}
    heap = [(0.0, reference)]
    while heap:
        d, h = heapq.heappop(heap)
        if d > dist.get(h, np.inf):
            continue
        for w, nb in adj[h]:
            if d + w < dist.get(nb, np.inf):
                dist[nb] = d + w
                prev[nb] = h
                heapq.heappush(heap, (d + w, nb))
    transforms, unreached = {}, []
    for h in hosts:
        if h not in dist:
            unreached.append(h)
            continue
        path, cur = [], h
        while cur != reference:
            nxt = prev[cur]
            path.append(pairs[(cur, nxt)] if (cur, nxt) in pairs else pairs[(nxt, cur)].inverse())
            cur = nxt
        transforms[h] = HostTransform(h, reference, path)
    return transforms, unreached


def align(traces, method: str = "auto", reference: str | None = None,
          window_s: float | None = None) -> Alignment:
    """Align every trace's clock to the reference host's (see the module docstring): frames
    matched across the whole traces, then fit_alignment()."""
    hosts = host_names(traces)
    matches = match_traces(traces, hosts)
    constraints = {k: PairConstraints.of(m.ab.s_ns, m.ab.r_ns, m.ba.s_ns, m.ba.r_ns)
                   for k, m in matches.items()}
    al = fit_alignment([clock_source(t) for t in traces], hosts, constraints, method=method,
                       reference=reference, window_s=window_s)
    al.matches = matches
    return al


@dataclass
class ClockSource:
    """What the fit needs of a trace besides its frames: its file, boot id and anchors."""

    path: str
    boot_id: str
    clocks: list


def clock_source(trace) -> ClockSource:
    return ClockSource(trace.path, str((trace.header or {}).get("boot_id") or ""),
                       list(trace.clocks or []))


def fit_alignment(sources: list[ClockSource], hosts: list[str], constraints: dict, *,
                  method: str = "auto", reference: str | None = None,
                  window_s: float | None = None) -> Alignment:
    """Every host's clock mapped to the reference's, from per-pair constraints.

    constraints: {(i, j): PairConstraints} for trace pairs i < j with matched frames (merged
    over partitions: hull vertices, counts and extents, plus the points themselves where
    --clock-window or a failed fit needs them)."""
    if method not in METHODS:
        raise MbrecError(f"--clock {method}: unknown method; use one of {', '.join(METHODS)}")
    if window_s is not None and not window_s > 0:
        raise MbrecError(f"--clock-window {window_s}: give a positive number of seconds")
    if reference is None:
        reference = hosts[0] if hosts else ""
    elif reference not in hosts:
        raise MbrecError(f"--reference {reference}: no trace is from that host; the hosts are "
                         f"{', '.join(hosts)}")
    al = Alignment(method=method, reference=reference, hosts=hosts)
    for i in range(len(sources)):
        for j in range(i + 1, len(sources)):
            a, b = hosts[i], hosts[j]
            si, sj = sources[i], sources[j]
            same = si.boot_id != "" and si.boot_id == sj.boot_id
            c = constraints.get((i, j))
            if method == "shared" and not same:
                raise MbrecError(f"--clock shared: {a} and {b} have different boot_ids, so their "
                                 "clocks are not one clock: use --clock packets or auto")
            if same and method in ("auto", "shared"):
                al.pairs[(a, b)] = shared_pair(a, b)
                if c is not None:  # nothing to estimate, but say how many frames were matched
                    al.pairs[(a, b)].fits[0].n_fwd = c.fwd.n
                    al.pairs[(a, b)].fits[0].n_bwd = c.bwd.n
                continue
            if c is None or c.fwd.n + c.bwd.n == 0:
                continue
            rt = realtime_pair(a, b, si.clocks, sj.clocks)
            if method == "realtime":
                if rt is None:
                    raise MbrecError(f"--clock realtime: {si.path if not si.clocks else sj.path} "
                                     "has no clock anchors: use --clock packets")
                s_ab, r_ab, s_ba, r_ba = c.need_points("--clock realtime")
                rt.causality = causality_check(rt, s_ab, r_ab, s_ba, r_ba)
                rt.fits[0].n_fwd, rt.fits[0].n_bwd = len(s_ab), len(s_ba)  # frames checked
                if not rt.causality["ok"]:
                    worst = max(rt.causality["from_to"]["worst_violation_ns"],
                                rt.causality["to_from"]["worst_violation_ns"])
                    rt.note += (f"; CAUSALITY VIOLATED: {rt.causality['from_to']['violations'] + rt.causality['to_from']['violations']} "
                                f"frames would arrive before they left (worst by {worst:.0f} ns): "
                                "the realtime clocks disagree by at least that much")
                al.pairs[(a, b)] = rt
                continue
            pair = fit_constraints(c, from_host=a, to_host=b, window_s=window_s, fallback=rt)
            if same:
                pair.note = ("same boot_id, aligned from packets as asked (truth: offset 0, "
                             "drift 0); " + pair.note).rstrip("; ")
            al.pairs[(a, b)] = pair
    al.transforms, al.unreached = build_transforms(hosts, al.pairs, reference)
    if al.unreached:
        al.notes.append(f"no usable clock relation to {reference} for: "
                        f"{', '.join(al.unreached)} (no traffic with a reachable host)")
    return al
