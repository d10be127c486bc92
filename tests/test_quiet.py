"""The third-party noise filtered at start-up, and nothing else."""

from __future__ import annotations

import logging
import warnings

from persona_shoppers.quiet import silence_third_party_noise


def test_listed_warnings_are_dropped_and_others_kept():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        silence_third_party_noise()
        for message, category in (
            ("register_new_resolver() is deprecated and will be removed", UserWarning),
            ("`isinstance(treespec, LeafSpec)` is deprecated, use ...", FutureWarning),
            (
                "PySpark does not yet fully support pandas >= 3.0.0. Some features ...",
                FutureWarning,
            ),
            ("the project's own warning", UserWarning),
        ):
            warnings.warn(message, category, stacklevel=1)
    assert [str(w.message) for w in caught] == ["the project's own warning"]


def test_lightnings_tip_is_dropped_and_its_other_records_kept(caplog):
    silence_third_party_noise()
    silence_third_party_noise()  # idempotent: one filter
    log = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    assert len(log.filters) == 1
    with caplog.at_level("INFO", logger=log.name):
        log.info("💡 Tip: For seamless cloud logging, try installing litlogger")
        log.info("GPU available: False")
    assert [r.getMessage() for r in caplog.records] == ["GPU available: False"]
