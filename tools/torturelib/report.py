"""The report of a fault-harness run (tools/torture): numbers for report.json and the
picture timeline.svg.

The picture is three panels over one time axis (seconds from the start of the run):
acknowledged operations per second for each workload, the p99 latency of each second,
and each region's replication lag as the primary's agent reported it (sampled every
second). Every fault is a shaded span across the three panels, from its start to its
heal, labelled with its kind and target, so that a dip or a spike lines up with what
caused it. The SVG is written by hand (no plotting library) and is plain XML.
"""

import math
from xml.sax.saxutils import escape

WIDTH = 1100
PANEL_H = 170
LEFT, RIGHT, TOP, GAP, BOTTOM = 70, 170, 92, 34, 40
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf")
FAULT_COLORS = {"kill": "#d62728", "pause": "#ff7f0e", "partition_az": "#9467bd",
                "partition_regions": "#8c564b", "delay_spike": "#17becf",
                "switchover": "#2ca02c", "disk_full": "#7f7f7f", "fsync_fail": "#bcbd22",
                "az_plus_one": "#e377c2"}
LABEL_ROWS = 4       # fault labels are staggered over this many rows so they do not overlap
LABEL_CHAR_PX = 5.6  # width of a character of a fault label (10 px sans-serif), roughly


def percentile(values, q):
    """The q-quantile (0..1) of values by nearest rank; None when there are none."""
    if not values:
        return None
    xs = sorted(values)
    return round(xs[min(len(xs) - 1, max(0, math.ceil(q * len(xs)) - 1))], 3)


def per_second(events, duration_s):
    """events: [t_s] -> [(second, count)] for every second of the run."""
    n = max(1, int(math.ceil(duration_s)))
    counts = [0] * n
    for t in events:
        if 0 <= t < n:
            counts[int(t)] += 1
    return [(i + 0.5, c) for i, c in enumerate(counts)]


def per_second_quantile(samples, duration_s, q=0.99):
    """samples: [(t_s, value)] -> [(second, q-quantile of its values)], skipping empty ones."""
    n = max(1, int(math.ceil(duration_s)))
    buckets = [[] for _ in range(n)]
    for t, v in samples:
        if 0 <= t < n:
            buckets[int(t)].append(v)
    return [(i + 0.5, percentile(b, q)) for i, b in enumerate(buckets) if b]


def _nice_max(v):
    if v <= 0:
        return 1
    mag = 10 ** math.floor(math.log10(v))
    for m in (1, 2, 2.5, 5, 10):
        if v <= m * mag:
            return m * mag
    return 10 * mag


def _fmt(v):
    return f"{v:g}" if v < 10000 else f"{v / 1000:g}k"


def _panel(out, y0, title, unit, series, duration_s):
    """One panel: axes, grid, a polyline per series and its legend."""
    plot_w = WIDTH - LEFT - RIGHT
    ymax = _nice_max(max([v for pts in series.values() for _, v in pts if v is not None],
                         default=0))

    def sx(t):
        return LEFT + plot_w * min(max(t, 0), duration_s) / duration_s

    def sy(v):
        return y0 + PANEL_H - PANEL_H * min(v, ymax) / ymax

    out.append(f'<text x="{LEFT}" y="{y0 - 8}" class="title">{escape(title)}</text>')
    for i in range(5):
        v = ymax * i / 4
        y = sy(v)
        out.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{LEFT + plot_w}" y2="{y:.1f}" '
                   f'class="grid"/>')
        out.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" class="tick" text-anchor="end">'
                   f'{_fmt(v)}</text>')
    out.append(f'<text x="14" y="{y0 + PANEL_H / 2:.1f}" class="tick" '
               f'transform="rotate(-90 14 {y0 + PANEL_H / 2:.1f})" text-anchor="middle">'
               f'{escape(unit)}</text>')
    out.append(f'<rect x="{LEFT}" y="{y0}" width="{plot_w}" height="{PANEL_H}" class="frame"/>')
    for k, (name, pts) in enumerate(series.items()):
        color = COLORS[k % len(COLORS)]
        path, pen = [], "M"
        for t, v in pts:
            if v is None:
                pen = "M"
                continue
            path.append(f"{pen}{sx(t):.1f},{sy(v):.1f}")
            pen = "L"
        if path:
            out.append(f'<path d="{" ".join(path)}" fill="none" stroke="{color}" '
                       f'stroke-width="1.5"/>')
        ly = y0 + 14 + 16 * k
        out.append(f'<line x1="{WIDTH - RIGHT + 10}" y1="{ly - 4}" x2="{WIDTH - RIGHT + 28}" '
                   f'y2="{ly - 4}" stroke="{color}" stroke-width="2"/>')
        out.append(f'<text x="{WIDTH - RIGHT + 32}" y="{ly}" class="tick">{escape(name)}</text>')


