"""The hub's pages: Jinja2 with autoescaping (the panel's value filters, by import)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.responses import HTMLResponse

from corral import __version__
from corral.panel.templating import format_bytes, format_duration, format_when

TEMPLATES = Path(__file__).with_name("templates")
CHART_WIDTH = 600
CHART_HEIGHT = 120


def points(series: list[list[float]]) -> str:
    """An SVG polyline's points for [[time, value], ...], scaled to the chart's box
    (drawn server-side: no script and no inline style, as the CSP wants)."""
    if len(series) < 2:
        return ""
    t0, t1 = series[0][0], series[-1][0]
    top = max(v for _, v in series) or 1.0
    span = (t1 - t0) or 1.0
    out = []
    for t, v in series:
        x = (t - t0) / span * CHART_WIDTH
        y = CHART_HEIGHT - (v / top) * (CHART_HEIGHT - 4) - 2
        out.append(f"{x:.1f},{y:.1f}")
    return " ".join(out)


class Templates:
    def __init__(self, directory: Path = TEMPLATES) -> None:
        self.env = Environment(
            loader=FileSystemLoader(str(directory)),
            autoescape=select_autoescape(("html",), default=True),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters["when"] = format_when
        self.env.filters["bytes"] = format_bytes
        self.env.filters["duration"] = format_duration
        self.env.filters["points"] = points
        self.env.globals["version"] = __version__

    def html(self, name: str, code: int = 200, **context: Any) -> HTMLResponse:
        return HTMLResponse(self.env.get_template(name).render(context), status_code=code)
