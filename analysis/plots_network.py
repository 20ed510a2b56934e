"""Cross-host plots, as PNG and SVG, deterministic (Agg, fixed style and size, no dates).

Entry point, called by `mbrec analyze`::

    plot_network(result, alignment, outdir) -> list of paths

clock_<a>_<b>: the alignment of one host pair: every matched frame as its distance from the
estimated line (A->B frames above, B->A frames below), the two extreme feasible lines and the
guaranteed band. lnet_<a>_<b>: CDFs of L_NET_1 and L_NET_2, each with the band between the CDFs
of its guaranteed lower and upper ends. waterfall_<client>_<server>: one request (the one with
the median RTT) across both hosts: client NIC out, wire, server, wire, client NIC in.
"""

from __future__ import annotations

import os

import numpy as np

from mbrec.analysis.plots import COLORS, _plt, _safe, _save

MAX_POINTS = 5_000  # frames drawn per direction (evenly spaced; the hull chains are drawn apart)
CDF_POINTS = 2_000  # quantiles drawn per CDF
SIZE = (7.5, 4.2)
TALL = (7.5, 5.2)


def _thin(n: int) -> np.ndarray:
    if n <= MAX_POINTS:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, MAX_POINTS).astype(np.int64))


def plot_alignment(pair, matches, outdir) -> list[str]:
    """Residuals of the matched frames around the estimate, extreme lines, guaranteed band."""
    if pair.method != "packets" or matches is None:
        return []
    plt = _plt()
    fig, ax = plt.subplots(figsize=SIZE)
    s_ab, r_ab, s_ba, r_ba = matches.constraints()
    x0 = pair.t0_from
    est_ab = pair.map_c(s_ab)[0]
    est_ba = pair.map_c(r_ba)[0]
    ya = ((r_ab - pair.t0_to) - est_ab) / 1e3
    yb = ((s_ba - pair.t0_to) - est_ba) / 1e3
    xa, xb = (s_ab - x0) / 1e9, (r_ba - x0) / 1e9
    ia, ib = _thin(len(xa)), _thin(len(xb))
    ax.scatter(xa[ia], ya[ia], s=3, color=COLORS[0], label=f"{pair.from_host}->{pair.to_host} "
               f"frames ({len(xa)})", rasterized=True)
    ax.scatter(xb[ib], yb[ib], s=3, color=COLORS[1], label=f"{pair.to_host}->{pair.from_host} "
               f"frames ({len(xb)})", rasterized=True)
    allx = np.concatenate([s_ab, r_ba])
    if len(allx):
        grid = np.linspace(allx.min(), allx.max(), 400).astype(np.int64)
        e, lo, hi = pair.map_c(grid)
        gx = (grid - x0) / 1e9
        if np.all(np.isfinite(lo)) and np.all(np.isfinite(hi)):
            ax.fill_between(gx, (lo - e) / 1e3, (hi - e) / 1e3, color="0.85",
                            label="guaranteed band (every feasible line)")
        xc = (grid - x0).astype(np.float64)
        for f_i, f in enumerate(pair.fits):
            if f.quality != "accurate" or f.hulls is None:
                continue
            for a, style, name in ((f.alpha_min, "--", "min-slope line"),
                                   (f.alpha_max, ":", "max-slope line")):
                line = a * xc + float(f.hulls.upper_b(a))
                ax.plot(gx, (line - e) / 1e3, style, color=COLORS[3 if style == "--" else 4],
                        label=name if f_i == 0 else None)
        for f_i, f in enumerate(pair.fits):
            h = f.hulls
            if h is None or f.quality == "failed":
                continue
            # the hull chains: the only frames that constrain the line
            for hx, hy, color, name in ((h.px, h.py, COLORS[0], "lower hull of a->b"),
                                        (h.qx, h.qy, COLORS[1], "upper hull of b->a")):
                if len(hx):
                    ax.plot(hx / 1e9, (hy - f.est(hx)) / 1e3, "-o", ms=3, lw=0.8,
                            color=color, mec="k", mew=0.4,
                            label=name.replace("a", pair.from_host, 1).replace(
                                "b", pair.to_host, 1) if f_i == 0 else None)
        ax.axhline(0, color="k", lw=1, label="estimate (widest equal room)")
    ax.set_xlabel(f"{pair.from_host} time since {x0} ns (s)")
    s = pair.summary()
    # zoom on the band and the hulls: slow frames far above or below tell nothing here
    resid = np.abs(np.concatenate([ya, yb]))
    width = s["bound_width_ns"]
    if len(resid) and width is not None:
        lim = max(2.5 * width / 2e3, float(np.percentile(resid, 75)), 1.0)
        clipped = int((resid > lim).sum())
        ax.set_ylim(-lim, lim)
        ax.set_ylabel(f"{pair.to_host} time minus estimate (us)"
                      + (f"\n{clipped} slower frames off the axis" if clipped else ""))
    else:
        ax.set_ylabel(f"{pair.to_host} time minus estimate (us)")
    width = s["bound_width_ns"]
    ax.set_title(f"clock {pair.from_host}->{pair.to_host}: {s['quality']}, drift "
                 f"{s['drift_ppm']:.2f} ppm, bound width "
                 f"{'unbounded' if width is None else f'{width / 1e3:.1f} us'}"
                 if s["drift_ppm"] is not None else f"clock {pair.from_host}->{pair.to_host}: "
                 f"{s['quality']}")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3, markerscale=3)
    fig.tight_layout()
    return _save(plt, fig, outdir, _safe(f"clock_{pair.from_host}_{pair.to_host}"))


