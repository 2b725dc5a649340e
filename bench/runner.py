"""Run one load step against a running target with several load-generator processes.

A step writes one plan per load generator, starts them and waits until every client is connected
and subscribed. Then it starts them all at one instant and reads the servers' CPU time at the
start and end of the measured window. Last, it collects each generator's counters and merges them
into a StepResult.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.histogram import Histogram
from bench.process import python_command, read_resources
from bench.targets import RoomPlan, RunningTarget, count_stored_messages

# Seconds between GO and the first send, so every generator has read GO before the load starts.
START_DELAY_SECONDS = 0.3
READY_TIMEOUT_SECONDS = 120.0
# p99 delivery latency within which a step holds.
HELD_P99_MS = 25.0
# Share of the planned sends that must go out for a step to count as holding its rate.
HELD_SEND_SHARE = 0.95


@dataclass
class LoadShape:
    clients: int
    rooms: int
    senders_per_room: int
    size: int
    duration: float
    warmup: float
    drain: float
    loadgens: int
    # Where to write a py-spy profile of every server process per step; None profiles nothing.
    profile_dir: Path | None = None
    # py-spy's output format: "flamegraph" (SVG) or "raw" (collapsed stacks, one line per stack).
    profile_format: str = "flamegraph"

    def room_plan(self) -> RoomPlan:
        return RoomPlan(self.clients, self.rooms, self.senders_per_room)


@dataclass
class StepResult:
    target: str
    rate: float
    sent: int
    sent_per_second: float
    delivered: int
    delivered_per_second: float
    ack: dict[str, float | None]
    delivery: dict[str, float | None]
    missing: int
    errors: int
    error_samples: list[str]
    server_cpu_percent: float
    server_rss_mb: float
    loadgen_cpu_percent: float
    stored: int | None
    sent_total: int
    held: bool
    why_not_held: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


async def read_prefixed_line(process: asyncio.subprocess.Process, prefix: str, timeout: float, name: str) -> str:
    """Read stdout lines until one starts with `prefix`; return the rest of it."""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"{name}: no {prefix} line within {timeout:.0f} s")
        line = await asyncio.wait_for(process.stdout.readline(), remaining)
        if not line:
            raise RuntimeError(f"{name} exited (code {await process.wait()}) before printing {prefix}")
        text = line.decode().rstrip("\n")
        if text.startswith(prefix):
            return text[len(prefix) :].strip()


async def run_step(target: RunningTarget, shape: LoadShape, rate: float, work_dir: Path) -> StepResult:
    plan = shape.room_plan()
    specs = target.client_specs(plan)
    # The users persist across the steps of a sweep, so client_msg_ids carry a per-step prefix.
    # Cortex Core acks a repeated one as a duplicate and neither stores nor delivers it again.
    run_id = uuid.uuid4().hex[:8]
    for spec in specs:
        spec["run"] = run_id
    groups = [specs[index :: shape.loadgens] for index in range(shape.loadgens)]
    groups = [group for group in groups if group]
    total_senders = sum(1 for spec in specs if spec["sender"]) or 1

    processes: list[asyncio.subprocess.Process] = []
    logs = []
    try:
        for index, group in enumerate(groups):
            senders = sum(1 for spec in group if spec["sender"])
            plan_path = work_dir / f"loadgen-{index}.json"
            plan_path.write_text(
                json.dumps(
                    {
                        "mode": "fanout",
                        "target": target.spec.kind,
                        "clients": group,
                        "rate": rate * senders / total_senders,
                        "size": shape.size,
                        "duration": shape.duration,
                        "warmup": shape.warmup,
                        "drain": shape.drain,
                    }
                )
            )
            log = (work_dir / f"loadgen-{index}.log").open("wb")
            logs.append(log)
            processes.append(
                await asyncio.create_subprocess_exec(
                    *python_command("-m", "bench.loadgen", str(plan_path)),
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=log,
                )
            )

        ready = await asyncio.gather(
            *(read_prefixed_line(process, "READY", READY_TIMEOUT_SECONDS, f"load generator {index}") for index, process in enumerate(processes))
        )
        failed_connections = sum(json.loads(line)["failed"] for line in ready)
        stored_before = count_stored_messages(target)

        start_us = time.monotonic_ns() // 1000 + int(START_DELAY_SECONDS * 1e6)
        for process in processes:
            process.stdin.write(f"GO {start_us}\n".encode())
            await process.stdin.drain()

        # Server CPU over the measured window only (after the warm-up, before the drain).
        window_start = start_us / 1e6 + shape.warmup
        await asyncio.sleep(max(0.0, window_start - time.monotonic()))
        profilers = await start_profilers(target, shape, rate)
        before = read_resources(target.servers)
        await asyncio.sleep(shape.duration)
        after = read_resources(target.servers)
        for profiler in profilers:
            await asyncio.wait_for(profiler.wait(), 60)

        results = [
            json.loads(line)
            for line in await asyncio.gather(
                *(
                    read_prefixed_line(process, "RESULT", shape.drain + shape.duration + 60, f"load generator {index}")
                    for index, process in enumerate(processes)
                )
            )
        ]
        for process in processes:
            await asyncio.wait_for(process.wait(), 30)
    finally:
        for process in processes:
            if process.returncode is None:
                process.kill()
                await process.wait()
        for log in logs:
            log.close()

    stored_after = count_stored_messages(target)
    stored = None if stored_before is None or stored_after is None else stored_after - stored_before
    cpu_percent = 100 * (after.cpu_seconds - before.cpu_seconds) / shape.duration
    return summarize(target, shape, plan, rate, results, failed_connections, cpu_percent, after.rss_bytes, stored)


async def start_profilers(target: RunningTarget, shape: LoadShape, rate: float) -> list[asyncio.subprocess.Process]:
    """Start py-spy on every server process for the measured window, when a profile is requested.

    py-spy stops the process briefly for each sample (100 per second), so a profiled step runs a
    little slower than an unprofiled one.
    """
    if shape.profile_dir is None:
        return []
    executable = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    shape.profile_dir.mkdir(parents=True, exist_ok=True)
    profilers = []
    for index, server in enumerate(target.servers):
        suffix = "svg" if shape.profile_format == "flamegraph" else "txt"
        output = shape.profile_dir / f"{target.spec.name.replace(':', '-')}-rate{rate:.0f}-process{index}.{suffix}"
        profilers.append(
            await asyncio.create_subprocess_exec(
                executable, "record", "--pid", str(server.pid), "--duration", str(max(1, round(shape.duration))),
                "--rate", "100", "--subprocesses", "--format", shape.profile_format, "--output", str(output),
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
            )
        )
    return profilers


def summarize(
    target: RunningTarget,
    shape: LoadShape,
    plan: RoomPlan,
    rate: float,
    results: list[dict[str, Any]],
    failed_connections: int,
    server_cpu_percent: float,
    server_rss_bytes: int,
    stored: int | None,
) -> StepResult:
    sent = sum(result["sent"] for result in results)
    sent_total = sum(result["sent_total"] for result in results)
    acks = sum(result["acks"] for result in results)
    sent_per_room: Counter[int] = Counter()
    delivered_per_room: Counter[int] = Counter()
    for result in results:
        sent_per_room.update({int(room): n for room, n in result["sent_per_room"].items()})
        delivered_per_room.update({int(room): n for room, n in result["delivered_per_room"].items()})

    # Each message is due to every other member of its room, and its ack to the sender.
    missing = max(0, sent - acks)
    for room in range(plan.rooms):
        expected = sent_per_room[room] * (plan.members(room) - 1)
        missing += max(0, expected - delivered_per_room[room])
    delivered = sum(delivered_per_room.values()) + acks

    errors = failed_connections + sum(result["errors"] + result["unexpected_closes"] for result in results)
    error_samples = [sample for result in results for sample in result["error_samples"]][:5]
    ack = Histogram.merged(result["ack_latency"] for result in results).summary()
    delivery = Histogram.merged(result["delivery_latency"] for result in results).summary()
    loadgen_cpu = sum(result["cpu_seconds"] for result in results)
    loadgen_seconds = shape.warmup + shape.duration + shape.drain

    why_not_held = []
    if errors:
        why_not_held.append(f"{errors} errors")
    if missing:
        why_not_held.append(f"{missing} deliveries missing")
    if delivery["p99_ms"] is None or delivery["p99_ms"] > HELD_P99_MS:
        why_not_held.append(f"p99 delivery {delivery['p99_ms']} ms > {HELD_P99_MS:g} ms")
    if sent < HELD_SEND_SHARE * rate * shape.duration:
        why_not_held.append(f"sent {sent / shape.duration:.0f}/s of {rate:.0f}/s planned")
    if stored is not None and stored < sent_total:
        why_not_held.append(f"stored {stored} of {sent_total} sent")

    return StepResult(
        target=target.spec.name,
        rate=round(rate, 1),
        sent=sent,
        sent_per_second=round(sent / shape.duration, 1),
        delivered=delivered,
        delivered_per_second=round(delivered / shape.duration, 1),
        ack=ack,
        delivery=delivery,
        missing=missing,
        errors=errors,
        error_samples=error_samples,
        server_cpu_percent=round(server_cpu_percent, 1),
        server_rss_mb=round(server_rss_bytes / 2**20, 1),
        loadgen_cpu_percent=round(100 * loadgen_cpu / loadgen_seconds, 1),
        stored=stored,
        sent_total=sent_total,
        held=not why_not_held,
        why_not_held=why_not_held,
    )
