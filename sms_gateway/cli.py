"""The `sms-gateway` console script: serve, check-config, dead-letters, demo, phone."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version

import structlog

from sms_gateway.config.load import ConfigError, read_config
from sms_gateway.config.mask import effective_config_dict, mask_urls_in_text
from sms_gateway.config.model import ConfigWarning
from sms_gateway.logs import configure_logging
from sms_gateway.providers import DEFAULT_KIND, PROVIDER_TYPES
from sms_gateway.store.base import StoreUnavailable
from sms_gateway.store.factory import store_url_problem

# How a shell reports a writer killed by SIGPIPE (128 + 13): `sms-gateway check-config | head` stopped reading.
BROKEN_PIPE_EXIT = 141


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _main(argv)
    except BrokenPipeError:
        # Whatever is still buffered is for nobody: without this, Python's exit would flush it and complain.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return BROKEN_PIPE_EXIT


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sms-gateway",
        description="SMS/MMS gateway for conversational AI: providers' webhooks in, Watson Assistant or an SOE "
        "for each turn, replies out through the provider.",
        epilog="`sms-gateway COMMAND --help` describes a command. Without a command: serve.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    config_help = "our YAML configuration (IBM env vars override it)"
    parser.add_argument("--config", metavar="FILE", help=config_help)
    # `--config` is accepted after the subcommand too (`sms-gateway serve --config FILE`).
    with_config = argparse.ArgumentParser(add_help=False)
    with_config.add_argument("--config", metavar="FILE", help=config_help, default=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", title="commands", metavar="COMMAND")

    sub.add_parser(
        "serve",
        parents=[with_config],
        help="run the gateway (the default)",
        description="Run the gateway until SIGTERM or SIGINT, configured by IBM's environment variables, "
        "IBM's tenant JSON (MULTI_TENANT_CONFIG_FILE) or our YAML (--config). On the signal it "
        "drains (SHUTDOWN_DRAIN_SECONDS) and lets work in flight finish before it exits.",
    )

    sub.add_parser(
        "check-config",
        parents=[with_config],
        help="print the effective configuration (secrets masked) or its errors",
        description="Print the effective configuration as JSON, passwords, keys and tokens masked, and each "
        "warning (settings ignored, overridden or suspicious) to stderr; exit 1 without a tenant; or "
        "print each error with its key, and exit 2.",
    )

    dead = sub.add_parser(
        "dead-letters",
        parents=[with_config],
        help="list or replay what the gateway gave up on",
        description="Sends the provider refused or that failed after every retry, and turns the engine could "
        "not answer, as kept in the store STORE_URL names (which must exist). `list` (the default) "
        "writes one JSON object per line to stdout: id, kind, deadLetteredAt, attempts, error (the "
        "engine's or the provider's own), messageId, tenant; the count goes to stderr. `replay` "
        "queues the given ids (or --all) again for a running gateway.",
    )
    dead.add_argument(
        "action", nargs="?", choices=["list", "replay"], default="list", help="list (the default) or replay"
    )
    dead.add_argument("ids", nargs="*", metavar="ID", help="dead-letter ids to replay (as `list` shows them)")
    dead.add_argument("--all", action="store_true", help="replay every dead letter (up to --limit)")
    dead.add_argument(
        "--limit", type=int, default=1000, metavar="N", help="at most N dead letters, the oldest first (default 1000)"
    )

    demo = sub.add_parser(
        "demo",
        help="one MMS round trip through the real HTTP path, no accounts needed",
        description="Start the gateway (SQLite in a temporary folder, the built-in echo engine) and a local "
        "stand-in for the provider's API, post a signed sample MMS webhook as the provider would, "
        "and print each step: the webhook and its answer, what the engine received, the engine's "
        "answer (smsActSendMedia), the message sent back, its delivery status.",
    )
    demo.add_argument(
        "--provider",
        choices=sorted(PROVIDER_TYPES),
        default=DEFAULT_KIND,
        help=f"whose webhooks and API to play (default {DEFAULT_KIND})",
    )
    demo.add_argument("--quiet-logs", action="store_true", help="hide the gateway's own log lines")

    phone = sub.add_parser(
        "phone",
        parents=[with_config],
        help="try dialogs in your browser: simulated phones, no account needed",
        description="Start the gateway with the configured engines (the echo engine when none is configured), "
        "each tenant's provider played by a local stand-in, and serve a page with a phone per "
        "simulated user and an inspector of each turn (state variables, the engine's answer, what "
        "went to the provider). Runs until Ctrl-C.",
    )
    phone.add_argument("--host", default="127.0.0.1", help="where the page listens (default 127.0.0.1)")
    phone.add_argument("--port", type=int, default=9090, help="the page's port (default 9090)")
    phone.add_argument("--logs", action="store_true", help="show the gateway's log lines")
    return parser


def _version() -> str:
    try:
        return version("sms-gateway")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "(not installed)"


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    command = args.command or "serve"

    if command == "demo":
        from sms_gateway.demo import run_demo

        return run_demo(args.provider, show_logs=not args.quiet_logs)

    try:
        config, warnings = read_config(args.config, os.environ)
        problems = []
        # The schema checks the store URL's scheme; its options are read by the store, so checked here.
        store_problem = store_url_problem(config.store_url)
        if store_problem is not None:
            problems.append(("store.url (STORE_URL)", store_problem))
        drain_text = os.environ.get("SHUTDOWN_DRAIN_SECONDS")
        drain_seconds = _drain_seconds(drain_text)
        if drain_seconds is None:
            problems.append(("SHUTDOWN_DRAIN_SECONDS", f"must be a number of seconds (got {drain_text!r})"))
        if problems:
            raise ConfigError(problems, warnings)
    except ConfigError as exc:
        _print_warnings(exc.warnings)
        print("configuration errors:", file=sys.stderr)
        for key, reason in exc.errors:
            print(f"  {key}: {reason}", file=sys.stderr)
        return 2

    if command == "phone":
        from sms_gateway.phone.run import run_phone

        if config.tenants:  # without one, the phone has echo tenants: "no tenant" is no news
            _print_warnings(warnings)
        return run_phone(config, args.host, args.port, show_logs=args.logs)

    if command == "dead-letters":
        import asyncio

        from sms_gateway import deadletters

        return asyncio.run(deadletters.run(config, args.action, args.ids, args.all, args.limit))

    if command == "check-config":
        _print_warnings(warnings)
        print(json.dumps(effective_config_dict(config), indent=2, sort_keys=True))
        sys.stdout.flush()  # a closed pipe is found here, not at exit
        return 0 if config.tenants else 1

    from sms_gateway.serve import CannotListen, run

    configure_logging(config.log_level, config.redact_phone_numbers)
    log = structlog.get_logger("sms_gateway.config")
    for warning in warnings:
        log.warning("config_warning", key=warning.key, reason=warning.message)
    try:
        run(config, drain_seconds=drain_seconds or 0.0)
    except StoreUnavailable as exc:
        print(f"store unavailable: {mask_urls_in_text(str(exc))}", file=sys.stderr)
        return 3
    except CannotListen as exc:
        print(str(exc), file=sys.stderr)
        return 3
    return 0


def _drain_seconds(text: str | None) -> float | None:
    """SHUTDOWN_DRAIN_SECONDS: how long webhooks are still taken after SIGTERM (default 2); None if invalid."""
    try:
        seconds = float(text) if text else 2.0
    except ValueError:
        return None
    return seconds if 0 <= seconds < float("inf") else None


def _print_warnings(warnings: Sequence[ConfigWarning]) -> None:
    if warnings:
        print("configuration warnings:", file=sys.stderr)
    for warning in warnings:
        print(f"  {warning.key}: {warning.message}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
