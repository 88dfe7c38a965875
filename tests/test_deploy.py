"""docs/deploy/: the KubeRay RayCluster, the `evalsvc serve` Deployment, the ConfigMap and the worker image.

Checked as files (nothing here applies them to a Kubernetes cluster): the structure KubeRay and Kubernetes read,
the Secrets every Ray container takes its store URL and token from, the read-only models volume, the GPU counts,
the config loading with evalsvc's own loader, and the ray pin shared by the image and pyproject.toml.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from evalsvc.config import load_config
from evalsvc.config.executor import RayExecutor
from evalsvc.suites import resolve

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "docs" / "deploy"
CONFIG_PATH = "/etc/evalsvc/evalsvc.yaml"


def _docs(name: str) -> list[dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all((DEPLOY / name).read_text()) if d is not None]
    assert docs, f"{name} holds no document"
    return docs


def _one(name: str, kind: str) -> dict[str, Any]:
    found = [d for d in _docs(name) if d.get("kind") == kind]
    assert len(found) == 1, f"{name}: {len(found)} documents of kind {kind}"
    return found[0]


@pytest.fixture(scope="module")
def cluster() -> dict[str, Any]:
    return _one("raycluster.yaml", "RayCluster")


@pytest.fixture(scope="module")
def serve() -> dict[str, Any]:
    return _one("evalsvc-serve.yaml", "Deployment")


@pytest.fixture(scope="module")
def configmap() -> dict[str, Any]:
    return _one("evalsvc-config.yaml", "ConfigMap")


def _gpu_group(cluster: dict[str, Any]) -> dict[str, Any]:
    groups = {g["groupName"]: g for g in cluster["spec"]["workerGroupSpecs"]}
    assert "gpu" in groups, f"worker groups: {sorted(groups)}"
    return groups["gpu"]


def _pod_specs(cluster: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {"head": cluster["spec"]["headGroupSpec"]["template"]["spec"],
            **{g["groupName"]: g["template"]["spec"] for g in cluster["spec"]["workerGroupSpecs"]}}


def _env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    entries = container.get("env") or []
    names = [e["name"] for e in entries]
    assert len(names) == len(set(names)), f"{container['name']}: repeated env names {names}"
    return {e["name"]: e for e in entries}


def _secret(entry: dict[str, Any]) -> tuple[str, str]:
    ref = entry["valueFrom"]["secretKeyRef"]
    return ref["name"], ref["key"]


def _pins() -> str:
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["ray"]
    pins = [m.group(1) for spec in extra if (m := re.fullmatch(r"ray\[default\]==([\w.]+)", spec.replace(" ", "")))]
    assert len(pins) == 1, f"pyproject.toml's ray extra pins no single ray[default]==X: {extra}"
    return pins[0]


def test_the_raycluster_is_a_kuberay_v1_cluster_named_evalsvc(cluster: dict[str, Any]) -> None:
    assert cluster["apiVersion"] == "ray.io/v1"
    assert cluster["kind"] == "RayCluster"
    assert cluster["metadata"]["name"] == "evalsvc"
    assert cluster["spec"]["rayVersion"] == _pins()


def test_no_evaluation_lands_on_the_head(cluster: dict[str, Any]) -> None:
    head = cluster["spec"]["headGroupSpec"]
    params = head["rayStartParams"]
    assert params["num-gpus"] == "0"
    assert params["num-cpus"] == "0"  # endpoint and llama.cpp tasks ask for CPUs only: they must not be placed here
    assert params["dashboard-host"] == "0.0.0.0"
    for c in head["template"]["spec"]["containers"]:
        limits = (c.get("resources") or {}).get("limits") or {}
        assert "nvidia.com/gpu" not in limits, f"head container {c['name']} asks for GPUs"
    ports = {p["containerPort"] for c in head["template"]["spec"]["containers"] for p in c.get("ports", [])}
    assert {6379, 8265, 10001} <= ports


def test_the_gpu_group_advertises_the_gpus_its_pods_get(cluster: dict[str, Any]) -> None:
    group = _gpu_group(cluster)
    assert (group["replicas"], group["minReplicas"], group["maxReplicas"]) == (2, 1, 8)
    (container,) = group["template"]["spec"]["containers"]
    limits = container["resources"]["limits"]
    gpus = int(limits["nvidia.com/gpu"])
    assert gpus >= 1
    assert int(group["rayStartParams"]["num-gpus"]) == gpus
    requests = container["resources"].get("requests") or {}
    if "nvidia.com/gpu" in requests:  # extended resources: a request must equal the limit
        assert int(requests["nvidia.com/gpu"]) == gpus


def test_every_ray_container_has_the_store_the_token_and_no_usage_stats(cluster: dict[str, Any]) -> None:
    containers = [(group, c) for group, spec in _pod_specs(cluster).items() for c in spec["containers"]]
    assert len(containers) >= 2
    for group, c in containers:
        env = _env(c)
        where = f"{group}/{c['name']}"
        assert _secret(env["EVALSVC_STORE"]) == ("evalsvc-store", "url"), where
        assert env["RAY_USAGE_STATS_ENABLED"].get("value") == "0", where
        assert env["RAY_AUTH_MODE"].get("value") == "token", where
        assert _secret(env["RAY_AUTH_TOKEN"]) == ("evalsvc-ray-token", "token"), where
        assert c["image"] == containers[0][1]["image"], f"{where}: every Ray pod runs one image (one ray, one evalsvc)"
    autoscaler = cluster["spec"].get("autoscalerOptions")
    if cluster["spec"].get("enableInTreeAutoscaling") and autoscaler:
        env = {e["name"]: e for e in autoscaler.get("env") or []}
        assert _secret(env["RAY_AUTH_TOKEN"]) == ("evalsvc-ray-token", "token"), "the autoscaler talks to the GCS too"


def test_the_models_are_mounted_read_only_everywhere(cluster: dict[str, Any]) -> None:
    for group, spec in _pod_specs(cluster).items():
        volumes = {v["name"]: v for v in spec["volumes"]}
        claims = {name: v for name, v in volumes.items() if "persistentVolumeClaim" in v}
        assert [v["persistentVolumeClaim"]["claimName"] for v in claims.values()] == ["evalsvc-models"], group
        (name, volume), = claims.items()
        assert volume["persistentVolumeClaim"]["readOnly"] is True, group
        for c in spec["containers"]:
            mounts = [m for m in c["volumeMounts"] if m["name"] == name]
            assert [m["mountPath"] for m in mounts] == ["/models"], f"{group}/{c['name']}"
            assert all(m.get("readOnly") is True for m in mounts), f"{group}/{c['name']}"


def _config_volumes(spec: dict[str, Any], configmap: dict[str, Any]) -> dict[str, tuple[str, dict[str, Any]]]:
    """mountPath -> (mount's subPath or '', the ConfigMap volume) for every mount of the ConfigMap evalsvc-config."""
    volumes = {v["name"]: v["configMap"] for v in spec["volumes"] if "configMap" in v}
    assert all(v["name"] == configmap["metadata"]["name"] for v in volumes.values())
    out = {}
    for c in spec["containers"]:
        for m in c["volumeMounts"]:
            if m["name"] in volumes:
                assert m.get("readOnly") is True, f"{c['name']}: {m['mountPath']}"
                out[m["mountPath"]] = (m.get("subPath", ""), volumes[m["name"]])
    return out


def test_every_pod_sees_the_same_config_and_suites_at_the_same_paths(cluster: dict[str, Any], serve: dict[str, Any],
                                                                     configmap: dict[str, Any]) -> None:
    pods = {**_pod_specs(cluster), "serve": serve["spec"]["template"]["spec"]}
    seen = {name: _config_volumes(spec, configmap) for name, spec in pods.items()}
    first = seen["head"]
    assert all(mounts == first for mounts in seen.values()), seen
    # a Ray Job's entrypoint carries the config's resolved path: a plain file (subPath), not the ..data symlink
    sub, _ = first[CONFIG_PATH]
    assert sub == "evalsvc.yaml"
    projected = {item["key"] for _, volume in first.values() for item in volume.get("items") or []}
    assert projected == set(configmap["data"]), "every key of the ConfigMap is laid out on the pods, and only those"


def test_the_serve_deployment_is_one_scheduler_without_gpus(serve: dict[str, Any]) -> None:
    assert serve["apiVersion"] == "apps/v1"
    assert serve["metadata"]["name"] == "evalsvc-serve"
    spec = serve["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}
    (container,) = spec["template"]["spec"]["containers"]
    assert container["command"] == ["evalsvc", "serve", "--config", CONFIG_PATH, "--wait"]
    env = _env(container)
    assert _secret(env["EVALSVC_STORE"]) == ("evalsvc-store", "url")
    assert _secret(env["RAY_AUTH_TOKEN"]) == ("evalsvc-ray-token", "token")
    resources = container.get("resources") or {}
    assert not any("nvidia.com/gpu" in (resources.get(k) or {}) for k in ("limits", "requests"))


def test_the_configmaps_config_loads_with_evalsvcs_loader(cluster: dict[str, Any], configmap: dict[str, Any],
                                                           tmp_path: Path) -> None:
    data = configmap["data"]
    # lay the ConfigMap out as the pods see it: evalsvc.yaml, and the suite keys under suites/
    suites_volume = _config_volumes(_pod_specs(cluster)["head"], configmap)["/etc/evalsvc/suites"][1]
    (tmp_path / "suites").mkdir()
    for item in suites_volume["items"]:
        (tmp_path / "suites" / item["path"]).write_text(data[item["key"]])
    (tmp_path / "evalsvc.yaml").write_text(data["evalsvc.yaml"])

    raw = yaml.safe_load(data["evalsvc.yaml"])
    assert "store" not in raw, "the store URL comes from EVALSVC_STORE (the Secret), not the ConfigMap"
    # absolute paths, the ones mounted on every pod: the driver sends them to the tasks as they are
    assert raw["suites_dir"] == "/etc/evalsvc/suites"
    assert all(v["local"]["model_path"].startswith("/models/") for v in raw["variants"])

    cfg = load_config(tmp_path / "evalsvc.yaml")
    assert isinstance(cfg.executor, RayExecutor)
    ex = cfg.executor
    name = cluster["metadata"]["name"]
    assert ex.jobs_url == f"http://{name}-head-svc:8265"  # KubeRay's head Service, the dashboard port
    assert (ex.address, ex.task_retries, ex.lock_wait_s, ex.schedule_timeout_s, ex.run_timeout_s) == ("auto", 2, 300, 1800, 86400)
    vllm = [v for v in cfg.variants if v.local is not None and v.local.engine == "vllm"]
    assert len(vllm) == 2
    assert sorted(v.local.tensor_parallel_size for v in vllm) == [1, 2]
    assert any(v.placement is not None and v.placement.accelerator_type == "H100" for v in vllm)
    biggest = max(v.local.tensor_parallel_size * v.local.data_parallel_size for v in vllm)
    assert biggest <= int(_gpu_group(cluster)["rayStartParams"]["num-gpus"]), "a variant needs more GPUs than a pod has"
    assert cfg.baselines and all(b in {v.name for v in cfg.variants} for b in cfg.baselines.values())
    assert [(s.name, s.cron) for s in cfg.schedules] == [("nightly", "0 3 * * *")]
    suites = resolve(tmp_path / "suites", cfg.suites)
    assert [s.name for s in suites] == cfg.suites and all(len(s.cases) > 0 for s in suites)


def test_the_worker_image_installs_the_pinned_ray() -> None:
    text = (DEPLOY / "Dockerfile.worker").read_text()
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    assert re.search(r"^FROM vllm/vllm-openai:v?\d+\.\d+\.\d+\s*$", code, re.M), "FROM vLLM's image at a pinned tag"
    found = re.findall(r"ray\[default\]==([\w.]+)", code)
    assert found and set(found) == {_pins()}, f"Dockerfile installs ray {found}, pyproject.toml pins {_pins()}"
    assert re.search(r"pip install .*\[[^\]]*postgres[^\]]*\]", code), "evalsvc with the PostgreSQL driver"


def test_a_new_image_replaces_every_ray_pod_at_once(cluster: dict[str, Any]) -> None:
    # without it KubeRay keeps running pods on the old image: workers and driver would compute other fingerprints
    assert cluster["spec"]["upgradeStrategy"] == {"type": "Recreate"}


def test_only_the_ray_pods_and_the_scheduler_reach_the_head_and_only_evalsvc_reaches_the_store(
        cluster: dict[str, Any], serve: dict[str, Any]) -> None:
    policies = {d["metadata"]["name"]: d for d in _docs("networkpolicy.yaml") if d["kind"] == "NetworkPolicy"}
    head = policies["evalsvc-ray-head"]["spec"]
    assert head["podSelector"]["matchLabels"] == {"ray.io/cluster": cluster["metadata"]["name"], "ray.io/node-type": "head"}
    (rule,) = head["ingress"]
    assert {p["port"] for p in rule["ports"]} == {6379, 8265, 10001}
    sources = [peer["podSelector"]["matchLabels"] for peer in rule["from"]]
    scheduler = serve["spec"]["template"]["metadata"]["labels"]
    assert {"ray.io/cluster": "evalsvc"} in sources and any(src.items() <= scheduler.items() for src in sources)
    store = policies["evalsvc-store"]["spec"]
    (rule,) = store["ingress"]
    assert [p["port"] for p in rule["ports"]] == [5432]
    (peer,) = rule["from"]
    templates = [cluster["spec"]["headGroupSpec"]["template"], *(g["template"] for g in cluster["spec"]["workerGroupSpecs"])]
    pods = [scheduler, *(t["metadata"]["labels"] for t in templates)]
    assert all(peer["podSelector"]["matchLabels"].items() <= labels.items() for labels in pods)


def test_the_worker_image_build_resolves_against_any_version_the_vllm_image_holds() -> None:
    """The Dockerfile turns every package of vLLM's image into a constraint (ray excepted): each requirement evalsvc
    installs there must take the version the image happens to hold. Resolved here against the lowest version vLLM
    0.32.0 accepts for the packages it shares with evalsvc (its PyPI metadata) and this environment's versions."""
    from importlib import metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    code = "\n".join(line for line in (DEPLOY / "Dockerfile.worker").read_text().splitlines() if not line.lstrip().startswith("#"))
    extras = re.search(r'"/src\[([\w,]+)\]"', code)
    assert extras, "the Dockerfile installs evalsvc from /src with its extras"
    assert "grep -viE '^ray(\\[|=)'" in code, "ray is left out of the image's constraints (evalsvc's pin replaces it)"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    reqs += [Requirement(r) for extra in extras.group(1).split(",") for r in project["optional-dependencies"][extra]]
    vllm_floor = {"prometheus-client": "0.18.0"}  # vLLM 0.32.0: prometheus_client>=0.18.0
    for req in reqs:
        name = canonicalize_name(req.name)
        if name == "ray":
            continue
        versions = {vllm_floor[name]} if name in vllm_floor else set()
        try:
            versions.add(metadata.version(req.name))
        except metadata.PackageNotFoundError:
            pass
        for version in versions:
            assert req.specifier.contains(version, prereleases=True), (
                f"pyproject.toml requires {req}; an image holding {req.name} {version} fails the build (ResolutionImpossible)")
