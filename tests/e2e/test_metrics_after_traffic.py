"""Check 3 of the operations issue: after real traffic, /metrics shows every metric
the service promises, with sensible values; and the Grafana dashboard queries only
metrics (and labels) that the service really exports.

Traffic: a real uvicorn server with the enrolled service; the test clip fed into a
live stream (the path WebSocket/WebRTC ingest and replays use) at twice its frame
rate; an event subscriber on /ws/events; HTTP requests to real and unknown paths,
some carrying credentials that must never reach the logs.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import time
from fractions import Fraction
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.sync.client import connect as ws_connect

from stream_server import metrics
from stream_server.api.observability import UNMATCHED
from stream_server.app import create_app
from stream_server.ingest.video import iter_video_frames
from stream_server.logs import build_handler
from stream_server.types import Frame
from tests.live_server import LiveServer

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "deploy" / "grafana" / "stream-server-dashboard.json"
STREAM = "ops-metrics-clip"
SECRET_KEY = "sk-ops-test-7f3a9"
FEED_FPS = 60.0


def parse(text: str) -> dict[str, list[tuple[dict, float]]]:
    """sample name -> [(labels, value)]"""
    out: dict[str, list[tuple[dict, float]]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append((dict(s.labels), s.value))
    return out


def value(samples, name: str, **labels) -> float:
    found = [
        v for lab, v in samples.get(name, []) if all(lab.get(k) == x for k, x in labels.items())
    ]
    assert found, f"{name}{labels} is not exported"
    return sum(found)


def feed_clip(stream, clip: Path, fps: float) -> int:
    """Push the clip's frames into the stream, paced at ``fps`` (a live source)."""
    sent = 0
    start = time.monotonic()
    for seq, (image, pts, time_base) in enumerate(iter_video_frames(str(clip))):
        delay = start + seq / fps - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        frame = Frame(
            STREAM,
            stream.next_seq(),
            image,
            pts=None if pts is None else int(pts * time_base * 90000),
            time_base=Fraction(1, 90000),
        )
        stream.put(frame)
        sent += 1
    return sent


@pytest.fixture(scope="module")
def traffic(enrolled_service, settings_factory, media_dir):
    """Run the traffic once; hand the tests the scrapes and what was observed."""
    settings = settings_factory(log_level="DEBUG")
    app = create_app(settings, service=enrolled_service)
    log_out = io.StringIO()
    handler = build_handler(settings.model_copy(update={"log_format": "json"}), stream=log_out)
    root = logging.getLogger()
    root.addHandler(handler)
    old_level = root.level
    root.setLevel(logging.DEBUG)
    result: dict = {}
    try:
        with LiveServer(app) as server, httpx.Client(base_url=server.url, timeout=10) as http:
            auth = {"Authorization": f"Bearer {SECRET_KEY}"}
            for _ in range(5):
                assert http.get("/health", headers=auth).status_code == 200
            assert http.get("/ready").status_code == 200
            for i in range(7):
                assert (
                    http.get(
                        f"/definitely/not/here/{i}", params={"api_key": SECRET_KEY}
                    ).status_code
                    == 404
                )
            assert http.post("/health").status_code == 405

            events: list[dict] = []
            with ws_connect(
                f"{server.ws_url}/ws/events?stream_id={STREAM}",
                additional_headers={"X-Request-ID": "ops-ws-1"},
            ) as ws:
                assert json.loads(ws.recv(timeout=10))["type"] == "subscribed"
                result["during_ws"] = parse(http.get("/metrics").text)

                stream = server.run(app.state.streams.open(STREAM, "full", kind="websocket"))
                result["sent"] = feed_clip(stream, media_dir / "short_hamilton_clip.mp4", FEED_FPS)

                async def settled() -> None:
                    # Everything sent is either processed or counted as dropped; embeds done.
                    deadline = time.monotonic() + 60
                    while time.monotonic() < deadline:
                        slot = stream.slot
                        done = stream.stats.frames + slot.dropped
                        if done >= slot.received and not stream.runner._pending:
                            return
                        await asyncio.sleep(0.05)
                    raise TimeoutError("stream did not settle")

                server.run(settled())
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline and not any(
                    e.get("type") == "face.matched" for e in events
                ):
                    try:
                        events.append(json.loads(ws.recv(timeout=0.5)))
                    except TimeoutError:
                        continue
                result["open"] = parse(http.get("/metrics").text)
                result["stats"] = {
                    "frames": stream.stats.frames,
                    "received": stream.slot.received,
                    "dropped": stream.slot.dropped,
                }
                server.run(app.state.streams.close(STREAM))
            result["events"] = events
            time.sleep(0.3)  # the server notices the socket closing
            result["after"] = parse(http.get("/metrics").text)
            result["after_text"] = http.get("/metrics").text
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    result["logs"] = log_out.getvalue()
    return result


