"""The membership benchmark: 32 agent processes on this host, measured.

    python -m somasync.bench membership [--nodes 32] [--trials 5] [--stress-seconds 300]
                                        [--preset lan] [--json PATH]

Reports join convergence, the time until every other node reports a ``kill -9``-ed node
failed and a SIGSTOP-ed node failed (median and p99 over the trials), how long a resumed
node takes to be alive everywhere again, false positives (nodes declared failed that
were not) while one node shares its CPU with a busy loop, and idle CPU and RSS per
node; next to what the configured probe interval and suspicion multiplier predict and
to the same scenarios in the stepped-clock simulator (:class:`somasync.testing.
MembershipNet`). Every process it starts is stopped by PID.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import subprocess
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import psutil

from somasync.bench.agents import AgentCluster
from somasync.bench.machine import machine_info
from somasync.config import MembershipConfig

__all__ = ["expectation", "main", "simulate"]

PRESETS = {"lan": MembershipConfig.lan, "wan": MembershipConfig.wan,
           "local": MembershipConfig.local}
DEADLINE = 120.0


def expectation(config: MembershipConfig, nodes: int) -> dict[str, float]:
    """What the configuration predicts, in seconds (derivation in each comment)."""
    probe_round = max(config.probe_interval, 2 * config.probe_timeout)
    minimum = config.suspicion_mult * max(1.0, math.log10(nodes)) * config.probe_interval
    gossip = config.gossip_interval * math.ceil(math.log(nodes, config.gossip_nodes + 1))
    # SWIM: with N - 1 probers, each period a given member is probed with probability
    # 1 - (1 - 1/(N-1))^(N-1) ~ 1 - 1/e, so the first probe comes after e/(e-1) periods
    # on average (uniform start: half a period less).
    first_probe = (math.e / (math.e - 1) - 0.5) * config.probe_interval
    # Each further period brings about one more independent probe, i.e. confirmation.
    confirmations = config.suspicion_confirmations * config.probe_interval
    return {
        # kill -9: broken links make the neighbours probe at once; one probe round, then
        # (with k confirmations from the other neighbours) the minimum suspicion timeout.
        "kill_all_failed_s": probe_round + minimum + gossip,
        # SIGSTOP: no hint; the first probe, its round, then either k confirmations or
        # the minimum timeout, whichever is later.
        "stop_all_failed_s": first_probe + probe_round + max(minimum, confirmations)
        + gossip,
        "min_suspicion_timeout_s": minimum,
        "max_suspicion_timeout_s": minimum * config.suspicion_max_mult,
        "false_positives": 0.0,
    }


def simulate(config: MembershipConfig, nodes: int, trials: int) -> dict[str, Any]:
    """The same crash and pause in the stepped-clock simulator (no link hints, 0.5 ms
    datagram latency): all-failed times in virtual seconds."""
    from somasync.core.membership import PeerState
    from somasync.testing import MembershipNet

    results: dict[str, list[float]] = {"crash": [], "pause": []}
    for trial in range(trials):
        for mode in results:
            net = MembershipNet(config, seed=trial, latency=0.0005)
            for i in range(nodes):
                net.add(f"n{i}", seeds=["n0"] if i else [])
            net.run(10.0)
            victim = f"n{1 + trial % (nodes - 1)}"
            (net.crash if mode == "crash" else net.pause)(victim)
            start = net.now
            while not all(net.states(n)[victim] == PeerState.FAILED
                          for n in net.nodes if n != victim) and net.now - start < 120:
                net.run(0.01)
            results[mode].append(net.now - start)
    return {f"{mode}_all_failed_s": _summary(values) for mode, values in results.items()}


def _summary(values: list[float]) -> dict[str, Any]:
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)]
    return {"median": statistics.median(ordered), "p99": p99, "min": ordered[0],
            "max": ordered[-1], "n": len(ordered)}


def _idle_usage(cluster: AgentCluster, seconds: float) -> dict[str, Any]:
    processes = [psutil.Process(a.process.pid) for a in cluster.running()]
    before = [p.cpu_times() for p in processes]
    time.sleep(seconds)
    cpu, rss = [], []
    for process, start in zip(processes, before, strict=True):
        end = process.cpu_times()
        cpu.append(100.0 * (end.user + end.system - start.user - start.system) / seconds)
        rss.append(process.memory_info().rss / 2**20)
    return {"cpu_percent": _summary(cpu), "rss_mib": _summary(rss)}


def run(nodes: int, trials: int, stress_seconds: float, preset: str,
        log: Any = print) -> dict[str, Any]:
    config = PRESETS[preset]()
    rng = random.Random(1)
    result: dict[str, Any] = {"nodes": nodes, "trials": trials, "preset": preset,
                              "machine": machine_info(), "config": config.__dict__.copy(),
                              "expected": expectation(config, nodes)}
    kill: list[float] = []
    kill_median: list[float] = []
    stop: list[float] = []
    refute: list[float] = []
    with AgentCluster(preset=preset) as cluster:
        spawned = time.monotonic()
        cluster.start(nodes, within=DEADLINE)
        listening = time.monotonic()
        converge = cluster.wait(cluster.converged, "convergence", DEADLINE)
        result["join"] = {"from_last_listening_s": converge,
                          "from_first_spawn_s": time.monotonic() - spawned,
                          "start_processes_s": listening - spawned}
        log(f"joined: {nodes} alive everywhere {converge:.2f} s after the last node "
            f"listened")
        result["idle"] = _idle_usage(cluster, 10.0)
        log(f"idle: CPU {result['idle']['cpu_percent']['median']:.2f}% median, RSS "
            f"{result['idle']['rss_mib']['median']:.1f} MiB median per node")
        for trial in range(trials):
            victim = rng.choice([a.index for a in cluster.running() if a.index != 0])
            times = _reported_after(cluster, partial(cluster.kill, victim), victim,
                                    "PeerFailed", "kill -9 detection")
            kill.append(max(times))
            kill_median.append(statistics.median(times))
            replacement = cluster.spawn(join=[cluster.agents[0].address])
            cluster.wait(replacement.ready.is_set, "replacement", DEADLINE)
            cluster.wait(cluster.converged, "convergence", DEADLINE)

            victim = rng.choice([a.index for a in cluster.running() if a.index != 0])
            stop.append(max(_reported_after(cluster, partial(cluster.pause, victim), victim,
                                            "PeerFailed", "SIGSTOP detection")))
            refute.append(max(_reported_after(cluster, partial(cluster.resume, victim),
                                              victim, "PeerRecovered", "recovery")))
            cluster.wait(cluster.converged, "convergence", DEADLINE)
            log(f"trial {trial + 1}: kill -9 seen failed by all {kill[-1]:.2f} s, SIGSTOP "
                f"{stop[-1]:.2f} s, SIGCONT alive again everywhere {refute[-1]:.2f} s")
        result["kill_all_failed_s"] = _summary(kill)
        result["kill_median_node_s"] = _summary(kill_median)
        result["stop_all_failed_s"] = _summary(stop)
        result["resume_all_recovered_s"] = _summary(refute)
        if stress_seconds > 0:
            result["stress"] = _stress(cluster, stress_seconds, log)
    result["simulated"] = simulate(config, nodes, trials)
    return result


def _reported_after(cluster: AgentCluster, act: Any, victim: int, kind: str,
                    what: str) -> list[float]:
    """Do ``act`` to agent ``victim``; wait until every other running agent reported
    ``kind`` about it; return each one's delay in seconds."""
    since = time.time()
    act()
    cluster.wait(partial(cluster.all_see, victim, kind, since=since), what, DEADLINE)
    return [t - since for t in cluster.first_times(victim, kind, since=since)]


