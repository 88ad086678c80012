"""Real parts for the camera tests: an RTSP server fed by ffmpeg, and the service
running under uvicorn in a thread, all on 127.0.0.1.

The RTSP server is Debian's ``rtsp-server-perl``: ffmpeg publishes the clip to its
source port in a loop (``-re -stream_loop -1 -c copy``), clients read it from its
client port over UDP (it refuses RTP over TCP, which exercises the ``auto``
transport's fallback).
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from stream_server.server_thread import ServerThread as _ServerThread
from tests.conftest import skip_or_fail

_PERL_SERVER = (
    "$RTSP::Server::RTP_START_PORT = shift @ARGV;"
    "my $srv = RTSP::Server->new_with_options(rtp_start_port => $RTSP::Server::RTP_START_PORT);"
    "$srv->listen; AnyEvent->condvar->recv;"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def need_programs(*names: str) -> None:
    missing = [n for n in names if shutil.which(n) is None]
    if missing:
        skip_or_fail(f"programs not installed: {missing} (scripts/setup --test installs them)")


def rtsp_describe_ok(port: int, path: str = "cam", timeout: float = 1.0) -> bool:
    """True when the server answers DESCRIBE for the mount with 200 (a source publishes)."""
    request = (
        f"DESCRIBE rtsp://127.0.0.1:{port}/{path} RTSP/1.0\r\nCSeq: 1\r\n"
        "Accept: application/sdp\r\n\r\n"
    ).encode()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(request)
            return s.recv(64).startswith(b"RTSP/1.0 200")
    except OSError:
        return False


class RtspCamera:
    """An RTSP server publishing a video in a loop at ``rtsp://127.0.0.1:<port>/<path>``."""

    def __init__(
        self,
        clip: Path,
        log_dir: Path,
        path: str = "cam",
        audio: bool = True,
    ) -> None:
        self.clip = clip
        self.path = path
        self.audio = audio
        self.log_dir = log_dir
        self.client_port = free_port()
        self.source_port = free_port()
        self.rtp_start_port = random.randrange(20000, 30000, 200)
        self.server: subprocess.Popen | None = None
        self.publishers: dict[str, subprocess.Popen] = {}

    def url(self, credentials: str | None = None) -> str:
        auth = f"{credentials}@" if credentials else ""
        return f"rtsp://{auth}127.0.0.1:{self.client_port}/{self.path}"

    def start(self, timeout: float = 15.0) -> RtspCamera:
        self.start_server()
        self.start_publisher(timeout)
        return self

    def start_server(self) -> None:
        log = open(self.log_dir / f"rtsp-server-{self.client_port}.log", "ab")  # noqa: SIM115
        self.server = subprocess.Popen(
            [
                # Debian's rtsp-server-perl, started through its library so that the RTP
                # port range can be moved: the program resets it to 20000 whenever it has
                # no mount, and two servers would then fight over the same ports.
                "perl",
                "-MAnyEvent",
                "-MRTSP::Server",
                "-e",
                _PERL_SERVER,
                str(self.rtp_start_port),
                "--clientport",
                str(self.client_port),
                "--serverport",
                str(self.source_port),
                "--client_listen_address",
                "127.0.0.1",
                "--source_listen_address",
                "127.0.0.1",
                "--loglevel",
                "1",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.source_port), timeout=0.2),
            ):
                return
            if self.server.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"rtsp-server-perl did not start (see {self.log_dir})")

    def start_publisher(self, timeout: float = 15.0, path: str | None = None) -> None:
        """Publish the clip in a loop at ``path`` (default: this camera's own path)."""
        path = path or self.path
        log = open(self.log_dir / f"publisher-{self.client_port}-{path}.log", "ab")  # noqa: SIM115
        cmd = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-re"]
        cmd += ["-stream_loop", "-1", "-i", str(self.clip), "-c", "copy"]
        if not self.audio:
            cmd += ["-an"]
        cmd += ["-f", "rtsp", f"rtsp://127.0.0.1:{self.source_port}/{path}"]
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.publishers[path] = proc
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if rtsp_describe_ok(self.client_port, path):
                return
            if proc.poll() is not None:
                raise RuntimeError(f"ffmpeg publisher exited (see {self.log_dir})")
            time.sleep(0.05)
        raise RuntimeError(f"the RTSP mount {path} never appeared")

    @property
    def publisher(self) -> subprocess.Popen | None:
        return self.publishers.get(self.path)

    def running(self) -> bool:
        procs = [self.server, *self.publishers.values()]
        return bool(self.publishers) and all(p is not None and p.poll() is None for p in procs)

    def kill_publisher(self) -> None:
        """The picture stops, the server stays: its sessions go silent."""
        for proc in self.publishers.values():
            _kill(proc)
        self.publishers = {}

    def kill(self) -> None:
        """The camera dies: server and publishers killed outright."""
        self.kill_publisher()
        _kill(self.server)
        self.server = None

    def pids(self) -> list[int]:
        procs = [self.server, *self.publishers.values()]
        return [p.pid for p in procs if p is not None and p.poll() is None]


