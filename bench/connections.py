"""``python -m bench connections --count N``: server memory per idle connection, and connect rate.

Starts a fresh server, creates one user per connection and rooms of about 100 members, measures
the server's RSS, then opens N authenticated WebSocket connections from several load-generator
processes, each subscribed to its room and then idle. Reported: connections opened per second
(from the start signal until the last generator has every connection subscribed) and the growth
of server RSS divided by N, measured after a short settling time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.process import raise_open_file_limit, read_resources, stop_on_sigterm
from bench.runner import read_prefixed_line
from bench.targets import RoomPlan, RunningTarget, TargetSpec, running_target

# Clients per load-generator process; more generators share a large count.
CLIENTS_PER_LOADGEN = 2500
MEMBERS_PER_ROOM = 100
# Server RSS per idle subscribed connection that counts as met, at 10,000 connections.
GOAL_BYTES_PER_CONNECTION = 30 * 1024


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--count", type=int, default=1000, help="idle connections to open (default 1000)")
    parser.add_argument("--target", default="cortex:1:sqlite", help="server to measure, KIND[:PROCESSES[:STORE]] (default cortex:1:sqlite)")
    parser.add_argument("--loadgens", type=int, help=f"load-generator processes (default: one per {CLIENTS_PER_LOADGEN} connections, at least 2)")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds between the last connection and the memory reading (default 3)")
    parser.add_argument("--json-out", type=Path, help="also write the JSON result to this file")
    parser.add_argument("--keep-logs", type=Path, help="directory for server and load-generator logs (default: a temporary one)")


async def open_idle_connections(
    target: RunningTarget, plan: RoomPlan, loadgens: int, settle: float, work_dir: Path
) -> dict[str, Any]:
    specs = target.client_specs(plan)
    groups = [group for group in (specs[index::loadgens] for index in range(loadgens)) if group]
    processes: list[asyncio.subprocess.Process] = []
    logs = []
    try:
        for index, group in enumerate(groups):
            plan_path = work_dir / f"idle-{index}.json"
            plan_path.write_text(json.dumps({"mode": "idle", "target": target.spec.kind, "clients": group}))
            log = (work_dir / f"idle-{index}.log").open("wb")
            logs.append(log)
            processes.append(
                await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "bench.loadgen", str(plan_path),
                    stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=log,
                )
            )
        await asyncio.gather(*(read_prefixed_line(process, "STARTED", 60, f"load generator {index}") for index, process in enumerate(processes)))

        await asyncio.sleep(1.0)
        before = read_resources(target.servers)
        started = time.monotonic()
        for process in processes:
            process.stdin.write(b"GO\n")
            await process.stdin.drain()
        timeout = 120 + plan.clients / 50
        ready = [
            json.loads(line)
            for line in await asyncio.gather(
                *(read_prefixed_line(process, "READY", timeout, f"load generator {index}") for index, process in enumerate(processes))
            )
        ]
        connect_seconds = time.monotonic() - started

        await asyncio.sleep(settle)
        after = read_resources(target.servers)

        for process in processes:
            process.stdin.write(b"STOP\n")
            await process.stdin.drain()
        results = [
            json.loads(line)
            for line in await asyncio.gather(
                *(read_prefixed_line(process, "RESULT", 60, f"load generator {index}") for index, process in enumerate(processes))
            )
        ]
    finally:
        for process in processes:
            if process.returncode is None:
                try:
                    await asyncio.wait_for(process.wait(), 30)
                except TimeoutError:
                    process.kill()
                    await process.wait()
        for log in logs:
            log.close()

    opened = sum(item["opened"] for item in ready)
    failed = sum(item["failed"] for item in ready)
    errors = failed + sum(result["errors"] + result["unexpected_closes"] for result in results)
    growth = after.rss_bytes - before.rss_bytes
    return {
        "target": target.spec.name,
        "count": plan.clients,
        "opened": opened,
        "errors": errors,
        "error_samples": [sample for result in results for sample in result["error_samples"]][:5],
        "connect_seconds": round(connect_seconds, 2),
        "connections_per_second": round(opened / connect_seconds, 1) if connect_seconds > 0 else None,
        "server_rss_before_mb": round(before.rss_bytes / 2**20, 1),
        "server_rss_after_mb": round(after.rss_bytes / 2**20, 1),
        "rss_per_connection_kb": round(growth / opened / 1024, 2) if opened else None,
    }


def render(result: dict[str, Any]) -> str:
    lines = [
        f"target                  {result['target']}",
        f"connections opened      {result['opened']} of {result['count']} ({result['errors']} errors)",
        f"connections per second  {result['connections_per_second']} ({result['connect_seconds']} s in total)",
        f"server RSS              {result['server_rss_before_mb']} MB before, {result['server_rss_after_mb']} MB after",
        f"RSS per connection      {result['rss_per_connection_kb']} KB",
    ]
    if result["count"] >= 10_000 and result["rss_per_connection_kb"] is not None:
        met = result["rss_per_connection_kb"] * 1024 <= GOAL_BYTES_PER_CONNECTION
        lines.append(f"goal <= {GOAL_BYTES_PER_CONNECTION // 1024} KB at 10,000   {'met' if met else 'NOT met'}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    try:
        spec = TargetSpec.parse(args.target)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if not 1 <= args.count <= 50_000:
        print("error: --count must be 1 to 50000", file=sys.stderr)
        return 2
    limit = raise_open_file_limit()
    stop_on_sigterm()
    if args.count + 100 > limit:
        print(f"error: --count {args.count} needs more open files than this process may have ({limit}); raise ulimit -n", file=sys.stderr)
        return 2

    loadgens = args.loadgens or max(2, -(-args.count // CLIENTS_PER_LOADGEN))
    rooms = max(1, args.count // MEMBERS_PER_ROOM)
    plan = RoomPlan(clients=args.count, rooms=rooms, senders_per_room=0)
    with tempfile.TemporaryDirectory(prefix="cortex-bench-") as temporary:
        log_dir = args.keep_logs or Path(temporary)
        log_dir.mkdir(parents=True, exist_ok=True)
        print(f"{spec.name}: starting, creating {args.count} users", file=sys.stderr, flush=True)
        with running_target(spec, plan, log_dir=log_dir) as target:
            result = asyncio.run(open_idle_connections(target, plan, loadgens, args.settle, log_dir))

    result["date"] = datetime.now(UTC).isoformat(timespec="seconds")
    result["benchmark"] = "connections"
    print(render(result))
    line = json.dumps(result)
    if args.json_out:
        args.json_out.write_text(line + "\n")
    print(line)
    return 0 if result["errors"] == 0 else 1