def _cdf(ax, v, color, label):
    v = np.sort(v[np.isfinite(v)]) / 1e3
    if len(v) == 0:
        return
    y = np.arange(1, len(v) + 1) / len(v)
    if len(v) > CDF_POINTS:  # the empirical CDF at CDF_POINTS evenly spaced ranks
        k = np.unique(np.linspace(0, len(v) - 1, CDF_POINTS).astype(np.int64))
        v, y = v[k], y[k]
    ax.step(v, y, where="post", color=color, label=label)


def plot_lnet(pn, outdir) -> list[str]:
    """CDFs of L_NET_1 and L_NET_2 with the CDFs of their guaranteed ends as a band; beside
    them, per request, the RTT and its parts (the layers' CDFs when the traces have them)."""
    plt = _plt()
    reqs = [r for r in (pn.requests or {}).get("per_client", []) if len(r["rtt"])]
    fig, axes = plt.subplots(1, 2 if reqs else 1, figsize=(11, 4.2) if reqs else SIZE,
                             squeeze=False)
    ax = axes[0, 0]
    drawn = False
    for k, (name, client_sent) in enumerate((("L_NET_1", True), ("L_NET_2", False))):
        parts = [(d.value[d.client_sent == client_sent], d.lo[d.client_sent == client_sent],
                  d.hi[d.client_sent == client_sent]) for d in (pn.ab, pn.ba)]
        v, lo, hi = (np.concatenate(x) for x in zip(*parts))
        if not np.isfinite(v).any():
            continue
        drawn = True
        _cdf(ax, v, COLORS[k], f"{name} ({'client to server' if client_sent else 'server to client'}, n={np.isfinite(v).sum()})")
        if np.isfinite(lo).all() and np.isfinite(hi).all() and np.any(hi > lo):
            _cdf(ax, lo, COLORS[k], None)
            _cdf(ax, hi, COLORS[k], None)
            ax.lines[-1].set_alpha(0.35)
            ax.lines[-2].set_alpha(0.35)
    if not drawn:
        plt.close(fig)
        return []
    finite = np.concatenate([d.value[np.isfinite(d.value)] for d in (pn.ab, pn.ba)])
    if len(finite) and finite.min() > 0 and np.percentile(finite, 99) > 20 * finite.min():
        ax.set_xscale("log")  # wide spreads (emulated or loaded networks) read better on a log axis
    ax.set_xlabel("NIC-to-NIC latency (us); faint: CDFs of the guaranteed ends")
    ax.set_ylabel("CDF")
    ax.set_ylim(0, 1.01)
    ax.set_title(f"L_NET {pn.a} <-> {pn.b} (clock {pn.method}, {pn.quality}; timebase {pn.a})")
    ax.legend(loc="lower right")
    if reqs:
        ax2 = axes[0, 1]
        r = reqs[0]
        series = {"client NIC RTT": r["rtt"], "L_NET_1": r["l_net_1"],
                  "server NIC in -> out": r["server_time"], "L_NET_2": r["l_net_2"]}
        if "layers" in r:
            series.update({k: v for k, v in r["layers"]["parts"].items()
                           if not k.startswith("L_NET")})
        palette = plt.get_cmap("tab20").colors
        for n, (name, v) in enumerate(series.items()):
            _cdf(ax2, np.asarray(v, dtype=np.float64), palette[n % len(palette)], name)
        ax2.set_xscale("symlog", linthresh=1.0)
        ax2.set_xlabel(f"per request, {r['client']} -> {r['server']} (us, {r['timebase']}'s timebase)")
        ax2.set_ylim(0, 1.01)
        ax2.set_title(f"{len(r['rtt'])} requests: RTT and its parts")
        ax2.legend(loc="lower right", fontsize=6, ncol=2)
    fig.tight_layout()
    return _save(plt, fig, outdir, _safe(f"lnet_{pn.a}_{pn.b}"))


