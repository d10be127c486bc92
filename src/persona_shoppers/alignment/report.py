"""The alignment report: one markdown page of tables (conditions x metrics, with baselines and
the human noise floor beside them) and PNG plots, from ``alignment_metrics`` (a flat dict
named by ``persona_shoppers.alignment.naming``) and the per-bin details the metric families
keep."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from matplotlib.figure import Figure

from persona_shoppers.alignment.naming import MATCHED_HUMANS, split_metric_name

# Rows that are not agent conditions: shown last, in this order.
REFERENCES = (
    "title_as_query",
    "random_choice",
    "most_popular",
    "random_rank",
    "shop_rate_baseline",
    "shop_stratum_rate_baseline",
    "human",
    MATCHED_HUMANS,
    "human_noise_floor",
)

SECTIONS = (
    (
        "query_generation",
        "Query generation (PAARS 4.3)",
        "MiniLM cosine between the agent's and the human's query (higher is better), by "
        "perplexity stratum of the human query (0 = easiest), paired against base "
        "(`cosine_minus_base`), and KL(human || agent) between Gaussian KDEs of the query "
        "embeddings (lower is better; `kde_kl` at h = 0.1). The floor: as many queries of other "
        "buyers of the same shops.",
    ),
    (
        "item_selection",
        "Item selection (PAARS Table 3)",
        "4-way accuracy: the purchased product among 3 distractors from categories the buyer "
        "never viewed (random = 0.25; its interval is where a random chooser lands on these "
        "cases), paired against base (`accuracy_minus_base`). Rows base / profile / "
        "preferences / history / full_persona are PAARS's persona ablation; persona_token is "
        "the SFT model; most_popular counts other buyers' purchases only.",
    ),
    (
        "rank_selection",
        "Rank selection (PAARS 4.3)",
        "KL(human || agent) between the distributions of the clicked rank on the store's "
        "result page for human queries (lower is better); the goal is the query alone. The "
        "floor: as many ranks clicked by other buyers of the same shops.",
    ),
    (
        "session",
        "Session generation (PAARS Tables 2 and 4)",
        "KL(human || agent) over searches, product views and purchases per session (counts "
        "capped, additive smoothing 1e-6), and type-token ratios of queries and viewed titles "
        "(human TTRs on samples of the agents' size); the share of searches whose results page "
        "lists no product in the store and the share repeating the session's previous query "
        "(`empty_search_share`, `repeated_search_share`, pooled over sessions). Every condition "
        "runs on the same agents; the floor is a disjoint sample of human sessions, as many per "
        "shop as the agents.",
    ),
    (
        "funnel",
        "The funnel against the humans the agents stand for",
        "Share of sessions with an add to cart, a checkout and a purchase per condition, beside "
        "the same shares over the sessions of the buyers the agents stand for "
        "(`matched_humans`, each buyer weighted as one agent), and the ratio agent / human "
        "with a paired interval over agents (1 is a match).",
    ),
    (
        "funnel_by_stratum",
        "The funnel within each stratum of the buyers the agents stand for",
        "The shares of the funnel section per funnel stratum (A purchased, B started a checkout, "
        "C added to cart, D viewed only) of the buyers the agents stand for, beside those "
        "buyers' own. The goal states only buy or browse: a persona-token agent can tell A "
        "from B or C by its token alone, and a condition that matches the humans overall but "
        "not within strata does so by averaging.",
    ),
    (
        "action_rate",
        "Action-rate alignment (SimPersona Table 2)",
        "ATC alignment, purchase alignment and ARA = their mean, per (shop, token) cell, "
        "rates per session, averaged per funnel stratum (A-D) then over strata; "
        "`_all_mismatch` / `_random_mismatch` compare the same agents with other tokens' real "
        "sessions, `ara_correct_minus_all_mismatch`, `ara_minus_base` and "
        "`ara_minus_token_mismatch` (what the token adds) are paired over agents. Baselines "
        "draw each agent's flags from its shop's (or shop and stratum's) human rates; the "
        "floor takes as many human sessions per cell as agents. Higher is better.",
    ),
    (
        "separation",
        "Behavioural separation (SimPersona Table 3)",
        "Do sessions conditioned on High-bin tokens score more than Low-bin ones? Cohen's d, "
        "Welch, Kruskal-Wallis and 10,000-draw permutation p-values per auxiliary head; "
        "conditions without a token are scored by the token their agent stands for.",
    ),
    (
        "instruction_following",
        "Instruction following (SimPersona Table 4)",
        "Share of runs that reach the task's funnel action, by task length; steps per run; "
        "calibration of the agent's own 'goal reached' claim against what it did.",
    ),
    (
        "ablation_sft",
        "Two-stage vs single-stage SFT (SimPersona appendix F)",
        "Outcome and error rates of the same population under each model.",
    ),
    (
        "ablation_neutral",
        "Persona token vs none under intent-neutral goals (SimPersona appendix I)",
        "Outcomes, add-to-cart and checkout counts, actions and pages per session.",
    ),
    (
        "ab_test",
        "Agentic A/B tests (PAARS 5)",
        "Simulated relative effect with its paired interval over agents (both arms are the "
        "same agents and seeds), reference effect, `conclusive` (1 when the interval excludes "
        "0), direction agreement (counted only when conclusive) and magnitude ratio.",
    ),
)


def _order(conditions: Sequence[str]) -> list[str]:
    agents = sorted(c for c in conditions if c not in REFERENCES)
    return agents + [c for c in REFERENCES if c in conditions]


def _format(value: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if abs(value) >= 1000 or (value != 0 and abs(value) < 0.001):
        return f"{value:.3g}"
    return f"{value:.3f}"


def _cell(stats: Mapping[str | None, float]) -> str:
    """A value with its 95% interval when it has one: ``0.712 [0.601, 0.805]``."""
    text = _format(stats.get(None, float("nan")))
    low, high = stats.get("ci_low"), stats.get("ci_high")
    if low is not None and high is not None and not (math.isnan(low) or math.isnan(high)):
        text += f" [{_format(low)}, {_format(high)}]"
    return text


def _sizes(cells: Mapping[str, Mapping[str, Mapping[str | None, float]]], row: str) -> str:
    """The n of a row's values: one number, or the range when its metrics differ."""
    sizes = sorted({int(by[row]["n"]) for by in cells.values() if "n" in by.get(row, {})})
    if not sizes:
        return ""
    return str(sizes[0]) if len(sizes) == 1 else f"{sizes[0]}-{sizes[-1]}"


