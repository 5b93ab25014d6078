"""`/api/dashboard`: the inventory answer drawn as one self-contained HTML page. Pure: answer in, HTML out.

No script, font, stylesheet or image is fetched (locked-down networks; the Content-Security-Policy
forbids it too): charts are inline SVG, filters are a plain GET form. Every value a log carries is
escaped, its invisible characters (bidi overrides included) shown as code points. No link or form carries
a function key: a key in a URL ends up in browser history, proxies and shared screenshots. Operators sign
in with Entra ID (`shared.caller`); with function keys the page is for a quick look, and each link asks
for the key again. The footer names the release.
"""

from __future__ import annotations

import unicodedata
from html import escape
from typing import Any
from urllib.parse import quote, urlencode

import azure.functions as func

from shared import __version__
from shared.detect.inventory_aggregates import TENANT

SERIES = (("deletes", "Deletes", "#c0392b"), ("errors", "Errors / critical", "#e67e22"),
          ("signin_failures", "Sign-in failures", "#5b4fc4"), ("alerts", "Alerts", "#1e8449"))
CARDS = (("events", "Events"), *((name, label) for name, label, _ in SERIES))
PANELS = (("resource_type", "Top resource types"), ("resource_group", "Top resource groups"),
          ("region", "Top regions"), ("actor", "Top callers"), ("operation", "Top operations"),
          ("source", "Events by source"))
CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'; base-uri 'none'; "
       "frame-ancestors 'none'")
WIDTH, HEIGHT, PAD = 760, 260, 40
_INVISIBLE = frozenset({"Cc", "Cf", "Zl", "Zp", "Co", "Cs", "Cn"})  # Unicode categories shown as code points

STYLE = """
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;background:#f4f6f8;color:#1d2733}
header{background:#14213d;color:#fff;padding:14px 24px}header h1{margin:0;font-size:20px}
header p{margin:4px 0 0;opacity:.8}form{display:flex;gap:12px;flex-wrap:wrap;align-items:end;padding:12px 24px;
background:#fff;border-bottom:1px solid #dde3ea}label{display:flex;flex-direction:column;font-size:12px;color:#55606e}
main{display:grid;grid-template-columns:repeat(auto-fill,minmax(360px,1fr));gap:16px;padding:16px 24px}
section{background:#fff;border:1px solid #dde3ea;border-radius:6px;padding:12px 16px}
section.wide{grid-column:1/-1}h2{font-size:15px;margin:0 0 8px}table{width:100%;border-collapse:collapse}
td,th{padding:3px 6px;text-align:left;border-bottom:1px solid #eef1f4;vertical-align:top}
td.count,th.count{text-align:right;font-variant-numeric:tabular-nums}td.value{overflow-wrap:anywhere}
dl{display:flex;gap:12px;margin:0;flex-wrap:wrap}dl div{flex:1;min-width:120px;border-left:4px solid var(--c);
padding:4px 10px}dt{font-size:12px;color:#55606e}dd{margin:0;font-size:24px;font-weight:600}
.legend span{margin-right:14px}.legend i{display:inline-block;width:10px;height:10px;margin-right:4px}
td.nowrap{white-space:nowrap}.sev-critical,.sev-high{color:#c0392b;font-weight:600}.sev-medium{color:#e67e22}.empty{color:#8a94a0}
"""


def render_dashboard(answer: dict[str, Any]) -> str:
    """The page for one `inventory_answer`."""
    names = {item["id"]: item["name"] for item in answer["catalog"]}
    scope = "all subscriptions" if answer["subscription"] is None else \
        _subscription_name(answer["subscription"], names)
    cards = "".join(f'<div style="--c:{_color(name)}"><dt>{label}</dt>'
                    f'<dd data-name="{name}">{answer["totals"][name]}</dd></div>' for name, label in CARDS)
    panels = [_top("subscriptions", "Top subscriptions",
                   [(item["name"], item["events"]) for item in answer["subscriptions"]])]
    panels += [_top(name, title, [(item["value"], item["events"]) for item in answer["top"][name]])
               for name, title in PANELS]
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Stormwatch — inventory</title>'
            f'<meta name="viewport" content="width=device-width,initial-scale=1"><style>{STYLE}</style></head><body>'
            f'<header><h1>Stormwatch — know your environment</h1><p>{_text(scope)}, '
            f'{answer["from"]} to {answer["to"]} (UTC days)</p></header>{_form(answer, names)}<main>'
            f'<section class="wide" id="totals"><h2>Totals</h2><dl>{cards}</dl></section>'
            f'<section class="wide" id="trend-panel"><h2>Trend per day</h2>{_trend(answer["days"])}</section>'
            f'{_alerts(answer["latest_alerts"])}{_failed(answer.get("failed_deliveries", []))}'
            f'{"".join(panels)}</main>'
            f'<footer>Stormwatch {__version__}</footer></body></html>')


