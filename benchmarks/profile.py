"""Where the gateway's time goes: a benchmark point run with py-spy sampling the gateway process.

    python -m benchmarks.profile [--mode turn|ack] [--store sqlite|redis|memory] [--senders 100] [--duration 20]

The gateway (core 0), fakes and load generator (core 1) are started as in `benchmarks.run`; py-spy attaches to
the gateway from core 1 (`--nonblocking`, so sampling does not pause the gateway) and records collapsed stacks of
every thread while it runs Python code (idle waits are not sampled). Printed: the load's figures, the share of
samples per thread, and the top functions by own time (the frame that was running) and by inclusive time.
Written: the raw collapsed stacks (flamegraph.pl / speedscope read them) and a JSON summary (`--out-dir`).

py-spy is not a dependency of the gateway: `pip install py-spy` (or `pip install -e '.[bench]'`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from benchmarks.run import LOAD_CORE, Bench, Procs, Settings, pinned, workspace

_FRAME_RE = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def function_of(frame: str) -> str:
    """`send (sms_gateway/outbox.py:97)` -> `send (sms_gateway/outbox.py)`: lines of one function add up."""
    match = _FRAME_RE.match(frame.strip())
    if match is None:
        return frame.strip()
    path = match.group("file")
    for marker in ("site-packages/", "lib/python3."):
        if marker in path:
            path = path.split(marker, 1)[1]
            if marker == "lib/python3.":
                path = "stdlib/" + path.split("/", 1)[-1]
            break
    return f"{match.group('func')} ({path})"


def analyse(collapsed: Path, top: int, wall_samples: float | None = None) -> dict[str, Any]:
    """`wall_samples` (rate x seconds recorded) turns a thread's samples into the share of wall time it ran."""
    own: Counter[str] = Counter()
    lines: Counter[str] = Counter()
    store_ops: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        if frames and frames[0].startswith(("thread ", "process ")):
            thread = frames[0]
            frames = frames[1:]
            if frames and frames[0].startswith("thread "):
                thread, frames = frames[0], frames[1:]
            threads[thread] += count
        if not frames:
            continue
        functions = [function_of(f) for f in frames]
        own[functions[-1]] += count
        lines[frames[-1].strip()] += count
        # The SQLite store runs each operation as `_run.<locals>.call` on its own thread: name the operation
        # (the frame called from it), or the statement `call` itself was in (BEGIN, COMMIT) by its line.
        for i, frame in enumerate(frames):
            if "_run.<locals>.call" in frame:
                store_ops[function_of(frames[i + 1]) if i + 1 < len(frames) else frame.strip()] += count
                break
        for name in set(functions):
            inclusive[name] += count

    def rows(counter: Counter[str]) -> list[dict[str, Any]]:
        return [{"function": name, "samples": n, "share": round(n / total, 4)} for name, n in counter.most_common(top)]

    thread_rows = rows(threads)
    if wall_samples:
        for row in thread_rows:
            row["busy_share_of_wall_time"] = round(row["samples"] / wall_samples, 3)
    return {
        "samples": total,
        "threads": thread_rows,
        "own": rows(own),
        "lines": rows(lines),
        "store_operations": rows(store_ops),
        "inclusive": rows(inclusive),
    }


def print_analysis(result: dict[str, Any]) -> None:
    print(f"\n{result['samples']} samples")
    print("\nby thread (share of samples; of wall time: how much of the run the thread was not idle):")
    for row in result["threads"]:
        wall = row.get("busy_share_of_wall_time")
        print(f"  {row['share']:6.1%}  {'' if wall is None else f'({wall:.0%} of wall time)'}  {row['function']}")
    print("  (a thread blocked in fsync or a lock counts as busy; EpollSelector.select is the event loop waiting)")
    for key, title in (
        ("own", "functions by own time (the running frame)"),
        ("lines", "lines by own time"),
        ("store_operations", "store operations (samples on the store's thread)"),
        ("inclusive", "functions by inclusive time"),
    ):
        if not result[key]:
            continue
        print(f"\ntop {len(result[key])} {title}:")
        for i, row in enumerate(result[key], 1):
            print(f"  {i:>2}. {row['share']:6.1%}  {row['function']}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=["turn", "ack"], default="turn")
    parser.add_argument("--store", choices=["sqlite", "redis", "memory"], default="sqlite")
    parser.add_argument("--senders", type=int, default=100)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--engine-delay-ms", type=float, default=0.0)
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--out-dir", default=str(Path(__file__).resolve().parent / "results"))
    args = parser.parse_args()
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(py_spy).exists():
        parser.error("py-spy is not installed: pip install py-spy")
    settings = Settings(
        quick=False,
        duration=args.duration,
        warmup=1.0,
        senders=(args.senders,),
        sessions=0,
        turns=0,
        open_rate=1000.0,
        log_level=args.log_level,
        worker_concurrency=None,
        redis_appendonly="no",
        client="raw",
    )
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = out_dir / f"profile-{args.mode}-{args.store}-{args.senders}-{stamp}"
    with workspace(False) as workdir:
        procs = Procs(workdir)
        bench = Bench(settings, workdir, procs)
        try:
            bench.start_fakes(args.engine_delay_ms)
            if args.store == "redis":
                bench.start_redis()
            gateway = bench.start_gateway("profile", args.store)
            raw = base.with_suffix(".collapsed.txt")
            spy_argv = pinned(
                [
                    py_spy,
                    "record",
                    "--pid",
                    str(gateway.pid),
                    "--rate",
                    str(args.rate),
                    "--threads",
                    "--nonblocking",
                    "--format",
                    "raw",
                    "--output",
                    str(raw),
                ],
                LOAD_CORE,
            )
            spy = subprocess.Popen(spy_argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            recorded_from = time.monotonic()
            try:
                time.sleep(1.0)
                if spy.poll() is not None:
                    raise RuntimeError(f"py-spy failed: {spy.stderr.read().decode() if spy.stderr else ''}")
                result = bench.load([gateway], args.mode, args.senders, watch=[gateway])
            finally:
                recorded = time.monotonic() - recorded_from
                with contextlib.suppress(ProcessLookupError):
                    spy.send_signal(signal.SIGINT)
                try:
                    spy.wait(60)
                except subprocess.TimeoutExpired:
                    spy.kill()
            bench.stop_gateway(gateway)
        finally:
            procs.stop_all()
    rate_key = "turns_per_s" if args.mode == "turn" else "acks_per_s"
    lat_key = "turn_latency_ms" if args.mode == "turn" else "ack_latency_ms"
    print(
        f"{args.mode} x {args.senders} senders, {args.store}: {result[rate_key]}/s, p50 {result[lat_key]['p50']} ms,"
        f" p99 {result[lat_key]['p99']} ms; cores: {result['cpu_cores']}"
    )
    print(f"load: {result['command']}")
    # The gateway is busy only while the load runs (warm-up and window): that is the wall time to compare with.
    analysis = analyse(raw, args.top, args.rate * min(recorded, result["window_s"] + settings.warmup))
    print_analysis(analysis)
    report = {
        "args": vars(args),
        "load": result,
        "profile": analysis,
        "collapsed": str(raw),
        "gateway_run": bench.gateway_runs[-1] if bench.gateway_runs else None,
    }
    base.with_suffix(".json").write_text(json.dumps(report, indent=1))
    print(f"\nraw stacks: {raw}\nJSON: {base.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