def metric_table(metrics: Mapping[str, float], task: str, max_columns: int = 8) -> str:
    """A markdown table of one task: a row per condition with its sample size ``n``, a column
    per metric (the first ``max_columns`` metrics in name order; wider tasks are split into
    several tables), each value with its 95% interval where it has one."""
    cells: dict[str, dict[str, dict[str | None, float]]] = {}
    for name, value in metrics.items():
        t, metric, condition, stat = split_metric_name(name)
        if t == task:
            cells.setdefault(metric, {}).setdefault(condition, {})[stat] = value
    if not cells:
        return "_Not measured: this data has no case of the task (the run's log says why)._\n"
    columns = sorted(cells)
    rows = _order(sorted({c for by in cells.values() for c in by}))
    with_n = any(_sizes(cells, row) for row in rows)
    tables = []
    for start in range(0, len(columns), max_columns):
        chunk = columns[start : start + max_columns]
        head = ["condition", *(["n"] if with_n else []), *chunk]
        lines = ["| " + " | ".join(head) + " |", "|---|" + "---|" * (len(head) - 1)]
        for row in rows:
            values = [_cell(cells[m].get(row, {})) for m in chunk]
            sizes = [_sizes({m: cells[m] for m in chunk}, row)] if with_n else []
            lines.append("| " + " | ".join([row, *sizes, *values]) + " |")
        tables.append("\n".join(lines))
    return "\n\n".join(tables) + "\n"


