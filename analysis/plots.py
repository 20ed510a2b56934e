"""Plots of one analysis, as PNG and SVG, deterministic: Agg, a fixed style and size, no dates.

cdf_<host>: the CDF of each layer latency of one host (like the seed's figures of network vs RTT
vs TCP layer); breakdown: mean time per layer, stacked, per host and direction; flow_<host>_<n>:
cwnd, smoothed RTT, flight size and send queue of one flow over time (from flow snapshots).
"""

from __future__ import annotations

import os
import re

import numpy as np

from mbrec.analysis.latency import NAMES

STYLE = {
    "figure.dpi": 100, "savefig.dpi": 100, "font.size": 9, "font.family": "DejaVu Sans",
    "axes.grid": True, "grid.alpha": 0.3, "axes.spines.top": False, "axes.spines.right": False,
    "legend.fontsize": 8, "legend.frameon": False, "lines.linewidth": 1.4,
    "svg.hashsalt": "mbrec", "svg.fonttype": "none", "path.simplify": False,
}
COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
          "#7f7f7f", "#bcbd22", "#17becf"]
MAX_FLOW_PLOTS = 6


def _plt():
    import matplotlib
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    matplotlib.rcParams.update(matplotlib.rcParamsDefault)
    matplotlib.rcParams.update(STYLE)
    return plt


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def _save(plt, fig, outdir: str, stem: str) -> list[str]:
    paths = []
    for ext, meta in (("png", {"Software": None}), ("svg", {"Date": None, "Creator": None})):
        p = os.path.join(outdir, f"{stem}.{ext}")
        fig.savefig(p, format=ext, metadata=meta)
        paths.append(p)
    plt.close(fig)
    return paths


def plot_cdfs(outdir: str, host: str, values: dict, counts: dict | None = None) -> list[str]:
    """values: latency name -> its values sorted (all of them, or evenly spread over the
    distribution when analysed in partitions: analysis.stats.cdf_values); counts: name -> how
    many samples there are (default: len(values[name]))."""
    plt = _plt()
    present = [n for n in NAMES if n.startswith("L_") and len(values.get(n, ()))]
    if not present:
        return []
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for k, name in enumerate(present):
        v = np.asarray(values[name]) / 1e3
        y = np.arange(1, len(v) + 1) / len(v)
        ax.step(np.maximum(v, 1e-3), y, where="post", color=COLORS[k % len(COLORS)],
                label=f"{name} (n={(counts or {}).get(name, len(v))})",
                linestyle="-" if k < 10 else "--")
    ax.set_xscale("log")
    ax.set_xlabel("latency (us, log scale)")
    ax.set_ylabel("CDF")
    ax.set_ylim(0, 1.01)
    ax.set_title(f"Layer latencies on {host}")
    ax.legend(loc="lower right", ncol=2)
    fig.tight_layout()
    return _save(plt, fig, outdir, f"cdf_{_safe(host)}")


def plot_breakdown(outdir: str, hosts: list[dict]) -> list[str]:
    """Stacked mean per layer, one bar per host and direction (send, receive, application)."""
    bars = []
    groups = (("send", ("L_TCP", "L_IP", "L_NIC"), (1, 3)),
              ("receive", ("L_NIC", "L_IP", "L_TCP"), (2, 4)),
              ("app", ("L_APP",), (1, 2)))
    for h in hosts:
        lat = h["latencies"]
        for label, layers, idx in groups:
            for k in idx:
                parts = [(f"{layer}_{k}", lat[f"{layer}_{k}"]["mean"]) for layer in layers
                         if f"{layer}_{k}" in lat and lat[f"{layer}_{k}"]["mean"] is not None]
                if parts:
                    role = "S" if k in (1, 4) else "R"
                    bars.append((f"{h['host']} {label} ({role})", parts))
    if not bars:
        return []
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(bars) + 1.6))
    layer_color = {"L_TCP": COLORS[0], "L_IP": COLORS[1], "L_NIC": COLORS[2], "L_APP": COLORS[3]}
    used = set()
    widest = max(sum(m for _, m in parts) for _, parts in bars) / 1e3
    for y, (label, parts) in enumerate(bars):
        left = 0.0
        for name, mean in parts:
            layer = name.rsplit("_", 1)[0]
            ax.barh(y, mean / 1e3, left=left, color=layer_color[layer],
                    label=layer if layer not in used else None, edgecolor="white")
            if mean / 1e3 > 0.12 * widest:  # label only segments wide enough to hold it
                ax.text(left + mean / 2e3, y, name, ha="center", va="center", fontsize=7)
            used.add(layer)
            left += mean / 1e3
    ax.set_yticks(range(len(bars)))
    ax.set_yticklabels([b[0] for b in bars])
    ax.invert_yaxis()
    ax.set_xlabel("mean latency (us), stacked by layer")
    ax.set_title("Where the time went, per host and direction")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.5 / max(len(bars), 1) - 0.12),
              ncol=4)
    fig.tight_layout()
    return _save(plt, fig, outdir, "breakdown")


def plot_flows(outdir: str, host: str, series: dict, names: list[dict]) -> list[str]:
    """cwnd, srtt, flight size and send queue over time for the flows with most snapshots."""
    if len(series["flow"]) == 0:
        return []
    counts = np.bincount(series["flow"])
    top = np.argsort(-counts, kind="stable")[:MAX_FLOW_PLOTS]
    paths = []
    plt = _plt()
    for fl in top.tolist():
        if counts[fl] == 0:
            continue
        sel = series["flow"] == fl
        t = (series["t"][sel] - series["t"][sel][0]) / 1e9
        fig, axes = plt.subplots(4, 1, figsize=(7, 7), sharex=True)
        panels = (("snd_cwnd", "cwnd (segments)", 1), ("srtt_us", "smoothed RTT (us)", 1),
                  ("packets_in_flight", "flight size (packets)", 1),
                  ("app_wqueue", "send queue (bytes)", 1))
        for ax, (col, label, scale) in zip(axes, panels):
            ax.step(t, series[col][sel] * scale, where="post", color=COLORS[0])
            ax.set_ylabel(label)
        axes[-1].set_xlabel("time since the flow's first snapshot (s)")
        n = names[fl] if fl < len(names) else {"client": "?", "server": "?"}
        axes[0].set_title(f"{host}: {n['client']} -> {n['server']}")
        fig.tight_layout()
        paths += _save(plt, fig, outdir, f"flow_{_safe(host)}_{fl}")
    return paths
