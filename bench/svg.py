"""Tiny SVG charts for the report (no plotting library needed): grouped horizontal bars and lines."""

from __future__ import annotations

import math
from html import escape

COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"]


def _fmt(v: float) -> str:
    return f"{v:,.0f}" if v >= 100 else f"{v:,.1f}" if v >= 10 else f"{v:,.2f}"


def bars(title: str, groups: list[tuple[str, list[tuple[str, float | None]]]], unit: str, log: bool = False) -> str:
    """groups: [(group label, [(series, value or None), ...]), ...] -> SVG text."""
    series = []
    for _, items in groups:
        for s, _ in items:
            if s not in series:
                series.append(s)
    vals = [v for _, items in groups for _, v in items if v]
    vmax = max(vals) if vals else 1.0
    vmin = min(vals) if vals else 1.0
    left, width, bar_h, gap = 150, 430, 16, 12
    rows = sum(len(items) for _, items in groups)
    height = 50 + rows * bar_h + len(groups) * gap + 20 * math.ceil(len(series) / 3)

    def x(v: float) -> float:
        if log:
            lo = math.log10(vmin) - 0.3
            return width * (math.log10(v) - lo) / (math.log10(vmax) - lo)
        return width * v / vmax

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 90}" height="{height}" '
           f'font-family="sans-serif" font-size="11">',
           f'<rect width="100%" height="100%" fill="white"/>',
           f'<text x="8" y="18" font-size="13" font-weight="bold">{escape(title)}</text>']
    y = 34
    for label, items in groups:
        out.append(f'<text x="{left - 6}" y="{y + bar_h * len(items) / 2 + 4}" text-anchor="end">{escape(label)}</text>')
        for s, v in items:
            c = COLORS[series.index(s) % len(COLORS)]
            if v:
                w = max(x(v), 1)
                out.append(f'<rect x="{left}" y="{y}" width="{w:.1f}" height="{bar_h - 2}" fill="{c}"/>')
                out.append(f'<text x="{left + w + 4:.1f}" y="{y + bar_h - 5}">{_fmt(v)} {escape(unit)}</text>')
            else:
                out.append(f'<text x="{left + 4}" y="{y + bar_h - 5}" fill="#888">{escape(s)}: not measured</text>')
            y += bar_h
        y += gap
    for i, s in enumerate(series):
        lx, ly = 8 + (i % 3) * 210, y + 12 + 20 * (i // 3)
        out.append(f'<rect x="{lx}" y="{ly - 9}" width="10" height="10" fill="{COLORS[i % len(COLORS)]}"/>')
        out.append(f'<text x="{lx + 14}" y="{ly}">{escape(s)}</text>')
    if log:
        out.append(f'<text x="{left + width}" y="{height - 4}" text-anchor="end" fill="#666">log scale</text>')
    out.append("</svg>")
    return "\n".join(out)


def lines(title: str, xs: list[float], series: list[tuple[str, list[float | None]]], xlabel: str, ylabel: str) -> str:
    """Line chart over a log2 x axis (context lengths)."""
    left, top, w, h = 60, 30, 420, 220
    vals = [v for _, ys in series for v in ys if v is not None]
    ymax = (max(vals) if vals else 1) * 1.15
    lx = [math.log2(v) for v in xs]
    x0, x1 = min(lx), max(lx) if max(lx) > min(lx) else min(lx) + 1

    def px(v):
        return left + w * (math.log2(v) - x0) / (x1 - x0)

    def py(v):
        return top + h - h * v / ymax

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + w + 170}" height="{top + h + 50}" '
           f'font-family="sans-serif" font-size="11">', '<rect width="100%" height="100%" fill="white"/>',
           f'<text x="8" y="18" font-size="13" font-weight="bold">{escape(title)}</text>',
           f'<line x1="{left}" y1="{top + h}" x2="{left + w}" y2="{top + h}" stroke="black"/>',
           f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + h}" stroke="black"/>',
           f'<text x="{left + w / 2}" y="{top + h + 34}" text-anchor="middle">{escape(xlabel)}</text>',
           f'<text x="14" y="{top + h / 2}" transform="rotate(-90 14 {top + h / 2})" text-anchor="middle">{escape(ylabel)}</text>']
    for v in xs:
        out.append(f'<text x="{px(v):.1f}" y="{top + h + 15}" text-anchor="middle">{v:g}</text>')
    for i in range(5):
        v = ymax * i / 4
        out.append(f'<text x="{left - 4}" y="{py(v) + 4:.1f}" text-anchor="end">{_fmt(v)}</text>')
    for k, (name, ys) in enumerate(series):
        c = COLORS[k % len(COLORS)]
        pts = [(px(xv), py(yv)) for xv, yv in zip(xs, ys) if yv is not None]
        if len(pts) > 1:
            out.append(f'<polyline fill="none" stroke="{c}" stroke-width="2" points="{" ".join(f"{a:.1f},{b:.1f}" for a, b in pts)}"/>')
        for a, b in pts:
            out.append(f'<circle cx="{a:.1f}" cy="{b:.1f}" r="3" fill="{c}"/>')
        out.append(f'<rect x="{left + w + 12}" y="{top + 10 + 18 * k}" width="10" height="10" fill="{c}"/>')
        out.append(f'<text x="{left + w + 26}" y="{top + 19 + 18 * k}">{escape(name)}</text>')
    out.append("</svg>")
    return "\n".join(out)
