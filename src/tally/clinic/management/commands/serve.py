"""tally serve: the production server (gunicorn), not Django's development server."""

from __future__ import annotations

import argparse

from django.core.management.base import BaseCommand

from tally.server import serve


def port_number(text: str) -> int:
    """A TCP port, checked before the server starts (gunicorn would fail with a traceback,
    or listen on a random port for 0)."""
    try:
        port = int(text)
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port: give a number from 1 to 65535")
    return port


MAX_WORKERS = 32
MAX_THREADS = 64


def count_up_to(most: int, what: str):
    """A number of workers or threads the server can run, checked before it starts: gunicorn
    forks as many workers as asked (99999999999 took the machine down) and starts with none for 0."""

    def parse(text: str) -> int:
        try:
            count = int(text)
        except ValueError:
            count = 0
        if not 1 <= count <= most:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number of {what}: give 1 to {most}")
        return count

    return parse


def add_server_arguments(parser, *, port: int = 8000) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=port_number, default=port, help=f"port to listen on (default {port})")
    parser.add_argument("--workers", type=count_up_to(MAX_WORKERS, "workers"), default=None,
                        help=f"worker processes, 1 to {MAX_WORKERS} (default: one per core, 2 to 4)")
    parser.add_argument("--threads", type=count_up_to(MAX_THREADS, "threads"), default=None,
                        help=f"threads per worker, 1 to {MAX_THREADS} (default 4)")


class Command(BaseCommand):
    help = "Run the production server. The database must be set up first (tally init)."

    def add_arguments(self, parser) -> None:
        add_server_arguments(parser)

    def handle(self, *args, **options) -> None:
        serve(host=options["host"], port=options["port"], workers=options["workers"], threads=options["threads"],
              stdout=self.stdout)
