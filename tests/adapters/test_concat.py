from __future__ import annotations

import polars as pl
import pytest

from persona_shoppers.adapters import concat_raw, read_rees46

from ._helpers import assert_raw_tables
from .test_rees46 import CSV


def test_shops_of_several_logs_become_one_dataset(tmp_path):
    """One file's broken timestamp turns the whole ts column to ISO text, parseable as before."""
    broken, clean = tmp_path / "a.csv", tmp_path / "b.csv"
    broken.write_text(CSV)
    clean.write_text("\n".join(CSV.splitlines()[:-1]) + "\n")
    a, b = read_rees46(broken, shop_id="a"), read_rees46(clean, shop_id="b")
    both = concat_raw([a, b])
    assert_raw_tables(both, ts_text=True)
    assert both["events"].height == a["events"].height + b["events"].height
    assert both["products"]["shop_id"].unique().sort().to_list() == ["a", "b"]
    parsed = both["events"].filter(pl.col("shop_id") == "b")["ts"].str.to_datetime(time_zone="UTC")
    assert parsed.equals(b["events"]["ts"], check_names=False)


def test_a_shop_id_in_two_logs_is_refused(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text(CSV)
    with pytest.raises(ValueError, match="shop_id 'x' is in dataset 0 and dataset 1"):
        concat_raw([read_rees46(path, shop_id="x"), read_rees46(path, shop_id="x")])
