"""Inside a Ray worker: today's runner for one variant and slot, writing straight to the store.

Only the small outcome summaries travel back through Ray, with the variant fingerprint computed on this node, which
must be the driver's: a node whose serving stack differs (another image: another vLLM) refuses before it runs. The run
keys make a retried task (its worker or node died) resume where the store says it stopped, sending only the cases not
yet stored; the managed model server dies with the worker (PR_SET_PDEATHSIG, and the next launch on that machine
reaps what is left).
"""

from __future__ import annotations

import dataclasses
import os
import socket
from pathlib import Path
from typing import Any

from evalsvc import suites as suites_mod
from evalsvc.config import Config
from evalsvc.config.variants import serving_identity
from evalsvc.engine.runner import Runner
from evalsvc.errors import ConfigError, SuiteError
from evalsvc.serving.process import DEVICE_SCOPE_ENV
from evalsvc.store.db import open_engine


def shown(url: str) -> str:
    """A store URL as it may travel and be shown: its password hidden."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def evaluate(cfg: Config, variant_name: str, versions: dict[str, str], slot: str, log_dir: str, lock_wait_s: float,
             board: Any = None, store: str | None = None, expected: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run every suite in ``versions`` (name -> the version the driver read) on one variant:
    {"fingerprint": this node's, "node": its host name, "outcomes": the outcomes as dicts}.

    The machine's device locks are scoped to this Ray node (Ray hands out the GPU ids and counts the CPUs);
    ``board``, when given, is told when and where the task started (the driver's schedule timeout); ``store`` is the
    driver's store URL as ``shown`` (no password travels): a node that would write elsewhere refuses; ``expected``, the
    driver's {"fingerprint", "identity" (serving_identity)}: a node that computes another fingerprint refuses."""
    import ray

    node_id = ray.get_runtime_context().get_node_id()
    os.environ[DEVICE_SCOPE_ENV] = node_id
    if not ray.get_gpu_ids():  # Ray leaves a GPU-less task every GPU of its node: its scorers and server get none
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    if board is not None:
        board.started.remote(variant_name, node_id, os.environ.get("CUDA_VISIBLE_DEVICES", ""))
    suites = suites_mod.resolve(cfg.suites_dir, list(versions))
    differ = [f"{s.name} is {s.version[:12]} here, {versions[s.name][:12]} on the driver" for s in suites
              if s.version != versions[s.name]]
    if differ:
        raise SuiteError(f"node {socket.gethostname()} ({cfg.suites_dir})", "its suites differ from the driver's: "
                         + "; ".join(differ), "deploy the same suite files and evalsvc version to every node (the worker "
                         "image, or a shared suites volume), then fire again")
    url = cfg.store_url()  # EVALSVC_STORE on this node, else evalsvc.yaml's
    if store is not None and shown(url) != store:
        raise ConfigError(f"node {socket.gethostname()}", f"its store is {shown(url)}, the driver's {store}: this task "
                          "would write its runs somewhere the driver never reads", "give every node of the cluster the "
                          "same EVALSVC_STORE (the same Secret), or put the store's URL in evalsvc.yaml")
    fingerprint = cfg.fingerprint(variant_name)
    if expected is not None and fingerprint != expected["fingerprint"]:
        raise ConfigError(f"node {socket.gethostname()}", f"variant {variant_name}'s fingerprint is {fingerprint[:12]} "
                          f"here, {expected['fingerprint'][:12]} on the driver ("
                          + _differences(serving_identity(cfg.variant(variant_name)), expected["identity"])
                          + "): its runs would start another series than the one the driver compares", "run one image on "
                          "every node of the cluster (KubeRay: upgradeStrategy Recreate, docs/deploy/README.md), then "
                          "fire the slot again")
    engine = open_engine(url)
    try:
        runner = Runner(cfg, engine, progress=False, log_dir=Path(log_dir), lock_wait_s=lock_wait_s)
        outcomes = runner.run_variant(suites, cfg.variant(variant_name), slot=slot)
    finally:
        engine.dispose()
    return {"fingerprint": fingerprint, "node": socket.gethostname(), "outcomes": [dataclasses.asdict(o) for o in outcomes]}


def _differences(here: dict[str, Any], driver: dict[str, Any], path: str = "") -> str:
    """What differs between two serving identities, as "key: A here, B on the driver; ..."."""
    out = []
    for key in sorted(set(here) | set(driver)):
        a, b = here.get(key), driver.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            inner = _differences(a, b, f"{path}{key}.")
            out += [inner] if inner else []
        elif a != b:
            out.append(f"{path}{key}: {a} here, {b} on the driver")
    return "; ".join(out)