def _kill(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


class ServerThread(_ServerThread):
    """The app under uvicorn on 127.0.0.1 (a free port) in a background thread."""

    def __init__(self, app) -> None:
        super().__init__(app, host="127.0.0.1", port=0)

    @property
    def base(self) -> str:
        return self.url

    @property
    def ws_base(self) -> str:
        return self.ws_url

    def stop(self, timeout: float = 30.0) -> None:
        super().stop(timeout)
        if self._thread.is_alive():
            pytest.fail("the server did not shut down in time")


def info(api, stream_id: str) -> dict:
    """GET /streams/{id} through an httpx client, asserting it exists."""
    r = api.get(f"/streams/{stream_id}")
    assert r.status_code == 200, r.text
    return r.json()


def add(api, **body) -> dict:
    """POST /streams through an httpx client, asserting it was created."""
    r = api.post("/streams", json=body)
    assert r.status_code == 201, r.text
    return r.json()


def wait_for(predicate, timeout: float, interval: float = 0.1, what: str = "condition"):
    """Poll ``predicate`` until it returns something truthy; fail with ``what`` after timeout."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout} s waiting for {what}; last: {last!r}")


class EventRecorder:
    """Subscribes to ``/ws/events`` and keeps every event with the time it arrived."""

    def __init__(self, url: str) -> None:
        import json

        from websockets.sync.client import connect

        self._json = json
        self.ws = connect(url, open_timeout=10, close_timeout=2)
        hello = json.loads(self.ws.recv(timeout=10))
        assert hello["type"] == "subscribed", hello
        self.events: list[tuple[float, dict]] = []
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._read, name="ws-events", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        from websockets.exceptions import ConnectionClosed

        with contextlib.suppress(ConnectionClosed, OSError):
            for message in self.ws:
                event = self._json.loads(message)
                with self._cond:
                    self.events.append((time.monotonic(), event))
                    self._cond.notify_all()

    def find(self, predicate) -> tuple[float, dict] | None:
        with self._cond:
            return next(((t, e) for t, e in self.events if predicate(e)), None)

    def wait(self, predicate, timeout: float, what: str) -> tuple[float, dict]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = next(((t, e) for t, e in self.events if predicate(e)), None)
                if found is not None:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = [e.get("type") + ":" + str(e.get("state", "")) for _, e in self.events]
                    pytest.fail(f"no event {what} within {timeout} s; got {seen[-20:]}")
                self._cond.wait(left)

    def status(self, stream_id: str, state: str, after: float = 0.0):
        """A predicate: a stream.status event of ``stream_id`` into ``state``."""
        return lambda e: (
            e.get("type") == "stream.status"
            and e.get("stream_id") == stream_id
            and e.get("state") == state
            and e.get("emitted_at", 0) >= after
        )

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.ws.close()
        self._thread.join(5)
