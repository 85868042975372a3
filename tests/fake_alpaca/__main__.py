"""``python -m tests.fake_alpaca --port-file PATH [options]`` (run from the repo root).

Writes ``{"rest_url", "data_rest_url", "trading_stream_url", "data_stream_url",
"control_url", "api_key", "api_secret", "pid"}`` to PATH (atomically), prints
``FAKE_ALPACA_READY <same json>`` on stdout, then serves until SIGTERM/SIGINT or
``POST /_control/shutdown``. The control API is ``POST {control_url}/<method>`` with
keyword arguments as a JSON object; see ``FakeAlpacaClient``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from .server import DEFAULT_KEY, DEFAULT_SECRET, DEFAULT_SYMBOLS, FakeAlpaca


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m tests.fake_alpaca",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--port-file", help="write the URLs here as JSON")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--rest-port", type=int, default=0)
    ap.add_argument("--trade-stream-port", type=int, default=0)
    ap.add_argument("--data-stream-port", type=int, default=0)
    ap.add_argument("--key", default=DEFAULT_KEY)
    ap.add_argument("--secret", default=DEFAULT_SECRET)
    ap.add_argument("--cash", default="100000")
    ap.add_argument("--multiplier", default="1")
    ap.add_argument("--shorting", action="store_true", help="enable short selling")
    ap.add_argument(
        "--pdt-fields",
        action="store_true",
        help="include pattern_day_trader/daytrade_count/daytrading_buying_power",
    )
    ap.add_argument("--auto-fill", action="store_true")
    ap.add_argument("--no-auto-accept", action="store_true")
    ap.add_argument("--symbols", default=",".join(DEFAULT_SYMBOLS))
    ap.add_argument("--price", action="append", default=[], metavar="SYM=PRICE")
    ap.add_argument(
        "--trade-stream-text",
        action="store_true",
        help="send trade updates as text frames (Alpaca sends binary)",
    )
    ap.add_argument(
        "--trade-stream-limit",
        default="http429",
        choices=["http429", "auth_error", "kick_old", "allow"],
    )
    ap.add_argument("--log-level", default="WARNING")
    args = ap.parse_args(argv)

    logging.basicConfig(stream=sys.stderr, level=args.log_level.upper())
    prices = {}
    for item in args.price:
        sym, _, px = item.partition("=")
        prices[sym.upper()] = px
    fake = FakeAlpaca(
        api_key=args.key,
        api_secret=args.secret,
        host=args.host,
        rest_port=args.rest_port,
        trade_stream_port=args.trade_stream_port,
        data_stream_port=args.data_stream_port,
        cash=args.cash,
        multiplier=args.multiplier,
        shorting_enabled=args.shorting,
        pdt_fields=args.pdt_fields,
        symbols=[s.strip().upper() for s in args.symbols.split(",") if s.strip()],
        prices=prices,
        auto_fill=args.auto_fill,
        auto_accept=not args.no_auto_accept,
        trade_stream_binary=not args.trade_stream_text,
        trade_stream_limit=args.trade_stream_limit,
    )
    stop = threading.Event()
    fake._on_shutdown_request = stop.set  # type: ignore[attr-defined]
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    fake.start()
    info = {**fake.urls(), "pid": os.getpid()}
    if args.port_file:
        path = Path(args.port_file)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(info))
        os.replace(tmp, path)
    print("FAKE_ALPACA_READY " + json.dumps(info), flush=True)
    try:
        while not stop.wait(1.0):  # timed wait keeps signal handling prompt
            pass
    finally:
        fake.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
