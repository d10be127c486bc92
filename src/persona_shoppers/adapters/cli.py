"""Convert a public event log to the raw contract and write data/01_raw parquet files.

Usage::

    python -m persona_shoppers.adapters.cli otto train.jsonl --out data/01_raw
    python -m persona_shoppers.adapters.cli rees46 "2019-*.csv" --out data/01_raw --shop-id store
    python -m persona_shoppers.adapters.cli retailrocket events.csv --out data/01_raw
    python -m persona_shoppers.adapters.cli rees46 other.csv --out data/01_raw --shop-id b --append
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from persona_shoppers.adapters import FORMATS, READERS, concat_raw, read_raw, summarize, write_raw


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m persona_shoppers.adapters.cli",
        description="Convert a public e-commerce event log to the raw data contract "
        "(events.parquet, products.parquet, collections.parquet).",
    )
    parser.add_argument("format", choices=sorted(READERS), help="input format")
    parser.add_argument(
        "input", nargs="+", help="input file(s) or a quoted glob pattern, e.g. '2019-*.csv'"
    )
    parser.add_argument("--out", default="data/01_raw", help="output folder (default %(default)s)")
    parser.add_argument(
        "--shop-id", default=None, help="shop_id for every row (default: the format's name)"
    )
    parser.add_argument(
        "--append",
        action="store_true",
        help="add this log's shop to the tables already in --out (one shop per call)",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings only")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    module = FORMATS[args.format]
    shop_id = args.shop_id or module.DEFAULT_SHOP_ID
    source = args.input[0] if len(args.input) == 1 else list(args.input)
    tables = READERS[args.format](source, shop_id=shop_id)
    if args.append:
        tables = concat_raw([read_raw(args.out), tables])
    paths = write_raw(tables, args.out)
    stats = summarize(tables)

    print(f"{args.format} -> {args.out} (shop_id={shop_id})")
    for name, path in paths.items():
        rows = tables[name].height if name in tables else 0
        print(f"  {path}: {rows} rows")
    print(
        f"  buyers: {stats['buyers']}, sessions: {stats['sessions']}"
        f" (+{stats['events_without_session']} events without session_id, sessionised later)"
    )
    print("  event types: " + ", ".join(f"{k}={v}" for k, v in stats["event_types"].items()))
    if stats["ts_as_text"]:
        print("  ts written as text: some timestamps did not parse (quarantined later)")
    print("  missing in this format:")
    for item in module.MISSING:
        print(f"    - {item}")
    print("  derived by the adapter:")
    for item in module.DERIVED:
        print(f"    - {item}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
