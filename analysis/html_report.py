"""report.html: the analysis in one self-contained page (no network access needed to open it).

``write_report(analysis, path) -> path``. Tables are plain HTML, written here; the plots are
plotly.js figures (the bundle shipped in the ``plotly`` package, embedded gzip-compressed and
unpacked by the browser's DecompressionStream, so the page stays a few MB). Sections: summary
(inputs, clock alignment, where the time went), per-host latency tables, the breakdown of mean
latencies, CDFs, L_NET over time with its guaranteed interval, per-flow metrics (a table, and
cwnd, srtt, flight size and send queue over time for a flow picked from a list), and a request
explorer: pick a request (slowest, a percentile, fastest; all flows or one) and see its waterfall
across the client, the wire and the server.
"""

from __future__ import annotations

import base64
import gzip
import html
import json
import os

import numpy as np

from mbrec.analysis.latency import NAMES
from mbrec.errors import MbrecError

CDF_POINTS = 300          # quantiles drawn per latency curve
LNET_POINTS = 4000        # frames drawn per direction (every k-th beyond that)
MAX_REQUESTS = 20000      # requests kept for the explorer (the slowest always among them)
WATERFALL = ["L_TCP_1", "L_IP_1", "L_NIC_1", "L_NET_1", "L_NIC_2", "L_IP_2", "L_TCP_2",
             "L_APP_2", "L_TCP_3", "L_IP_3", "L_NIC_3", "L_NET_2", "L_NIC_4", "L_IP_4",
             "L_TCP_4"]
# who holds each part of the waterfall: the client, the wire, the server
WATERFALL_SIDE = ["client"] * 3 + ["wire"] + ["server"] * 7 + ["wire"] + ["client"] * 3
FLOW_COLUMNS = [  # (header, path into report["flows"][i]["metrics"])
    ("cwnd last", ("CWND", "snd_cwnd", "last")), ("cwnd max", ("CWND", "snd_cwnd", "max")),
    ("srtt us", ("srtt_us", "last")), ("min rtt us", ("min_rtt_us",)),
    ("flight max", ("FlightSize", "packets", "max")), ("rwnd", ("RWND", "snd_wnd", "last")),
    ("MSS", ("MSS", "mss_cache")), ("retrans", ("RePackets",)),
    ("fast retrans", ("fastRetrans",)), ("RTO", ("Timeout", "first")),
    ("max send queue", ("MaxAppWQueue",)), ("RTT samples", ("SampleRTT",)),
    ("bytes sent", ("BSent", "bytes_sent")), ("bytes received", ("BReceived",)),
    ("read", ("ReadByte",)), ("written", ("WriteByte",)), ("duration s", ("Duration_ns",))]


# --------------------------------------------------------------------------------------------
# Adapters: the only places that read the analysis' objects beyond its report dict

def _samples_view(analysis) -> list[dict]:
    """Per host: latency name (str) -> sample values (ns, sorted; spread evenly over the
    distribution when analysed in partitions)."""
    return [dict(c) for c in analysis.cdf]


def _series_view(analysis) -> list[dict]:
    """Per host: the flow snapshots (flow, t and the plotted columns) and the flows' labels."""
    out = []
    for name, s, fn in zip(analysis.names, analysis.series, analysis.flow_names):
        out.append({"host": name, "series": s,
                    "labels": [f"{f['client']} -> {f['server']}" for f in fn]})
    return out


def _lnet_view(analysis) -> list[dict]:
    """Per host pair and direction: send time, L_NET estimate and its interval (ns)."""
    net = analysis.network
    if net is None:
        return []
    out = []
    for p in net.pairs:
        for d in (p.ab, p.ba):
            out.append({"src": d.src, "dst": d.dst, "timebase": d.timebase, "t": d.s_ns,
                        "value": d.value, "lo": d.lo, "hi": d.hi, "quality": str(d.quality),
                        "client_sent": d.client_sent})
    return out


