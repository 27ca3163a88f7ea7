"""The benchmark's report: the table of medians with ratios, the requests each
workload made, and the chart of ratios to the best peer."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Results:
    """Seconds per (workload, tool), every run kept."""

    times: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    #: requests to the account by op, per (workload, tool)
    requests: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)

    def add(self, workload: str, tool: str, seconds: float) -> None:
        self.times.setdefault(workload, {}).setdefault(tool, []).append(seconds)

    def count(self, workload: str, tool: str, by_op: dict[str, int]) -> None:
        """What one run of the workload asked of the account, by op (the first run's
        is kept: the counts hardly move between runs)."""
        self.requests.setdefault(workload, {}).setdefault(tool, dict(sorted(by_op.items())))

    def median(self, workload: str, tool: str) -> float | None:
        runs = self.times.get(workload, {}).get(tool)
        return statistics.median(runs) if runs else None


def table(results: Results) -> str:
    lines = ["| workload | tool | median s | ratio to peers |", "| --- | --- | ---: | --- |"]
    for workload, tools in results.times.items():
        ours = {tool: results.median(workload, tool) for tool in tools
                if tool.startswith("blobmount")}
        peers = {tool: results.median(workload, tool) for tool in tools
                 if not tool.startswith("blobmount")}
        for tool in tools:
            value = results.median(workload, tool)
            ratios = ""
            if tool in ours and peers:
                ratios = ", ".join(f"{value / peer:.2f}x {name}" for name, peer in peers.items()
                                   if peer)
            lines.append(f"| {workload} | {tool} | {value:.3f} | {ratios} |")
    for workload, note in results.notes.items():
        lines.append(f"| {workload} | note | | {note} |")
    return "\n".join(lines)


def requests_table(results: Results) -> str:
    """Per workload, the requests each tool made to the account, by op, with
    blobmount's total as a ratio to rclone's ('' when nothing was counted)."""
    if not results.requests:
        return ""
    lines = ["| workload | tool | requests | by op | ratio to rclone |",
             "| --- | --- | ---: | --- | --- |"]
    for workload, tools in results.requests.items():
        peer = sum(tools["rclone"].values()) if "rclone" in tools else None
        for tool, by_op in tools.items():
            total = sum(by_op.values())
            ratio = ""
            if tool.startswith("blobmount") and peer is not None:
                ratio = f"{total / peer:.2f}x" if peer else "rclone made none"
                if total > peer:
                    ratio += " (more)"
            ops = ", ".join(f"{op} {count}" for op, count in by_op.items()) or "none"
            lines.append(f"| {workload} | {tool} | {total} | {ops} | {ratio} |")
    return "\n".join(lines)


def ratios(results: Results) -> dict[str, dict[str, float]]:
    """Per workload with a peer: each tool's median over the best (fastest) peer's."""
    found = {}
    for workload, tools in results.times.items():
        peers = [results.median(workload, tool) for tool in tools
                 if not tool.startswith("blobmount")]
        best = min((peer for peer in peers if peer), default=None)
        if best:
            found[workload] = {tool: results.median(workload, tool) / best for tool in tools}
    return found


def _family(tool: str) -> str:
    """The colour a tool's bars get: 'blobmount cat' and 'blobmount dd' are blobmount."""
    return tool.split()[0] if tool.split()[0] in ("blobmount", "rclone", "azcopy", "sdk") \
        else tool


def chart(results: Results, path: Path, title: str) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    table = ratios(results)
    if not table:
        return False
    families = sorted({_family(tool) for tools in table.values() for tool in tools},
                      key=lambda family: (family != "blobmount", family))
    colours = dict(zip(families, plt.get_cmap("tab10").colors, strict=False))
    widest = max(len(tools) for tools in table.values())
    figure, axes = plt.subplots(figsize=(min(18, max(8, len(table) * widest * 0.45)), 6))
    width = 0.8 / widest
    shown: set[str] = set()
    for place, tools in enumerate(table.values()):
        # blobmount's bars first in each group, then its peers.
        ordered = sorted(tools, key=lambda tool: (not tool.startswith("blobmount"), tool))
        for slot, tool in enumerate(ordered):
            family = _family(tool)
            x = place - 0.4 + width * (slot + 0.5)
            axes.bar(x, tools[tool], width, color=colours[family],
                     label=family if family not in shown else None)
            shown.add(family)
            axes.text(x, tools[tool], f"{tool}\n{tools[tool]:.2f}x", ha="center",
                      va="bottom", fontsize=6, rotation=90)
    axes.axhline(1.0, color="black", linewidth=0.8, linestyle="--")
    axes.set_xticks(range(len(table)), list(table), rotation=30, ha="right", fontsize=8)
    axes.set_ylabel("median time / best peer's (lower is better; 1 = the best peer)")
    axes.set_yscale("log")
    # Room above the highest bar for its label, and below the lowest.
    values = [value for tools in table.values() for value in tools.values()]
    axes.set_ylim(min(values) / 2, max(values) * 6)
    axes.set_title(title, fontsize=9)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    return True


def write_report(raw: dict, out: Path, source: Path) -> str:
    """results.md and results.png in `out` from a run's raw results (the content of
    `source`, its results.json); what to print."""
    results = Results(raw["times"], raw["notes"], raw.get("requests", {}))
    peer, where = raw.get("rclone", "no rclone"), raw.get("machine", "")
    load = raw.get("load", "load not recorded")
    counted = requests_table(results)
    report = f"{table(results)}\n\n{peer}; {where}; {load}" + (
        f"\n\nRequests to the account, per run:\n\n{counted}" if counted else "")
    (out / "results.md").write_text(report + "\n")
    has_chart = chart(results, out / "results.png",
                      f"blobmount and its peers, as a ratio to the best peer ({peer}; {where})")
    return report + (f"\n\nraw results: {source}"
                     + (f"; chart: {out / 'results.png'}" if has_chart else
                        "; no chart (pip install matplotlib)"))