def _text(value: str) -> str:
    """A value from a log, safe to show: HTML-escaped, and every control or format character (bidi
    overrides such as U+202E, zero-width joiners, newlines) shown as its code point, so a caller named
    `admin\u202e<reversed>` cannot pass for someone else."""
    shown = "".join(f"[U+{ord(char):04X}]" if unicodedata.category(char) in _INVISIBLE else char for char in value)
    return escape(shown)


def html_response(page: str) -> func.HttpResponse:
    return func.HttpResponse(page, status_code=200, mimetype="text/html", charset="utf-8",
                             headers={"Content-Security-Policy": CSP, "Referrer-Policy": "no-referrer",
                                      "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"})


def _color(name: str) -> str:
    return next((color for series, _, color in SERIES if series == name), "#14213d")


def _subscription_name(subscription: str, names: dict[str, str]) -> str:
    return "Entra ID tenant" if subscription == TENANT else names.get(subscription, subscription)


def _form(answer: dict[str, Any], names: dict[str, str]) -> str:
    choices = [("", "All subscriptions"), *names.items(), (TENANT, "Entra ID tenant")]
    chosen = answer["subscription"] or ""
    options = "".join(f'<option value="{escape(value)}"{" selected" if value == chosen else ""}>'
                      f"{_text(label)}</option>" for value, label in choices)
    return (f'<form method="get"><label>Subscription<select name="subscription">{options}</select></label>'
            f'<label>From<input type="date" name="from" value="{answer["from"]}"></label>'
            f'<label>To<input type="date" name="to" value="{answer["to"]}"></label>'
            f'<button type="submit">Show</button></form>')


