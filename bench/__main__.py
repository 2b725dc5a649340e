"""``python -m bench fanout|connections``: benchmarks of Cortex Core against its ceiling and its peers."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description="Benchmarks of Cortex Core against its ceiling and its peers."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    from bench import connections, fanout

    fanout_parser = commands.add_parser("fanout", help="messages per second and latency, Cortex Core beside its ceiling and peers")
    fanout.add_arguments(fanout_parser)
    connections_parser = commands.add_parser("connections", help="server memory per idle subscribed connection, and connections per second")
    connections.add_arguments(connections_parser)

    args = parser.parse_args(argv)
    if args.command == "fanout":
        return fanout.run(args)
    return connections.run(args)


if __name__ == "__main__":
    sys.exit(main())
