"""The ``<task>/<metric>/<condition>[/<stat>]`` names, shared by the metrics and the report."""

from __future__ import annotations

import pytest

from persona_shoppers.alignment import metrics, naming, report


def test_a_name_splits_back_into_its_parts():
    name = naming.metric_name("ab_test", "t1.sales.magnitude_ratio", "persona_token")
    assert name == "ab_test/t1.sales.magnitude_ratio/persona_token"
    parts = ("ab_test", "t1.sales.magnitude_ratio", "persona_token", None)
    assert naming.split_metric_name(name) == parts
    bound = naming.metric_name("session", "kl_views", "base", "ci_low")
    assert bound == "session/kl_views/base/ci_low"
    assert naming.split_metric_name(bound) == ("session", "kl_views", "base", "ci_low")


def test_a_malformed_name_or_stat_is_refused():
    with pytest.raises(ValueError, match="'session/kl_views' is not <task>/<metric>/<condition>"):
        naming.split_metric_name("session/kl_views")
    with pytest.raises(ValueError, match="is not"):
        naming.split_metric_name("session/kl_views/base/median")
    with pytest.raises(ValueError, match="metric stat must be one of"):
        naming.metric_name("session", "kl_views", "base", "median")


def test_metrics_and_report_share_the_naming():
    assert metrics.metric_name is naming.metric_name
    assert report.split_metric_name is naming.split_metric_name
    names = {
        naming.metric_name("rank_selection", "rank_kl", "base"): 0.5,
        naming.metric_name("rank_selection", "rank_kl", "base", "n"): 40,
        naming.metric_name("rank_selection", "rank_kl", "base", "ci_low"): 0.25,
        naming.metric_name("rank_selection", "rank_kl", "base", "ci_high"): 0.75,
        naming.metric_name("rank_selection", "rank_kl", "human_noise_floor"): 0.25,
        naming.metric_name("session", "kl_views", "base"): 1.0,
    }
    table = report.metric_table(names, "rank_selection")
    assert table.splitlines()[0] == "| condition | n | rank_kl |"
    assert "| base | 40 | 0.500 [0.250, 0.750] |" in table
    assert "| human_noise_floor |  | 0.250 |" in table
    assert "kl_views" not in table
