"""cluster/, Dockerfile and jobs/: the manifests a GKE user applies, checked before any cluster.

* every ``ray.io/v1`` object validates against the KubeRay CRD schema with unknown fields
  rejected (the API server's strict field validation); core objects with kubernetes-validate;
* one Ray version in pyproject.toml, the Dockerfile and every manifest;
* the production rules: token auth with the token in a Secret, ClusterIP only, no privileged
  pods, runAsNonRoot, GPUs where they belong, RayJob lifetimes;
* cluster/gke.sh --dry-run prints the whole set-up and runs nothing;
* the RayService's serveConfigV2 equals what ``steam-ray serve build`` generates.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CLUSTER = REPO / "cluster"
#: KubeRay's CRDs: ``shared/kuberay-crds`` beside the project root (CI clones put it there);
#: STEAM_RAY_KUBERAY_CRDS points elsewhere (a git worktree has another parent).
CRD_DIR = Path(os.environ.get("STEAM_RAY_KUBERAY_CRDS", REPO.parent / "shared" / "kuberay-crds"))
CRD_FILES = {
    "RayCluster": "ray.io_rayclusters.yaml",
    "RayJob": "ray.io_rayjobs.yaml",
    "RayService": "ray.io_rayservices.yaml",
}
K8S_VERSION = "1.33.0"


def _objects() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in sorted(CLUSTER.glob("*.yaml")):
        if path.name == "runtime_env.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                out.append((f"{path.name}:{doc['kind']}", doc))
    return out


OBJECTS = _objects()
RAY_OBJECTS = [(n, o) for n, o in OBJECTS if o["apiVersion"] == "ray.io/v1"]
CORE_OBJECTS = [(n, o) for n, o in OBJECTS if o["apiVersion"] != "ray.io/v1"]


def ray_version() -> str:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    pins = [d for d in pyproject["project"]["dependencies"] if d.startswith("ray[")]
    match = re.fullmatch(r"ray\[[^\]]*\]==([\d.]+)", pins[0])
    assert match, f"Ray must be pinned exactly in pyproject.toml: {pins}"
    return match.group(1)


def cluster_specs(obj: dict[str, Any]) -> list[dict[str, Any]]:
    """The RayCluster specs inside any ray.io object."""
    spec = obj["spec"]
    return {
        "RayCluster": [spec],
        "RayJob": [spec.get("rayClusterSpec")],
        "RayService": [spec.get("rayClusterConfig")],
    }[obj["kind"]]


def pod_templates(obj: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, pod spec) for every pod an object makes."""
    if obj["kind"] == "Deployment":
        yield "deployment", obj["spec"]["template"]["spec"]
        return
    if obj["kind"] == "RayJob" and "submitterPodTemplate" in obj["spec"]:
        yield "submitter", obj["spec"]["submitterPodTemplate"]["spec"]
    for spec in cluster_specs(obj):
        yield "head", spec["headGroupSpec"]["template"]["spec"]
        for group in spec.get("workerGroupSpecs", []):
            yield group["groupName"], group["template"]["spec"]


# --- KubeRay CRD schemas, strict ---------------------------------------------------------------


