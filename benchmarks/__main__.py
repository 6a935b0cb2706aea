"""All benchmarks in one run, side by side: `.venv/bin/python -m benchmarks [--quick]`.

Measures, in one process tree on this machine:
- CLI latency of `mesh send` and `mesh inbox` (the installed `.venv/bin/mesh` entry point) beside
  the interpreter floor, `python -c "import typer, pydantic"`, and the original Drasill 1.0.0
  driven by one `curl` per call (with curl's own start-up measured alone);
- hook latency: `mesh hook` (no-op, deliver one message, refuse an edit) beside the interpreter
  floor and `import typer, pydantic` (benchmarks/bench_hooks.py; target: no-op <= 0.6x);
- throughput with 8 concurrent senders: Python API (8 processes) at the default durability
  (`[store] fsync = true`) and at Drasill's (`fsync = false`, like SQLite WAL with
  `synchronous = NORMAL`), CLI (8 threads each running `mesh send` processes) and Drasill's HTTP
  API (8 threads, one keep-alive connection each);
- scale: consume with 10 vs 10,000 unread, `agents`/`status` with 10 vs 1,000 agents, prune with
  10,000 stale temp files;
- wake latency (send to injection) with a real `mesh watch`, heimdall stand-in and tmux;
- memory: peak RSS of `mesh send`, RSS of an idle `mesh watch` over 50 agents, Drasill's server;
- the dashboard: change-to-page latency (event stream and headless Chromium) and its idle RSS
  over 50 agents, shown beside Drasill's server;
- PostgreSQL (benchmarks/bench_postgres.py, alone: `python -m benchmarks.bench_postgres`): a
  durable throwaway cluster; send/inbox latency vs a directory mesh, 8 API senders vs Drasill's
  HTTP, consume at 10,000 vs 10 unread, send-to-wake across hosts.

Opt-in (it restarts a server of its own and takes from half a minute to minutes): `--soak` runs
only the PostgreSQL soak (benchmarks/bench_soak.py: agents on simulated hosts through server
restarts; messages/s, p50/p99 latencies, restart gaps) at its CI size; `python -m
benchmarks.bench_soak --full` runs it at the slow test's size (64 agents, 4 hosts, 5 minutes).

Prints a table, the targets with met/missed, and writes the figures as JSON to
benchmarks/results/benchmark-<time>.json (and latest.json). `--quick` uses fewer rounds and
smaller scale sizes (it still prints every figure); `--no-drasill` skips the baseline.
Exit status: 0 when every section ran (targets missed or not), 1 when a section failed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks import (
    bench_compare,
    bench_dashboard,
    bench_hooks,
    bench_loop,
    bench_postgres,
    bench_scale,
    bench_wake,
)
from benchmarks.drasill_baseline import DrasillServer, DrasillUnavailable
from benchmarks.harness import compile_package, proc_status_kib

RESULTS_DIR = Path(__file__).parent / "results"

FULL: dict[str, Any] = {
    "latency_runs": 25,
    "throughput_rounds": 3,
    "api_per_sender": 250,
    "cli_per_sender": 4,
    "unread_big": 10_000,
    "consume_api_rounds": 150,
    "consume_cli_rounds": 20,
    "agents_big": 1_000,
    "agents_rounds": 5,
    "prune_stale": 10_000,
    "prune_rounds": 3,
    "wake_rounds": 8,
    "rss_runs": 5,
    "dashboard_rounds": 10,
    "postgres": bench_postgres.FULL,
}
QUICK: dict[str, Any] = {
    "latency_runs": 20,
    "throughput_rounds": 1,
    "api_per_sender": 60,
    "cli_per_sender": 2,
    "unread_big": 2_000,
    "consume_api_rounds": 60,
    "consume_cli_rounds": 20,
    "agents_big": 200,
    "agents_rounds": 3,
    "prune_stale": 2_000,
    "prune_rounds": 1,
    "wake_rounds": 3,
    "rss_runs": 3,
    "dashboard_rounds": 5,
    "postgres": bench_postgres.QUICK,
}

LATENCY_BAR = 1.3
THROUGHPUT_BAR = 5.0
CONSUME_BAR = 3.0
PG_LATENCY_BAR = 3.0
PG_THROUGHPUT_BAR = 2.0
PG_WAKE_BAR_MS = 1000.0


def _section(results: dict[str, Any], name: str, func: Callable[[], Any]) -> None:
    started = time.perf_counter()
    print(f"[{name}] ...", file=sys.stderr, flush=True)
    try:
        results[name] = func()
    except Exception as exc:
        results.setdefault("errors", {})[name] = f"{type(exc).__name__}: {exc}"
        traceback.print_exc()
    took = time.perf_counter() - started
    results.setdefault("section_s", {})[name] = round(took, 1)
    print(f"[{name}] {took:.1f}s", file=sys.stderr, flush=True)


def _start_drasill(results: dict[str, Any], skip: bool) -> DrasillServer | None:
    if skip:
        results["drasill"] = {"skipped": "--no-drasill was given"}
        return None
    server = DrasillServer()
    try:
        server.start()
    except DrasillUnavailable as exc:
        server.stop()
        results["drasill"] = {"skipped": str(exc)}
        print(f"Drasill baseline skipped: {exc}", file=sys.stderr)
        return None
    results["drasill"] = {
        "version": "1.0.0",
        "python": server.python,
        "install_s": round(server.install_s, 1),
        "server": "uvicorn drasill.app:create_app --factory on 127.0.0.1, SQLite in a temp dir",
    }
    return server


# ---- evaluation -----------------------------------------------------------------------------


def _verdict(ratio: float, bar: float, *, at_most: bool) -> dict[str, Any]:
    """`missed_by`: for an upper bar, how far over it (ratio/bar - 1); for a lower bar, the
    factor still needed (bar/ratio)."""
    met = ratio <= bar if at_most else ratio >= bar
    by = (ratio / bar - 1) if at_most else bar / ratio
    return {
        "ratio": round(ratio, 2),
        "bar": bar,
        "at_most": at_most,
        "met": met,
        "missed_by": None if met else by,
    }


def evaluate(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's three targets, each with its ratio, verdict and, if missed, the remedy."""
    targets: list[dict[str, Any]] = []
    latency = results.get("latency", {}).get("median_ms", {})
    framework = latency.get("python -c 'import typer, pydantic'")
    imports = latency.get("python -c 'import drasill_cli.cli.app'")
    for command in ("mesh send", "mesh inbox"):
        if framework and command in latency:
            ms = latency[command]
            target = {
                "target": f"{command} median <= {LATENCY_BAR}x `import typer, pydantic`",
                **_verdict(ms / framework, LATENCY_BAR, at_most=True),
            }
            if not target["met"] and imports:
                target["gap"] = (
                    f"{ms - LATENCY_BAR * framework:.0f} ms over the bar "
                    f"({LATENCY_BAR * framework:.0f} ms). Importing the CLI (typer app with "
                    f"every command module) alone takes {imports:.0f} ms "
                    f"({imports - framework:+.0f} ms vs typer+pydantic); building the click "
                    f"command tree, parsing and the command itself take {ms - imports:.0f} ms "
                    "more. Closing it: register commands lazily (import only the invoked "
                    "command's module), or dispatch send/inbox from argv before Typer builds "
                    "the full app."
                )
            targets.append(target)
    loop = results.get("loop")
    if loop:
        worst = max(loop["ratio"], key=loop["ratio"].get)
        targets.append(
            {
                "target": f"every agent loop command <= {LATENCY_BAR}x `import typer, pydantic` "
                f"(worst: {worst})",
                **_verdict(loop["ratio"][worst], LATENCY_BAR, at_most=True),
            }
        )
    hooks = results.get("hooks")
    if hooks:
        targets.append(
            {
                "target": f"no-op `mesh hook` <= {bench_hooks.TARGET}x `import typer, pydantic`",
                **_verdict(hooks["ratio"][bench_hooks.NO_OP], bench_hooks.TARGET, at_most=True),
                "beside": f"deliver one message {hooks['ratio'][bench_hooks.DELIVER]:.2f}x, "
                f"refuse an edit {hooks['ratio'][bench_hooks.REFUSE]:.2f}x",
            }
        )
    rates = results.get("throughput", {}).get("msgs_per_s", {})
    name = (
        f"Python API, 8 senders >= {THROUGHPUT_BAR}x Drasill HTTP, 8 clients, at equal "
        "durability ([store] fsync = false vs SQLite WAL synchronous=NORMAL)"
    )
    if "python_api_fsync_off" in rates and "drasill_http" in rates:
        equal = rates["python_api_fsync_off"] / rates["drasill_http"]
        default = rates["python_api"] / rates["drasill_http"]
        target = {
            "target": name,
            **_verdict(equal, THROUGHPUT_BAR, at_most=False),
            "default_durability_ratio": round(default, 2),
            "beside": f"at the default durability (fsync = true, every send on disk): "
            f"{rates['python_api']:.0f} / {rates['drasill_http']:.0f} msg/s = {default:.2f}x",
        }
        if not target["met"]:
            target["gap"] = (
                "at fsync = false a send is a temp-file write, a link and a rename plus the "
                "audit append; the rest is Python: profile messages.send and the audit append"
            )
        targets.append(target)
    elif "python_api" in rates:
        targets.append(
            {
                "target": name,
                "met": None,
                "skipped": results.get("drasill", {}).get("skipped", "no Drasill figure"),
            }
        )
    scale = results.get("consume", {})
    if scale:
        big = scale["unread"]["big"]
        for kind in ("api", "cli"):
            target = {
                "target": f"consume at {big:,} unread <= {CONSUME_BAR}x at 10 ({kind.upper()})",
                **_verdict(scale[f"{kind}_ratio"], CONSUME_BAR, at_most=True),
            }
            if not target["met"]:
                target["gap"] = (
                    "the consumer lists shard folders of new/; a deeper shard level or "
                    "keeping a cursor of the oldest shard would close it"
                )
            targets.append(target)
    targets += _postgres_targets(results)
    return targets


