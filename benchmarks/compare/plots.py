"""PNG plots of the comparison's results: Auth API calls and RSS against N, and expiry timelines.

Needs matplotlib (the `bench` extra); the comparison imports this module only when it draws.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib

from benchmarks.compare.contenders import Load

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt

CONTENDER_ORDER = ("ours", "eso-lifetime", "eso-2/3", "cron")
COLOURS = {"ours": "tab:green", "eso-lifetime": "tab:red", "eso-2/3": "tab:orange", "cron": "tab:blue"}


def draw(runs: Mapping[str, Mapping[str, Any]], directory: Path) -> list[Path]:
    """Write the plots for every run in `runs`; returns the files written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = [_against_n(runs, directory / "compare-vs-n.png")]
    for load in sorted({run["load"] for run in runs.values()}, key=_load_order(runs)):
        written.append(_timeline(runs, load, directory / f"compare-timeline-{load}.png"))
    return written


def _load_order(runs: Mapping[str, Mapping[str, Any]]) -> Any:
    by_load = {run["load"]: (run["logins"] > 1, run["credentials"]) for run in runs.values()}
    return lambda load: by_load[load]


def _contenders(runs: Mapping[str, Mapping[str, Any]]) -> list[str]:
    present = {run["contender"] for run in runs.values()}
    return [name for name in CONTENDER_ORDER if name in present]


def _against_n(runs: Mapping[str, Mapping[str, Any]], path: Path) -> Path:
    figure, (calls_axis, rss_axis) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name in _contenders(runs):
        shared = sorted(
            (run for run in runs.values() if run["contender"] == name and run["logins"] == 1),
            key=lambda run: run["credentials"],
        )
        own = [run for run in runs.values() if run["contender"] == name and run["logins"] > 1]
        colour = COLOURS[name]
        for axis, value in ((calls_axis, _calls), (rss_axis, _rss_mib)):
            if shared:
                xs = [run["credentials"] for run in shared]
                axis.plot(
                    xs, [value(run) for run in shared], "o-", color=colour, label=f"{name}, one account"
                )
            if own:
                xs = [run["credentials"] for run in own]
                axis.plot(
                    xs,
                    [value(run) for run in own],
                    "s",
                    color=colour,
                    mfc="none",
                    ms=9,
                    label=f"{name}, own accounts",
                )
    calls_axis.set(
        xscale="log", yscale="log", xlabel="token Secrets (N)", ylabel="Auth API calls per token lifetime"
    )
    calls_axis.set_title("Auth API calls (steady state)")
    rss_axis.set(xscale="log", xlabel="token Secrets (N)", ylabel="RSS at the end (MiB)")
    rss_axis.set_title("Memory of the contender's process")
    for axis in (calls_axis, rss_axis):
        axis.grid(True, which="both", alpha=0.3)
    calls_axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def _calls(run: Mapping[str, Any]) -> float:
    return float(run["calls_per_lifetime"])


def _rss_mib(run: Mapping[str, Any]) -> float:
    return float(run["rss_end_kib"]) / 1024


def _timeline(runs: Mapping[str, Mapping[str, Any]], load: str, path: Path) -> Path:
    chosen = [run for run in runs.values() if run["load"] == load]
    names = [name for name in _contenders(runs) if any(run["contender"] == name for run in chosen)]
    figure, axes = plt.subplots(
        len(names), 1, figsize=(9, 1.9 * len(names) + 0.8), sharex=True, squeeze=False
    )
    for axis, name in zip(axes[:, 0], names, strict=True):
        run = next(run for run in chosen if run["contender"] == name)
        seconds = [point[0] for point in run["timeline"]]
        axis.step(
            seconds,
            [point[1] for point in run["timeline"]],
            where="post",
            color=COLOURS[name],
            label="expired",
        )
        axis.step(
            seconds,
            [point[2] for point in run["timeline"]],
            where="post",
            color="grey",
            ls=":",
            label="not yet written",
        )
        if run["all_exist_after"] is not None:
            axis.axvline(run["all_exist_after"], color="black", lw=0.6, alpha=0.5)
        axis.set_ylim(-0.05 * run["credentials"], 1.05 * run["credentials"])
        axis.set_ylabel("Secrets")
        axis.set_title(
            f"{name}: {100 * run['expired_share']:.2f}% of the time expired, "
            f"worst {run['worst_lateness']:.0f}s late",
            fontsize=9,
        )
        axis.grid(True, alpha=0.3)
    axes[0, 0].legend(fontsize=7, loc="upper right")
    axes[-1, 0].set_xlabel(
        f"seconds since the contender started (token lifetime {chosen[0]['lifetime']:.0f}s)"
    )
    label = Load(chosen[0]["credentials"], chosen[0]["logins"]).label
    figure.suptitle(f"Secrets holding an expired token: {label}", fontsize=11)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
