"""Plot a run's metrics.csv as an SVG (no dependencies): training loss (left) and kNN accuracy
(right), one line per descriptor, against the step.

Usage: python3 scripts/plot_metrics.py RUN_DIR [OUT.svg]
"""
import csv
import sys
from collections import defaultdict

run = sys.argv[1]
out = sys.argv[2] if len(sys.argv) > 2 else f"{run}/metrics.svg"
loss, knn = defaultdict(list), defaultdict(list)
for r in csv.DictReader(open(f"{run}/metrics.csv")):
    step = int(r["step"])
    if r["loss"]:
        loss[r["descriptor"]].append((step, float(r["loss"])))
    if r["knn_accuracy"]:
        knn[r["descriptor"]].append((step, 100 * float(r["knn_accuracy"])))

W, H, PAD = 420, 260, 45
COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#7f7f7f"]


def panel(x0, title, series, ylabel):
    pts = [p for s in series.values() for p in s]
    if not pts:
        return ""
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    xmin, xmax = min(xs), max(xs) or 1
    ymin, ymax = min(ys), max(ys)
    if ymax == ymin:
        ymax = ymin + 1
    sx = lambda x: x0 + PAD + (x - xmin) / max(xmax - xmin, 1) * (W - 2 * PAD)
    sy = lambda y: H - PAD - (y - ymin) / (ymax - ymin) * (H - 2 * PAD)
    g = [f'<text x="{x0 + W / 2}" y="18" text-anchor="middle" font-size="13">{title}</text>',
         f'<rect x="{x0 + PAD}" y="{PAD}" width="{W - 2 * PAD}" height="{H - 2 * PAD}" fill="none" stroke="#999"/>']
    for k in range(5):
        y = ymin + k * (ymax - ymin) / 4
        g.append(f'<text x="{x0 + PAD - 4}" y="{sy(y) + 4}" text-anchor="end" font-size="10">{y:.2f}</text>')
    g.append(f'<text x="{x0 + PAD}" y="{H - PAD + 14}" font-size="10">{xmin}</text>')
    g.append(f'<text x="{x0 + W - PAD}" y="{H - PAD + 14}" text-anchor="end" font-size="10">step {xmax}</text>')
    g.append(f'<text x="{x0 + 12}" y="{H / 2}" font-size="10" transform="rotate(-90 {x0 + 12} {H / 2})">{ylabel}</text>')
    for n, (name, s) in enumerate(sorted(series.items())):
        c = COLORS[n % len(COLORS)]
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in sorted(s))
        g.append(f'<polyline points="{path}" fill="none" stroke="{c}" stroke-width="1.5"/>')
        if len(series) > 1:
            g.append(f'<text x="{x0 + W - PAD - 4}" y="{PAD + 14 + 12 * n}" text-anchor="end" font-size="10" fill="{c}">i = [{name}]</text>')
    return "\n".join(g)


svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{2 * W}" height="{H}" font-family="sans-serif">',
       '<rect width="100%" height="100%" fill="white"/>',
       panel(0, "training loss per descriptor", loss, "loss"),
       panel(W, "kNN accuracy per descriptor (held-out)", knn, "%"),
       "</svg>"]
open(out, "w").write("\n".join(svg))
print(f"wrote {out}")
