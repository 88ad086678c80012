"""Log output: JSON lines with stream and request ids; secrets and images never written."""

from __future__ import annotations

import base64
import io
import json
import logging

import pytest

from stream_server.config import Settings
from stream_server.logs import build_handler, configure_logging, request_id_var


@pytest.fixture()
def json_log():
    out = io.StringIO()
    handler = build_handler(Settings(log_format="json"), stream=out)
    logger = logging.getLogger("stream_server.test_logs")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False

    def lines() -> list[dict]:
        return [json.loads(line) for line in out.getvalue().splitlines()]

    yield logger, out, lines
    logger.removeHandler(handler)
    logger.propagate = True


SECRETS = [
    ("[cam-1] connecting to %s", ("rtsp://admin:hunter2@10.1.2.3:554/live",), "hunter2"),
    ("[cam-1] connecting to %s", ("rtsps://viewer@cam.example:322/s",), "viewer@"),
    ("headers: %s", ({"Authorization": "Bearer tok-abc-123"},), "tok-abc-123"),
    ("raw headers %s", ([(b"authorization", b"Basic dXNlcjpwYXNz")],), "dXNlcjpwYXNz"),
    ("GET /ws/events?api_key=%s&type=x", ("k-very-secret",), "k-very-secret"),
    ("X-API-Key: %s", ("k-other-secret",), "k-other-secret"),
    ("settings: %s", ("Settings(api_keys=['key-one', 'key-two'], port=8000)",), "key-one"),
    ("env FACE_API_KEYS=%s", ("alpha,beta",), "alpha"),
    ("login with password=%s", ("pw-123",), "pw-123"),
]


@pytest.mark.parametrize(("fmt", "args", "secret"), SECRETS)
def test_credentials_are_masked(json_log, fmt, args, secret):
    logger, out, lines = json_log
    logger.warning(fmt, *args)
    assert secret not in out.getvalue()
    assert "***" in lines()[-1]["message"]


def test_camera_url_keeps_host_and_path_for_debugging(json_log):
    logger, _, lines = json_log
    logger.info("[cam-7] retrying %s", "rtsp://admin:pw@192.0.2.10:554/Streaming/101")
    msg = lines()[-1]["message"]
    assert msg == "[cam-7] retrying rtsp://***@192.0.2.10:554/Streaming/101"
    assert lines()[-1]["stream_id"] == "cam-7"


def test_tracebacks_are_masked_too(json_log):
    logger, out, lines = json_log
    try:
        raise ConnectionError("cannot open rtsp://root:s3cr3t@cam:554/x")
    except ConnectionError:
        logger.exception("[cam-2] open failed")
    assert "s3cr3t" not in out.getvalue()
    assert "rtsp://***@cam:554/x" in lines()[-1]["exc"]


def test_image_data_is_never_written(json_log):
    logger, out, _ = json_log
    jpeg = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 40 + b"\xff\xd9"
    b64 = base64.b64encode(jpeg).decode()
    logger.info("frame %s", jpeg)
    logger.info("upload data:image/jpeg;base64,%s end", b64)
    logger.info("blob %s", b64)
    text = out.getvalue()
    assert b64[:80] not in text
    assert "\\xff\\xd8\\xff\\xe0\\x00\\x01" not in text
    assert len(text) < 2000
    assert "elided" in text


def test_request_id_and_levels(json_log):
    logger, _, lines = json_log
    token = request_id_var.set("req-42")
    try:
        logger.debug("inside a request")
    finally:
        request_id_var.reset(token)
    logger.error("outside")
    first, second = lines()[-2:]
    assert first["request_id"] == "req-42" and first["level"] == "DEBUG"
    assert "request_id" not in second and second["level"] == "ERROR"


def test_log_level_and_format_come_from_settings(monkeypatch, capsys):
    monkeypatch.setenv("FACE_LOG_LEVEL", "warning")
    monkeypatch.setenv("FACE_LOG_FORMAT", "plain")
    settings = Settings()
    assert settings.log_level == "WARNING"
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        configure_logging(settings)
        log = logging.getLogger("stream_server.level_check")
        log.info("hidden line")
        log.warning("[s1] shown line for rtsp://u:p@h/x")
        err = capsys.readouterr().err
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
        for h in saved[0]:
            root.addHandler(h)
        root.setLevel(saved[1])
    assert "hidden line" not in err
    assert "WARNING stream_server.level_check: [s1] shown line for rtsp://***@h/x" in err
    monkeypatch.setenv("FACE_LOG_LEVEL", "chatty")
    with pytest.raises(ValueError):
        Settings()
