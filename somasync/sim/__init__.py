"""A deterministic discrete-event simulator that runs the *real* sans-IO core.

Every virtual node is a real :class:`~somasync.core.endpoint.Endpoint` (and, with the
``hyparview`` overlay, a real :class:`~somasync.core.overlay.HyParView`); only the
network, the clock and the failures are simulated. One seed fixes the whole run: the
same seed gives the same ``trace_hash``.

From the command line::

    python -m somasync.sim steady --nodes 1000 --messages 1000 --json out.json
    python -m somasync.sim sweep --nodes 500 --forwarding push --plot sweep.png

From Python, to check your own configuration::

    from somasync.config import GossipConfig
    from somasync.sim import Latency, NetworkModel, SimSettings, run_scenario

    settings = SimSettings(nodes=500, messages=200, forwarding="tree",
                           network=NetworkModel(latency=Latency.uniform(0.001, 0.01)),
                           gossip=GossipConfig.lan().replace(lazy_timeout=0.1))
    result = run_scenario("crash", settings.replace(fail_fraction=0.4))
    print(result.table())
    assert result.reliability["after_fault"]["min"] == 1.0

or drive a :class:`Simulation` step by step::

    sim = Simulation(200, seed=7)
    sim.start()
    sim.run(2.0)                      # the overlay forms
    sim.broadcast()                   # a signed message from a random live node
    sim.crash(range(50)); sim.run(5.0)
    sim.broadcast(); sim.run(5.0)
    assert sim.missing_copies() == 0

Fidelity notes: ``crypto="fast"`` verifies each distinct signature once per run with
real Ed25519 and answers later identical copies from a cache (a forged copy misses the
cache and fails); ``"full"`` verifies every copy. Processing time is not modelled: a node
handles an input at the instant it arrives. Bandwidth is not modelled either.
"""

from somasync.sim.engine import (
    WALL as WALL,
    MemoVerifier as MemoVerifier,
    Simulation as Simulation,
)
from somasync.sim.metrics import SimResult as SimResult
from somasync.sim.network import (
    LAN as LAN,
    Latency as Latency,
    NetworkModel as NetworkModel,
    WanModel as WanModel,
)
from somasync.sim.scenarios import (
    SCENARIOS as SCENARIOS,
    SimSettings as SimSettings,
    run_scenario as run_scenario,
    sim_gossip_config as sim_gossip_config,
)

__all__ = [
    "LAN",
    "SCENARIOS",
    "WALL",
    "Latency",
    "MemoVerifier",
    "NetworkModel",
    "SimResult",
    "SimSettings",
    "Simulation",
    "WanModel",
    "run_scenario",
    "sim_gossip_config",
]