def _requests_view(analysis) -> list[dict]:
    """Per client/server pair: per request its layer parts (client timebase, ns), total, start
    and flow label, from the network result's RTT decomposition."""
    net = analysis.network
    if net is None:
        return []
    from mbrec.analysis.flowid import endpoint_hash, flow_hash
    labels: dict = {}
    for i, hs in enumerate(analysis.summaries):
        ft = hs.flows
        if len(ft) == 0:
            continue
        h = flow_hash(endpoint_hash(ft.ep_addr[:, 0], ft.ep_port[:, 0]),
                      endpoint_hash(ft.ep_addr[:, 1], ft.ep_port[:, 1]))
        for k, f in zip(h.tolist(), analysis.flow_names[i]):
            labels.setdefault(k, f"{f['client']} -> {f['server']}")
    out = []
    for p in net.pairs:
        for r in (p.requests or {}).get("per_client", []):
            if "layers" not in r:
                continue
            lay = r["layers"]
            out.append({"client": r["client"], "server": r["server"],
                        "parts": {n: lay["parts"][n] for n in WATERFALL if n in lay["parts"]},
                        "l_net_lo": (r["l_net_1_lo"], r["l_net_2_lo"]),
                        "l_net_hi": (r["l_net_1_hi"], r["l_net_2_hi"]),
                        "total": lay["total"], "rtt": r["rtt"], "start": r["client_out_ns"],
                        "flow": [labels.get(int(f), f"flow {int(f):x}") for f in r["flow"]]})
    return out


# --------------------------------------------------------------------------------------------
# Data for the page

def _us(v):
    return None if v is None or not np.isfinite(v) else round(float(v) / 1e3, 1)


def _floats(v: np.ndarray, scale: float = 1e3, digits: int = 1) -> list:
    """JSON numbers (us by default); None where not finite (an unbounded interval side)."""
    v = np.round(np.asarray(v, np.float64) / scale, digits)
    return [x if np.isfinite(x) else None for x in v.tolist()]


def _cdfs(samples: list[dict], names: list[str]) -> list[dict]:
    p = np.linspace(0, 1, CDF_POINTS)
    figs = []
    for host, per in zip(names, samples):
        traces = []
        for n, v in per.items():
            v = v[np.isfinite(v)]
            if len(v) == 0:
                continue
            q = np.quantile(v, p) / 1e3
            traces.append({"type": "scatter", "mode": "lines", "name": n,
                           "x": np.round(np.maximum(q, 1e-3), 3).tolist(), "y": p.round(4).tolist()})
        if traces:
            figs.append({"id": f"cdf-{host}", "data": traces, "layout": {
                "title": {"text": f"{host}: latency CDFs"}, "height": 420,
                "xaxis": {"title": {"text": "latency (us)"}, "type": "log"},
                "yaxis": {"title": {"text": "fraction of samples"}, "range": [0, 1]}}})
    return figs


def _breakdown(report: dict) -> dict | None:
    hosts = [h for h in report["hosts"] if h.get("latencies")]
    names = [n for n in NAMES if n.startswith("L_")
             and any((h["latencies"].get(n) or {}).get("mean") for h in hosts)]
    if not names:
        return None
    data = [{"type": "bar", "orientation": "h", "name": n,
             "y": [h["host"] for h in hosts],
             "x": [_us((h["latencies"].get(n) or {}).get("mean")) for h in hosts]}
            for n in names]
    return {"id": "breakdown", "data": data, "layout": {
        "title": {"text": "where the time went: mean latency per layer and host"},
        "barmode": "stack", "height": 160 + 60 * len(hosts),
        "xaxis": {"title": {"text": "sum of mean latencies (us)"}}}}


