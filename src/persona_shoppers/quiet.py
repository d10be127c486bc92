"""Third-party warnings that say nothing to this project's user, filtered in one place so a
run's log shows progress, node names and the project's own warnings. Each entry names its
source; drop one when the library fixes it. Installed by ``settings.py`` (every Kedro run)."""

from __future__ import annotations

import logging
import warnings

# (message regex, category, module regex) for warnings.filterwarnings
IGNORED_WARNINGS: tuple[tuple[str, type[Warning], str], ...] = (
    # kedro and kedro-mlflow call OmegaConf's register_new_resolver, deprecated in omegaconf
    (r"register_new_resolver\(\) is deprecated", UserWarning, ""),
    # mlflow asks for type hints on pyfunc models; kedro-mlflow's pipeline model has none
    # (in a `kedro run` it fires once while the CLI loads kedro-mlflow, before settings.py)
    (r".*Add type hints to the `predict` method", UserWarning, r"mlflow\.pyfunc"),
    # Lightning's pytree helper builds LeafSpec(), which torch 2.13 deprecates
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", Warning, ""),
    # pyspark 4.3 warns about pandas >= 3 when a session starts; the Spark engine
    # (clickstream.spark) hands frames over through Arrow, never through pandas
    (r"PySpark does not yet fully support pandas", FutureWarning, ""),
)
# (logger name, message prefix) of log records dropped
IGNORED_LOG_RECORDS: tuple[tuple[str, str], ...] = (
    # Lightning advertises its cloud logger on every Trainer without one; lightning_utilities
    # logs through whichever of these packages was imported last
    *(
        (f"{package}.utilities.rank_zero", "💡 Tip:")
        for package in ("lightning.pytorch", "pytorch_lightning", "lightning.fabric")
    ),
)


class _DropPrefix(logging.Filter):
    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


def silence_third_party_noise() -> None:
    """Install the filters above (idempotent)."""
    for message, category, module in IGNORED_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)
    for name, prefix in IGNORED_LOG_RECORDS:
        log = logging.getLogger(name)
        if not any(isinstance(f, _DropPrefix) and f.prefix == prefix for f in log.filters):
            log.addFilter(_DropPrefix(prefix))
