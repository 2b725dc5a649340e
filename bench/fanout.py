"""``python -m bench fanout``: the same chat load against Cortex Core, its ceiling and its peers.

For each target the servers start fresh (a new SQLite file or PostgreSQL database, a private
Redis), load generators in separate processes drive the load, and the result is a table and one
JSON line. With ``--sweep`` the rate rises step by step until a step no longer holds (p99
delivery above 25 ms, a delivery missing, an error, or the senders could not send the planned
rate), then one step between the last held rate and the failed one refines the answer; the
highest held delivered rate is the target's score. Ratios compare Cortex Core with each peer from
the same run, because absolute figures move between runs on a shared machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.process import raise_open_file_limit, stop_on_sigterm
from bench.runner import HELD_P99_MS, LoadShape, StepResult, run_step
from bench.targets import TargetSpec, running_target

DEFAULT_TARGETS = "cortex:1:sqlite,cortex:2:postgres,ceiling:1,ceiling:2,socketio:2,channels:2"
# Seconds to let a server settle between sweep steps, so one step's backlog does not spill into the next.
SETTLE_SECONDS = 1.0

# The goals: (Cortex Core target, peer, minimum ratio of their highest held delivered rates).
GOALS = [
    ("cortex:1:sqlite", "ceiling:1", 0.35),
    ("cortex:2:postgres", "socketio:2", 1.5),
    ("cortex:2:postgres", "ceiling:2", 0.5),
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--targets", default=DEFAULT_TARGETS, help=f"comma-separated KIND[:PROCESSES[:STORE]] list (default: {DEFAULT_TARGETS})")
    parser.add_argument("--instances", type=int, help="process count for every target that names none (for example --targets cortex --instances 2)")
    parser.add_argument("--clients", type=int, default=100, help="WebSocket clients (default 100)")
    parser.add_argument("--conversations", type=int, default=10, help="rooms the clients are spread over (default 10)")
    parser.add_argument("--senders", type=int, default=5, help="senders per conversation (default 5)")
    parser.add_argument("--rate", type=float, default=1000, help="messages sent per second in total; with --sweep, the first step (default 1000)")
    parser.add_argument("--size", type=int, default=200, help="message content size in characters (default 200, at least 64)")
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds per step (default 5)")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of load before the measured window (default 1)")
    parser.add_argument("--drain", type=float, default=2.0, help="seconds to wait for deliveries after the last send (default 2)")
    parser.add_argument("--loadgens", type=int, default=2, help="load-generator processes (default 2)")
    parser.add_argument("--sweep", action="store_true", help="raise the rate step by step until a step no longer holds")
    parser.add_argument("--sweep-factor", type=float, default=1.5, help="rate multiplier between sweep steps (default 1.5)")
    parser.add_argument("--sweep-steps", type=int, default=16, help="maximum number of rising rates per target (default 16)")
    parser.add_argument("--attempts", type=int, default=2, help="steps run at a rate before the sweep counts it as failed (default 2)")
    parser.add_argument("--json-out", type=Path, help="also write the JSON result to this file")
    parser.add_argument("--profile", type=Path, metavar="DIR", help="write a py-spy profile of every server process for every step into DIR")
    parser.add_argument("--profile-format", choices=["flamegraph", "raw"], default="flamegraph", help="flamegraph (SVG, the default) or raw (collapsed stacks as text)")
    parser.add_argument("--keep-logs", type=Path, help="directory for server and load-generator logs (default: a temporary one)")


def validate(args: argparse.Namespace) -> list[TargetSpec]:
    specs = []
    for text in args.targets.split(","):
        if args.instances and ":" not in text:
            text = f"{text}:{args.instances}"
        specs.append(TargetSpec.parse(text))
    if args.clients < 2 or args.conversations < 1 or args.clients < 2 * args.conversations:
        raise ValueError("need at least two clients per conversation (--clients >= 2 * --conversations)")
    if not 1 <= args.senders <= args.clients // args.conversations:
        raise ValueError(f"--senders must be 1 to {args.clients // args.conversations} (the members of a conversation)")
    if args.size < 64:
        raise ValueError("--size must be at least 64 characters, room for the timing marker")
    if args.rate <= 0 or args.duration <= 0 or args.loadgens < 1:
        raise ValueError("--rate, --duration and --loadgens must be positive")
    if not 1 <= args.sweep_steps <= 30 or args.sweep_factor <= 1:
        raise ValueError("--sweep-steps must be 1 to 30 and --sweep-factor above 1")
    if not 1 <= args.attempts <= 5:
        raise ValueError("--attempts must be 1 to 5")
    return specs


def sweep_rates(args: argparse.Namespace) -> list[float]:
    if not args.sweep:
        return [args.rate]
    return [args.rate * args.sweep_factor**step for step in range(args.sweep_steps)]


def measure_target(
    spec: TargetSpec, shape: LoadShape, args: argparse.Namespace, log_dir: Path, steps: list[StepResult]
) -> bool:
    """Start the target, run its steps (one, or a sweep), stop it; append each step's result to `steps`.

    Returns True when some rate failed every attempt, so the highest held rate is the limit; False
    when the sweep ran out of rates first (or a single step held).
    """

    def step_at(rate: float) -> StepResult:
        step = asyncio.run(run_step(target, shape, rate, log_dir))
        steps.append(step)
        print(format_step(step), file=sys.stderr, flush=True)
        return step

    def holds(rate: float) -> bool:
        # On a shared machine one stall elsewhere can fail a step, so a rate counts as failed
        # only when every one of its attempts fails.
        for attempt in range(args.attempts if args.sweep else 1):
            if attempt:
                time.sleep(SETTLE_SECONDS)
            if step_at(rate).held:
                return True
        return False

    with running_target(spec, shape.room_plan(), log_dir=log_dir) as target:
        last_held: float | None = None
        for rate in sweep_rates(args):
            if not holds(rate):
                if args.sweep and last_held is not None:
                    time.sleep(SETTLE_SECONDS)
                    holds(math.sqrt(last_held * rate))
                return True
            last_held = rate
            time.sleep(SETTLE_SECONDS)
    return False


def best_step(steps: list[StepResult]) -> StepResult | None:
    held = [step for step in steps if step.held]
    return max(held, key=lambda step: step.delivered_per_second) if held else None


def format_step(step: StepResult) -> str:
    verdict = "held" if step.held else "NOT held: " + "; ".join(step.why_not_held)
    return (
        f"  {step.target:<18} rate {step.rate:>8.0f}/s  delivered {step.delivered_per_second:>9.0f}/s  "
        f"p99 {step.delivery['p99_ms']} ms  cpu {step.server_cpu_percent:.0f}%  {verdict}"
    )


def render_table(results: dict[str, list[StepResult]]) -> str:
    header = (
        f"{'target':<18} {'sent/s':>8} {'deliv/s':>9} {'ack p50/p95/p99/max ms':>26} "
        f"{'delivery p50/p95/p99/max ms':>29} {'cpu%':>5} {'rss MB':>7} {'lg cpu%':>7} {'err':>4} {'miss':>5} {'stored':>7} held"
    )
    lines = [header, "-" * len(header)]
    for steps in results.values():
        for step in steps:
            lines.append(
                f"{step.target:<18} {step.sent_per_second:>8.0f} {step.delivered_per_second:>9.0f} "
                f"{_latencies(step.ack):>26} {_latencies(step.delivery):>29} {step.server_cpu_percent:>5.0f} "
                f"{step.server_rss_mb:>7.0f} {step.loadgen_cpu_percent:>7.0f} {step.errors:>4} {step.missing:>5} "
                f"{'-' if step.stored is None else step.stored:>7} {'yes' if step.held else 'no'}"
            )
    return "\n".join(lines)


def _latencies(summary: dict[str, float | None]) -> str:
    return "/".join("-" if summary[key] is None else f"{summary[key]:.1f}" for key in ("p50_ms", "p95_ms", "p99_ms", "max_ms"))


def render_summary(
    results: dict[str, list[StepResult]], limits_found: dict[str, bool], *, sweep: bool
) -> tuple[str, dict[str, Any], list[dict[str, Any]]]:
    best = {name: best_step(steps) for name, steps in results.items()}
    lines = [f"Highest held delivered rate (p99 delivery <= {HELD_P99_MS:g} ms, nothing missing, no errors):"]
    for name, step in best.items():
        if step is None:
            lines.append(f"  {name:<18} none held")
            continue
        note = "" if limits_found.get(name) or not sweep else "  (no rate failed: raise --rate or --sweep-steps to find the limit)"
        lines.append(f"  {name:<18} {step.delivered_per_second:>9.0f} msg/s at {step.rate:.0f} sent/s{note}")

    ratios: dict[str, Any] = {}
    cortex_names = [name for name in results if name.startswith("cortex")]
    peer_names = [name for name in results if not name.startswith("cortex")]
    if cortex_names and peer_names:
        lines.append("Ratios, Cortex Core / peer:")
        for cortex in cortex_names:
            for peer in peer_names:
                ratio = _ratio(best[cortex], best[peer])
                ratios[f"{cortex} / {peer}"] = ratio
                lines.append(f"  {cortex:<18} / {peer:<12} {'n/a' if ratio is None else f'{ratio:.2f}'}")

    goals = []
    for cortex, peer, minimum in GOALS:
        if cortex in results and peer in results:
            ratio = _ratio(best[cortex], best[peer])
            goals.append({"cortex": cortex, "peer": peer, "minimum": minimum, "ratio": ratio, "met": ratio is not None and ratio >= minimum})
    if goals:
        lines.append("Goals:")
        for goal in goals:
            shown = "n/a" if goal["ratio"] is None else f"{goal['ratio']:.2f}"
            lines.append(f"  {goal['cortex']} >= {goal['minimum']:g} x {goal['peer']}: {shown} -> {'met' if goal['met'] else 'NOT met'}")
    return "\n".join(lines), ratios, goals


def _ratio(numerator: StepResult | None, denominator: StepResult | None) -> float | None:
    if numerator is None or denominator is None or denominator.delivered_per_second <= 0:
        return None
    return round(numerator.delivered_per_second / denominator.delivered_per_second, 3)


def run(args: argparse.Namespace) -> int:
    try:
        specs = validate(args)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    raise_open_file_limit()
    stop_on_sigterm()
    shape = LoadShape(
        clients=args.clients,
        rooms=args.conversations,
        senders_per_room=args.senders,
        size=args.size,
        duration=args.duration,
        warmup=args.warmup,
        drain=args.drain,
        loadgens=args.loadgens,
        profile_dir=args.profile,
        profile_format=args.profile_format,
    )

    with tempfile.TemporaryDirectory(prefix="cortex-bench-") as temporary:
        log_dir = args.keep_logs or Path(temporary)
        log_dir.mkdir(parents=True, exist_ok=True)
        results: dict[str, list[StepResult]] = {}
        started = time.monotonic()
        failures: dict[str, str] = {}
        limits_found: dict[str, bool] = {}
        for spec in specs:
            print(f"{spec.name}: starting", file=sys.stderr, flush=True)
            steps = results[spec.name] = []
            try:
                limits_found[spec.name] = measure_target(spec, shape, args, log_dir, steps)
            except (RuntimeError, TimeoutError, OSError) as error:
                # Keep the steps measured so far and go on with the next target.
                failures[spec.name] = f"{type(error).__name__}: {error}"
                print(f"{spec.name}: failed after {len(steps)} steps: {failures[spec.name]}", file=sys.stderr, flush=True)

    print(render_table(results))
    summary, ratios, goals = render_summary(results, limits_found, sweep=args.sweep)
    print(summary)
    for name, failure in failures.items():
        print(f"{name} stopped early: {failure}")
    document = {
        "benchmark": "fanout",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "cpus": _cpu_count()},
        "load": {key: getattr(args, key) for key in ("clients", "conversations", "senders", "rate", "size", "duration", "warmup", "drain", "loadgens", "sweep")},
        "seconds": round(time.monotonic() - started, 1),
        "targets": {
            name: {
                "best": None if best_step(steps) is None else best_step(steps).to_json(),
                # False when no rate failed, so the limit lies above the highest rate run.
                "limit_found": limits_found.get(name, False),
                "steps": [step.to_json() for step in steps],
            }
            for name, steps in results.items()
        },
        "ratios": ratios,
        "goals": goals,
        "failures": failures,
    }
    line = json.dumps(document)
    if args.json_out:
        args.json_out.write_text(line + "\n")
    print(line)
    return 0


def _cpu_count() -> int | None:
    import os

    return os.cpu_count()
