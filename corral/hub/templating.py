"""The hub's pages: Jinja2 with autoescaping (the panel's value filters, by import)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from starlette.responses import HTMLResponse

from corral.panel.templating import make_environment

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
        self.env = make_environment(directory)
        self.env.filters["points"] = points

    def html(self, name: str, code: int = 200, **context: Any) -> HTMLResponse:
        return HTMLResponse(self.env.get_template(name).render(context), status_code=code)
