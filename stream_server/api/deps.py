"""Request-scoped access to the app's shared objects."""

from __future__ import annotations

from fastapi import Request
from starlette.requests import HTTPConnection

from ..config import Settings


def get_settings(conn: HTTPConnection) -> Settings:
    return conn.app.state.settings


def get_service(conn: HTTPConnection):
    return conn.app.state.service


def get_streams(conn: HTTPConnection):
    return conn.app.state.streams


def client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"