# The columns of the A/B table: the stats ab_metrics gives each (test, metric, condition).
AB_COLUMNS = (
    "simulated_effect",
    "reference_effect",
    "conclusive",
    "direction_agreement",
    "magnitude_ratio",
)


def ab_test_table(metrics: Mapping[str, float]) -> str:
    """The A/B tests as a markdown table: a row per (test, metric, condition) with its
    sessions per arm, the simulated effect with its paired interval, the reference effect,
    whether the interval excludes 0, direction agreement and the magnitude ratio."""
    rows: dict[tuple[str, str, str], dict[str, dict[str | None, float]]] = {}
    for name, value in metrics.items():
        task, metric, condition, stat = split_metric_name(name)
        if task != "ab_test":
            continue
        test, measured, column = metric.rsplit(".", 2)
        rows.setdefault((test, measured, condition), {}).setdefault(column, {})[stat] = value
    if not rows:
        return "_Not measured: no A/B test ran._\n"
    head = ["test", "metric", "condition", "n", *AB_COLUMNS]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---|" * (len(head) - 1)]
    for (test, measured, condition), cells in sorted(rows.items()):
        n = cells.get("simulated_effect", {}).get("n")
        values = [_cell(cells.get(column, {})) for column in AB_COLUMNS]
        size = "" if n is None else str(int(n))
        lines.append("| " + " | ".join([test, measured, condition, size, *values]) + " |")
    return "\n".join(lines) + "\n"


def _bars(ax, series: Mapping[str, Sequence[float]], labels: Sequence[str]) -> None:
    width = 0.8 / max(len(series), 1)
    for i, (name, values) in enumerate(series.items()):
        ax.bar([x + i * width for x in range(len(values))], values, width, label=name)
    ax.set_xticks([x + 0.4 - width / 2 for x in range(len(labels))], labels)
    ax.legend(fontsize=7)


def plot_similarity_by_perplexity(detail: Mapping[str, Any]) -> Figure:
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    for condition, by in detail["similarity_by_stratum"].items():
        strata = sorted(by, key=int)
        ax.plot([int(s) for s in strata], [by[s] for s in strata], marker="o", label=condition)
    ax.set_xticks(sorted({int(s) for by in detail["similarity_by_stratum"].values() for s in by}))
    ax.set(
        xlabel="perplexity stratum of the human query (0 = easiest)",
        ylabel="mean cosine (agent vs human query)",
        title="Query similarity by perplexity",
    )
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_rank_distributions(detail: Mapping[str, Any]) -> Figure:
    hist = detail["rank_histograms"]
    n = len(next(iter(hist.values())))
    shares = {c: [v / max(sum(h), 1) for v in h] for c, h in hist.items()}
    fig = Figure(figsize=(8, 4))
    ax = fig.subplots()
    _bars(ax, shares, [str(r) for r in range(1, n + 1)])
    ax.set(xlabel="clicked rank", ylabel="share of cases", title="Rank distributions")
    fig.tight_layout()
    return fig


def plot_session_histograms(detail: Mapping[str, Any]) -> Figure:
    hist, cap = detail["session_histograms"], detail["max_count"]
    fig = Figure(figsize=(5 * len(hist), 4))
    axes = fig.subplots(1, len(hist), squeeze=False)
    labels = [str(v) for v in range(cap)] + [f"{cap}+"]
    for ax, (variable, series) in zip(axes[0], hist.items(), strict=True):
        _bars(ax, series, labels)
        ax.set(xlabel=f"{variable} per session", ylabel="share of sessions", title=variable)
    fig.tight_layout()
    return fig


