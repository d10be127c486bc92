"""Benchmark the data_enrichment pipeline on generated clickstreams of 1M and 10M events.

    python benchmarks/bench_data_enrichment.py                      # 1M and 10M events, polars
    python benchmarks/bench_data_enrichment.py --sizes 1000000      # one size
    python benchmarks/bench_data_enrichment.py --engine spark       # on Spark, local[2]
    python benchmarks/bench_data_enrichment.py --engine streaming --sizes 200000000

For each size the synthetic generator makes a clickstream once (cached under
benchmarks/.cache/, the first `size` events in time order of a large enough population; above
10M events, copies of the 10M log with the buyer and session ids of each copy made distinct,
written by a streaming pass so the log never sits in memory), then a fresh child process runs
the data_enrichment pipeline exactly as `kedro run` would: the project's catalog entries
(parquet in, parquet out), the project's parameters, the sequential runner. Reported: wall
time of the whole run (load, compute, save), events per second, the child's peak resident
memory, the size of the `buyers` table it built, the peak size of its temporary folder
(TMPDIR: the outputs it writes and the streaming engine's spilled parts, sampled every 5 s),
and the log's own size in memory (polars' estimate, summed over row groups). A child
whose resident memory (with its subprocesses) passes `--memory-limit-gb` (80% of the machine's
memory by default) is stopped, and the row says so. Targets on the reference machine (2
cores): 10M events in at most 60 s and 8 GB, and a 10M / 1M time ratio of at most 12.

With `--engine streaming` the catalog is `kedro run --env streaming`'s (conf/streaming over
conf/base: a lazy scan, buyer buckets of `data_enrichment.rows_per_bucket` rows).

With `--engine spark` the catalog is `kedro run --env spark`'s (conf/spark/catalog.yml over
conf/base) and the SparkSession is conf/spark/spark.yml's with the master `--master` (local[2]
by default), started before the clock starts (its start-up is reported apart). The peak memory
is the driver's: the Python process plus the JVM (in local mode the executors run inside it).
Results go to benchmarks/results/data_enrichment.json (polars) or data_enrichment_<engine>.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd
import yaml

from persona_shoppers.numerics import machine_facts

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "benchmarks" / ".cache"
RESULTS = ROOT / "benchmarks" / "results"
EVENTS_PER_BUYER_AND_SHOP = 742_154 / (12 * 2000)  # measured on the default sample
TARGET_SECONDS, TARGET_GB, TARGET_RATIO = 60.0, 8.0, 12.0


GENERATED_LIMIT = 10_000_000  # larger logs are copies of this one
CATALOG_TABLES = ("products", "collections", "collection_products")


def make_clickstream(size: int, folder: Path) -> None:
    """Generate at least `size` events and keep the first `size` in time order; above
    GENERATED_LIMIT, copy the GENERATED_LIMIT log (see the module docstring)."""
    import polars as pl

    folder.mkdir(parents=True, exist_ok=True)
    if size > GENERATED_LIMIT:
        source = _clickstream(GENERATED_LIMIT)
        copies = []
        for copy in range(math.ceil(size / GENERATED_LIMIT)):
            prefix = pl.lit(f"r{copy}-")
            copies.append(
                pl.scan_parquet(source / "events.parquet").with_columns(
                    pl.concat_str(prefix, "buyer_id").alias("buyer_id"),
                    pl.concat_str(prefix, "session_id").alias("session_id"),
                )
            )
        pl.concat(copies).head(size).sink_parquet(folder / "events.parquet")
        for name in CATALOG_TABLES:
            (folder / f"{name}.parquet").write_bytes((source / f"{name}.parquet").read_bytes())
        return
    from persona_shoppers.synthetic import SyntheticConfig, generate

    buyers = math.ceil(size / (12 * EVENTS_PER_BUYER_AND_SHOP) * 1.08)
    data = generate(SyntheticConfig(buyers_per_shop=buyers))
    if len(data.events) < size:
        raise RuntimeError(f"generated {len(data.events)} events, fewer than {size}")
    data.events.head(size).write_parquet(folder / "events.parquet")
    for name in CATALOG_TABLES:
        pl.from_pandas(getattr(data, name)).write_parquet(folder / f"{name}.parquet")


def _clickstream(size: int) -> Path:
    """The cached clickstream of `size` events (made once)."""
    folder = CACHE / f"events_{size}"
    if not (folder / "events.parquet").exists():
        print(f"generating {size:,} events into {folder} (once) ...", flush=True)
        make_clickstream(size, folder)
    return folder


def log_size(folder: Path) -> dict[str, float]:
    """The log's parquet file size and its size in memory as polars (estimated, summed over
    row groups, so the log is never loaded whole); cached next to the log."""
    facts = folder / "log_size.json"
    if facts.exists():
        return json.loads(facts.read_text())
    import polars as pl
    import pyarrow.parquet as pq

    path = folder / "events.parquet"
    parquet = pq.ParquetFile(path)
    in_memory = sum(
        pl.from_arrow(parquet.read_row_group(group)).estimated_size()
        for group in range(parquet.num_row_groups)
    )
    size = {"file_gb": path.stat().st_size / 1024**3, "in_memory_gb": in_memory / 1024**3}
    facts.write_text(json.dumps(size))
    return size


def _tree_rss_gb(pid: int) -> float:
    """Resident memory of process `pid` and its descendants (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        todo += children.get(current, [])
        try:
            status = Path(f"/proc/{current}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS"):
                total += int(line.split()[1])
    return total / 1024**2


def machine_memory_gb() -> float:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3


def _folder_gb(folder: str) -> float:
    """Size of the files under `folder` (files that vanish meanwhile are skipped)."""
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            try:
                total += os.stat(os.path.join(root, name)).st_size
            except OSError:
                continue
    return total / 1024**3


class ChildRun(NamedTuple):
    status: int
    stdout: str
    stderr: str
    stopped_after_s: float | None  # stopped for memory
    disk_peak_gb: float  # its temporary folder: spilled parts and written outputs


def run_child(command: list[str], limit_gb: float) -> ChildRun:
    """Run `command` with a temporary folder of its own (TMPDIR), watching its memory (stopped,
    with its process group, once past `limit_gb`) and the size of that folder."""
    start, disk_peak, polls = time.perf_counter(), 0.0, 0
    with (
        tempfile.TemporaryFile("w+") as out,
        tempfile.TemporaryFile("w+") as err,
        tempfile.TemporaryDirectory(prefix="bench-data-enrichment-") as scratch,
    ):
        child = subprocess.Popen(
            command,
            stdout=out,
            stderr=err,
            text=True,
            start_new_session=True,
            env={**os.environ, "TMPDIR": scratch},
        )
        stopped = None
        while child.poll() is None:
            if _tree_rss_gb(child.pid) > limit_gb:
                stopped = time.perf_counter() - start
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()
                break
            if polls % 10 == 0:  # every 5 s
                disk_peak = max(disk_peak, _folder_gb(scratch))
            polls += 1
            time.sleep(0.5)
        out.seek(0)
        err.seek(0)
        return ChildRun(child.returncode, out.read(), err.read(), stopped, disk_peak)


def _jvm_peak_gb(spark: Any) -> float:
    """Peak resident memory of the SparkSession's JVM (Linux /proc)."""
    pid = spark.sparkContext._jvm.java.lang.ProcessHandle.current().pid()
    status = Path(f"/proc/{pid}/status").read_text()
    kilobytes = next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM"))
    return int(kilobytes) / 1024**2


def _buyers_size(buyers: pd.DataFrame) -> dict[str, float]:
    """The buyers table (built whole by every engine): rows, and GB as pandas and as polars."""
    import polars as pl

    return {
        "buyers_rows": len(buyers),
        "buyers_pandas_gb": buyers.memory_usage(deep=True).sum() / 1024**3,
        "buyers_polars_gb": pl.from_pandas(buyers).estimated_size() / 1024**3,
    }


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
    if engine == "streaming":
        config.update(yaml.safe_load((ROOT / "conf/streaming/catalog.yml").read_text()))
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
            key = "path" if "path" in target else "filepath"  # BuyerBucketsDataset: a folder
            path = target[key]
            target[key] = (
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
        result.update(_buyers_size(catalog.load("buyers")))
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
    parser.add_argument("--engine", choices=("polars", "streaming", "spark"), default="polars")
    parser.add_argument(
        "--memory-limit-gb", type=float, help="stop a run above this (default: 80%% of memory)"
    )
    parser.add_argument("--master", default="local[2]", help="Spark master (--engine spark)")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.engine, args.master)))
        return

    limit_gb = args.memory_limit_gb or 0.8 * machine_memory_gb()
    rows = []
    for size in args.sizes:
        folder = _clickstream(size)
        log = log_size(folder)
        run = run_child(
            [sys.executable, __file__, "--measure", str(folder)]
            + ["--engine", args.engine, "--master", args.master],
            limit_gb,
        )
        if run.stopped_after_s is not None:
            stopped = f"over {limit_gb:.1f} GB after {run.stopped_after_s:.0f} s"
            rows.append({"events": size, "stopped": stopped, **log})
            print(f"{size:>12,} events  stopped: memory {stopped}", flush=True)
            continue
        if run.status != 0:
            sys.exit(f"data_enrichment failed on {size:,} events:\n{run.stderr[-4000:]}")
        result = json.loads(run.stdout.strip().splitlines()[-1])
        result.update(
            events=size, events_per_s=size / result["seconds"], disk_peak_gb=run.disk_peak_gb, **log
        )
        rows.append(result)
        print(
            f"{size:>12,} events  {result['seconds']:7.1f} s"
            f"  {result['events_per_s']:>12,.0f} events/s  peak {result['peak_gb']:.2f} GB"
            f"  disk {run.disk_peak_gb:.2f} GB  (log {log['in_memory_gb']:.2f} GB in memory)",
            flush=True,
        )
    machine = {**machine_facts(), "memory_gb": machine_memory_gb()}
    for row in rows:
        row.update(memory_limit_gb=limit_gb, machine=machine)
    if args.engine == "spark":
        for row in rows:
            row["spark_master"] = args.master
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = "data_enrichment" if args.engine == "polars" else f"data_enrichment_{args.engine}"
    path = RESULTS / f"{name}.json"
    # rows of other sizes from earlier runs are kept; a size measured again is replaced
    earlier = json.loads(path.read_text()).get("rows", []) if path.exists() else []
    by_size = {r["events"]: r for r in earlier}
    by_size.update({r["events"]: r for r in rows})
    report = {"engine": args.engine, "rows": [by_size[size] for size in sorted(by_size)]}
    small, big = by_size.get(1_000_000, {}), by_size.get(10_000_000, {})
    if "seconds" in small and "seconds" in big:
        ratio = big["seconds"] / small["seconds"]
        report["ratio_10m_1m"] = ratio
        report["targets_met"] = {
            f"10M in <= {TARGET_SECONDS:.0f} s": big["seconds"] <= TARGET_SECONDS,
            f"10M peak <= {TARGET_GB:.0f} GB": big["peak_gb"] <= TARGET_GB,
            f"10M/1M time ratio <= {TARGET_RATIO:.0f}": ratio <= TARGET_RATIO,
        }
        print(f"10M / 1M time ratio: {ratio:.2f}")
        for target, met in report["targets_met"].items():
            print(f"  {'met ' if met else 'MISSED'} {target}")
    path.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