def _trend(days: list[dict[str, Any]]) -> str:
    """One polyline per series over the days; each point carries its day and value in a tooltip."""
    peak: int = max([1, *(day[name] for day in days for name, _, _ in SERIES)])
    step = (WIDTH - 2 * PAD) / max(1, len(days) - 1)

    def x(index: int) -> float:
        return round(PAD + index * step, 1)

    def y(value: int) -> float:
        return round(HEIGHT - PAD - value * (HEIGHT - 2 * PAD) / peak, 1)

    grid = "".join(f'<line x1="{PAD}" x2="{WIDTH - PAD}" y1="{y(tick)}" y2="{y(tick)}" stroke="#e3e8ee"/>'
                   f'<text x="{PAD - 6}" y="{y(tick) + 4}" text-anchor="end" font-size="11">{tick}</text>'
                   for tick in sorted({0, peak // 2, peak}))
    labels = "".join(f'<text x="{x(index)}" y="{HEIGHT - PAD + 16}" text-anchor="middle" font-size="11">'
                     f'{day["day"][5:]}</text>' for index, day in enumerate(days)
                     if index % max(1, len(days) // 8) == 0 or index == len(days) - 1)
    lines = []
    for name, label, color in SERIES:
        points = " ".join(f"{x(index)},{y(day[name])}" for index, day in enumerate(days))
        dots = "".join(f'<circle cx="{x(index)}" cy="{y(day[name])}" r="3" fill="{color}">'
                       f'<title>{day["day"]}: {day[name]} {label.lower()}</title></circle>'
                       for index, day in enumerate(days) if day[name])
        lines.append(f'<g class="series" data-series="{name}" data-total="{sum(day[name] for day in days)}">'
                     f'<polyline points="{points}" fill="none" stroke="{color}" stroke-width="2"/>{dots}</g>')
    legend = "".join(f'<span><i style="background:{color}"></i>{label}</span>' for _, label, color in SERIES)
    return (f'<svg id="trend" viewBox="0 0 {WIDTH} {HEIGHT}" width="100%" role="img" '
            f'aria-label="Deletes, errors, sign-in failures and alerts per day">{grid}{labels}{"".join(lines)}</svg>'
            f'<div class="legend">{legend}</div>')


def _top(name: str, title: str, rows: list[tuple[str, int]]) -> str:
    """A Top-X table with a bar per row scaled to the largest count."""
    largest = max([1, *(count for _, count in rows)])
    body = "".join(f'<tr><td class="value">{_text(value)}</td><td><svg width="90" height="10" role="img" '
                   f'aria-label="{count}"><rect width="{round(90 * count / largest, 1)}" height="10" '
                   f'fill="#3d6fb6"/></svg></td><td class="count">{count}</td></tr>' for value, count in rows)
    empty = '<tr><td class="empty" colspan="3">no events in this range</td></tr>'
    return (f'<section class="top" id="top-{name}"><h2>{title}</h2><table><tr><th>value</th><th></th>'
            f'<th class="count">events</th></tr>{body or empty}</table></section>')


def _alerts(alerts: list[dict[str, Any]]) -> str:
    rows = "".join(
        f'<tr><td class="nowrap">{_text(alert["time"][:16].replace("T", " "))}</td>'
        f'<td class="nowrap sev-{_text(alert["severity"])}">{_text(alert["severity"])}</td>'
        f'<td>{_text(alert["rule_id"])}</td><td>{_text(alert["subscription_name"])}</td>'
        f'<td>{_text(alert["summary"])}</td><td>{_links(alert)}</td><td class="nowrap">{_status(alert)}</td></tr>'
        for alert in alerts)
    empty = '<tr><td class="empty" colspan="7">no alerts in this range</td></tr>'
    return (f'<section class="wide" id="alerts"><h2>Latest alerts</h2><table><tr><th>time (UTC)</th>'
            f'<th>severity</th><th>rule</th><th>subscription</th><th>summary</th><th>enrichment</th>'
            f"<th>status</th></tr>{rows or empty}</table></section>")


def _status(alert: dict[str, Any]) -> str:
    """`acknowledged (erin@…)`: the lifecycle status (`python -m shared alerts`, /api/alerts/{id}/status)."""
    status = _text(str(alert.get("status") or "new").replace("_", " "))
    owner = alert.get("owner")
    return f"{status} ({_text(owner)})" if owner else status


def _failed(deliveries: list[dict[str, Any]]) -> str:
    """Deliveries that gave up: retried by hand with `python -m shared alerts retry ID`."""
    rows = "".join(
        f'<tr><td class="nowrap">{_text(row["updated_at"][:16].replace("T", " "))}</td>'
        f'<td class="nowrap">{_text(row["alert_id"])}</td><td>{_text(row["route"])}</td>'
        f'<td>{_text(row["destination"])}</td><td class="count">{row["attempts"]}</td>'
        f'<td>{_text(row.get("last_error") or "")}</td></tr>' for row in deliveries)
    empty = '<tr><td class="empty" colspan="6">no failed deliveries</td></tr>'
    return (f'<section class="wide" id="failed-deliveries"><h2>Failed deliveries</h2><table><tr>'
            f'<th>last attempt (UTC)</th><th>alert</th><th>route</th><th>destination</th>'
            f'<th class="count">attempts</th><th>last error</th></tr>{rows or empty}</table></section>')


def _links(alert: dict[str, Any]) -> str:
    """Relative links into enrich_fn (same route prefix): the Defender alert, resource, address, operation."""
    resource = alert.get("resource_id") or ""  # enrich_fn looks up ARM resources only, not tenant objects
    targets: list[tuple[str, str | None, str, dict[str, str]]] = [
        ("Defender alert", alert.get("defender_alert"), "enrich/alert", {"id": alert.get("defender_alert") or ""}),
        ("resource", resource if resource.lower().startswith("/subscriptions/") else None, "enrich/resource",
         {"id": resource}),
        ("IP", alert.get("source_ip"), f"enrich/ip/{quote(alert.get('source_ip') or '', safe='')}", {}),
        ("operation", alert.get("operation"), f"enrich/operation/{quote(alert.get('operation') or '')}", {}),
    ]
    return " · ".join(f'<a href="{escape(_href(path, query))}">{label}</a>'
                      for label, value, path, query in targets if value)


def _href(path: str, query: dict[str, str]) -> str:
    return f"{path}?{urlencode(query)}" if query else path
