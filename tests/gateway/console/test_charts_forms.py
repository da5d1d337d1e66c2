"""The console's pure helpers: SVG charts, the form generated from a config_schema, the log
stream's level filter and window reading."""

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pentarun.errors import BadRequest
from pentarun.gateway.console import charts, forms
from pentarun.gateway.routes_live import level_filter, new_lines, passes
from pentarun.supervisor.telemetry import LogLine


def test_health_chart_draws_latency_and_marks_failures():
    points = [
        charts.HealthPoint(100.0, True, 2.0),
        charts.HealthPoint(110.0, False, None),
        charts.HealthPoint(120.0, True, 4.0),
    ]
    svg = str(charts.health_chart(points, label="h"))
    assert (
        svg.startswith('<svg class="chart" role="img"')
        and 'aria-labelledby="h-title h-desc"' in svg
    )
    assert '<title id="h-title">Health history</title>' in svg
    assert "3 health checks" in svg and "2 passed, 1 failed" in svg
    assert svg.count('class="chart-fail"') == 1 and svg.count('class="chart-ok"') == 2
    assert "<polyline" in svg and "style=" not in svg


def test_empty_charts_say_so():
    assert "No health checks yet" in charts.health_chart([])
    assert "No calls in the window" in charts.latency_chart([("p50", None)])


def test_latency_chart_bars_and_tier_limits_escape_their_text():
    svg = str(
        charts.latency_chart(
            [("p50", 120.0), ("p95", 480.0), ("<p99>", None)],
            [charts.Limit("platinum", 500.0), charts.Limit("gold", 1e9)],
        )
    )
    assert svg.count('class="chart-bar"') == 2 and "480 ms" in svg
    assert "platinum p95 limit" in svg and "gold p95 limit" not in svg  # off the scale
    assert "&lt;p99&gt;" in svg and "<p99>" not in svg


@given(st.floats(min_value=1e-6, max_value=1e9))
def test_the_scale_is_a_round_number_just_above_the_data(value):
    top = charts.nice_ceiling(value)
    assert value <= top <= value * 10 + 1e-9
    mantissa = top / 10 ** int(f"{top:e}".split("e")[1])
    assert round(mantissa, 6) in (1.0, 2.0, 2.5, 5.0, 10.0)


SCHEMA = {
    "type": "object",
    "required": ["host"],
    "properties": {
        "host": {"type": "string", "title": "Camera host", "description": "Where it is"},
        "password": {"type": "string", "writeOnly": True},
        "port": {"type": "integer", "minimum": 1, "maximum": 65535, "default": 554},
        "ratio": {"type": "number"},
        "on": {"type": "boolean"},
        "mode": {"type": "string", "enum": ["a", "b"]},
        "zones": {"type": "array", "items": {"type": "string"}},
        "extra": {"type": "array", "items": {"type": "object"}},
        "camera": {"type": "object", "properties": {"stream_url": {"type": "string"}}},
    },
}


def test_a_field_for_every_property_of_the_schema():
    config = {
        "host": "cam.lan",
        "on": True,
        "zones": ["door", "yard"],
        "camera": {"stream_url": "x"},
    }
    fields = {f.path: f for f in forms.config_fields(SCHEMA, config)}
    assert [f.kind for f in fields.values()] == [
        "text", "password", "integer", "number", "boolean", "select", "list", "json", "group",
    ]  # fmt: skip
    host = fields["host"]
    assert (host.label, host.required, host.value, host.description) == (
        "Camera host", True, "cam.lan", "Where it is",
    )  # fmt: skip
    assert fields["port"].value == "554" and fields["port"].maximum == 65535  # the default
    assert fields["on"].checked and fields["zones"].value == "door\nyard"
    assert fields["mode"].options == ("a", "b") and fields["mode"].value == ""
    [child] = fields["camera"].children
    assert (child.path, child.value, child.input_id) == (
        "camera.stream_url",
        "x",
        "config-camera-stream_url",
    )
    assert fields["port"].data_type == "int" and fields["zones"].data_type == "list"


def test_a_schema_without_properties_is_edited_as_json():
    assert forms.config_fields({"type": "object"}, {"a": 1}) == []


def test_log_levels():
    assert level_filter(None) == 0 and level_filter("") == 0
    assert level_filter("warning") == 30
    with pytest.raises(BadRequest):
        level_filter("LOUD")
    line = LogLine(0.0, "OUTPUT", "stdout", "print")
    assert passes(line, 20) and not passes(line, 30)


def test_new_lines_follow_the_window_by_identity():
    a, b, c = (LogLine(1.0, "INFO", "x", m) for m in "abc")
    assert new_lines([a, b], None) == ([a, b], False)
    assert new_lines([a, b, c], b) == ([c], False)
    assert new_lines([a, b], b) == ([], False)
    same_text = LogLine(1.0, "INFO", "x", "a")  # equal, but not the line already sent
    assert new_lines([b, c], same_text) == ([b, c], True)


def test_generated_markup_is_free_of_inline_style():
    markup = str(charts.latency_chart([("p50", 1.0)])) + str(charts.health_chart([]))
    assert not re.search(r"\sstyle=|<script", markup)
