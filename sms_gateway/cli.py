"""The `sms-gateway` console script: serve, check-config, demo."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from sms_gateway.config.load import ConfigError, load_config
from sms_gateway.config.mask import effective_config_dict, mask_urls_in_text
from sms_gateway.logs import configure_logging
from sms_gateway.providers import DEFAULT_KIND, PROVIDER_TYPES
from sms_gateway.store.base import StoreUnavailable
from sms_gateway.store.factory import store_url_problem


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sms-gateway", description=__doc__)
    config_help = "our YAML configuration (IBM env vars override it)"
    parser.add_argument("--config", metavar="FILE", help=config_help)
    # `--config` is accepted after the subcommand too (`sms-gateway serve --config FILE`).
    with_config = argparse.ArgumentParser(add_help=False)
    with_config.add_argument("--config", metavar="FILE", help=config_help, default=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("serve", parents=[with_config], help="run the gateway (the default)")
    sub.add_parser("check-config", parents=[with_config],
                   help="print the effective configuration (secrets masked) or its errors")
    dead = sub.add_parser("dead-letters", parents=[with_config], help="list or replay what the gateway gave up on")
    dead.add_argument("action", choices=["list", "replay"])
    dead.add_argument("ids", nargs="*", help="dead-letter ids to replay")
    dead.add_argument("--all", action="store_true", help="replay every dead letter")
    dead.add_argument("--limit", type=int, default=1000)
    demo = sub.add_parser("demo", help="one MMS round trip through the real HTTP path, no accounts needed")
    demo.add_argument("--provider", choices=sorted(PROVIDER_TYPES), default=DEFAULT_KIND,
                      help=f"whose webhooks and API to play (default {DEFAULT_KIND})")
    demo.add_argument("--quiet-logs", action="store_true", help="hide the gateway's own log lines")
    phone = sub.add_parser("phone", parents=[with_config],
                           help="try dialogs in your browser: simulated phones against the gateway, no account")
    phone.add_argument("--host", default="127.0.0.1", help="where the page listens (default 127.0.0.1)")
    phone.add_argument("--port", type=int, default=9090, help="the page's port (default 9090)")
    phone.add_argument("--logs", action="store_true", help="show the gateway's log lines")
    args = parser.parse_args(argv)
    command = args.command or "serve"

    if command == "demo":
        from sms_gateway.demo import run_demo

        return run_demo(args.provider, show_logs=not args.quiet_logs)

    try:
        config = load_config(args.config, os.environ)
        # The schema checks the store URL's scheme; its options are read by the store, so checked here.
        store_problem = store_url_problem(config.store_url)
        if store_problem is not None:
            raise ConfigError([("store.url (STORE_URL)", store_problem)])
    except ConfigError as exc:
        print("configuration errors:", file=sys.stderr)
        for key, reason in exc.errors:
            print(f"  {key}: {reason}", file=sys.stderr)
        return 2

    if command == "phone":
        from sms_gateway.phone.run import run_phone

        return run_phone(config, args.host, args.port, show_logs=args.logs)

    if command == "dead-letters":
        import asyncio

        from sms_gateway import deadletters

        return asyncio.run(deadletters.run(config, args.action, args.ids, args.all, args.limit))

    if command == "check-config":
        print(json.dumps(effective_config_dict(config), indent=2, sort_keys=True))
        return 0

    from sms_gateway.serve import CannotListen, run

    configure_logging(config.log_level, config.redact_phone_numbers)
    if not config.tenants:
        print("warning: no tenant is configured; every webhook will be answered 403", file=sys.stderr)
    try:
        run(config, drain_seconds=float(os.environ.get("SHUTDOWN_DRAIN_SECONDS", "2")))
    except StoreUnavailable as exc:
        print(f"store unavailable: {mask_urls_in_text(str(exc))}", file=sys.stderr)
        return 3
    except CannotListen as exc:
        print(str(exc), file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