def _lnet_figs(dirs: list[dict]) -> list[dict]:
    figs: list = []
    if not dirs:
        return figs
    t0 = min(int(np.min(d["t"])) for d in dirs if len(d["t"])) if any(len(d["t"]) for d in dirs) \
        else 0
    data = []
    colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"]
    for k, d in enumerate(dirs):
        ok = np.isfinite(d["value"])
        idx = np.flatnonzero(ok)
        if len(idx) == 0:
            continue
        idx = idx[np.argsort(d["t"][idx], kind="stable")]
        step = max(1, len(idx) // LNET_POINTS)
        idx = idx[::step]
        x = np.round((d["t"][idx].astype(np.int64) - t0) / 1e9, 6).tolist()
        name = f"{d['src']} -> {d['dst']}"
        c = colors[k % len(colors)]
        data.append({"type": "scatter", "mode": "lines", "x": x,
                     "y": _floats(d["lo"][idx]), "line": {"width": 0},
                     "showlegend": False, "hoverinfo": "skip", "legendgroup": name})
        data.append({"type": "scatter", "mode": "lines", "x": x,
                     "y": _floats(d["hi"][idx]), "line": {"width": 0},
                     "fill": "tonexty", "fillcolor": c + "33", "legendgroup": name,
                     "name": f"{name}: guaranteed interval"})
        data.append({"type": "scatter", "mode": "markers", "x": x,
                     "y": _floats(d["value"][idx]), "legendgroup": name,
                     "marker": {"size": 3, "color": c},
                     "name": f"{name}: L_NET estimate ({d['quality']}"
                             f"{f', every {step}th frame' if step > 1 else ''})"})
    if data:
        figs.append({"id": "lnet", "data": data, "layout": {
            "title": {"text": f"L_NET per frame, NIC to NIC ({dirs[0]['timebase']}'s timebase), "
                              "with its guaranteed interval"},
            "height": 460, "xaxis": {"title": {"text": "send time (s since the first frame)"}},
            "yaxis": {"title": {"text": "one-way delay (us)"}, "type": "log"}}})
    return figs


SERIES_PLOTS = (("snd_cwnd", "cwnd (segments)"), ("srtt_us", "srtt (us)"),
                ("packets_in_flight", "flight size (packets)"),
                ("app_wqueue", "send queue (bytes)"))
MAX_SERIES_FLOWS = 200     # flows offered in the flow-metrics picker (most snapshots first)
SERIES_POINTS = 2000       # snapshots drawn per flow (every k-th beyond that)


def _flow_series(hosts: list[dict]) -> dict | None:
    """Per flow (busiest first): snapshot times (s since the flow's first) and the columns."""
    flows = []
    for h in hosts:
        s = h["series"]
        if len(s.get("flow", ())) == 0 or not all(c in s for c, _ in SERIES_PLOTS):
            continue
        f = np.asarray(s["flow"])
        bounds = np.flatnonzero(np.r_[True, f[1:] != f[:-1], True])  # sorted by (flow, t)
        for a, b in zip(bounds[:-1], bounds[1:]):
            step = max(1, (b - a) // SERIES_POINTS)
            sel = slice(a, b, step)
            t = np.asarray(s["t"][sel], np.int64)
            flows.append({"label": f"{h['host']}: {h['labels'][int(f[a])]}", "n": int(b - a),
                          "t": np.round((t - t[0]) / 1e9, 4).tolist(),
                          **{c: np.asarray(s[c][sel]).astype(np.int64).tolist()
                             for c, _ in SERIES_PLOTS}})
    if not flows:
        return None
    flows.sort(key=lambda x: -x["n"])
    return {"columns": [c for c, _ in SERIES_PLOTS], "titles": [t for _, t in SERIES_PLOTS],
            "flows": flows[:MAX_SERIES_FLOWS]}


def _requests(reqs: list[dict]) -> dict | None:
    """Compact rows for the explorer: [total, rtt, start s, flow index, parts...] in us."""
    if not reqs:
        return None
    flows: list = []
    rows: list = []
    fidx = {}
    t0 = min(int(np.min(r["start"])) for r in reqs if len(r["start"]))
    for r in reqs:
        n = len(r["total"])
        parts = np.stack([np.asarray(r["parts"].get(p, np.full(n, np.nan)), np.float64)
                          for p in WATERFALL], axis=1)
        lo = np.stack([r["l_net_lo"][0], r["l_net_lo"][1]], axis=1)
        hi = np.stack([r["l_net_hi"][0], r["l_net_hi"][1]], axis=1)
        total = np.asarray(r["total"], np.float64)
        for f in r["flow"]:
            if (r["client"], f) not in fidx:
                fidx[(r["client"], f)] = len(flows)
                flows.append({"label": f, "client": r["client"], "server": r["server"]})
        fi = np.array([fidx[(r["client"], f)] for f in r["flow"]])
        ok = np.isfinite(total)
        for i in np.flatnonzero(ok):
            rows.append([_us(total[i]), _us(r["rtt"][i]),
                         round((int(r["start"][i]) - t0) / 1e9, 6), int(fi[i])]
                        + [_us(v) for v in parts[i]]
                        + [_us(v) for v in lo[i]] + [_us(v) for v in hi[i]])
    if not rows:
        return None
    rows.sort(key=lambda x: -x[0])
    if len(rows) > MAX_REQUESTS:  # the slowest, then every k-th of the rest
        keep = MAX_REQUESTS // 10
        rest = rows[keep:]
        rows = rows[:keep] + rest[::max(1, len(rest) // (MAX_REQUESTS - keep))]
    return {"parts": WATERFALL, "sides": WATERFALL_SIDE, "flows": flows, "rows": rows,
            "columns": ["total_us", "rtt_us", "start_s", "flow"] + WATERFALL
            + ["L_NET_1_lo", "L_NET_2_lo", "L_NET_1_hi", "L_NET_2_hi"]}


# --------------------------------------------------------------------------------------------
# HTML

def _e(x) -> str:
    return html.escape(str(x))


def _table(headers: list[str], rows: list[list], cls: str = "") -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_e('-' if v is None else v)}</td>" for v in r)
                   + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _fmt_us(v) -> str:
    u = _us(v)
    return "-" if u is None else f"{u:,.1f}"


def _summary(report: dict) -> str:
    rows = []
    for i in report["inputs"]:
        rows.append([i["host"], os.path.basename(str(i["path"])), i.get("kernel") or "?",
                     f"{sum(i['events'].values()):,}", f"{i['lost_total']:,}",
                     "clean" if i["clean"] else "UNCLEAN", i.get("mbrec_version") or "?"])
    out = [_table(["host", "trace", "kernel", "events", "lost", "end", "mbrec"], rows,
                  "inputs")]
    cross = report.get("cross_host") or {}
    al = cross.get("alignment")
    if al:
        arows = []
        for h in al.get("hosts", []):
            w = h.get("bound_width_ns")
            arows.append([h["host"], " -> ".join(h.get("path") or []),
                          ", ".join(h.get("methods") or []) or "reference", h.get("quality"),
                          f"{h.get('offset_ns', 0) / 1e3:,.1f}", f"{h.get('drift_ppm', 0):.2f}",
                          "unbounded" if w is None else f"{w / 1e3:,.1f}"])
        out.append(f"<p>Clock alignment: method <b>{_e(al.get('method'))}</b>, every time below "
                   f"in <b>{_e(al.get('reference'))}</b>'s clock.</p>")
        out.append(_table(["host", "path", "method", "quality", "offset us", "drift ppm",
                           "bound width us"], arows, "alignment"))
    else:
        out.append(f"<p>Cross-host: {_e(cross.get('status', 'none'))}: "
                   f"{_e(cross.get('reason', ''))}</p>")
    out.append(f'<p class="where">{_e(report.get("where_the_time_went", ""))}</p>')
    for w in report.get("warnings") or []:
        out.append(f'<p class="warn">warning: {_e(w)}</p>')
    return "\n".join(out)


def _host_tables(report: dict) -> str:
    out = []
    for h in report["hosts"]:
        rows = []
        for n, st in h["latencies"].items():
            if not isinstance(st, dict) or not st.get("count"):
                continue
            rows.append([n, f"{st['count']:,}", _fmt_us(st.get("mean")), _fmt_us(st.get("p50")),
                         _fmt_us(st.get("p90")), _fmt_us(st.get("p99")),
                         _fmt_us(st.get("p99.9")), _fmt_us(st.get("max")), st.get("unit", ""),
                         st.get("lost_events_affecting", 0)])
        pk = h.get("packets") or {}
        out.append(f"<h3>host {_e(h['host'])}</h3><p>{h.get('client_flows', 0)} flows as client, "
                   f"{h.get('server_flows', 0)} as server; packets sent {pk.get('sent', 0):,}, "
                   f"received {pk.get('received', 0):,}, retransmitted "
                   f"{pk.get('retransmitted', 0):,}</p>")
        out.append(_table(["latency", "count", "mean us", "p50 us", "p90 us", "p99 us",
                           "p99.9 us", "max us", "per", "lost events affecting"], rows,
                          "latency"))
    return "\n".join(out)


def _get(d, path):
    for k in path:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def _flow_table(report: dict) -> str:
    flows = report.get("flows", [])
    if not flows:
        return "<p>No TCP flow in these traces.</p>"
    with_metrics = any(f.get("metrics") for f in flows)
    cols = FLOW_COLUMNS if with_metrics else []
    rows = []
    for f in flows:
        vals = []
        for h, path in cols:
            v = _get(f.get("metrics") or {}, path)
            if h == "duration s" and v is not None:
                v = f"{v / 1e9:.3f}"
            elif isinstance(v, float):
                v = f"{v:,.0f}"
            elif isinstance(v, int):
                v = f"{v:,}"
            vals.append(v)
        rows.append([f["host"], f["role"], f"{f['client']} -> {f['server']}",
                     f.get("packets_sent"), f.get("packets_received"),
                     f.get("retransmissions")] + vals)
    note = "" if with_metrics else ("<p>No flow snapshots in these traces, so no flow metrics "
                                    "(record with <code>--probes packets,flows</code>).</p>")
    return note + _table(["host", "role", "flow", "packets sent", "packets received",
                          "retransmitted"] + [h for h, _ in cols], rows, "flows")


PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>mbrec report: {title}</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 1.5em auto; max-width: 1200px; color: #222 }}
h1 {{ font-size: 1.5em }} h2 {{ border-bottom: 1px solid #ccc; margin-top: 1.8em }}
table {{ border-collapse: collapse; margin: .5em 0 1em; font-size: 13px }}
th, td {{ border: 1px solid #ddd; padding: 2px 7px; text-align: right }}
th {{ background: #f3f3f3 }} td:first-child, th:first-child {{ text-align: left }}
table.flows td:nth-child(3) {{ text-align: left; white-space: nowrap }}
.flowwrap {{ overflow-x: auto }} .warn {{ color: #a00 }} .where {{ font-weight: 600 }}
.plot {{ width: 100%; min-height: 200px }} #explorer-controls label {{ margin-right: 1em }}
#plot-status {{ color: #a00 }}
</style></head><body>
<h1>mbrec report: {title}</h1>
<p>mbrec {version}. Times in microseconds. Written by <code>mbrec analyze</code>; open it
anywhere, no network needed.</p>
<p id="plot-status"></p>
<h2 id="summary">Summary</h2>
{summary}
<h2 id="hosts">Per host</h2>
{hosts}
<h2 id="time">Where the time went</h2>
<div class="plot" id="breakdown"></div>
<h2 id="cdfs">Latency CDFs</h2>
{cdf_divs}
<h2 id="lnet-h">Network latency (L_NET)</h2>
{lnet_div}
<h2 id="flows">Per-flow metrics</h2>
<div class="flowwrap">{flows}</div>
{series}
<h2 id="explorer">Request explorer</h2>
{explorer}
<script type="application/json" id="mbrec-data">{data}</script>
<script type="application/octet-stream" id="plotly-gz">{plotly}</script>
<script>
{js}
</script>
</body></html>
"""

SERIES_HTML = """<p><label>flow over time <select id="series-flow"></select></label></p>
<div class="plot" id="series"></div>"""

EXPLORER = """<div id="explorer-controls">
<label>request <select id="pick">
<option value="slowest">slowest</option><option value="p99">p99</option>
<option value="p90">p90</option><option value="median">median</option>
<option value="fastest">fastest</option></select></label>
<label>flow <select id="flow"><option value="-1">all flows</option></select></label>
<label>rank <input id="rank" type="number" min="0" value="0" style="width:6em"></label>
</div>
<p id="req-info"></p>
<div class="plot" id="waterfall"></div>"""

JS = r"""
const DATA = JSON.parse(document.getElementById('mbrec-data').textContent);
async function loadPlotly() {
  const b64 = document.getElementById('plotly-gz').textContent.trim();
  const bin = atob(b64);
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream('gzip'));
  const code = await new Response(stream).text();
  const s = document.createElement('script');
  s.text = code;
  document.head.appendChild(s);
}
function plot(fig) {
  Plotly.newPlot(fig.id, fig.data, Object.assign({margin: {t: 40}}, fig.layout),
                 {responsive: true, displaylogo: false});
}
const R = DATA.requests;
function chosen() {
  const f = +document.getElementById('flow').value;
  const rows = R.rows.filter(r => f < 0 || r[3] === f);   // rows are sorted slowest first
  if (!rows.length) return null;
  const mode = document.getElementById('pick').value;
  const q = {slowest: 0, p99: 0.01, p90: 0.1, median: 0.5, fastest: 1}[mode];
  const rank = Math.max(0, +document.getElementById('rank').value || 0);
  let i = Math.round(q * (rows.length - 1)) + (mode === 'fastest' ? -rank : rank);
  i = Math.min(rows.length - 1, Math.max(0, i));
  return {row: rows[i], i: i, n: rows.length};
}
function drawWaterfall() {
  const c = chosen();
  if (!c) return;
  const r = c.row, fl = R.flows[r[3]];
  const host = {client: fl.client, server: fl.server, wire: 'wire'};
  const labels = R.parts.map((p, k) => p + ' (' + host[R.sides[k]] + ')');
  const colors = {client: '#1f77b4', wire: '#7f7f7f', server: '#ff7f0e'};
  let t = 0;
  const base = [], x = [], text = [];
  R.parts.forEach((p, k) => {
    const v = r[4 + k];
    base.push(t); x.push(v === null ? 0 : v);
    let s = v === null ? 'not seen' : v.toFixed(1) + ' us';
    if (p === 'L_NET_1' || p === 'L_NET_2') {
      const j = p === 'L_NET_1' ? 0 : 1, n = 4 + R.parts.length;
      if (r[n + j] !== null) s += ' [' + r[n + j].toFixed(1) + ', ' + r[n + 2 + j].toFixed(1) + '] guaranteed';
    }
    text.push(s);
    if (v !== null) t += v;
  });
  const data = [{type: 'bar', orientation: 'h', y: labels, x: x, base: base, text: text,
                 hovertemplate: '%{y}: %{text}<extra></extra>', textposition: 'outside',
                 cliponaxis: false,
                 marker: {color: R.sides.map(s => colors[s])}}];
  Plotly.react('waterfall', data, {
    height: 520, margin: {l: 170, r: 190, t: 30}, yaxis: {autorange: 'reversed'},
    xaxis: {title: {text: 'us since the request entered the client\'s TCP (client clock)'}}},
    {responsive: true, displaylogo: false});
  document.getElementById('req-info').textContent =
    'request ' + (c.i + 1) + ' of ' + c.n + ' (by total, slowest first) on ' + fl.label +
    ': total ' + r[0].toFixed(1) + ' us, NIC round trip ' + (r[1] === null ? '-' : r[1].toFixed(1)) +
    ' us, sent at ' + r[2].toFixed(3) + ' s';
}
const S = DATA.series;
function drawSeries() {
  const f = S.flows[+document.getElementById('series-flow').value];
  const n = S.columns.length, gap = 0.04, h = (1 - gap * (n - 1)) / n;
  const data = S.columns.map((c, k) => ({type: 'scatter', mode: 'lines', line: {shape: 'hv'},
    x: f.t, y: f[c], name: S.titles[k], xaxis: 'x', yaxis: 'y' + (k ? k + 1 : '')}));
  const layout = {height: 660, margin: {t: 50}, showlegend: false,
    title: {text: f.label + ' (' + f.n + ' snapshots)'},
    xaxis: {title: {text: "s since the flow's first snapshot"}, anchor: 'y' + n}};
  S.columns.forEach((c, k) => {
    const top = 1 - k * (h + gap);
    layout['yaxis' + (k ? k + 1 : '')] = {domain: [top - h, top], title: {text: S.titles[k]}};
  });
  Plotly.react('series', data, layout, {responsive: true, displaylogo: false});
}
async function main() {
  if (S) {
    const sel = document.getElementById('series-flow');
    S.flows.forEach((f, k) => { const o = document.createElement('option'); o.value = k;
      o.textContent = f.label; sel.appendChild(o); });
  }
  if (R) {
    const sel = document.getElementById('flow');
    R.flows.forEach((f, k) => { const o = document.createElement('option'); o.value = k;
      o.textContent = f.label + ' (' + f.client + ')'; sel.appendChild(o); });
  }
  try {
    await loadPlotly();
  } catch (e) {
    document.getElementById('plot-status').textContent =
      'The plots need a browser that can unpack the embedded plotly.js (DecompressionStream): ' + e;
    return;
  }
  DATA.figures.forEach(plot);
  if (S) {
    document.getElementById('series-flow').addEventListener('change', drawSeries);
    drawSeries();
  }
  if (R) {
    ['pick', 'flow', 'rank'].forEach(id =>
      document.getElementById(id).addEventListener('change', drawWaterfall));
    drawWaterfall();
  }
  document.body.dataset.ready = '1';
}
main();
"""


def _plotly_js_gz() -> str:
    try:
        from plotly.offline import get_plotlyjs
    except ImportError:
        raise MbrecError("report.html needs the plotly package (pip install plotly): it ships "
                         "the plotting library the page embeds") from None
    return base64.b64encode(gzip.compress(get_plotlyjs().encode(), 6, mtime=0)).decode()


def _json_script(obj) -> str:
    """JSON safe inside <script>: no '</' can close the element."""
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).replace("</", "<\\/")


def write_report(analysis, path: str) -> str:
    report = analysis.report
    figures = []
    b = _breakdown(report)
    if b:
        figures.append(b)
    cdfs = _cdfs(_samples_view(analysis), analysis.names)
    figures += cdfs
    lnet = _lnet_figs(_lnet_view(analysis))
    figures += lnet
    requests = _requests(_requests_view(analysis))
    series = _flow_series(_series_view(analysis))
    cross = report.get("cross_host") or {}
    if requests:
        explorer = EXPLORER
    else:
        why = cross.get("reason") or "no request with both hosts' layers was found"
        explorer = f"<p>No requests to explore: {_e(why)}.</p>"
    lnet_div = ('<div class="plot" id="lnet"></div>' if lnet else
                f"<p>No L_NET: {_e(cross.get('reason') or 'no frames matched across hosts')}.</p>")
    title = " + ".join(analysis.names)
    page = PAGE.format(
        title=_e(title), version=_e(report.get("mbrec_version", "")), summary=_summary(report),
        hosts=_host_tables(report),
        cdf_divs="\n".join(f'<div class="plot" id="{_e(f["id"])}"></div>' for f in cdfs),
        lnet_div=lnet_div, flows=_flow_table(report), explorer=explorer,
        series=SERIES_HTML if series else "",
        data=_json_script({"figures": figures, "requests": requests, "series": series}),
        plotly=_plotly_js_gz(), js=JS)
    tmp = path + ".partial"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(page)
        os.replace(tmp, path)
    except OSError as e:
        raise MbrecError(f"cannot write {path}: {e.strerror}") from None
    return path