@pytest.mark.real
def test_request_metrics_after_traffic(traffic):
    m = traffic["open"]
    assert value(m, "face_api_requests_total", method="GET", endpoint="/health", status="200") >= 5
    assert value(m, "face_api_requests_total", method="GET", endpoint="/ready", status="200") >= 1
    assert value(m, "face_api_requests_total", method="POST", endpoint="/health", status="405") >= 1
    assert value(m, "face_api_requests_total", method="GET", endpoint=UNMATCHED, status="404") >= 7
    assert value(m, "face_api_requests_total", method="GET", endpoint="/metrics", status="200") >= 1
    count = value(m, "face_api_request_duration_seconds_count", method="GET", endpoint="/health")
    total = value(m, "face_api_request_duration_seconds_sum", method="GET", endpoint="/health")
    assert count >= 5 and 0 < total / count < 1.0
    # Bounded labels: route templates only, no raw path, no identity names anywhere.
    endpoints = {lab["endpoint"] for lab, _ in m["face_api_requests_total"]}
    assert not any("not/here" in e for e in endpoints), endpoints
    text = traffic["after_text"]
    for name in ("lin_manuel_miranda", "alex_lacamoire", "obama"):
        assert name not in text


def test_connection_gauges(traffic):
    during = traffic["during_ws"]
    # The scrape itself is the one HTTP request in flight; the subscriber is one socket.
    assert value(during, "face_api_active_connections", kind="http") == 1
    assert value(during, "face_api_active_connections", kind="websocket") == 1
    assert value(during, "face_api_active_connections", kind="webrtc") == 0
    assert value(during, "face_event_subscribers") == 1
    after = traffic["after"]
    assert value(after, "face_api_active_connections", kind="websocket") == 0
    assert value(after, "face_event_subscribers") == 0
    assert (
        value(
            after,
            "face_api_requests_total",
            method="WEBSOCKET",
            endpoint="/ws/events",
            status="101",
        )
        >= 1
    )


def test_stream_metrics_after_traffic(traffic):
    m, stats = traffic["open"], traffic["stats"]
    received = value(m, "face_frames_received_total", stream=STREAM)
    processed = value(m, "face_frames_processed_total", stream=STREAM)
    dropped = value(m, "face_frames_dropped_total", stream=STREAM)
    assert received == traffic["sent"] == stats["received"] == 275
    assert processed == stats["frames"] and dropped == stats["dropped"]
    print(f"{STREAM}: received={received:.0f} processed={processed:.0f} dropped={dropped:.0f}")
    assert processed + dropped == received
    assert processed >= 100, "the pipeline processed too few frames to be live"
    assert value(m, "face_stream_state", stream=STREAM, state="live") == 1
    for state in ("connecting", "retrying", "stopped"):
        assert value(m, "face_stream_state", stream=STREAM, state=state) == 0
    assert value(m, "face_stream_reconnects_total", stream=STREAM) == 0
    assert value(m, "face_active_tracks", stream=STREAM) >= 0
    # A closed stream's series are gone: stream labels stay bounded.
    after = traffic["after"]
    for name in ("face_frames_received_total", "face_stream_state", "face_active_tracks"):
        assert not [lab for lab, _ in after.get(name, []) if lab.get("stream") == STREAM]


def test_pipeline_latency_and_pool_metrics(traffic):
    m = traffic["open"]
    processed = value(m, "face_frames_processed_total", stream=STREAM)
    detect_n = value(m, "face_stage_duration_seconds_count", stage="detect")
    assert detect_n >= processed
    for stage in ("detect", "embed_batch", "match"):
        n = value(m, "face_stage_duration_seconds_count", stage=stage)
        s = value(m, "face_stage_duration_seconds_sum", stage=stage)
        assert n > 0 and 0 < s / n < 1.0, (stage, n, s)
    batches = value(m, "face_embed_batch_size_count")
    crops = value(m, "face_embed_batch_size_sum")
    assert batches > 0 and 1 <= crops / batches <= 8  # embed_max_batch
    assert value(m, "face_embeddings_total") >= crops
    assert value(m, "face_embed_queue_depth") >= 0
    assert value(m, "face_embed_refused_total") >= 0
    n = value(m, "face_frame_to_event_seconds_count")
    s = value(m, "face_frame_to_event_seconds_sum")
    print(
        "detect mean "
        f"{value(m, 'face_stage_duration_seconds_sum', stage='detect') / detect_n:.4f}s;"
        f" batch mean {crops / batches:.2f}; frame-to-event mean {s / n:.4f}s over {n:.0f}"
    )
    assert n > 0 and 0 <= s / n < 2.0


