"""Liveness and readiness endpoints, served from process start (standbys are alive too)."""

from __future__ import annotations

from aiohttp import web

from modeldeploy import metrics


class Health:
    def __init__(self) -> None:
        self._leading = False
        self._runner: web.AppRunner | None = None
        metrics.LEADER.set(0)

    @property
    def leading(self) -> bool:
        return self._leading

    @leading.setter
    def leading(self, value: bool) -> None:
        """Whether this replica reconciles; also exported, so an alert can see no leader."""
        self._leading = value
        metrics.LEADER.set(1 if value else 0)

    async def _live(self, _: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    async def _ready(self, _: web.Request) -> web.Response:
        # A standby is ready to take over; only report whether it currently leads.
        return web.json_response({"status": "ready", "leading": self.leading})

    async def start(self, host: str, port: int) -> None:
        app = web.Application()
        app.router.add_get("/healthz", self._live)
        app.router.add_get("/readyz", self._ready)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