def plot_ara_by_stratum(detail: Mapping[str, Any]) -> Figure:
    by_condition = detail["ara_by_stratum"]
    columns = min(4, len(by_condition))
    rows = -(-len(by_condition) // columns)
    fig = Figure(figsize=(3.8 * columns, 3.2 * rows))
    axes = fig.subplots(rows, columns, sharey=True, squeeze=False)
    for ax in axes.flat[len(by_condition) :]:
        ax.set_visible(False)
    for ax, (condition, pairings) in zip(axes.flat, by_condition.items(), strict=False):
        strata = sorted({s for table in pairings.values() for s in table})
        series = {p: [t.get(s, {}).get("ara", 0.0) for s in strata] for p, t in pairings.items()}
        _bars(ax, series, strata)
        ax.set(title=condition, xlabel="stratum", ylim=(0, 1))
    for row in axes:
        row[0].set_ylabel("ARA")
    fig.suptitle("Action-rate alignment by stratum: correct vs mismatched tokens")
    fig.tight_layout()
    return fig


def plot_stratum_recovery(recovery: Mapping[str, Any]) -> Figure:
    protocol = recovery["paper_protocol"]
    shops = protocol["shops"]
    strata = sorted(next(iter(protocol["real_mix"].values())))
    fig = Figure(figsize=(3 * len(shops), 3.2))
    axes = fig.subplots(1, len(shops), sharey=True, squeeze=False)
    for ax, shop in zip(axes[0], shops, strict=True):
        series = {
            "real": [protocol["real_mix"][shop][s] for s in strata],
            "from p_s(k)": [protocol["predicted_mix"][shop][s] for s in strata],
        }
        _bars(ax, series, strata)
        ax.set(title=f"{shop} (JS {protocol['js_per_shop'][shop]:.4f})", xlabel="stratum")
    axes[0][0].set_ylabel("share of buyers")
    fig.suptitle("Stratum recovery by held-out shop")
    fig.tight_layout()
    return fig


def render_report(
    metrics: Mapping[str, float], detail: Mapping[str, Any], recovery: Mapping[str, Any]
) -> tuple[str, dict[str, Figure]]:
    """The markdown report and its figures (``<name>.png`` -> figure, saved in
    ``alignment_plots/`` beside the report)."""
    per_task = {  # figure -> its plot and the detail it draws (a task without cases has none)
        "similarity_by_perplexity": (plot_similarity_by_perplexity, "similarity_by_stratum"),
        "rank_distributions": (plot_rank_distributions, "rank_histograms"),
        "session_histograms": (plot_session_histograms, "session_histograms"),
        "ara_by_stratum": (plot_ara_by_stratum, "ara_by_stratum"),
    }
    figures = {name: plot(detail) for name, (plot, key) in per_task.items() if detail.get(key)}
    figures["stratum_recovery"] = plot_stratum_recovery(recovery)
    plots_after = {
        "query_generation": ["similarity_by_perplexity"],
        "rank_selection": ["rank_distributions"],
        "session": ["session_histograms"],
        "action_rate": ["ara_by_stratum"],
    }
    n_finite = sum(1 for v in metrics.values() if not math.isnan(v))
    lines = [
        "# Alignment report",
        "",
        f"{len(metrics)} metrics ({n_finite} defined; `n/a` marks a metric the sample cannot "
        "support, e.g. a head without both Low and High tokens). Every number is in "
        "`data/08_reporting/alignment_metrics.json` and in MLflow as "
        "`<task>/<metric>/<condition>`, with `/n` and the 95% bootstrap interval "
        "`/ci_low`, `/ci_high` (shown in brackets). `n` is the number of agents, cases or "
        "sessions per cell. Rows after the agent conditions are reference points on the same "
        "cells and sample sizes: trivial baselines and the human noise floor (a disjoint "
        "sample of held-out humans of the agents' size against the same human reference). A "
        "condition is aligned only relative to them.",
        "",
    ]
    for task, title, text in SECTIONS:
        table = ab_test_table(metrics) if task == "ab_test" else metric_table(metrics, task)
        lines += [f"## {title}", "", text, "", table]
        for name in plots_after.get(task, []):
            if name in figures:
                lines += [f"![{name}](alignment_plots/{name}.png)", ""]
    lines += [
        "## Population recovery (SimPersona appendix B)",
        "",
        "Stratum mix of each held-out shop's real buyers against the mix its p_s(k) predicts.",
        "",
        "![stratum_recovery](alignment_plots/stratum_recovery.png)",
        "",
    ]
    return "\n".join(lines), {f"{name}.png": fig for name, fig in figures.items()}
