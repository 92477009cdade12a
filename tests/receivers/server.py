"""Serve the receiving app (tests/receivers) on a free loopback port: one real WSGI server.

    RECEIVER_BASIC_AUTH=user:password RECEIVER_MAILGUN_SIGNING_KEY=... \\
        python -m tests.receivers.server

prints ``listening on <port>`` once it accepts requests.
"""

from __future__ import annotations

import os
from wsgiref.simple_server import WSGIRequestHandler, make_server


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def main() -> None:
    os.environ["DJANGO_SETTINGS_MODULE"] = "tests.receivers.settings"
    import django

    django.setup()
    from anymail.signals import inbound
    from django.core.wsgi import get_wsgi_application

    from tests.receivers import record

    inbound.connect(record.on_inbound)
    server = make_server("127.0.0.1", 0, get_wsgi_application(), handler_class=_QuietHandler)
    print(f"listening on {server.server_port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