def _postgres_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The PostgreSQL targets of issue 15 (ratios measured in the same run)."""
    pg = results.get("postgres")
    if not pg:
        return []
    targets: list[dict[str, Any]] = []
    lat = pg["latency"]
    med = lat["median_ms"]
    for command in ("send", "inbox"):
        target = {
            "target": f"PostgreSQL: mesh {command} <= {PG_LATENCY_BAR}x the same on a directory "
            "mesh",
            **_verdict(lat[f"{command}_ratio"], PG_LATENCY_BAR, at_most=True),
        }
        extra = med[f"mesh {command} (postgres)"] - med[f"mesh {command} (directory)"]
        target["beside"] = (
            f"{extra:+.0f} ms over the directory mesh; importing psycopg costs "
            f"{lat['import_psycopg_ms']['psycopg']:.0f} ms (-X importtime), connecting "
            f"{lat['connect_ms']:.1f} ms"
        )
        targets.append(target)
    rates = pg["throughput"]["msgs_per_s"]
    name = (
        f"PostgreSQL: Python API, 8 senders (synchronous_commit = on) >= {PG_THROUGHPUT_BAR}x "
        "Drasill HTTP, 8 clients"
    )
    if "drasill_http" in rates:
        targets.append(
            {
                "target": name,
                **_verdict(
                    rates["python_api_postgres"] / rates["drasill_http"],
                    PG_THROUGHPUT_BAR,
                    at_most=False,
                ),
            }
        )
    else:
        skipped = results.get("drasill", {}).get("skipped", "no Drasill figure")
        targets.append({"target": name, "met": None, "skipped": skipped})
    consume = pg["consume"]
    targets.append(
        {
            "target": f"PostgreSQL: consume at {consume['unread']['big']:,} unread <= "
            f"{CONSUME_BAR}x at 10 (API)",
            **_verdict(consume["api_ratio"], CONSUME_BAR, at_most=True),
            "beside": f"`mesh inbox`: {consume['cli_ratio']:.2f}x",
        }
    )
    wake = pg["wake"]
    target = {
        "target": f"PostgreSQL: send-to-wake across hosts p50 < {PG_WAKE_BAR_MS / 1000:.0f} s "
        f"(ratio to {PG_WAKE_BAR_MS:.0f} ms; {wake['where']})",
        **_verdict(wake["median_ms"] / PG_WAKE_BAR_MS, 1.0, at_most=True),
        "beside": f"p50 {wake['median_ms']:.0f} ms (min {wake['min_ms']:.0f}, "
        f"max {wake['max_ms']:.0f})",
    }
    target["met"] = wake["median_ms"] < PG_WAKE_BAR_MS
    targets.append(target)
    return targets


# ---- printing -------------------------------------------------------------------------------


def _row(label: str, value: str, note: str = "") -> None:
    print(f"  {label:<46} {value:>14}  {note}")


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a and b else "n/a"


def print_report(results: dict[str, Any], targets: list[dict[str, Any]]) -> None:
    meta = results["meta"]
    print()
    print(f"drasill-cli benchmarks  {meta['date']}  {meta['machine']}  Python {meta['python']}")
    print(f"mode: {meta['mode']}; command: {meta['command']}")
    drasill = results.get("drasill", {})
    if "skipped" in drasill:
        print(f"Drasill baseline: SKIPPED ({drasill['skipped']})")
    else:
        print(f"Drasill baseline: {drasill.get('version')} on {drasill.get('python')}")

    _print_latency(results)
    _print_loop(results)
    if results.get("hooks"):
        print()
        print("\n".join(bench_hooks.report(results["hooks"])))
    _print_throughput(results)
    _print_scale(results)
    _print_wake(results)
    _print_memory(results)
    _print_dashboard(results)
    print_postgres(results)
    _print_targets(results, targets)


def _print_latency(results: dict[str, Any]) -> None:
    latency = results.get("latency")
    if latency:
        med = latency["median_ms"]
        print(
            f"\nCLI latency (median of {latency['runs_per_command']} interleaved runs, "
            f"entry point {latency['entry_point']})"
        )
        floor = med.get("python -I -S -c pass")
        framework = med.get("python -c 'import typer, pydantic'")
        for name, ms in med.items():
            _row(name, f"{ms:8.1f} ms", f"min {latency['min_ms'][name]:.1f}")
        for command, curl in (
            ("mesh send", "curl send (Drasill)"),
            ("mesh inbox", "curl consume (Drasill)"),
        ):
            ms = med.get(command)
            _row(f"{command} / interpreter floor", _ratio(ms, floor))
            _row(f"{command} / import typer, pydantic", _ratio(ms, framework), "target <= 1.3x")
            _row(f"{command} / {curl}", _ratio(ms, med.get(curl)))
        if "curl --version" in med:
            _row(
                "curl start-up share of a curl send",
                _ratio(med["curl --version"], med.get("curl send (Drasill)")),
            )


def _print_loop(results: dict[str, Any]) -> None:
    loop = results.get("loop")
    if loop:
        print(
            f"\nAgent loop commands (median of {loop['runs_per_command']} interleaved runs, "
            f"ratio to {loop['floor']}; target <= {LATENCY_BAR}x each)"
        )
        _row(loop["floor"], f"{loop['median_ms'][loop['floor']]:8.1f} ms")
        for name, ratio in loop["ratio"].items():
            mark = "" if ratio <= LATENCY_BAR else "  OVER"
            _row(name, f"{loop['median_ms'][name]:8.1f} ms", f"{ratio:.2f}x{mark}")


def _print_throughput(results: dict[str, Any]) -> None:
    thr = results.get("throughput")
    if thr:
        rates = thr["msgs_per_s"]
        print(
            f"\nThroughput, {thr['senders']} concurrent senders (median of {thr['rounds']} "
            "interleaved rounds)"
        )
        _row(
            "Python API, default durability (fsync on)",
            f"{rates['python_api']:8.0f} msg/s",
            "8 processes; each send on disk when it returns",
        )
        _row(
            "Python API, equal durability (fsync off)",
            f"{rates['python_api_fsync_off']:8.0f} msg/s",
            "8 processes; [store] fsync = false, like SQLite synchronous=NORMAL",
        )
        _row("CLI (8 threads running `mesh send`)", f"{rates['cli']:8.1f} msg/s", "fsync on")
        if "drasill_http" in rates:
            _row(
                "Drasill HTTP (8 keep-alive clients)",
                f"{rates['drasill_http']:8.0f} msg/s",
                "SQLite WAL, synchronous=NORMAL",
            )
            _row(
                "Python API / Drasill, equal durability",
                _ratio(rates["python_api_fsync_off"], rates["drasill_http"]),
                "target >= 5x",
            )
            _row(
                "Python API / Drasill, default durability",
                _ratio(rates["python_api"], rates["drasill_http"]),
                "beside the target",
            )
            _row("CLI / Drasill HTTP", _ratio(rates["cli"], rates["drasill_http"]))


def _print_scale(results: dict[str, Any]) -> None:
    consume = results.get("consume")
    if consume:
        small, big = consume["unread"]["small"], consume["unread"]["big"]
        print(f"\nScale (filled {small} + {big:,} unread in {consume['fill_s']:.1f}s)")
        for kind, label in (("api", "messages.consume"), ("cli", "mesh inbox")):
            values = consume[f"{kind}_median_ms"]
            _row(f"{label}, {small} unread", f"{values['small']:8.2f} ms")
            _row(
                f"{label}, {big:,} unread",
                f"{values['big']:8.2f} ms",
                f"ratio {consume[f'{kind}_ratio']:.2f}x (target <= 3x)",
            )
    ag = results.get("agents_status")
    if ag:
        for name, ms in ag["median_ms"].items():
            _row(f"mesh {name.split()[0]} --json, {int(name.split()[1]):,} agents", f"{ms:8.1f} ms")
        _row(
            f"agents ratio {ag['agents']['big']:,} / {ag['agents']['small']}",
            f"{ag['agents_ratio']:.2f}x",
        )
        _row(
            f"status ratio {ag['agents']['big']:,} / {ag['agents']['small']}",
            f"{ag['status_ratio']:.2f}x",
        )
    pr = results.get("prune")
    if pr:
        _row("mesh prune --json, nothing stale", f"{pr['median_ms']['none']:8.1f} ms")
        _row(
            f"mesh prune --json, {pr['stale_files']:,} stale temp files",
            f"{pr['median_ms']['stale']:8.1f} ms",
            f"{pr['per_file_us']:.0f} us per file",
        )


def _print_wake(results: dict[str, Any]) -> None:
    wake = results.get("wake")
    if wake:
        print(
            f"\nWake latency, send to injection ({wake['rounds']} rounds, idle_ms "
            f"{wake['idle_ms']}, enter_delay_ms {wake['enter_delay_ms']})"
        )
        for key in ("heimdall_send_to_notice", "heimdall_send_to_enter", "tmux_send_to_line_read"):
            if key in wake:
                fig = wake[key]
                _row(
                    key.replace("_", " "),
                    f"{fig['median_ms']:8.0f} ms",
                    f"min {fig['min_ms']:.0f}, max {fig['max_ms']:.0f}",
                )
        if "tmux_skipped" in wake:
            _row("tmux", "skipped", wake["tmux_skipped"])


def _print_memory(results: dict[str, Any]) -> None:
    mem = results.get("memory")
    if mem:
        print("\nMemory")
        for name, kib in mem["peak_rss_kib"].items():
            _row(f"peak RSS {name}", f"{kib / 1024:8.1f} MiB")
        watch = mem.get("watch_50_agents_kib")
        if watch:
            _row(
                "mesh watch idle, 50 agents (RSS / peak)",
                f"{watch['rss'] / 1024:5.1f}/{watch['peak'] / 1024:.1f} MiB",
            )
        server = mem.get("drasill_server_50_agents_kib")
        if server:
            _row(
                "Drasill server idle, 50 agents (RSS / peak)",
                f"{server['rss'] / 1024:5.1f}/{server['peak'] / 1024:.1f} MiB",
            )
        after = mem.get("drasill_server_after_load_kib")
        if after:
            _row(
                "Drasill server after the load (RSS / peak)",
                f"{after['rss'] / 1024:5.1f}/{after['peak'] / 1024:.1f} MiB",
            )


def _print_dashboard(results: dict[str, Any]) -> None:
    dashboard = results.get("dashboard")
    if dashboard:
        print()
        print("\n".join(bench_dashboard.report(dashboard)))
        server = results.get("memory", {}).get("drasill_server_50_agents_kib")
        if server:
            _row(
                "beside it: Drasill server idle, 50 agents",
                f"{server['rss'] / 1024:5.1f}/{server['peak'] / 1024:.1f} MiB",
            )


def print_postgres(results: dict[str, Any]) -> None:
    """The PostgreSQL section's table (also printed by `python -m benchmarks.bench_postgres`)."""
    pg = results.get("postgres")
    if not pg:
        return
    server = pg["server"]
    print(
        f"\nPostgreSQL {server['version']} (fsync {server['fsync']}, synchronous_commit "
        f"{server['synchronous_commit']}, {server['socket']})"
    )
    lat = pg["latency"]
    for name, ms in lat["median_ms"].items():
        _row(name, f"{ms:8.1f} ms")
    _row("mesh send postgres / directory", f"{lat['send_ratio']:.2f}x", "target <= 3x")
    _row("mesh inbox postgres / directory", f"{lat['inbox_ratio']:.2f}x", "target <= 3x")
    imports = lat["import_psycopg_ms"]
    _row("import psycopg (-X importtime, cumulative)", f"{imports['psycopg']:8.1f} ms")
    for name, ms in imports.items():
        if name != "psycopg":
            _row(f"  of which {name}", f"{ms:8.1f} ms")
    _row("psycopg.connect + close (unix socket)", f"{lat['connect_ms']:8.1f} ms")
    rates = pg["throughput"]["msgs_per_s"]
    _row("Python API, 8 senders, PostgreSQL", f"{rates['python_api_postgres']:8.0f} msg/s")
    if "drasill_http" in rates:
        _row("Drasill HTTP, 8 keep-alive clients", f"{rates['drasill_http']:8.0f} msg/s")
        _row(
            "PostgreSQL API / Drasill HTTP",
            _ratio(rates["python_api_postgres"], rates["drasill_http"]),
            "target >= 2x",
        )
    consume = pg["consume"]
    small, big = consume["unread"]["small"], consume["unread"]["big"]
    for kind, label in (("api", "messages.consume"), ("cli", "mesh inbox")):
        values = consume[f"{kind}_median_ms"]
        _row(f"{label}, {small} unread (postgres)", f"{values['small']:8.2f} ms")
        _row(
            f"{label}, {big:,} unread (postgres)",
            f"{values['big']:8.2f} ms",
            f"ratio {consume[f'{kind}_ratio']:.2f}x (target <= 3x)",
        )
    wake = pg["wake"]
    _row(
        f"send-to-wake, inbox --wait ({wake['rounds']} rounds)",
        f"{wake['median_ms']:8.0f} ms",
        f"p50; min {wake['min_ms']:.0f}, max {wake['max_ms']:.0f}; {wake['where']}",
    )


