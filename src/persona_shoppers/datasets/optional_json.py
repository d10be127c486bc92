"""A JSON file a run may lack: the synthetic generator's planted truth."""

from __future__ import annotations

import logging
from typing import Any

from kedro_datasets.json import JSONDataset

logger = logging.getLogger(__name__)


class OptionalJSONDataset(JSONDataset):
    """A JSON file that loads as ``{}`` when it does not exist, with one log line saying why.

    The planted truth is written only by the synthetic generator: on a real log it is absent,
    and the checks against it are skipped (docs/bring_your_own_data.md). ``optional`` tells
    the missing-input check (:mod:`persona_shoppers.input_check`) not to stop the run.

    ```yaml
    planted_truth:
      type: persona_shoppers.datasets.OptionalJSONDataset
      filepath: data/01_raw/planted_truth.json
      absent: "Not generated data: the checks against the planted truth are skipped."
    ```
    """

    optional = True

    def __init__(self, *, filepath: str, absent: str = "", **kwargs: Any) -> None:
        super().__init__(filepath=filepath, **kwargs)
        self._absent = absent
        self._told = False

    def load(self) -> Any:
        if self._exists():
            return super().load()
        if not self._told:
            logger.info("%s does not exist; loaded as {}. %s", self._filepath, self._absent)
            self._told = True
        return {}
