"""Compare two gateways point by point: `python -m benchmarks.ab --a 'eventLoop: asyncio' --b 'eventLoop: uvloop'`.

This machine's speed drifts by tens of percent within minutes (other tenants of the host), more than most
changes are worth, so two `benchmarks.run` invocations minutes apart cannot tell a 10% change from noise. Here
both gateways run side by side (each pinned to core 0, one loaded at a time, the other idle) and take turns at
short windows in A B B A order, round after round; each round's B/A ratio compares two windows seconds apart, and
the median over the rounds is the figure. A side is a config (`--a`/`--b`: top-level YAML lines added to the
gateway's config, replacing the benchmark's own of the same key) and/or a checkout (`--a-tree`/`--b-tree`, e.g. a
`git worktree` of the commit before a change).

Modes: `turn` (closed loop, whole turns), `ack` (closed loop, turns running), `ack-held` (closed loop, the engine
answers after a minute: the webhook path alone; fresh gateways every round), `open` / `open-held` (open loop at
`--rate`). Prints each window and the median ratios, writes JSON (`--out`).
"""

from __future__ import annotations

import argparse
import datetime
import json
import shlex
import statistics
import sys
from pathlib import Path
from typing import Any

from benchmarks.common import fsync_latency
from benchmarks.run import HELD_ENGINE_DELAY_MS, REPO, Bench, Proc, Procs, Settings, machine_facts, workspace

MODES = {  # mode -> (load generator's mode, engine delay in ms or None for --engine-delay-ms, fresh per round)
    "turn": ("turn", None, False),
    "ack": ("ack", 0, False),
    "ack-held": ("ack", HELD_ENGINE_DELAY_MS, True),
    "open": ("open", 0, False),
    "open-held": ("open", HELD_ENGINE_DELAY_MS, True),
}


def window_figures(point: dict[str, Any]) -> dict[str, float | None]:
    result = point["result"]
    latency = result.get("turn_latency_ms") or result.get("ack_latency_ms") or {}
    return {
        "rate": result.get("turns_per_s") or result.get("acks_per_s"),
        "cpu_us_per_msg": point["server_cpu_us_per_msg"],
        "p50_ms": latency.get("p50"),
        "p99_ms": latency.get("p99"),
    }


def median_ratio(rounds: list[dict[str, dict[str, Any]]], key: str) -> dict[str, float] | None:
    ratios = [r["b"][key] / r["a"][key] for r in rounds if r["a"].get(key) and r["b"].get(key) is not None]
    if not ratios:
        return None
    return {"median": round(statistics.median(ratios), 3), "min": round(min(ratios), 3), "max": round(max(ratios), 3)}