def print_targets_only(targets: list[dict[str, Any]]) -> None:
    """The targets' verdicts (for a run of one section)."""
    _print_targets({"section_s": {}, "meta": {}}, targets)


def _print_targets(results: dict[str, Any], targets: list[dict[str, Any]]) -> None:
    print("\nTargets")
    for target in targets:
        if target.get("met") is None:
            print(f"  [skip] {target['target']}: {target.get('skipped')}")
            continue
        if target["met"]:
            verdict = "met"
        elif target["at_most"]:
            verdict = f"MISSED: {target['missed_by'] * 100:.0f}% over the bar"
        else:
            verdict = (
                f"MISSED: reaches {100 / target['missed_by']:.0f}% of the bar, "
                f"needs {target['missed_by']:.2f}x more"
            )
        print(
            f"  [{'ok' if target['met'] else '!!'}] {target['target']}: "
            f"{target['ratio']:.2f}x -> {verdict}"
        )
        if "beside" in target:
            print(f"       beside it, {target['beside']}")
        if "gap" in target:
            print(f"       to close: {target['gap']}")
    for name, error in results.get("errors", {}).items():
        print(f"  [error] section {name}: {error}")
    if "total_s" in results["meta"]:
        print(f"\ntotal {results['meta']['total_s']:.0f}s; sections: {results['section_s']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--quick", action="store_true", help="fewer rounds, smaller sizes")
    parser.add_argument("--no-drasill", action="store_true", help="skip the Drasill baseline")
    parser.add_argument(
        "--soak", action="store_true", help="run only the PostgreSQL soak (bench_soak), CI size"
    )
    args = parser.parse_args(argv)
    if args.soak:
        from benchmarks import bench_soak

        return bench_soak.main([])
    profile = QUICK if args.quick else FULL
    compile_package()
    began = time.perf_counter()
    results: dict[str, Any] = {
        "meta": {
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs",
            "python": platform.python_version(),
            "mode": "quick" if args.quick else "full",
            "command": " ".join([".venv/bin/python -m benchmarks", *(argv or sys.argv[1:])]),
            "profile": profile,
            "tmux": shutil.which("tmux") is not None,
        }
    }
    drasill = _start_drasill(results, args.no_drasill)
    try:
        _section(results, "memory", lambda: bench_compare.memory(drasill, profile["rss_runs"]))
        _section(
            results, "latency", lambda: bench_compare.cli_latency(drasill, profile["latency_runs"])
        )
        _section(results, "loop", lambda: bench_loop.loop_latency(profile["latency_runs"]))
        _section(results, "hooks", lambda: bench_hooks.measure(profile["latency_runs"]))
        _section(
            results,
            "throughput",
            lambda: bench_compare.throughput(
                drasill,
                profile["throughput_rounds"],
                profile["api_per_sender"],
                profile["cli_per_sender"],
            ),
        )
        _section(results, "postgres", lambda: bench_postgres.measure(profile["postgres"], drasill))
        if drasill is not None and "memory" in results:
            status = proc_status_kib(drasill.pid)
            results["memory"]["drasill_server_after_load_kib"] = {
                "rss": status["VmRSS"],
                "peak": status["VmHWM"],
            }
    finally:
        if drasill is not None:
            drasill.stop()
    _section(
        results,
        "consume",
        lambda: bench_scale.consume(
            10, profile["unread_big"], profile["consume_api_rounds"], profile["consume_cli_rounds"]
        ),
    )
    _section(
        results,
        "agents_status",
        lambda: bench_scale.agents_status(10, profile["agents_big"], profile["agents_rounds"]),
    )
    _section(
        results, "prune", lambda: bench_scale.prune(profile["prune_stale"], profile["prune_rounds"])
    )
    _section(results, "wake", lambda: bench_wake.measure(profile["wake_rounds"]))
    _section(results, "dashboard", lambda: bench_dashboard.measure(profile["dashboard_rounds"]))
    results["meta"]["total_s"] = round(time.perf_counter() - began, 1)
    targets = evaluate(results)
    results["targets"] = targets
    print_report(results, targets)
    RESULTS_DIR.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    text = json.dumps(results, indent=2, default=str) + "\n"
    (RESULTS_DIR / f"benchmark-{stamp}.json").write_text(text)
    (RESULTS_DIR / "latest.json").write_text(text)
    print(f"JSON: {RESULTS_DIR / f'benchmark-{stamp}.json'}")
    return 1 if results.get("errors") else 0


if __name__ == "__main__":
    sys.exit(main())
