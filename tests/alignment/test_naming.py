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


def test_the_ab_tests_are_a_row_per_test_metric_and_condition():
    names = {}
    for test, effect in (("price_up", -0.2), ("fewer_results", 0.05)):
        stem = f"{test}.conversion_rate"
        names[naming.metric_name("ab_test", f"{stem}.simulated_effect", "persona_token")] = effect
        for stat, value in (("n", 100), ("ci_low", effect - 0.1), ("ci_high", effect + 0.1)):
            key = naming.metric_name("ab_test", f"{stem}.simulated_effect", "persona_token", stat)
            names[key] = value
        names[naming.metric_name("ab_test", f"{stem}.reference_effect", "persona_token")] = -0.1
        names[naming.metric_name("ab_test", f"{stem}.conclusive", "persona_token")] = 1.0
    names[naming.metric_name("session", "kl_views", "base")] = 1.0
    lines = report.ab_test_table(names).splitlines()
    assert lines[0] == (
        "| test | metric | condition | n | simulated_effect | reference_effect | conclusive "
        "| direction_agreement | magnitude_ratio |"
    )
    assert lines[2] == (
        "| fewer_results | conversion_rate | persona_token | 100 | 0.050 [-0.050, 0.150] "
        "| -0.100 | 1.000 | n/a | n/a |"
    )
    assert lines[3].startswith("| price_up | conversion_rate | persona_token | 100 | -0.200 [")
    assert len(lines) == 4
    assert report.ab_test_table({}).startswith("_Not measured")