def test_event_and_gallery_metrics(traffic, enrolled_service):
    m = traffic["open"]
    assert value(m, "face_events_total", type="track.started") >= 1
    assert value(m, "face_events_total", type="face.matched") >= 1
    matched = [e for e in traffic["events"] if e.get("type") == "face.matched"]
    assert matched and matched[0]["name"] == "lin_manuel_miranda"
    size = enrolled_service.gallery.index.size
    assert size == 6
    assert value(m, "face_gallery_identities") == size
    assert value(m, "face_gallery_templates") >= size
    assert value(m, "face_event_subscribers_dropped_total") >= 0


def test_logs_of_the_run_hold_ids_and_no_secrets(traffic):
    text = traffic["logs"]
    assert SECRET_KEY not in text
    lines = [json.loads(line) for line in text.splitlines()]
    access = [rec for rec in lines if rec["logger"] == "stream_server.access"]
    assert access and all(rec.get("request_id") for rec in access)
    ws_lines = [rec for rec in access if rec.get("request_id") == "ops-ws-1"]
    assert ws_lines and ws_lines[0]["message"].startswith("WS /ws/events 101")
    stream_lines = [rec for rec in lines if rec.get("stream_id") == STREAM]
    assert any("stream opened" in rec["message"] for rec in stream_lines)
    assert max(len(line) for line in text.splitlines()) < 20_000


# -- the Grafana dashboard ----------------------------------------------------------
_PROMQL_WORDS = {
    "sum", "max", "min", "avg", "count", "rate", "irate", "increase", "histogram_quantile",
    "clamp_min", "clamp_max", "by", "without", "on", "ignoring", "label_values", "and", "or",
    "unless", "le", "bool", "group_left", "group_right", "topk", "bottomk", "abs", "delta",
}  # fmt: skip


def dashboard_queries() -> list[tuple[str, str]]:
    dash = json.loads(DASHBOARD.read_text())
    out = []
    for panel in dash["panels"]:
        if panel["type"] == "row":
            continue
        assert panel.get("targets"), f"panel {panel['title']!r} queries nothing"
        for target in panel["targets"]:
            out.append((panel["title"], target["expr"]))
    for var in dash["templating"]["list"]:
        if var["type"] == "query":
            out.append((f"variable {var['name']}", var["query"]["query"]))
    return out


def test_every_dashboard_query_uses_exported_metrics_and_labels(traffic):
    exported = traffic["open"]
    label_sets: dict[str, set[str]] = {}
    for name, samples in exported.items():
        label_sets[name] = set().union(*(set(lab) for lab, _ in samples)) if samples else set()
    queries = dashboard_queries()
    assert len(queries) >= 20
    used: set[str] = set()
    for title, expr in queries:
        names = re.findall(r"\b(face_[a-z0-9_]+)\b", expr)
        assert names, f"{title}: {expr} queries no service metric"
        for name in names:
            assert name in exported, f"{title}: {name} is not exported by the service"
            used.add(name)
        # Labels in selectors must exist on that metric.
        for name, matchers in re.findall(r"\b(face_[a-z0-9_]+)\{([^}]*)\}", expr):
            for label in re.findall(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)", matchers):
                assert label in label_sets[name], f"{title}: {name} has no label {label}"
        # Labels in by (...) must exist on a metric of the expression (or be the bucket bound).
        available = set().union(*(label_sets[n] for n in names)) | {"le"}
        for group in re.findall(r"\bby\s*\(([^)]*)\)", expr):
            for label in (g.strip() for g in group.split(",") if g.strip()):
                assert label in available, f"{title}: no metric in {expr!r} has label {label}"
        for word in re.findall(r"\b([a-z_]+)\s*\(", expr):
            assert word in _PROMQL_WORDS, f"{title}: unexpected function {word}"
    # Every family the issue names has a panel.
    families = {
        "face_api_requests_total", "face_api_request_duration_seconds_bucket",
        "face_api_active_connections", "face_frames_received_total",
        "face_frames_processed_total", "face_frames_dropped_total",
        "face_stage_duration_seconds_bucket", "face_embed_batch_size_sum",
        "face_embed_queue_depth", "face_frame_to_event_seconds_bucket", "face_events_total",
        "face_event_subscribers", "face_gallery_identities", "face_stream_state",
        "face_stream_reconnects_total",
    }  # fmt: skip
    assert families <= used, families - used


def test_dashboard_metric_names_are_in_metrics_module():
    """Without models or traffic: a metric renamed in metrics.py breaks this at once."""
    exported_bases = {
        m._name for m in vars(metrics).values() if hasattr(m, "_name") and hasattr(m, "collect")
    }
    for _, expr in dashboard_queries():
        for name in re.findall(r"\b(face_[a-z0-9_]+)\b", expr):
            base = re.sub(r"_(bucket|sum|count|total)$", "", name)
            assert base in exported_bases or name in exported_bases, name
