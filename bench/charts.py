#!/usr/bin/python3
"""Draws bench/run.sh's echo and fan-out comparisons as SVG charts, because
peers are compared faster on a chart than in a table.

    bench/charts.py POINTS.tsv OUTDIR

POINTS.tsv (written by run.sh): one figure a line, tab-separated:
    chart  group  server  value
chart "echo" (group: the C x K x S configuration, value: messages/s) or
"fanout" (group: "deliveries/s" or "server CPU us per delivery"). Writes
OUTDIR/echo.svg and OUTDIR/fanout.svg for the charts that have figures and
prints the names written. Needs python3-matplotlib; without it, says so on
stderr and exits 3 (run.sh then leaves the charts out with a note)."""
import collections
import os
import sys

try:
    import matplotlib
    matplotlib.use("svg")
    import matplotlib.pyplot as plt
except ImportError:
    sys.stderr.write("charts.py: python3-matplotlib is not installed (Debian: python3-matplotlib)\n")
    sys.exit(3)


def read(path):
    """{chart: {group: [(server, value)]}}, groups and servers in file order."""
    charts = collections.OrderedDict()
    with open(path) as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) != 4:
                continue
            chart, group, server, value = parts
            try:
                v = float(value)
            except ValueError:
                continue            # "n/a": a server that did not run
            charts.setdefault(chart, collections.OrderedDict()).setdefault(group, []).append((server, v))
    return charts


def panels(groups, title, xlabel, path):
    """One panel per group (their scales differ by orders of magnitude), a
    horizontal bar per server, ours first, each bar labelled with its value."""
    n = len(groups)
    cols = 2 if n > 1 else 1
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(6.5 * cols, 0.45 * rows * max(len(v) for v in groups.values()) + 1.2 * rows),
                             squeeze=False)
    for ax, (group, points) in zip(axes.flat, groups.items()):
        names = [s for s, _ in points][::-1]
        values = [v for _, v in points][::-1]
        colors = ["#1f77b4" if s.startswith("ours") else "#9e9e9e" for s in names]
        ax.barh(names, values, color=colors)
        top = max(values) if values else 1
        for y, v in enumerate(values):
            ax.text(v + top * 0.01, y, f"{v:,.0f}" if v >= 100 else f"{v:.2f}", va="center", fontsize=8)
        ax.set_xlim(0, top * 1.22)
        ax.set_title(group, fontsize=10)
        ax.set_xlabel(xlabel if "CPU" not in group else "microseconds (less is better)", fontsize=8)
        ax.tick_params(labelsize=8)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main():
    if len(sys.argv) != 3:
        sys.stderr.write(__doc__)
        return 2
    charts = read(sys.argv[1])
    out = sys.argv[2]
    os.makedirs(out, exist_ok=True)
    if charts.get("echo"):
        panels(charts["echo"], "Echo over loopback: messages/s (C connections x K in flight x S bytes)",
               "messages/s (more is better)", os.path.join(out, "echo.svg"))
        print("echo.svg")
    if charts.get("fanout"):
        panels(charts["fanout"], "Fan-out over loopback", "deliveries/s (more is better)", os.path.join(out, "fanout.svg"))
        print("fanout.svg")
    return 0


if __name__ == "__main__":
    sys.exit(main())