def plot_waterfall(pn, outdir) -> list[str]:
    """One request across both hosts: the one whose RTT is the median."""
    req = pn.requests or {}
    out = []
    for r in req.get("per_client", []):
        ok = np.flatnonzero(np.isfinite(r["l_net_1"]) & np.isfinite(r["l_net_2"]))
        if len(ok) == 0:
            continue
        i = ok[np.argsort(r["rtt"][ok], kind="stable")[len(ok) // 2]]
        l1, srv, l2, rtt = (float(r[k][i]) / 1e3 for k in ("l_net_1", "server_time", "l_net_2",
                                                              "rtt"))
        l1lo, l1hi = float(r["l_net_1_lo"][i]) / 1e3, float(r["l_net_1_hi"][i]) / 1e3
        l2lo, l2hi = float(r["l_net_2_lo"][i]) / 1e3, float(r["l_net_2_hi"][i]) / 1e3
        plt = _plt()
        fig, ax = plt.subplots(figsize=TALL)
        lanes = [f"{r['client']} (client)", "network", f"{r['server']} (server)"]
        lay = r.get("layers")
        if lay is not None and np.isfinite(lay["residual"][i]):
            # every layer in path order: client send, wire, server, wire, client receive
            start = -sum(float(lay["parts"][k][i]) for k in ("L_TCP_1", "L_IP_1", "L_NIC_1")) / 1e3
            t = start
            palette = plt.get_cmap("tab20").colors  # 20 distinct colours for 15 parts
            for n, (name, v) in enumerate(lay["parts"].items()):
                w = float(v[i]) / 1e3
                lane = 1 if name.startswith("L_NET") else (
                    2 if name.endswith(("_1", "_4")) else 0)
                ax.barh(lane, w, left=t, height=0.5, color=palette[n % len(palette)],
                        label=f"{name} {w:.1f} us")
                t += w
        else:
            bars = [(2, 0.0, rtt, COLORS[7], f"client NIC RTT {rtt:.1f} us"),
                    (1, 0.0, l1, COLORS[0], f"L_NET_1 {l1:.1f} us [{l1lo:.1f}, {l1hi:.1f}]"),
                    (0, l1, srv, COLORS[2], f"server NIC in -> out {srv:.1f} us"),
                    (1, l1 + srv, l2, COLORS[1], f"L_NET_2 {l2:.1f} us [{l2lo:.1f}, {l2hi:.1f}]")]
            for lane, start, width, color, label in bars:
                ax.barh(lane, width, left=start, height=0.5, color=color, label=label)
        # the guaranteed ranges of the two one-way ends
        ax.errorbar([l1], [1.3], xerr=[[l1 - l1lo], [l1hi - l1]], fmt="|", color="k", capsize=3)
        ax.errorbar([rtt - l2], [0.7], xerr=[[l2hi - l2], [l2 - l2lo]], fmt="|", color="k",
                    capsize=3)
        ax.set_yticks([2, 1, 0], lanes)
        ax.set_xlabel(f"time since the request left {r['client']}'s NIC (us, {r['timebase']}'s "
                      "timebase); whiskers: guaranteed ranges")
        layered = lay is not None and np.isfinite(lay["residual"][i])
        resid = float(lay["residual"][i] if layered else r["residual"][i])
        ax.set_title(f"request {i} of {len(r['rtt'])} (median RTT): parts add up to the "
                     f"{'total' if layered else 'RTT'} within {abs(resid):.3f} ns")
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2),
                  ncol=4 if layered else 2, fontsize=7)
        fig.tight_layout()
        out += _save(plt, fig, outdir, _safe(f"waterfall_{r['client']}_{r['server']}"))
    return out


def plot_network(result, alignment, outdir) -> list[str]:
    """Every cross-host plot for one analysis; returns the files written."""
    os.makedirs(outdir, exist_ok=True)
    paths = []
    if alignment is not None:
        index = {(alignment.hosts[i], alignment.hosts[j]): m
                 for (i, j), m in alignment.matches.items()}
        for (a, b), pair in sorted(alignment.pairs.items()):
            paths += plot_alignment(pair, index.get((a, b)), outdir)
    for pn in result.pairs:
        paths += plot_lnet(pn, outdir)
        paths += plot_waterfall(pn, outdir)
    return paths
