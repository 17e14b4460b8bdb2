"""`sms-gateway phone [--config FILE] [--port N]`: start the gateway, the sandboxes and the phone's page."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import tempfile
from pathlib import Path

from aiohttp import web

from sms_gateway.config.model import Config
from sms_gateway.logs import configure_logging
from sms_gateway.phone.gateway import running_gateway
from sms_gateway.phone.server import create_phone_app

DEFAULT_PORT = 9090


async def serve_phone(config: Config, host: str, port: int) -> None:
    """Run until SIGTERM (or cancelled: Ctrl-C), then stop cleanly (the temporary store removed)."""
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    with tempfile.TemporaryDirectory(prefix="sms-gateway-phone-") as tmp:
        async with running_gateway(config, Path(tmp) / "phone.db") as gateway:
            runner = web.AppRunner(create_phone_app(gateway))
            await runner.setup()
            try:
                await web.TCPSite(runner, host, port).start()
                shown_host = f"[{host}]" if ":" in host else host
                print(
                    f"sms-gateway phone: open http://{shown_host}:{port}/ (gateway at {gateway.url}; Ctrl-C to stop)",
                    flush=True,
                )
                await stop.wait()
            finally:
                await runner.cleanup()


def run_phone(config: Config, host: str = "127.0.0.1", port: int = DEFAULT_PORT, show_logs: bool = False) -> int:
    """The configuration's engines (its tenants' providers played by sandboxes), else echo tenants."""
    configure_logging(config.log_level if show_logs else "critical", redact_numbers=True, stream=sys.stderr)
    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve_phone(config, host, port))
    except OSError as exc:
        print(f"cannot listen on {host}:{port}: {exc}", file=sys.stderr)
        return 3
    return 0
