"""Real notification receivers on loopback for the notification tests: an HTTP webhook
(``http.server`` in a thread) and an SMTP server (aiosmtpd), each keeping what it got."""

from __future__ import annotations

import email
import json
import socket
import threading
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Hook:
    """A JSON webhook. ``hold`` keeps the first request open until ``release`` is set;
    ``start()`` later on a port reserved (bound, not listening: connections are refused)
    plays a receiver that is down and comes back."""

    hold: bool = False
    requests: list[dict[str, Any]] = field(default_factory=list)
    arrived: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"json://127.0.0.1:{self.port}/hook"

    def start(self) -> Hook:
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                first = not hook.arrived.is_set()
                hook.requests.append({"ids": self.headers.get("X-Hpcbridge-Event-Ids", ""), "body": body})
                hook.arrived.set()
                if hook.hold and first:
                    hook.release.wait(60)
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler, bind_and_activate=False)
        server.socket.close()
        server.socket = self.sock
        server.server_activate()
        self.server = server
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return self

    def ids(self) -> list[str]:
        """Every event id received, duplicates included, in arrival order."""
        return [i for r in list(self.requests) for i in r["ids"].split(",") if i]

    def close(self) -> None:
        self.release.set()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
        else:
            self.sock.close()


class Mailbox:
    """An SMTP server on loopback (aiosmtpd) keeping each message it accepts."""

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller

        self.messages: list[Message] = []
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        self.port = s.getsockname()[1]
        s.close()
        box = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
                box.messages.append(email.message_from_bytes(envelope.content))
                return "250 OK"

        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def url(self, to: str = "ops@example.org") -> str:
        return f"mailto://127.0.0.1:{self.port}?from=hpcbridge@example.org&to={to}&mode=insecure"

    def close(self) -> None:
        self.controller.stop()
