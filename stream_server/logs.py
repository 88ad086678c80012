"""Logging setup: plain or JSON lines, with stream and request ids when known.

Every record passes through ``RedactingFilter`` before it is written: camera
credentials in URLs (``rtsp://user:pass@host``), ``Authorization`` values, API
keys, tokens and passwords are masked, and image data (data URIs, long base64
runs, long bytes reprs) is never written out, whatever the code logged.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
import time

from .config import Settings

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "request_id", default=None
)

MASK = "***"
MAX_MESSAGE_CHARS = 16_384

# scheme://user:password@host  ->  scheme://***@host   (user alone is masked too)
_URL_USERINFO = re.compile(r"\b([a-zA-Z][a-zA-Z0-9+.\-]{1,15}://)[^/\s@\"'<>]+@")
# Authorization / API keys / tokens / passwords, in the forms they show up in logs:
#   Authorization: Bearer xyz   {"authorization": "Basic xyz"}   (b'authorization', b'Bearer x')
#   api_key=xyz&...             X-API-Key: xyz                   FACE_API_KEYS=a,b
_SECRET_KEY = (
    r"(?:proxy-)?authorization|(?:x-)?api[_-]?keys?|access[_-]?token|token|password|passwd|secret"
)
_AUTH_SCHEME = r"(?:(?:bearer|basic|digest|token)\s+)?"
_QUOTED_SECRET = re.compile(
    rf"""(?i)(?<![A-Za-z0-9])((?:{_SECRET_KEY})['"]?\s*[:=,]\s*b?(['"]){_AUTH_SCHEME})[^'"]*(\2)"""
)
_LIST_SECRET = re.compile(
    rf"""(?i)(?<![A-Za-z0-9])((?:{_SECRET_KEY})['"]?\s*[:=]\s*)[\[(][^\])]*[\])]"""
)
_BARE_SECRET = re.compile(
    rf"""(?i)(?<![A-Za-z0-9])((?:{_SECRET_KEY})\s*[:=]\s*{_AUTH_SCHEME})[^\s;&}}'"]+"""
)
_DATA_URI = re.compile(r"data:(image/[\w.+\-]+)?;base64,[A-Za-z0-9+/=]+")
_BASE64_RUN = re.compile(r"[A-Za-z0-9+/]{256,}={0,2}")
_BYTES_REPR = re.compile(r"""b'(?:[^'\\]|\\.){200,}(?:'|$)|b"(?:[^"\\]|\\.){200,}(?:"|$)""")
_STREAM_PREFIX = re.compile(r"^\[([^\]\s]{1,200})\]\s")


def redact(text: str) -> str:
    """Mask credentials and drop image data from one log text."""
    if len(text) > MAX_MESSAGE_CHARS:
        text = f"{text[:MAX_MESSAGE_CHARS]}... <{len(text) - MAX_MESSAGE_CHARS} chars cut>"
    text = _URL_USERINFO.sub(lambda m: f"{m.group(1)}{MASK}@", text)
    text = _LIST_SECRET.sub(lambda m: f"{m.group(1)}{MASK}", text)
    text = _QUOTED_SECRET.sub(lambda m: f"{m.group(1)}{MASK}{m.group(3)}", text)
    text = _BARE_SECRET.sub(lambda m: f"{m.group(1)}{MASK}", text)
    text = _DATA_URI.sub(
        lambda m: f"data:{m.group(1) or ''};base64,<{len(m.group(0))} chars elided>", text
    )
    text = _BYTES_REPR.sub(lambda m: f"<bytes repr of {len(m.group(0))} chars elided>", text)
    text = _BASE64_RUN.sub(lambda m: f"<base64 of {len(m.group(0))} chars elided>", text)
    return text


class RedactingFilter(logging.Filter):
    """Rewrites a record's message (and traceback) with secrets masked.

    Installed on the service's handler, so it also covers the records of
    libraries (uvicorn, aiortc, PyAV) that propagate to the root logger.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: keep what can be shown
            message = f"{record.msg!r} % {record.args!r}"
        record.msg = redact(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


class _ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id_var.get()
        if not getattr(record, "stream_id", None):
            # The service's convention: messages about a stream start with "[<stream id>] ".
            match = _STREAM_PREFIX.match(record.getMessage())
            if match:
                record.stream_id = match.group(1)
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data = {
            "ts": round(record.created, 3),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in ("request_id", "stream_id"):
            value = getattr(record, key, None)
            if value:
                data[key] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            data["exc"] = record.exc_text
        return json.dumps(data, ensure_ascii=False)


class PlainFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        rid = getattr(record, "request_id", None)
        return f"{text} [req={rid}]" if rid else text


def build_handler(settings: Settings, stream=None) -> logging.Handler:
    """The service's log handler: the chosen format, context ids, secrets masked."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if settings.log_format == "json" else PlainFormatter())
    handler.addFilter(RedactingFilter())  # first: the filters after it see the masked text
    handler.addFilter(_ContextFilter())
    return handler


def configure_logging(settings: Settings) -> None:
    handler = build_handler(settings)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.log_level.upper())
    for noisy in ("aioice", "aiortc", "asyncio", "urllib3"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
