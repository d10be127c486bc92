"""Benchmark the data_enrichment pipeline on generated clickstreams of 1M and 10M events.

    python benchmarks/bench_data_enrichment.py                  # 1M and 10M events, polars
    python benchmarks/bench_data_enrichment.py --sizes 1000000  # one size
    python benchmarks/bench_data_enrichment.py --engine spark   # on Spark, local[2]

For each size the synthetic generator makes a clickstream once (cached under
benchmarks/.cache/, the first `size` events in time order of a large enough population), then
a fresh child process runs the data_enrichment pipeline exactly as `kedro run` would: the
project's catalog entries (parquet in, parquet out), the project's parameters, the sequential
runner. Reported: wall time of the whole run (load, compute, save), events per second, and the
child's peak resident memory. Targets on the reference machine (2 cores): 10M events in at
most 60 s and 8 GB, and a 10M / 1M time ratio of at most 12.

With `--engine spark` the catalog is `kedro run --env spark`'s (conf/spark/catalog.yml over
conf/base) and the SparkSession is conf/spark/spark.yml's with the master `--master` (local[2]
by default), started before the clock starts (its start-up is reported apart). The peak memory
is the driver's: the Python process plus the JVM (in local mode the executors run inside it).
Results go to benchmarks/results/data_enrichment.json (polars) or data_enrichment_spark.json.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from persona_shoppers.numerics import machine_facts

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "benchmarks" / ".cache"
RESULTS = ROOT / "benchmarks" / "results"
EVENTS_PER_BUYER_AND_SHOP = 742_154 / (12 * 2000)  # measured on the default sample
TARGET_SECONDS, TARGET_GB, TARGET_RATIO = 60.0, 8.0, 12.0


def make_clickstream(size: int, folder: Path) -> None:
    """Generate at least `size` events and keep the first `size` in time order."""
    import polars as pl

    from persona_shoppers.synthetic import SyntheticConfig, generate

    buyers = math.ceil(size / (12 * EVENTS_PER_BUYER_AND_SHOP) * 1.08)
    data = generate(SyntheticConfig(buyers_per_shop=buyers))
    if len(data.events) < size:
        raise RuntimeError(f"generated {len(data.events)} events, fewer than {size}")
    folder.mkdir(parents=True, exist_ok=True)
    data.events.head(size).write_parquet(folder / "events.parquet")
    for name in ("products", "collections", "collection_products"):
        pl.from_pandas(getattr(data, name)).write_parquet(folder / f"{name}.parquet")


def _jvm_peak_gb(spark: Any) -> float:
    """Peak resident memory of the SparkSession's JVM (Linux /proc)."""
    pid = spark.sparkContext._jvm.java.lang.ProcessHandle.current().pid()
    status = Path(f"/proc/{pid}/status").read_text()
    kilobytes = next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM"))
    return int(kilobytes) / 1024**2


def measure(raw: Path, engine: str, master: str) -> dict[str, float]:
    """Run data_enrichment on the clickstream in `raw` (called in a fresh child process)."""
    from kedro.io import DataCatalog, MemoryDataset
    from kedro.runner import SequentialRunner

    from persona_shoppers.pipelines.data_enrichment import create_pipeline

    pipeline = create_pipeline()
    config = yaml.safe_load((ROOT / "conf/base/catalog.yml").read_text())
    params = yaml.safe_load((ROOT / "conf/base/parameters_data_enrichment.yml").read_text())
    result = {}
    spark = None
    if engine == "spark":
        from persona_shoppers.hooks import start_spark

        config.update(yaml.safe_load((ROOT / "conf/spark/catalog.yml").read_text()))
        conf = yaml.safe_load((ROOT / "conf/spark/spark.yml").read_text())
        start = time.perf_counter()
        spark = start_spark({**conf, "spark.master": master}, "bench_data_enrichment")
        result["startup_s"] = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as out:
        entries = {}
        for name in pipeline.datasets():
            if name not in config:
                continue
            entry = dict(config[name])
            entry.pop("metadata", None)
            # The file may sit in a wrapped dataset (CachedDataset: {dataset: {filepath}}).
            target = entry
            if "dataset" in entry:
                target = entry["dataset"] = dict(entry["dataset"])
            path = target["filepath"]
            target["filepath"] = (
                str(raw / Path(path).name)
                if path.startswith("data/01_raw/")
                else f"{out}/{Path(path).name}"
            )
            entries[name] = entry
        catalog = DataCatalog.from_config(entries)
        for key, value in params["data_enrichment"].items():  # the entries the nodes take
            catalog[f"params:data_enrichment.{key}"] = MemoryDataset(value)
        start = time.perf_counter()
        SequentialRunner().run(pipeline, catalog)
        result["seconds"] = time.perf_counter() - start
    result["peak_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    if spark is not None:
        result["python_peak_gb"] = result["peak_gb"]
        result["jvm_peak_gb"] = _jvm_peak_gb(spark)
        result["peak_gb"] += result["jvm_peak_gb"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--engine", choices=("polars", "spark"), default="polars")
    parser.add_argument("--master", default="local[2]", help="Spark master (--engine spark)")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.engine, args.master)))
        return

    rows = []
    for size in args.sizes:
        folder = CACHE / f"events_{size}"
        if not (folder / "events.parquet").exists():
            print(f"generating {size:,} events into {folder} (once) ...", flush=True)
            make_clickstream(size, folder)
        child = subprocess.run(
            [sys.executable, __file__, "--measure", str(folder)]
            + ["--engine", args.engine, "--master", args.master],
            capture_output=True,
            text=True,
            check=False,
        )
        if child.returncode != 0:
            sys.exit(f"data_enrichment failed on {size:,} events:\n{child.stderr[-4000:]}")
        result = json.loads(child.stdout.strip().splitlines()[-1])
        result.update(events=size, events_per_s=size / result["seconds"])
        rows.append(result)
        print(
            f"{size:>12,} events  {result['seconds']:7.1f} s"
            f"  {result['events_per_s']:>12,.0f} events/s  peak {result['peak_gb']:.2f} GB",
            flush=True,
        )
    report = {"engine": args.engine, "rows": rows, "machine": machine_facts()}
    if args.engine == "spark":
        report["spark_master"] = args.master
    by_size = {r["events"]: r for r in rows}
    if 1_000_000 in by_size and 10_000_000 in by_size:
        big = by_size[10_000_000]
        ratio = big["seconds"] / by_size[1_000_000]["seconds"]
        report["ratio_10m_1m"] = ratio
        report["targets_met"] = {
            f"10M in <= {TARGET_SECONDS:.0f} s": big["seconds"] <= TARGET_SECONDS,
            f"10M peak <= {TARGET_GB:.0f} GB": big["peak_gb"] <= TARGET_GB,
            f"10M/1M time ratio <= {TARGET_RATIO:.0f}": ratio <= TARGET_RATIO,
        }
        print(f"10M / 1M time ratio: {ratio:.2f}")
        for target, met in report["targets_met"].items():
            print(f"  {'met ' if met else 'MISSED'} {target}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = "data_enrichment" if args.engine == "polars" else "data_enrichment_spark"
    (RESULTS / f"{name}.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