def _stress(cluster: AgentCluster, seconds: float, log: Any) -> dict[str, Any]:
    """One node shares one CPU with a busy loop for ``seconds``: count false positives."""
    victim = cluster.running()[-1]
    cpu = psutil.Process(victim.process.pid).cpu_affinity()[0]
    psutil.Process(victim.process.pid).cpu_affinity([cpu])
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"],
                            start_new_session=True)
    try:
        psutil.Process(busy.pid).cpu_affinity([cpu])
        since = time.time()
        log(f"stress: {victim.node_id} shares CPU {cpu} with a busy loop for {seconds:.0f} s")
        time.sleep(seconds)
        # Only a verdict about a node that is running is false; one about a node killed
        # in an earlier trial is true, however late (a straggler learning of it).
        running = {a.node_id for a in cluster.running()}
        verdicts = [(a.node_id, e["peer_id"], e["incarnation"], round(e["t"] - since, 2))
                    for a in cluster.running() for e in a.of("PeerFailed") if e["t"] >= since]
        failed = sum(1 for verdict in verdicts if verdict[1] in running)
        suspected = sum(len([e for e in a.of("PeerSuspected") if e["t"] >= since])
                        for a in cluster.running())
        stressed = psutil.Process(victim.process.pid).cpu_percent(interval=1.0)
    finally:
        busy.kill()
        busy.wait()
    log(f"stress: {failed} false failures, {suspected} suspicions (refuted)")
    return {"seconds": seconds, "false_positives": failed, "suspicions": suspected,
            "verdicts_about_killed_nodes": len(verdicts) - failed,
            "verdicts": verdicts[:100], "stressed_node": victim.node_id,
            "stressed_node_cpu_percent": stressed, "stressed_cpu": cpu}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m somasync.bench membership",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=32)
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--stress-seconds", type=float, default=300.0)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="lan")
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    if args.nodes < 3 or args.trials < 1:
        parser.error("--nodes must be >= 3 and --trials >= 1")
    try:
        result = run(args.nodes, args.trials, args.stress_seconds, args.preset)
    except TimeoutError as exc:
        print(f"membership bench could not finish: {exc}", file=sys.stderr)
        return 3
    expected = result["expected"]
    for key, simulated in (("kill_all_failed_s", "crash_all_failed_s"),
                           ("stop_all_failed_s", "pause_all_failed_s")):
        measured = result[key]
        print(f"{key}: median {measured['median']:.2f} s, p99 {measured['p99']:.2f} s "
              f"(range {measured['min']:.2f}-{measured['max']:.2f}); expected "
              f"{expected[key]:.2f} s; simulated (no link hints) median "
              f"{result['simulated'][simulated]['median']:.2f} s")
    if args.json:
        import orjson

        Path(args.json).write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
