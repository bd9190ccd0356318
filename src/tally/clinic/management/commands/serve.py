"""tally serve: the production server (gunicorn), not Django's development server."""

from __future__ import annotations

from django.core.management.base import BaseCommand

from tally.server import serve


def add_server_arguments(parser, *, port: int = 8000) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=port, help=f"port to listen on (default {port})")
    parser.add_argument("--workers", type=int, default=None, help="worker processes (default: one per core, 2 to 4)")
    parser.add_argument("--threads", type=int, default=None, help="threads per worker (default 4)")


class Command(BaseCommand):
    help = "Run the production server. The database must be set up first (tally init)."

    def add_arguments(self, parser) -> None:
        add_server_arguments(parser)

    def handle(self, *args, **options) -> None:
        serve(host=options["host"], port=options["port"], workers=options["workers"], threads=options["threads"],
              stdout=self.stdout)