def strict(schema: Any) -> Any:
    """The structural schema with unknown fields rejected wherever the API server would prune
    or reject them: objects with ``properties`` and no ``x-kubernetes-preserve-unknown-fields``."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) for k, v in schema.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


@pytest.fixture(scope="module")
def crd_validators() -> dict[str, jsonschema.Validator]:
    if not CRD_DIR.is_dir():
        pytest.skip(f"KubeRay CRD schemas not found at {CRD_DIR} (shared/kuberay-crds)")
    validators = {}
    for kind, name in CRD_FILES.items():
        # The C loader: these files are ~1 MB each.
        crd = yaml.load(
            (CRD_DIR / name).read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        )
        (v1,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
        schema = strict(v1["schema"]["openAPIV3Schema"])
        validators[kind] = jsonschema.Draft7Validator(schema)
    return validators


def crd_errors(validators: dict[str, jsonschema.Validator], obj: dict[str, Any]) -> list[str]:
    return [
        f"{'.'.join(map(str, e.absolute_path))}: {e.message[:300]}"
        for e in validators[obj["kind"]].iter_errors(obj)
    ]


@pytest.mark.parametrize("name,obj", RAY_OBJECTS, ids=[n for n, _ in RAY_OBJECTS])
def test_ray_objects_validate_against_kuberay_crds(
    crd_validators: dict[str, jsonschema.Validator], name: str, obj: dict[str, Any]
) -> None:
    assert crd_errors(crd_validators, obj) == []


def test_crd_validation_rejects_unknown_fields_and_wrong_types(
    crd_validators: dict[str, jsonschema.Validator],
) -> None:
    """The validator is strict: a typo'd field or a wrong type fails, as on the API server."""
    (cluster,) = [o for _, o in RAY_OBJECTS if o["kind"] == "RayCluster"]
    typo = copy.deepcopy(cluster)
    typo["spec"]["workerGroupSpecs"][1]["maxReplica"] = 8
    assert any("maxReplica" in e for e in crd_errors(crd_validators, typo))
    nested = copy.deepcopy(cluster)
    nested["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["resource"] = {}
    assert any("resource" in e for e in crd_errors(crd_validators, nested))
    wrong = copy.deepcopy(cluster)
    wrong["spec"]["authOptions"]["mode"] = "password"
    assert crd_errors(crd_validators, wrong)


# --- core objects ------------------------------------------------------------------------------


@pytest.mark.parametrize("name,obj", CORE_OBJECTS, ids=[n for n, _ in CORE_OBJECTS])
def test_core_objects_validate(name: str, obj: dict[str, Any]) -> None:
    try:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        pytest.fail(f"{name}: {exc.message[:500]}")


def test_core_validation_is_strict() -> None:
    (service,) = [o for _, o in CORE_OBJECTS if o["kind"] == "Service"]
    broken = copy.deepcopy(service)
    broken["spec"]["port"] = 6006
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


# --- one Ray version ---------------------------------------------------------------------------


def test_ray_version_is_the_same_everywhere() -> None:
    version = ray_version()
    dockerfile = (REPO / "Dockerfile").read_text()
    bases = re.findall(r"rayproject/ray:([\w.\-]+)", dockerfile)
    assert bases and all(b.startswith(f"{version}-") for b in bases), bases
    assert f"ray.__version__ == '{version}'" in dockerfile
    assert RAY_OBJECTS
    for name, obj in RAY_OBJECTS:
        for spec in cluster_specs(obj):
            assert spec["rayVersion"] == version, name
    for path in CLUSTER.glob("*.yaml"):
        for other in re.findall(r"rayproject/ray:([\w.\-]+)", path.read_text()):
            assert other.startswith(f"{version}-"), (path.name, other)


# --- production rules --------------------------------------------------------------------------


@pytest.mark.parametrize("name,obj", RAY_OBJECTS, ids=[n for n, _ in RAY_OBJECTS])
def test_ray_clusters_use_token_auth_and_cluster_ip(name: str, obj: dict[str, Any]) -> None:
    for spec in cluster_specs(obj):
        assert spec["authOptions"] == {"mode": "token", "secretName": "steam-ray-auth"}
        assert spec["headGroupSpec"]["serviceType"] == "ClusterIP"
        head = spec["headGroupSpec"]
        assert head["rayStartParams"].get("num-cpus") == "0"
        for container in head["template"]["spec"]["containers"]:
            assert "nvidia.com/gpu" not in container["resources"].get("limits", {})
        assert spec["enableInTreeAutoscaling"] is True


def test_no_service_is_exposed_outside_the_cluster() -> None:
    for name, obj in OBJECTS:
        if obj["kind"] == "Service":
            assert obj["spec"].get("type", "ClusterIP") == "ClusterIP", name
        if obj["kind"] == "RayService":
            assert obj["spec"].get("serveService", {}).get("spec", {}).get("type") in (
                None,
                "ClusterIP",
            )


@pytest.mark.parametrize("name,obj", OBJECTS, ids=[n for n, _ in OBJECTS])
def test_pods_run_as_non_root_and_unprivileged(name: str, obj: dict[str, Any]) -> None:
    templates = list(pod_templates(obj)) if obj["kind"] not in ("Service", "ServiceAccount") else []
    for where, pod in templates:
        security = pod.get("securityContext", {})
        assert security.get("runAsNonRoot") is True, (name, where)
        assert security.get("runAsUser", 0) != 0, (name, where)
        assert not pod.get("hostNetwork") and not pod.get("hostPID"), (name, where)
        assert pod.get("serviceAccountName") == "steam-ray", (name, where)
        for container in pod["containers"]:
            ctx = container.get("securityContext", {})
            assert ctx.get("privileged") is False, (name, where)
            assert ctx.get("allowPrivilegeEscalation") is False, (name, where)
            assert ctx.get("capabilities", {}).get("drop") == ["ALL"], (name, where)
            assert container["image"] == "steam-ray", (name, where)
    for spec in cluster_specs(obj) if obj["apiVersion"] == "ray.io/v1" else []:
        auto = spec["autoscalerOptions"]["securityContext"]
        assert auto["runAsNonRoot"] is True and auto["privileged"] is False


@pytest.mark.parametrize("name,obj", RAY_OBJECTS, ids=[n for n, _ in RAY_OBJECTS])
def test_ray_pods_take_wandb_key_from_a_secret(name: str, obj: dict[str, Any]) -> None:
    for where, pod in pod_templates(obj):
        if where == "submitter":
            continue
        (container,) = pod["containers"]
        env = {e["name"]: e for e in container["env"]}
        key = env["WANDB_API_KEY"]
        assert "value" not in key, (name, where)
        assert key["valueFrom"]["secretKeyRef"]["name"] == "steam-ray-wandb"


def test_gpu_groups_request_gpus_and_tolerate_the_gpu_taint() -> None:
    groups = [
        g
        for _, obj in RAY_OBJECTS
        for spec in cluster_specs(obj)
        for g in spec.get("workerGroupSpecs", [])
        if g["groupName"].startswith("gpu")
    ]
    assert len(groups) == 4  # the RayCluster, train and tune RayJobs, the RayService
    for group in groups:
        pod = group["template"]["spec"]
        (container,) = pod["containers"]
        assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
        assert pod["nodeSelector"]["cloud.google.com/gke-accelerator"] == "nvidia-l4"
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod[
            "tolerations"
        ]
        assert 0 <= group["minReplicas"] <= group["maxReplicas"]
        assert {v["name"] for v in pod["volumes"]} >= {"dshm", "hf-cache"}


def _rayjobs() -> list[tuple[str, dict[str, Any]]]:
    return [(n, o) for n, o in RAY_OBJECTS if o["kind"] == "RayJob"]


@pytest.mark.parametrize("name,obj", _rayjobs(), ids=[n for n, _ in _rayjobs()])
def test_rayjobs_clean_up_and_time_out(name: str, obj: dict[str, Any]) -> None:
    spec = obj["spec"]
    assert spec["shutdownAfterJobFinishes"] is True
    assert spec["ttlSecondsAfterFinished"] > 0
    assert spec["activeDeadlineSeconds"] > 0
    assert spec["backoffLimit"] >= 1
    runtime_env = yaml.safe_load(spec["runtimeEnvYAML"])
    checked_in = yaml.safe_load((CLUSTER / "runtime_env.yaml").read_text())
    assert runtime_env["env_vars"] == checked_in["env_vars"]
    # Every path a job writes is on GCS: the job's Ray cluster has several nodes.
    for flag, value in re.findall(r"--(output|data|input|registry) (\S+)", spec["entrypoint"]):
        assert value.startswith("gs://"), (flag, value)


@pytest.mark.parametrize("name,obj", _rayjobs(), ids=[n for n, _ in _rayjobs()])
def test_rayjob_entrypoints_exist_in_the_image(name: str, obj: dict[str, Any]) -> None:
    """The entrypoint is a jobs/ script the Dockerfile copies to /home/ray/steam_ray/jobs."""
    script = re.match(r"python /home/ray/steam_ray/(jobs/\w+\.py)", obj["spec"]["entrypoint"])
    assert script, obj["spec"]["entrypoint"]
    assert (REPO / script.group(1)).is_file(), f"{script.group(1)} does not exist"
    assert "COPY --chown=1000:100 jobs ./jobs" in (REPO / "Dockerfile").read_text()


def test_rayservice_autoscales_and_states_its_upgrade_strategy() -> None:
    (service,) = [o for _, o in RAY_OBJECTS if o["kind"] == "RayService"]
    assert service["spec"]["upgradeStrategy"]["type"] == "NewCluster"
    config = yaml.safe_load(service["spec"]["serveConfigV2"])
    apps = config["applications"]
    assert apps and all(a["import_path"].startswith("steam_ray.serve.app:") for a in apps)
    deployments = {d["name"]: d for a in apps for d in a.get("deployments", [])}
    # The model replicas autoscale on GPUs; the thin FastAPI ingress runs a fixed count.
    model = deployments["SentimentModel"]
    scale = model["autoscaling_config"]
    assert 1 <= scale["min_replicas"] < scale["max_replicas"]
    assert model["ray_actor_options"]["num_gpus"] >= 1
    assert deployments["Ingress"]["num_replicas"] >= 1


def test_rayservice_serves_the_registry_best_that_the_tune_job_registers() -> None:
    """Not a run dir (no config.json there: DEPLOY_FAILED): the registry's ``best``, resolved
    at deploy time in the registry the tune job registers its best trial in."""
    (service,) = [o for _, o in RAY_OBJECTS if o["kind"] == "RayService"]
    (tune_job,) = [o for n, o in RAY_OBJECTS if n.startswith("rayjob-tune.yaml:")]
    registry = re.search(r"--registry\s+(\S+)", tune_job["spec"]["entrypoint"])
    assert registry, "the tune job registers nothing: the RayService would have no best"
    (app,) = yaml.safe_load(service["spec"]["serveConfigV2"])["applications"]
    assert app["args"]["ref"] == {"checkpoint": "best", "registry": registry.group(1)}
    assert app["args"]["config"]["checkpoint"] == "best"


def test_runtime_env_keeps_the_upload_small() -> None:
    runtime_env = yaml.safe_load((CLUSTER / "runtime_env.yaml").read_text())
    assert set(runtime_env) == {"excludes", "env_vars"}
    assert {".git", ".venv", "data", "outputs", "artifacts"} <= set(runtime_env["excludes"])
    assert not any(
        re.search(r"API_KEY|AUTH_TOKEN|SECRET|PASSWORD", k) for k in runtime_env["env_vars"]
    )


def test_dockerfile_runs_as_non_root_with_pinned_torch() -> None:
    text = (REPO / "Dockerfile").read_text()
    users = re.findall(r"^USER (\S+)", text, flags=re.M)
    assert users[-1] == "1000:100"
    assert re.search(r"^ARG TORCH_VERSION=\d+\.\d+\.\d+$", text, flags=re.M)
    assert re.search(r"^ARG TORCH_INDEX=https://download.pytorch.org/whl/cu\d+$", text, flags=re.M)
    assert "HF_HOME=/mnt/hf-cache" in text
    assert (REPO / ".dockerignore").read_text().splitlines()[1] == "*"


# --- cluster/gke.sh ----------------------------------------------------------------------------


def _gke(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run gke.sh --dry-run with a PATH that has no gcloud/kubectl/helm/docker: anything it
    tried to execute would fail with 'command not found'."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for tool in ("sed", "dirname"):
        target = bin_dir / tool
        if not target.exists():
            target.symlink_to(shutil.which(tool) or f"/usr/bin/{tool}")
    env = {"PATH": str(bin_dir), "PROJECT": "demo-proj", "HOME": str(tmp_path)}
    return subprocess.run(
        ["/bin/bash", str(CLUSTER / "gke.sh"), "--dry-run", *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def test_gke_setup_dry_run_prints_every_step(tmp_path: Path) -> None:
    proc = _gke(tmp_path, "up")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    commands = [line for line in out.splitlines() if line.startswith("+ ")]
    assert all(c.split()[1] in {"gcloud", "helm", "kubectl"} for c in commands), commands
    assert "gcloud container clusters create steam-ray" in out
    assert "--workload-pool demo-proj.svc.id.goog" in out
    gpu = next(c for c in commands if "node-pools create gpu-l4" in c)
    assert "--enable-autoscaling" in gpu and "nvidia-l4" in gpu and "--max-nodes 4" in gpu
    assert "--version 1.7.0" in out  # the KubeRay chart is pinned
    assert "gcloud storage buckets create gs://steam-ray-data" in out
    # The service account gets the bucket's objects only: a bucket-level binding, no
    # project-level role.
    assert (
        "gcloud storage buckets add-iam-policy-binding gs://steam-ray-data "
        "--member serviceAccount:steam-ray@demo-proj.iam.gserviceaccount.com" in out
    )
    assert "projects add-iam-policy-binding" not in out
    assert "roles/iam.workloadIdentityUser" in out
    assert "iam.gke.io/gcp-service-account: steam-ray@demo-proj.iam.gserviceaccount.com" in out
    assert "kubectl create secret generic steam-ray-auth" in out


def test_gke_apply_fills_in_image_and_project(tmp_path: Path) -> None:
    proc = _gke(tmp_path, "apply", str(CLUSTER / "rayjob-train.yaml"))
    assert proc.returncode == 0, proc.stderr
    rendered = proc.stdout.split("<<EOF\n", 1)[1].rsplit("\nEOF", 1)[0]
    obj = yaml.safe_load(rendered)
    images = {c["image"] for _, pod in pod_templates(obj) for c in pod["containers"]}
    assert images == {"us-central1-docker.pkg.dev/demo-proj/steam-ray/steam-ray:0.1.0"}
    assert "PROJECT_ID" not in rendered


def test_gke_script_refuses_to_run_without_a_project(tmp_path: Path) -> None:
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}
    proc = subprocess.run(
        ["/bin/bash", str(CLUSTER / "gke.sh"), "--dry-run", "up"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode != 0 and "PROJECT" in proc.stderr


# --- serveConfigV2 is what `steam-ray serve build` generates -----------------------------------


def test_rayservice_serve_config_is_up_to_date() -> None:
    """Fails when cluster/rayservice.yaml's serveConfigV2 differs from a fresh
    ``steam-ray serve build``: run ``make cluster-serve-config``."""
    proc = subprocess.run(
        [sys.executable, str(CLUSTER / "serve_config.py"), "--check"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