class AB:
    def __init__(self, bench: Bench, args: argparse.Namespace) -> None:
        self.bench = bench
        self.args = args
        self.load_mode, delay, self.fresh = MODES[args.mode]
        self.delay = args.engine_delay_ms if delay is None else delay
        self.sides = {"a": (args.a, Path(args.a_tree or REPO)), "b": (args.b, Path(args.b_tree or REPO))}
        self.gateways: dict[str, Proc] = {}

    def describe(self, side: str) -> str:
        extra, tree = self.sides[side]
        return " ".join([*extra, *([] if tree == REPO else [tree.name])]) or "(as is)"

    def start(self, side: str, round_no: int) -> None:
        extra, tree = self.sides[side]
        # On Redis each side has keys of its own: with shared ones the idle gateway would take the loaded one's work.
        self.gateways[side] = self.bench.start_gateway(
            f"{side}-{round_no}", self.args.store, extra=extra, tree=tree, redis_prefix=f"ab-{side}"
        )

    def stop(self, side: str) -> None:
        self.bench.stop_gateway(self.gateways.pop(side), graceful=not self.fresh)

    def window(self, side: str, round_no: int) -> dict[str, Any]:
        gateway = self.gateways[side]
        self.bench.reset_fakes(self.delay)
        result = self.bench.load([gateway], self.load_mode, self.args.senders, watch=[gateway])
        facts: dict[str, Any] = {"side": side, "round": round_no}
        if self.load_mode != "turn" and not self.fresh:  # turns ran behind the acks: let them finish
            facts["drain"] = self.bench.drain(result["ok_total"], f"{side} round {round_no}")
        point = self.bench.record(
            f"{self.args.mode}, {self.args.senders} senders, round {round_no}",
            f"{side.upper()} {self.describe(side)}"[:22],
            result,
            servers=[gateway],
            **facts,
        )
        return window_figures(point)

    def run(self) -> list[dict[str, dict[str, Any]]]:
        self.bench.start_fakes(self.delay)
        if self.args.store == "redis":
            self.bench.start_redis()
        rounds: list[dict[str, dict[str, Any]]] = []
        try:
            for round_no in range(self.args.rounds):
                order = ("a", "b") if round_no % 2 == 0 else ("b", "a")
                if self.fresh or not self.gateways:
                    for side in order:
                        self.start(side, round_no)
                figures = {side: self.window(side, round_no) for side in order}
                if self.fresh:
                    for side in order:
                        self.stop(side)
                rounds.append(figures)
        finally:
            for side in list(self.gateways):
                self.stop(side)
        return rounds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--a", action="append", default=[], metavar="YAML_LINE", help="config line of side A")
    parser.add_argument("--b", action="append", default=[], metavar="YAML_LINE", help="config line of side B")
    parser.add_argument("--a-tree", help="checkout that side A's gateway runs from (default: this one)")
    parser.add_argument("--b-tree", help="checkout that side B's gateway runs from (default: this one)")
    parser.add_argument("--mode", choices=sorted(MODES), default="turn")
    parser.add_argument("--store", choices=["sqlite", "memory", "redis"], default="sqlite")
    parser.add_argument("--senders", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=6, help="rounds of A B (or B A) windows (default 6)")
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per window (default 3)")
    parser.add_argument("--engine-delay-ms", type=float, default=0.0, help="the fake engine's delay (turn mode)")
    parser.add_argument("--rate", type=float, default=1000.0, help="open-loop webhooks per second")
    parser.add_argument("--out", help="the JSON file (default benchmarks/results/ab-<timestamp>.json)")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.senders < 1 or args.duration <= 0 or args.rate <= 0 or args.engine_delay_ms < 0:
        parser.error(
            "--rounds and --senders must be at least 1, --duration and --rate positive, --engine-delay-ms not negative"
        )
    for tree in (args.a_tree, args.b_tree):
        if tree is not None and not (Path(tree) / "sms_gateway").is_dir():
            parser.error(f"{tree} is not a checkout of the gateway (no sms_gateway/ in it)")
    if not (args.a or args.a_tree or args.b or args.b_tree):
        parser.error("give at least one of --a, --b, --a-tree, --b-tree: otherwise A and B are the same")

    settings = Settings(
        quick=True,
        duration=args.duration,
        warmup=0.5,
        senders=(args.senders,),
        sessions=0,
        turns=0,
        open_rate=args.rate,
        log_level="info",
        worker_concurrency=None,
        redis_appendonly="no",
        client="raw",
        quiet_wait=5.0,
    )
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = Path(args.out) if args.out else REPO / "benchmarks" / "results" / f"ab-{stamp}.json"
    meta = machine_facts() | {
        "command": shlex.join([sys.executable, "-m", "benchmarks.ab", *(argv if argv is not None else sys.argv[1:])])
    }
    with workspace(False) as workdir:
        meta["fsync_ms_at_start"] = fsync_latency(workdir)
        procs = Procs(workdir)
        bench = Bench(settings, workdir, procs)
        ab = AB(bench, args)
        try:
            rounds = ab.run()
        finally:
            procs.stop_all()
        meta["fsync_ms_at_end"] = fsync_latency(workdir)
    summary = {key: median_ratio(rounds, key) for key in ("rate", "cpu_us_per_msg", "p50_ms", "p99_ms")}
    print(f"\nB/A over {len(rounds)} rounds (median, min-max): A = {ab.describe('a')}, B = {ab.describe('b')}")
    for key, value in summary.items():
        if value is not None:
            print(f"  {key:<15} {value['median']:6.3f}  ({value['min']:.3f}-{value['max']:.3f})")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "meta": meta,
                "args": vars(args),
                "rounds": rounds,
                "summary": summary,
                "points": bench.points,
                "gateway_runs": bench.gateway_runs,
            },
            indent=1,
            default=str,
        )
    )
    print(f"JSON: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
