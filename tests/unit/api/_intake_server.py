"""The daemon's HTTP surface alone, served by uvicorn in a process of its own, for the API tests
that measure what a real server does: its memory, its logs, and its answers while another
process holds the store.

Run as `python _intake_server.py STORE_URL`. It prints the port it listens on (loopback only)
as its first line of standard output, then logs JSON lines to standard error until SIGTERM.
The apps are `crm` (hubspot) and `desk` (zendesk), with the secrets below; their HTTP clients
refuse every request, so nothing here can reach a network.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import sys

import httpx
import uvicorn

from customer_sync.api.app import create_app
from customer_sync.config import load_config
from customer_sync.engine.runner import Engine
from customer_sync.logs import configure_logging
from customer_sync.store.db import open_store
from customer_sync_connectors.hubspot import HubSpotConnector
from customer_sync_connectors.zendesk import ZendeskConnector

HUBSPOT_SECRET = "intake-test-hubspot-secret"
ZENDESK_SECRET = "intake-test-zendesk-secret"


def intake_config(store_url: str):  # type: ignore[no-untyped-def]
    """The config both the server and in-process tests use: two webhook apps, no workers."""
    data = {
        "daemon": {"store_url": store_url, "normalize_workers": 0, "list_in_worker": False},
        "apps": {
            "crm": {"connector": "hubspot", "settings": {
                "access_token": "${HUBSPOT_TOKEN}", "app_secret": "${HUBSPOT_APP_SECRET}"}},
            "desk": {"connector": "zendesk", "settings": {
                "base_url": "https://intake-test.zendesk.example", "email": "agent@intake.example",
                "api_token": "${ZENDESK_API_TOKEN}",
                "webhook_secret": "${ZENDESK_WEBHOOK_SECRET}"}},
        },
    }
    env = {"HUBSPOT_TOKEN": "intake-test-token", "HUBSPOT_APP_SECRET": HUBSPOT_SECRET,
           "ZENDESK_API_TOKEN": "intake-test-token", "ZENDESK_WEBHOOK_SECRET": ZENDESK_SECRET}
    return load_config(data=data, env=env)


def _no_network(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("the intake tests never call a vendor", request=request)


def intake_connectors(config) -> dict[str, object]:  # type: ignore[no-untyped-def]
    """The two apps' connectors, with HTTP clients that refuse every request."""
    transport = httpx.MockTransport(_no_network)
    return {
        "crm": HubSpotConnector(config.apps["crm"].connector_settings, app="crm",
                                transport=transport),
        "desk": ZendeskConnector(config.apps["desk"].connector_settings, app="desk",
                                 transport=transport),
    }


async def _serve(store_url: str) -> None:
    config = intake_config(store_url)
    store = open_store(store_url)
    connectors = intake_connectors(config)
    async with Engine(config, store, connectors=connectors) as engine:  # type: ignore[arg-type]
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
        # The same uvicorn settings as `customer_sync.api.app.serve`, on a socket bound here so
        # that the port is known before the first request.
        server = uvicorn.Server(uvicorn.Config(create_app(engine), log_config=None,
                                               access_log=False, lifespan="off"))
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, server.handle_exit,
                                                      signal.SIGTERM, None)
        print(sock.getsockname()[1], flush=True)
        await server.serve(sockets=[sock])
    store.close()


if __name__ == "__main__":
    configure_logging(level="debug", fmt="json")
    asyncio.run(_serve(sys.argv[1]))