def svg(panels, faults, duration_s, title):
    """panels: [(title, unit, {series name: [(t_s, value or None)]})]; faults: the
    nemesis' records. Returns the SVG text."""
    duration_s = max(duration_s, 1.0)
    height = TOP + len(panels) * (PANEL_H + GAP) + BOTTOM
    plot_w = WIDTH - LEFT - RIGHT
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
           f'viewBox="0 0 {WIDTH} {height}" font-family="sans-serif">',
           "<style>.title{font-size:13px;font-weight:bold}.tick{font-size:11px}"
           ".grid{stroke:#ddd;stroke-width:1}.frame{fill:none;stroke:#333}"
           ".fault{font-size:10px}</style>",
           f'<rect width="{WIDTH}" height="{height}" fill="white"/>',
           f'<text x="{LEFT}" y="18" class="title">{escape(title)}</text>']
    bottom = TOP + len(panels) * (PANEL_H + GAP) - GAP

    def sx(t):
        return LEFT + plot_w * min(max(t, 0), duration_s) / duration_s

    row_free = [0.0] * LABEL_ROWS  # where each label row is free again, in x
    for f in faults:
        start = f.get("at_s") or 0
        end = f.get("healed_s") if f.get("healed_s") is not None else duration_s
        x0, x1 = sx(start), max(sx(end), sx(start) + 2)
        color = FAULT_COLORS.get(f["kind"], "#999")
        label = f["kind"] + " " + f.get("target", "")
        row = min(range(LABEL_ROWS), key=lambda r: row_free[r])
        ly = 32 + 11 * row
        out.append(f'<rect x="{x0:.1f}" y="{ly + 2}" width="{x1 - x0:.1f}" '
                   f'height="{bottom - ly - 2:.1f}" fill="{color}" fill-opacity="0.15">'
                   f'<title>{escape(label)}: {start:g} s to {end:g} s</title></rect>')
        if row_free[row] <= x0:  # a label only where it fits; the span's title has it all
            out.append(f'<text x="{x0:.1f}" y="{ly}" class="fault" fill="{color}">'
                       f'{escape(label)}</text>')
            row_free[row] = x0 + LABEL_CHAR_PX * len(label) + 4
    for k, (kind, color) in enumerate(FAULT_COLORS.items()):
        y = bottom - 14 * (len(FAULT_COLORS) - k) + 10
        out.append(f'<rect x="{WIDTH - RIGHT + 10}" y="{y - 9}" width="18" height="10" '
                   f'fill="{color}" fill-opacity="0.3"/>')
        out.append(f'<text x="{WIDTH - RIGHT + 32}" y="{y}" class="fault">{kind}</text>')
    for k, (ptitle, unit, series) in enumerate(panels):
        _panel(out, TOP + k * (PANEL_H + GAP), ptitle, unit, series, duration_s)
    step = _nice_max(duration_s / 10)
    t = 0.0
    while t <= duration_s + 1e-9:
        out.append(f'<text x="{sx(t):.1f}" y="{bottom + 16}" class="tick" '
                   f'text-anchor="middle">{_fmt(t)}</text>')
        t += step
    out.append(f'<text x="{LEFT + plot_w / 2:.1f}" y="{bottom + 32}" class="tick" '
               f'text-anchor="middle">seconds from the start of the run</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def lag_stats(samples):
    """samples: [(t_s, {region: lag_ms})] -> {region: {"p50", "p99", "max", "samples"}}."""
    by = {}
    for _, lags in samples:
        for region, ms in lags.items():
            by.setdefault(region, []).append(ms)
    return {r: {"p50_ms": percentile(v, 0.5), "p99_ms": percentile(v, 0.99),
                "max_ms": max(v), "samples": len(v)} for r, v in sorted(by.items())}
