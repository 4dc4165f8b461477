#!/usr/bin/python3
"""Draws bench/run.sh's echo and fan-out comparisons as SVG charts, because
peers are compared faster on a chart than in a table.

    bench/charts.py POINTS.tsv OUTDIR

POINTS.tsv (written by run.sh): one figure a line, tab-separated:
    chart  group  server  value
chart "echo" (group: the C x K x S configuration, value: messages/s),
"fanout" (group: the fan-out row, "M x W" subscribers x publishes in
flight, value: deliveries/s) or "fanout-cpu" (the same rows, value: server
CPU us per delivery). Writes OUTDIR/echo.svg (a panel per configuration)
and OUTDIR/fanout.svg (the matrix as grouped bars, rows x hubs, with the
CPU per delivery beneath) for the charts that have figures and prints the
names written. Needs python3-matplotlib; without it, says so on
stderr and exits 3 (run.sh then leaves the charts out with a note)."""
import collections
import os
import sys

try:
    import matplotlib
    matplotlib.use("svg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker
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


def server_colors(*charts):
    """Every server of the charts in first seen order, and a colour each:
    ours in blues, the peers in other colours, the same in every panel."""
    servers = []
    for groups in charts:
        for points in (groups or {}).values():
            for s, _ in points:
                if s not in servers:
                    servers.append(s)
    blues = ["#1f77b4", "#6baed6", "#08519c"]
    others = ["#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#7f7f7f"]
    ours = [s for s in servers if s.startswith("ours")]
    color = {s: blues[i % len(blues)] for i, s in enumerate(ours)}
    color.update({s: others[i % len(others)] for i, s in enumerate(s for s in servers if s not in ours)})
    return servers, color


def grouped(ax, groups, servers, color, ylabel, title):
    """Grouped vertical bars: a group per row, a slot per server (a server
    that did not run leaves its slot empty), each bar labelled."""
    width = 0.8 / max(len(servers), 1)
    top = max((v for points in groups.values() for _, v in points), default=1)
    for si, server in enumerate(servers):
        xs, vs = [], []
        for gi, points in enumerate(groups.values()):
            for s, v in points:
                if s == server:
                    xs.append(gi - 0.4 + width * (si + 0.5))
                    vs.append(v)
        ax.bar(xs, vs, width, label=server, color=color[server])
        for x, v in zip(xs, vs):
            ax.text(x, v + top * 0.01, f"{v / 1000:,.0f}k" if v >= 10000 else f"{v:,.0f}" if v >= 100 else f"{v:.2f}",
                    ha="center", va="bottom", fontsize=6, rotation=90)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(list(groups.keys()), fontsize=8)
    ax.set_xlabel("subscribers x publishes in flight", fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.set_ylim(0, top * 1.15)
    if top >= 10000:
        ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v / 1000:,.0f}k"))
    ax.set_title(title, fontsize=10)
    ax.tick_params(labelsize=8)


def fanout(rates, cpu, path):
    """The fan-out matrix: deliveries/s, and beneath it the server CPU per delivery."""
    servers, color = server_colors(rates, cpu)
    panes = [(rates, "deliveries/s (more is better)", "Deliveries/s")]
    if cpu:
        panes.append((cpu, "microseconds (less is better)", "Server CPU time per delivery"))
    fig, axes = plt.subplots(len(panes), 1, figsize=(11, 3.8 * len(panes) + 1), squeeze=False)
    for ax, (groups, ylabel, title) in zip(axes.flat, panes):
        grouped(ax, groups, servers, color, ylabel, title)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, ncol=3, loc="lower center")
    fig.suptitle("Fan-out over loopback: one publisher, 64-byte data", fontsize=11)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
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
        fanout(charts["fanout"], charts.get("fanout-cpu"), os.path.join(out, "fanout.svg"))
        print("fanout.svg")
    return 0


if __name__ == "__main__":
    sys.exit(main())
