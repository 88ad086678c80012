"""Per-client rate limits for the expensive endpoints (the ``limits`` package,
which slowapi is built on, used directly so each app built by the factory has its
own limiter and settings).

A client is its API key (by fingerprint) when it sent a valid one, else its
address. Each limited endpoint group ("compare", "recognize", "enrol") has its own
moving-window budget per client: ``FACE_RATE_LIMIT`` (``10/minute`` by default;
several limits separated by ``;``; ``off`` disables). A request over budget gets
429 JSON with ``Retry-After`` (seconds) and ``X-RateLimit-*`` headers.
"""

from __future__ import annotations

import asyncio
import math
import time

from fastapi import Depends, Request
from limits import parse_many
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter

from .. import metrics
from ..config import Settings
from .errors import ApiError
from .security import CLIENT_SCOPE_KEY


class RateLimiter:
    def __init__(self, settings: Settings) -> None:
        self.enabled = settings.rate_limit_enabled
        self.text = settings.rate_limit
        self.local = settings.rate_limit_storage.startswith("memory://")
        self._limits = parse_many(settings.rate_limit) if self.enabled else []
        self._limiter = (
            MovingWindowRateLimiter(storage_from_string(settings.rate_limit_storage))
            if self.enabled
            else None
        )

    def check(self, scope: str, client: str) -> None:
        """Count one request of ``client`` in ``scope``; raise ApiError(429) when over."""
        if not self.enabled or self._limiter is None:
            return
        for limit in self._limits:
            if not self._limiter.test(limit, scope, client):
                self._refuse(scope, client, limit)
        for limit in self._limits:
            if not self._limiter.hit(limit, scope, client):
                self._refuse(scope, client, limit)

    def _refuse(self, scope: str, client: str, limit) -> None:
        stats = self._limiter.get_window_stats(limit, scope, client)
        retry = max(1, math.ceil(stats.reset_time - time.time()))
        metrics.RATE_LIMITED.labels(scope=scope).inc()
        raise ApiError(
            429,
            "rate_limited",
            f"rate limit of {limit} for {scope} reached; retry in {retry} s",
            headers={
                "Retry-After": str(retry),
                "X-RateLimit-Limit": str(limit.amount),
                "X-RateLimit-Remaining": "0",
                "X-RateLimit-Reset": str(math.ceil(stats.reset_time)),
            },
        )


def client_id(request: Request) -> str:
    known = request.scope.get(CLIENT_SCOPE_KEY)
    if known:
        return known
    return "ip:" + (request.client.host if request.client else "unknown")


def rate_limited(scope: str):
    """A route dependency: ``dependencies=[rate_limited("compare")]``."""

    async def check(request: Request) -> None:
        limiter: RateLimiter = request.app.state.rate_limiter
        if not limiter.enabled:
            return
        if limiter.local:
            limiter.check(scope, client_id(request))
        else:  # Redis or another remote store: keep its round trip off the event loop
            await asyncio.to_thread(limiter.check, scope, client_id(request))

    return Depends(check)
