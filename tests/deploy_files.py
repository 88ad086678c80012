"""Helpers for the tests of the shipped deployment files (nginx, k8s, compose, ...).

``render_nginx`` turns the shipped ``nginx/nginx.conf`` into one that runs on this
machine: it replaces exactly the deployment-specific values the file names in its
header (upstream, listen ports, certificate paths) and adds temp paths under the
test's own prefix. Every replacement must hit exactly once, so a changed shipped
file fails loudly instead of being tested half-rendered.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
NGINX_CONF = REPO / "nginx" / "nginx.conf"
NGINX_BIN = shutil.which("nginx") or "/usr/sbin/nginx"


def render_nginx(
    *,
    upstream: str,
    http_port: int,
    https_port: int,
    cert: Path,
    key: Path,
    prefix: Path,
) -> str:
    text = NGINX_CONF.read_text()
    replacements = [
        ("server stream-server:8000;", f"server {upstream};"),
        ("listen 80;", f"listen 127.0.0.1:{http_port};"),
        ("listen [::]:80;", ""),
        ("listen 443 ssl http2;", f"listen 127.0.0.1:{https_port} ssl http2;"),
        ("listen [::]:443 ssl http2;", ""),
        ("ssl_certificate /etc/nginx/certs/tls.crt;", f"ssl_certificate {cert};"),
        ("ssl_certificate_key /etc/nginx/certs/tls.key;", f"ssl_certificate_key {key};"),
    ]
    for old, new in replacements:
        count = text.count(old)
        assert count == 1, f"nginx.conf: expected {old!r} once, found it {count} times"
        text = text.replace(old, new)
    temp_paths = "".join(
        f"    {name}_temp_path {prefix / name};\n"
        for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    assert text.count("\nhttp {\n") == 1
    return text.replace("\nhttp {\n", "\nhttp {\n" + temp_paths, 1)


def make_cert(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 / localhost, made with openssl."""
    cert, key = folder / "tls.crt", folder / "tls.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],  # fmt: skip
        check=True,
        capture_output=True,
    )
    return cert, key


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


@dataclass
class RenderedNginx:
    prefix: Path
    conf: Path
    http_port: int
    https_port: int
    cert: Path

    def cleanup(self) -> None:
        shutil.rmtree(self.prefix, ignore_errors=True)

    def command(self, *extra: str) -> list[str]:
        directives = f"pid {self.prefix / 'nginx.pid'}; error_log {self.prefix / 'error.log'} warn;"
        return [
            NGINX_BIN,
            "-p", f"{self.prefix}/",
            "-c", str(self.conf),
            "-g", directives,
            *extra,
        ]  # fmt: skip


def prepare_nginx(upstream: str) -> RenderedNginx:
    # A folder nginx's workers (nobody, when the tests run as root) can traverse.
    prefix = Path(tempfile.mkdtemp(prefix="nginx-test-"))
    prefix.chmod(0o755)
    cert, key = make_cert(prefix)
    shutil.copy("/etc/nginx/mime.types", prefix / "mime.types")
    http_port, https_port = free_port(), free_port()
    conf = prefix / "nginx.conf"
    conf.write_text(
        render_nginx(
            upstream=upstream,
            http_port=http_port,
            https_port=https_port,
            cert=cert,
            key=key,
            prefix=prefix,
        )
    )
    return RenderedNginx(prefix, conf, http_port, https_port, cert)


class NginxProcess:
    """The real nginx, in the foreground, on the rendered shipped config."""

    def __init__(self, rendered: RenderedNginx) -> None:
        self.rendered = rendered
        self.log = open(rendered.prefix / "stdout.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            rendered.command("-g", "daemon off;"),
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_port(rendered.https_port)
            wait_port(rendered.http_port)
        except TimeoutError:
            self.stop()
            raise RuntimeError("nginx did not start:\n" + self.output()) from None

    def output(self) -> str:
        parts = []
        for name in ("stdout.log", "error.log"):
            path = self.rendered.prefix / name
            if path.exists():
                parts.append(path.read_text(errors="replace"))
        return "\n".join(parts)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.log.close()
