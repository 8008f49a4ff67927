"""Inline SVG line charts over time with fault windows shaded and labelled. Plain SVG, no
script, no external reference: the report stays one self-contained file."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from raftmq.chaos.check_common import FaultWindow

__all__ = ["Series", "line_chart", "nice_ticks"]

_WIDTH, _HEIGHT = 960, 240
_LEFT, _RIGHT, _TOP, _BOTTOM = 64, 16, 28, 30
_FAULT_COLOR = "#d1495b"


@dataclass(frozen=True)
class Series:
    label: str
    color: str
    values: Sequence[float | None]  # one per time point; None leaves a gap


def nice_ticks(maximum: float, target_count: int = 5) -> list[float]:
    """Round tick values from 0 to at least `maximum`."""
    if maximum <= 0 or not math.isfinite(maximum):
        return [0.0, 1.0]
    raw_step = maximum / target_count
    magnitude = 10 ** math.floor(math.log10(raw_step))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw_step)
    return [step * i for i in range(math.ceil(maximum / step - 1e-9) + 1)]


@dataclass(frozen=True)
class _Frame:
    start_s: float
    end_s: float
    top_value: float

    def x(self, seconds: float) -> float:
        span = max(self.end_s - self.start_s, 1e-9)
        return _LEFT + (seconds - self.start_s) / span * (_WIDTH - _LEFT - _RIGHT)

    def y(self, value: float) -> float:
        return _HEIGHT - _BOTTOM - value / self.top_value * (_HEIGHT - _TOP - _BOTTOM)


def line_chart(title: str, unit: str, times_s: Sequence[float], series: Sequence[Series],
               windows: Sequence[FaultWindow], span_s: tuple[float, float]) -> str:
    values = [value for line in series for value in line.values if value is not None]
    ticks = nice_ticks(max(values, default=0.0))
    frame = _Frame(span_s[0], max(span_s[1], span_s[0] + 1e-3), ticks[-1])
    parts = [f'<svg class="chart" viewBox="0 0 {_WIDTH} {_HEIGHT}" role="img" aria-label="{escape(title)}">',
             f"<title>{escape(title)}</title>",
             f'<text x="{_LEFT}" y="16" class="chart-title">{escape(title)} ({escape(unit)})</text>']
    parts.extend(_y_axis(frame, ticks))
    parts.extend(_x_axis(frame))
    parts.extend(_fault_shading(frame, windows))
    for line in series:
        parts.extend(_polylines(frame, times_s, line))
    parts.extend(_legend(series))
    parts.append("</svg>")
    return "\n".join(parts)


def _y_axis(frame: _Frame, ticks: Sequence[float]) -> list[str]:
    parts = []
    for tick in ticks:
        y = frame.y(tick)
        parts.append(f'<line x1="{_LEFT}" y1="{y:.1f}" x2="{_WIDTH - _RIGHT}" y2="{y:.1f}" class="grid"/>')
        parts.append(f'<text x="{_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" class="tick">{tick:g}</text>')
    return parts


def _x_axis(frame: _Frame) -> list[str]:
    parts = []
    bottom = _HEIGHT - _BOTTOM
    span = frame.end_s - frame.start_s
    for tick in nice_ticks(span, 8):
        seconds = frame.start_s + tick
        if seconds > frame.end_s + 1e-9:
            break
        x = frame.x(seconds)
        parts.append(f'<line x1="{x:.1f}" y1="{bottom}" x2="{x:.1f}" y2="{bottom + 4}" class="axis"/>')
        parts.append(f'<text x="{x:.1f}" y="{bottom + 16}" text-anchor="middle" class="tick">'
                     f"{seconds:g} s</text>")
    parts.append(f'<line x1="{_LEFT}" y1="{bottom}" x2="{_WIDTH - _RIGHT}" y2="{bottom}" class="axis"/>')
    return parts


def _fault_shading(frame: _Frame, windows: Sequence[FaultWindow]) -> list[str]:
    parts = []
    for number, window in enumerate(windows):
        start_s = window.start_ms / 1000.0
        end_s = window.end_ms(frame.end_s * 1000.0) / 1000.0
        x0 = frame.x(max(start_s, frame.start_s))
        x1 = max(frame.x(min(end_s, frame.end_s)), x0 + 1.0)
        label = window.fault if not window.nodes else f"{window.fault} ({', '.join(window.nodes)})"
        stop = "never stopped" if window.stop_ms is None else f"{window.stop_ms / 1000.0:.1f} s"
        height = _HEIGHT - _TOP - _BOTTOM
        parts.append(f'<rect x="{x0:.1f}" y="{_TOP}" width="{x1 - x0:.1f}" height="{height}" '
                     f'fill="{_FAULT_COLOR}" fill-opacity="0.14" class="fault">'
                     f"<title>{escape(label)}: {start_s:.1f} s to {escape(stop)}</title></rect>")
        # Staggered so that labels of windows close together do not print over each other.
        label_y = _TOP + 10 + (number % 3) * 11
        parts.append(f'<text x="{x0 + 2:.1f}" y="{label_y}" class="fault-label">'
                     f"{escape(window.fault)}</text>")
    return parts


def _polylines(frame: _Frame, times_s: Sequence[float], line: Series) -> list[str]:
    """One polyline per run of known values (a None breaks the line)."""
    parts = []
    run: list[str] = []
    for seconds, value in zip(times_s, line.values, strict=True):
        if value is None:
            parts.extend(_polyline(run, line.color))
            run = []
            continue
        run.append(f"{frame.x(seconds):.1f},{frame.y(value):.1f}")
    parts.extend(_polyline(run, line.color))
    return parts


def _polyline(points: list[str], color: str) -> list[str]:
    if not points:
        return []
    if len(points) == 1:
        x, y = points[0].split(",")
        return [f'<circle cx="{x}" cy="{y}" r="1.8" fill="{escape(color)}"/>']
    return [f'<polyline points="{" ".join(points)}" fill="none" stroke="{escape(color)}" '
            'stroke-width="1.5"/>']


def _legend(series: Sequence[Series]) -> list[str]:
    parts = []
    x = _WIDTH - _RIGHT - 170 * len(series)
    for line in series:
        parts.append(f'<rect x="{x}" y="8" width="12" height="4" fill="{escape(line.color)}"/>')
        parts.append(f'<text x="{x + 16}" y="14" class="legend">{escape(line.label)}</text>')
        x += 170
    return parts
