"""IP cameras: a supervised PyAV decoder per camera, feeding a stream's latest-frame slot.

Each camera decodes in its own thread. The thread connects (RTSP over TCP or UDP,
or HTTP MJPEG / HLS, or a recording when ``file:`` is enabled), decodes the video
with low-latency options and puts every decoded picture into the stream's
``LatestFrameSlot``, so the pipeline always takes the newest one. A processing fps
cap drops frames before they reach the slot (counted).

The source is supervised, with explicit states:

``connecting``  the first connection attempt;
``live``        pictures are flowing;
``retrying``    the connection failed or was lost; reconnecting with capped
                exponential backoff (with jitter, reset after a stable connection);
``stopped``     stopped by its owner, or a recording reached its end.

A stall (no picture for ``stall_timeout_s`` though the connection stays open, or
no data at all) ends the connection and reconnects. PyAV's open/read timeouts
bound every blocking call, so a dead server cannot hold the thread; a watchdog
(``check_stuck``, called by the camera manager) replaces a thread that still
stops making progress. State changes are published as ``stream.status`` events
and mirrored in the ``face_stream_state`` / ``face_stream_reconnects_total``
metrics.

Credentials inside camera URLs never leave this module in clear: URLs are shown
masked (``rtsp://user:***@host/...``) and every error text is scrubbed.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import math
import random
import re
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from traceback import format_exc
from typing import Literal
from urllib.parse import unquote, urlsplit, urlunsplit

from .. import metrics
from ..events.schema import StreamStatus
from ..types import Frame

log = logging.getLogger(__name__)

CameraState = Literal["connecting", "live", "retrying", "stopped"]

NETWORK_SCHEMES = ("rtsp", "rtsps", "http", "https")
MAX_URL_LENGTH = 2048

# Demuxers whose input is live: decoded as fast as it comes. Anything else (HLS,
# recordings) is paced by its timestamps, so it behaves like a camera.
_LIVE_FORMATS = frozenset({"rtsp", "mpjpeg", "sdp", "rtp"})
# Demuxers whose timestamps are invented (MJPEG over HTTP counts frames at 25 fps):
# the arrival time is the media clock.
_WALLCLOCK_FORMATS = frozenset({"mpjpeg"})
_TB_90K = Fraction(1, 90000)
# A connection that stayed live this long resets the reconnect backoff.
_STABLE_S = 5.0
# Extra time the watchdog allows beyond a blocking call's own timeout.
_STUCK_GRACE_S = 5.0


# -- URLs: validation and masking ------------------------------------------------
class CameraUrlError(ValueError):
    """A camera URL that is refused (the message is safe to show: it is masked)."""


_SECRET_PARAMS = (
    "password|passwd|pass|pwd|token|access_token|auth|authorization|key|apikey|api_key|"
    "secret|signature|sig|credentials"
)
_QUERY_SECRET = re.compile(rf"(?i)([?&;](?:{_SECRET_PARAMS})=)[^&;#\s'\"]*")
# scheme://user:password@  (the password may itself contain '@' when not percent-encoded)
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)([^/\s:@'\"]*):([^\s/'\"]*)@")


def mask_url(url: str) -> str:
    """The URL with its password (and secret-looking query values) replaced by ``***``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return scrub_text(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user, has_password, _ = userinfo.partition(":")
        netloc = f"{user}:***@{hostport}" if has_password else f"{user}@{hostport}"
    query = _QUERY_SECRET.sub(r"\1***", "?" + parts.query)[1:] if parts.query else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def scrub_text(text: str, secrets: Iterable[str] = ()) -> str:
    """Remove credentials from free text (error messages, log lines)."""
    text = _USERINFO.sub(r"\1\2:***@", text)
    text = _QUERY_SECRET.sub(r"\1***", text)
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def url_secrets(url: str) -> list[str]:
    """What must never appear in clear: the URL's password and secret query values."""
    out: list[str] = []
    try:
        parts = urlsplit(url)
    except ValueError:
        return out
    if "@" in parts.netloc:
        userinfo = parts.netloc.rpartition("@")[0]
        _, has_password, password = userinfo.partition(":")
        if has_password and password:
            out += [userinfo, password, unquote(password)]
    for match in re.finditer(rf"(?i)(?:^|[&;])(?:{_SECRET_PARAMS})=([^&;#]+)", parts.query):
        out.append(match.group(1))
    return [s for s in out if len(s) >= 3]


def validate_camera_url(url: str, allow_file: bool = False) -> str:
    """Check a camera URL and return its (lower-case) scheme, or raise CameraUrlError."""
    if not isinstance(url, str) or not url.strip():
        raise CameraUrlError("url is required")
    if len(url) > MAX_URL_LENGTH:
        raise CameraUrlError(f"url is longer than {MAX_URL_LENGTH} characters")
    if any(ord(ch) < 33 or ord(ch) == 127 for ch in url):
        raise CameraUrlError("url contains spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise CameraUrlError(f"malformed url {mask_url(url)!r}: {scrub_text(str(exc))}") from None
    scheme = parts.scheme.lower()
    allowed = NETWORK_SCHEMES + (("file",) if allow_file else ())
    if scheme == "file" and not allow_file:
        raise CameraUrlError(
            "file: URLs are disabled (set FACE_CAMERA_ALLOW_FILE=true to replay recordings)"
        )
    if scheme not in allowed:
        shown = f"{scheme}:" if scheme else "no scheme"
        raise CameraUrlError(f"scheme {shown} is not allowed; use one of: {', '.join(allowed)}")
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise CameraUrlError("file: URLs must name a local path (file:///path/to/video)")
        path = Path(unquote(parts.path))
        if not path.is_file():
            raise CameraUrlError(f"no such file: {path}")
        return scheme
    if not parts.hostname:
        raise CameraUrlError(f"url {mask_url(url)!r} has no host")
    if port == 0:
        raise CameraUrlError("port 0 is not a valid camera port")
    return scheme


def source_path(url: str) -> str:
    """What to hand to FFmpeg: a ``file:`` URL becomes its plain path."""
    parts = urlsplit(url)
    if parts.scheme.lower() == "file":
        return unquote(parts.path)
    return url


# -- small measuring helpers -------------------------------------------------------
class RateMeter:
    """Events per second over a sliding window (``tick`` from one thread, ``rate`` any)."""

    def __init__(self, window_s: float = 3.0, max_events: int = 2000) -> None:
        self.window_s = window_s
        self._times: deque[float] = deque(maxlen=max_events)

    def tick(self, now: float | None = None) -> None:
        self._times.append(time.monotonic() if now is None else now)

    def rate(self, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        times = [t for t in list(self._times) if now - t <= self.window_s]
        if len(times) < 2:
            return 0.0
        span = max(now - times[0], times[-1] - times[0])
        return (len(times) - 1) / span if span > 0 else 0.0


class FpsCap:
    """Admit frames at no more than ``fps`` per second of media time, evenly spaced."""

    def __init__(self, fps: float) -> None:
        self.period = 1.0 / fps
        self._next_due: float | None = None

    def admit(self, t: float) -> bool:
        due = self._next_due
        if due is None or t < due - 2 * self.period or t > due + self.period:
            self._next_due = t + self.period  # first frame, or a jump: start again here
            return True
        if t >= due - 1e-3:
            self._next_due = due + self.period
            return True
        return False


# -- the source --------------------------------------------------------------------
@dataclass(frozen=True)
class CameraTimings:
    open_timeout_s: float = 10.0
    stall_timeout_s: float = 5.0
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 3.0
    decode_threads: int = 1

    @classmethod
    def from_settings(cls, settings) -> CameraTimings:
        return cls(
            open_timeout_s=settings.camera_open_timeout_s,
            stall_timeout_s=settings.camera_stall_timeout_s,
            backoff_initial_s=settings.camera_backoff_initial_s,
            backoff_max_s=settings.camera_backoff_max_s,
            decode_threads=settings.camera_decode_threads,
        )


@dataclass(frozen=True)
class CameraStatus:
    """A snapshot of one camera source, safe to show (no credentials)."""

    state: CameraState
    state_since: float
    last_error: str | None
    last_error_at: float | None
    reconnects: int
    connect_failures: int
    transport: str | None
    format: str | None
    codec: str | None
    width: int | None
    height: int | None
    frames_decoded: int
    frames_skipped: int
    decode_errors: int
    input_fps: float
    input_lag_ms: float | None
    last_frame_age_s: float | None


class _Stop(Exception):
    """The source was stopped (or replaced by the watchdog) while working."""


class _SourceError(Exception):
    """A failure with a message that is already readable and scrubbed."""


@dataclass
class _Connection:
    """Timing of one connection: where its media clock starts and how late it runs."""

    transport: str | None
    paced: bool
    wallclock: bool = False
    opened_mono: float = field(default_factory=time.monotonic)
    live_mono: float | None = None
    in0_s: float | None = None  # first input pts (s) of this connection
    out0_s: float = 0.0  # the output media time that input pts maps to
    pace_in0: float | None = None
    pace_wall0: float | None = None
    min_offset: float | None = None


class CameraSource:
    """Decodes one camera in its own thread into ``stream`` (a LiveStream)."""

    def __init__(
        self,
        stream,
        url: str,
        *,
        bus,
        fps_cap: float | None = None,
        rtsp_transport: str = "auto",
        timings: CameraTimings | None = None,
    ) -> None:
        self.stream = stream
        self.stream_id: str = stream.stream_id
        self._url = url
        self._scheme = urlsplit(url).scheme.lower()
        self._secrets = url_secrets(url)
        self.masked_url = mask_url(url)
        self.fps_cap = fps_cap
        self.rtsp_transport = rtsp_transport
        self.timings = timings or CameraTimings()
        self._bus = bus
        self._loop: asyncio.AbstractEventLoop = stream._loop

        self._lock = threading.Lock()
        self._state: CameraState = "connecting"
        self._state_since = time.time()
        self._last_error: str | None = None
        self._last_error_at: float | None = None
        self.reconnects = 0
        self.connect_failures = 0
        self.frames_decoded = 0
        self.frames_skipped = 0
        self.decode_errors = 0
        self._transport: str | None = None
        self._format: str | None = None
        self._codec: str | None = None
        self._size: tuple[int, int] | None = None
        self._input_lag_ms: float | None = None
        self._last_frame_mono: float | None = None
        self._last_out_s: float | None = None
        self._last_out_mono: float | None = None
        self._cap = FpsCap(fps_cap) if fps_cap else None
        self._input_meter = RateMeter()
        self._preferred: list[str] = self._transport_order()

        self._stop = threading.Event()
        self._generation = 0
        self._thread: threading.Thread | None = None
        self._busy_until = math.inf  # watchdog: when the current blocking call must end
        self.watchdog_restarts = 0

        sid = self.stream_id
        self._m_decoded = metrics.CAMERA_FRAMES_DECODED.labels(stream=sid)
        self._m_skipped = metrics.CAMERA_FRAMES_SKIPPED.labels(stream=sid)
        self._m_reconnects = metrics.STREAM_RECONNECTS.labels(stream=sid)
        self._set_state_metric("connecting")

    # -- control (any thread) ---------------------------------------------------
    def start(self) -> None:
        self._spawn()
        self._publish("connecting", None, f"connecting to {self.masked_url}")
        log.info("[%s] camera starting: %s", self.stream_id, self.masked_url)

    def stop(self) -> None:
        """Ask the thread to end; it does at its next packet, or when a read times out."""
        self._stop.set()
        with self._lock:
            previous = self._state
            self._state = "stopped"
            self._state_since = time.time()
        if previous != "stopped":
            self._set_state_metric("stopped")
            self._publish("stopped", previous, "stopped by its owner")
            log.info("[%s] camera stopped", self.stream_id)

    def join(self, timeout: float | None = None) -> bool:
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
            return not thread.is_alive()
        return True

    @property
    def state(self) -> CameraState:
        return self._state

    def scrub(self, text: str) -> str:
        return scrub_text(text.replace(self._url, self.masked_url), self._secrets)

    def status(self) -> CameraStatus:
        now = time.monotonic()
        with self._lock:
            last = self._last_frame_mono
            return CameraStatus(
                state=self._state,
                state_since=self._state_since,
                last_error=self._last_error,
                last_error_at=self._last_error_at,
                reconnects=self.reconnects,
                connect_failures=self.connect_failures,
                transport=self._transport,
                format=self._format,
                codec=self._codec,
                width=self._size[0] if self._size else None,
                height=self._size[1] if self._size else None,
                frames_decoded=self.frames_decoded,
                frames_skipped=self.frames_skipped,
                decode_errors=self.decode_errors,
                input_fps=round(self._input_meter.rate(now), 2),
                input_lag_ms=None if self._input_lag_ms is None else round(self._input_lag_ms, 1),
                last_frame_age_s=None if last is None else round(now - last, 3),
            )

    def check_stuck(self, now: float | None = None) -> bool:
        """Watchdog: replace the decode thread if it made no progress for far too long.

        Every blocking call the thread makes is bounded by a PyAV timeout; a thread
        past that bound (plus a grace) is stuck in a place no timeout reaches. It is
        abandoned (it cannot be killed; it will not touch the stream again) and a
        new one takes over.
        """
        now = time.monotonic() if now is None else now
        if (
            self._stop.is_set()
            or self._state == "stopped"
            or now <= self._busy_until + _STUCK_GRACE_S
        ):
            return False
        self.watchdog_restarts += 1
        self._fail("decoder made no progress; the watchdog restarted it", lost=True)
        log.warning("[%s] camera thread stuck; watchdog starts a new one", self.stream_id)
        self._spawn()
        return True

    # -- thread -----------------------------------------------------------------
    def _spawn(self) -> None:
        with self._lock:
            self._generation += 1
            generation = self._generation
        self._busy_until = time.monotonic() + self._open_budget()
        self._thread = threading.Thread(
            target=self._run,
            args=(generation,),
            name=f"camera-{self.stream_id}",
            daemon=True,
        )
        self._thread.start()

    def _current(self, generation: int) -> bool:
        return generation == self._generation and not self._stop.is_set()

    def _run(self, generation: int) -> None:
        backoff = self.timings.backoff_initial_s
        try:
            while self._current(generation):
                conn: _Connection | None = None
                try:
                    container, conn = self._connect(generation)
                    with container:
                        self._decode(container, conn, generation)
                    if conn.paced and self._scheme == "file":
                        self._finish(generation, "end of the recording")
                        return
                    raise _SourceError("the camera ended the stream")
                except _Stop:
                    return
                except _SourceError as exc:
                    message = str(exc)
                except Exception as exc:  # anything PyAV or a codec raises: retry
                    message = self.scrub(_describe(exc, self.timings.stall_timeout_s))
                if not self._current(generation):
                    return
                was_live = conn is not None and conn.live_mono is not None
                if was_live and time.monotonic() - conn.live_mono >= _STABLE_S:
                    backoff = self.timings.backoff_initial_s
                if conn is not None and not was_live and conn.transport in self._preferred:
                    # it opened but never gave a picture: try the other transport first
                    self._preferred.remove(conn.transport)
                    self._preferred.append(conn.transport)
                self._fail(message, lost=was_live)
                delay = backoff * random.uniform(0.8, 1.2)
                backoff = min(backoff * 2, self.timings.backoff_max_s)
                self._busy_until = time.monotonic() + delay
                if self._stop.wait(delay):
                    return
        except Exception:  # a bug here must not kill the camera silently
            # the traceback may quote the URL: scrub it like every other message
            log.error("[%s] camera thread failed:\n%s", self.stream_id, self.scrub(format_exc()))
            if self._current(generation):
                self._fail("internal error in the camera thread (see the server log)", lost=True)
                self._busy_until = time.monotonic()  # the watchdog starts a new thread
                return
        if generation == self._generation:
            self._busy_until = math.inf

    def _transport_order(self) -> list[str]:
        if self._scheme == "rtsps":
            return ["tcp"]  # RTSP over TLS carries its media inside the TLS connection
        if self._scheme != "rtsp":
            return [""]
        if self.rtsp_transport in ("tcp", "udp"):
            return [self.rtsp_transport]
        return ["tcp", "udp"]

    def _open_budget(self) -> float:
        return self.timings.open_timeout_s * len(self._preferred) + 1.0

    def _options(self, transport: str) -> dict[str, str]:
        t = self.timings
        # FFmpeg's own socket timeout is only a backstop: PyAV's open/read timeouts
        # should fire first (they tell an unanswered open from a silent stream).
        io_timeout_us = str(int((2 * max(t.open_timeout_s, t.stall_timeout_s) + 1) * 1_000_000))
        opts: dict[str, str] = {}
        if self._scheme in ("rtsp", "rtsps"):
            opts.update(
                # no buffering of what was read while probing: start with fresh frames
                # (for recordings and HLS it would drop their first frames)
                fflags="nobuffer",
                rtsp_transport=transport,
                allowed_media_types="video",
                # The SDP describes the stream: no need to sit reading packets to probe it.
                analyzeduration="0",
                probesize="65536",
                max_delay="200000",  # at most 200 ms waiting for reordered UDP packets
                buffer_size="2097152",
                timeout=io_timeout_us,
                protocol_whitelist="rtsp,rtsps,rtp,udp,tcp,tls",
            )
        elif self._scheme in ("http", "https"):
            opts.update(
                analyzeduration="1000000",
                rw_timeout=io_timeout_us,
                live_start_index="-1",  # HLS: start at the newest segment
                protocol_whitelist="http,https,tcp,tls,crypto,httpproxy",
            )
        else:
            opts.update(protocol_whitelist="file")
        return opts

    def _connect(self, generation: int):
        import av

        errors: list[str] = []
        order = list(self._preferred)
        for transport in order:
            if not self._current(generation):
                raise _Stop
            started = time.monotonic()
            self._busy_until = started + self.timings.open_timeout_s + 1.0
            try:
                container = av.open(
                    source_path(self._url),
                    options=self._options(transport),
                    timeout=(self.timings.open_timeout_s, self.timings.stall_timeout_s),
                )
            except Exception as exc:
                elapsed = time.monotonic() - started
                # FFmpeg reports an interrupted RTSP handshake as "invalid data": the time
                # it took tells what really happened.
                timed_out = elapsed >= 0.95 * self.timings.open_timeout_s
                if timed_out:
                    text = f"timed out after {elapsed:.0f} s (no answer, or no video data)"
                else:
                    text = self.scrub(_describe(exc, self.timings.open_timeout_s, opening=True))
                errors.append(f"{transport}: {text}" if transport else text)
                # Refused / unreachable / timed out reaches the RTSP control connection
                # whatever the media transport: trying the other one would only wait again.
                if timed_out or _is_network_failure(exc):
                    break
                continue
            if not container.streams.video:
                container.close()
                raise _SourceError("no video stream in the source")
            fmt = container.format.name.split(",")[0]
            conn = _Connection(
                transport=transport or None,
                paced=fmt not in _LIVE_FORMATS,
                wallclock=fmt in _WALLCLOCK_FORMATS,
            )
            with self._lock:
                self._transport = transport or None
                self._format = container.format.name
            return container, conn
        if len(errors) == 1:
            raise _SourceError(f"could not open the camera: {errors[0]}")
        raise _SourceError("could not open the camera: " + "; ".join(errors))

    def _decode(self, container, conn: _Connection, generation: int) -> bool:
        """Decode until the stream ends (True) or fails (raises)."""
        import av

        video = container.streams.video[0]
        ctx = video.codec_context
        with contextlib.suppress(Exception):
            ctx.flags |= av.codec.context.Flags.low_delay
        threads = max(1, self.timings.decode_threads)
        ctx.thread_count = threads
        if threads > 1:
            ctx.thread_type = "SLICE"  # frame threading would add a frame of delay per thread
        with self._lock:
            self._codec = ctx.name
        stall = self.timings.stall_timeout_s
        progress_at = conn.opened_mono  # last picture, or the connection's start
        last_decode_error = ""
        for packet in container.demux(video):
            now = time.monotonic()
            self._busy_until = now + stall + 1.0
            if not self._current(generation):
                raise _Stop
            try:
                frames = packet.decode()
            except av.FFmpegError as exc:
                self.decode_errors += 1
                last_decode_error = self.scrub(_describe(exc, stall))
                frames = []
            for frame in frames:
                self._deliver(frame, conn, generation)
                progress_at = time.monotonic()
            if time.monotonic() - progress_at > stall:
                detail = f" (last decode error: {last_decode_error})" if last_decode_error else ""
                raise _SourceError(
                    f"stalled: data arrives but no picture decoded for {stall:g} s{detail}"
                )
        return True

    def _deliver(self, av_frame, conn: _Connection, generation: int) -> None:
        now = time.monotonic()
        in_s: float | None = None
        time_base = _TB_90K
        if not conn.wallclock and av_frame.pts is not None and av_frame.time_base:
            in_s = float(av_frame.pts * av_frame.time_base)
            time_base = Fraction(av_frame.time_base)
        if conn.paced and in_s is not None:
            self._pace(conn, in_s, now, generation)
            now = time.monotonic()
        self.frames_decoded += 1
        self._m_decoded.inc()
        self._input_meter.tick(now)
        with self._lock:
            self._last_frame_mono = now
            if in_s is not None and not conn.paced:
                offset = now - in_s
                if conn.min_offset is None or offset < conn.min_offset:
                    conn.min_offset = offset
                self._input_lag_ms = (offset - conn.min_offset) * 1000.0
        # Media time: the source's clock, or the arrival time where it has none.
        out_s = self._media_time(conn, now if in_s is None else in_s, now)
        if conn.live_mono is None:
            self._went_live(conn, av_frame, now)
        if self._cap is not None and not self._cap.admit(out_s):
            self.frames_skipped += 1
            self._m_skipped.inc()
            return
        image = av_frame.to_ndarray(format="rgb24")
        if not self._current(generation):
            raise _Stop
        frame = Frame(
            self.stream_id,
            self.stream.next_seq(),
            image,
            pts=int(round(out_s / time_base)),
            time_base=time_base,
        )
        if not self.stream.put(frame):
            raise _Stop  # the stream was closed under us

    def _pace(self, conn: _Connection, in_s: float, now: float, generation: int) -> None:
        """Hold a non-live source's frame until its time comes (recordings, HLS)."""
        if conn.pace_in0 is None or conn.pace_wall0 is None:
            conn.pace_in0, conn.pace_wall0 = in_s, now
            return
        delay = conn.pace_wall0 + (in_s - conn.pace_in0) - now
        if delay < -1.0 or delay > 2.0:
            # more than a second behind (a slow fetch) or a jump in the timestamps:
            # carry on from here
            conn.pace_in0, conn.pace_wall0 = in_s, now
        elif delay > 0:
            self._busy_until = now + delay + self.timings.stall_timeout_s
            if self._stop.wait(delay) or not self._current(generation):
                raise _Stop

    def _media_time(self, conn: _Connection, in_s: float, now: float) -> float:
        """Output media time: the source's, rebased so it never runs backwards across
        reconnects (the gap of an outage counts, so tracks expire as they should)."""
        if conn.in0_s is None:
            conn.in0_s = in_s
            if self._last_out_s is not None and self._last_out_mono is not None:
                conn.out0_s = self._last_out_s + max(now - self._last_out_mono, 1 / 30)
            else:
                conn.out0_s = 0.0
        out_s = conn.out0_s + (in_s - conn.in0_s)
        if self._last_out_s is not None and out_s <= self._last_out_s:
            conn.in0_s = in_s  # the source's clock jumped back: continue from where we were
            conn.out0_s = self._last_out_s + 1 / 30
            out_s = conn.out0_s
        self._last_out_s = out_s
        self._last_out_mono = now
        return out_s

    # -- state ---------------------------------------------------------------------
    def _went_live(self, conn: _Connection, av_frame, now: float) -> None:
        conn.live_mono = now
        transport = conn.transport
        if self.rtsp_transport == "auto" and transport in ("tcp", "udp"):
            other = "udp" if transport == "tcp" else "tcp"
            self._preferred = [transport, other]
        with self._lock:
            previous = self._state
            if previous == "stopped":
                return
            self._size = (av_frame.width, av_frame.height)
            self._state = "live"
            self._state_since = time.time()
            if previous == "retrying":
                self.reconnects += 1
                self._m_reconnects.inc()
        how = f" over {transport.upper()}" if transport else ""
        detail = (
            f"live{how}: {self._codec} {av_frame.width}x{av_frame.height} "
            f"after {now - conn.opened_mono:.2f} s"
        )
        self._set_state_metric("live")
        self._publish("live", previous, detail)
        log.info("[%s] camera %s -> live (%s)", self.stream_id, previous, detail)

    def _fail(self, message: str, lost: bool) -> None:
        with self._lock:
            previous, before = self._state, self._last_error
            if previous == "stopped":
                return
            self.connect_failures += 0 if lost else 1
            self._last_error = message
            self._last_error_at = time.time()
            if previous != "retrying":
                self._state = "retrying"
                self._state_since = time.time()
        if previous != "retrying":
            self._set_state_metric("retrying")
            self._publish("retrying", previous, message)
            log.warning("[%s] camera %s -> retrying: %s", self.stream_id, previous, message)
        elif message != before:
            log.info("[%s] camera still unavailable: %s", self.stream_id, message)
        else:
            log.debug("[%s] camera still unavailable: %s", self.stream_id, message)

    def _finish(self, generation: int, message: str) -> None:
        with self._lock:
            if not self._current(generation):
                return
            previous = self._state
            self._state = "stopped"
            self._state_since = time.time()
            self._last_error = None
        self._set_state_metric("stopped")
        self._publish("stopped", previous, message)
        log.info("[%s] camera stopped: %s", self.stream_id, message)
        self.stream.slot.close()

    def _set_state_metric(self, state: CameraState) -> None:
        metrics.set_stream_state(self.stream_id, state)

    def _publish(self, state: CameraState, previous: str | None, detail: str | None) -> None:
        event = StreamStatus(
            stream_id=self.stream_id, state=state, previous=previous, detail=detail
        )
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is listening
            self._loop.call_soon_threadsafe(self._bus.publish, event)


def _is_network_failure(exc: BaseException) -> bool:
    import av

    if isinstance(exc, ConnectionError | TimeoutError | av.error.ExitError):
        return True
    code = getattr(exc, "errno", None)
    return code in (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ECONNREFUSED, errno.ETIMEDOUT)


def _describe(exc: BaseException, timeout_s: float, opening: bool = False) -> str:
    """A readable one-line reason for a PyAV / FFmpeg error (not yet scrubbed)."""
    import av

    if isinstance(exc, av.error.ExitError | TimeoutError):
        if opening:
            return f"timed out after {timeout_s:g} s (no answer, or no video data)"
        return f"no data from the camera for {timeout_s:g} s"
    if isinstance(exc, av.FFmpegError):
        text = exc.strerror or type(exc).__name__
        if isinstance(exc, av.error.InvalidDataError):
            text += " (not a video stream?)"
        return text
    return str(exc) or type(exc).__name__
