"""The Kubernetes manifests (deploy/k8s): every overlay of every rendering builds with
kubectl, is valid for current Kubernetes versions, passes checkov's policies, meets the
Pod Security Standard "restricted", and runs what the compose production stack runs.

No cluster runs here: these prove the manifests offline.
"""

from __future__ import annotations

import ast
import itertools
import json
import shutil
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from docker_support import DB_ENV, answers

from conftest import (
    DATABASES,
    HARDENING,
    REPO,
    Renderer,
    build_once,
    default,
    matrix_id,
    run,
    session_shared_dir,
)

OVERLAYS = ["dev", "production"]
# The release of the kubectl that .ci/kubectl installs, and the newest the validator knows.
KUBERNETES_VERSIONS = ["1.33.0", kubernetes_validate.latest_version()]
CHECKOV = REPO / ".venv-checkov" / "bin" / "checkov"
KUBERNETES_ANSWERS = [
    answers(database, hardening) for database, hardening in itertools.product(DATABASES, HARDENING)
]
DATABASE_PORT = {"postgresql": 5432, "mysql": 3306}
DATABASE_SERVERS = set(DATABASE_PORT)
APP_PORT = 8000
METRICS_PORT = default("metrics_port")
UID = 10001
# Volume types the "restricted" Pod Security Standard allows.
RESTRICTED_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}

by_answers = pytest.mark.parametrize("answers", KUBERNETES_ANSWERS, ids=matrix_id)
by_overlay = pytest.mark.parametrize("overlay", OVERLAYS)


@cache
def kubectl() -> str:
    path = shutil.which("kubectl")
    if path is None:
        pytest.skip("kubectl is not installed (.ci/run installs it)")
    return path


@cache
def build(project: Path, overlay: str) -> tuple[dict[str, Any], ...]:
    """The resources `kubectl kustomize` builds from an overlay of a rendering."""
    result = run(kubectl(), "kustomize", project / "deploy" / "k8s" / "overlays" / overlay)
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def of_kind(resources: tuple[dict[str, Any], ...], kind: str) -> list[dict[str, Any]]:
    return [resource for resource in resources if resource["kind"] == kind]


def one(resources: tuple[dict[str, Any], ...], kind: str) -> dict[str, Any]:
    (resource,) = of_kind(resources, kind)
    return resource


def pod_specs(resources: tuple[dict[str, Any], ...]) -> list[dict[str, Any]]:
    return [
        resource["spec"]["template"]["spec"]
        for resource in resources
        if resource["kind"] in {"Deployment", "Job"}
    ]


def containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return pod.get("initContainers", []) + pod["containers"]


def environment_names(container: dict[str, Any], resources: tuple[dict[str, Any], ...]) -> set[str]:
    """Variables a container gets: its own and those of the ConfigMaps it takes whole."""
    config_maps = {item["metadata"]["name"]: item for item in of_kind(resources, "ConfigMap")}
    names = {variable["name"] for variable in container.get("env", [])}
    for source in container.get("envFrom", []):
        names |= set(config_maps[source["configMapRef"]["name"]]["data"])
    return names


def config_values(resources: tuple[dict[str, Any], ...]) -> dict[str, str]:
    return one(resources, "ConfigMap")["data"]


def compose_production(project: Path) -> dict[str, Any]:
    """The compose production stack as compose itself resolves it."""
    if shutil.which("docker") is None:
        pytest.skip("the docker CLI (compose) is not installed")
    result = run(
        "docker",
        "compose",
        "-f",
        project / "docker-compose.yml",
        "-f",
        project / "docker-compose.production.yml",
        "config",
        "--format",
        "json",
        env=DB_ENV,
    )
    return json.loads(result.stdout)["services"]


def app_routes(backend: Path) -> set[str]:
    """Paths the app serves, read from its source: each router module's decorated
    handlers under the prefix main.py includes it with."""
    main = ast.parse((backend / "app" / "main.py").read_text())
    routes = set()
    for call in ast.walk(main):
        if not (isinstance(call, ast.Call) and getattr(call.func, "attr", "") == "include_router"):
            continue
        module = call.args[0].value.id
        prefix = next((k.value.value for k in call.keywords if k.arg == "prefix"), "")
        source = ast.parse((backend / "app" / "api" / "routes" / f"{module}.py").read_text())
        for function in ast.walk(source):
            if isinstance(function, ast.AsyncFunctionDef | ast.FunctionDef):
                for decorator in function.decorator_list:
                    if isinstance(decorator, ast.Call) and decorator.args:
                        routes.add(prefix + decorator.args[0].value)
    return routes


def module_constant(path: Path, name: str) -> Any:
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(t.id == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError(f"{path}: no {name}")


@by_overlay
@by_answers
def test_every_overlay_builds_what_the_answers_need(render: Renderer, answers, overlay):
    database = answers["database"]
    resources = build(render(**answers), overlay)
    kinds = sorted(resource["kind"] for resource in resources)
    expected = [
        "ConfigMap",
        "Deployment",
        "Namespace",
        "NetworkPolicy",
        "Service",
        "ServiceAccount",
    ]
    if database in DATABASE_SERVERS:
        expected.append("Job")
    if database == "sqlite":
        expected.append("PersistentVolumeClaim")
    else:
        expected += ["HorizontalPodAutoscaler", "PodDisruptionBudget"]
    assert kinds == sorted(expected)
    namespace = one(resources, "Namespace")["metadata"]["name"]
    assert {resource["metadata"].get("namespace", namespace) for resource in resources} == {
        namespace
    }


@by_overlay
@by_answers
def test_kubernetes_validate_accepts_every_resource_strictly(render: Renderer, answers, overlay):
    for resource, version in itertools.product(
        build(render(**answers), overlay), KUBERNETES_VERSIONS
    ):
        kubernetes_validate.validate(resource, version, strict=True)


@pytest.fixture(scope="session")
def checkov_results(render: Renderer, tmp_path_factory) -> dict[str, dict[str, list]]:
    """checkov's kubernetes checks over every overlay of every rendering, in one run (its
    start-up costs seconds): results by file name, `matrix_id-overlay.yaml`."""
    if not CHECKOV.exists():
        pytest.skip(f"{CHECKOV} is missing: make .venv-checkov/.installed")

    def run_checkov(report: Path) -> None:
        built = report / "built"
        built.mkdir(parents=True)
        for answer_set, overlay in itertools.product(KUBERNETES_ANSWERS, OVERLAYS):
            resources = build(render(**answer_set), overlay)
            (built / f"{matrix_id(answer_set)}-{overlay}.yaml").write_text(
                yaml.safe_dump_all(resources)
            )
        result = run(
            CHECKOV,
            "--framework",
            "kubernetes",
            "--skip-download",
            "--compact",
            "--output",
            "json",
            "--directory",
            built,
            check=False,
        )
        assert result.returncode in {0, 1}, result.stderr[-4000:]
        (report / "checkov.json").write_text(result.stdout)

    # One run for the whole session, whichever test process asks first.
    report = build_once(session_shared_dir(tmp_path_factory) / "checkov", run_checkov)
    results: dict[str, dict[str, list]] = {}
    for check_kind, checks in json.loads((report / "checkov.json").read_text())["results"].items():
        for check in checks:
            by_file = results.setdefault(Path(check["file_abs_path"]).name, {})
            by_file.setdefault(check_kind, []).append(check)
    return results


@by_overlay
@by_answers
def test_checkov_fails_no_check_and_every_skip_says_why(checkov_results, answers, overlay):
    results = checkov_results[f"{matrix_id(answers)}-{overlay}.yaml"]
    failed = [f"{c['check_id']} {c['resource']}" for c in results.get("failed_checks", [])]
    assert not failed
    assert results["passed_checks"]
    for skipped in results.get("skipped_checks", []):
        reason = skipped["check_result"].get("suppress_comment", "")
        assert len(reason.split()) >= 5, f"{skipped['check_id']}: no reason given"


@by_answers
def test_pods_run_the_image_command_user_and_environment_of_compose_production(
    render: Renderer, answers
):
    project = render(**answers)
    compose = compose_production(project)
    resources = build(project, "production")
    pods = {
        container["name"]: container
        for pod in pod_specs(resources)
        for container in containers(pod)
    }
    backend = pods.pop("backend")
    assert set(pods) == ({"migrate"} if answers["database"] != "none" else set())
    users = {
        f"{pod['securityContext']['runAsUser']}:{pod['securityContext']['runAsGroup']}"
        for pod in pod_specs(resources)
    }
    assert users == {compose["backend"]["user"]}
    for name, container in {"backend": backend, **pods}.items():
        service = compose[name]
        assert container["image"].split(":")[0] == service["image"].split(":")[0]
        assert container.get("command") == service.get("entrypoint"), name
        assert container.get("args") == service.get("command"), name
        assert set(service["environment"]) <= environment_names(container, resources), name
    # The one difference from compose: Kubernetes scales pods of one server process each.
    assert environment_names(backend, resources) - set(compose["backend"]["environment"]) == {
        "WEB_CONCURRENCY"
    }
    assert config_values(resources)["WEB_CONCURRENCY"] == "1"


@by_answers
def test_probes_are_health_and_ready_and_the_app_serves_them(render: Renderer, answers):
    project = render(**answers)
    backend = one(build(project, "production"), "Deployment")["spec"]["template"]["spec"]
    (server,) = backend["containers"]
    probes = {
        kind: server[f"{kind}Probe"]["httpGet"]["path"]
        for kind in ("startup", "liveness", "readiness")
    }
    assert probes == {"startup": "/health", "liveness": "/health", "readiness": "/ready"}
    assert set(probes.values()) <= app_routes(project / "backend")
    for probe in ("startup", "liveness", "readiness"):
        assert server[f"{probe}Probe"]["httpGet"]["port"] in {APP_PORT, "http"}
    assert server["ports"] == [
        {"name": "http", "containerPort": APP_PORT, "protocol": "TCP"},
        {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"},
    ]


@by_answers
def test_metrics_are_scraped_through_the_service_by_the_monitoring_namespace_only(
    render: Renderer, answers
):
    resources = build(render(**answers), "production")
    service = one(resources, "Service")
    annotations = service["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(METRICS_PORT)
    assert annotations["prometheus.io/path"] == "/metrics"
    ports = {port["name"]: port for port in service["spec"]["ports"]}
    assert ports["metrics"]["port"] == METRICS_PORT
    assert ports["metrics"]["targetPort"] == "metrics"
    ingress = one(resources, "NetworkPolicy")["spec"]["ingress"]
    (scrape,) = [
        rule for rule in ingress if {"port": METRICS_PORT, "protocol": "TCP"} in rule["ports"]
    ]
    assert scrape["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    ]


@by_answers
def test_termination_grace_covers_the_prestop_sleep_and_gunicorns_graceful_timeout(
    render: Renderer, answers
):
    project = render(**answers)
    graceful = module_constant(project / "backend" / "gunicorn.conf.py", "graceful_timeout")
    pod = one(build(project, "production"), "Deployment")["spec"]["template"]["spec"]
    pre_stop = pod["containers"][0]["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pre_stop > 0
    assert pod["terminationGracePeriodSeconds"] >= pre_stop + graceful


@by_overlay
@by_answers
def test_every_pod_meets_the_restricted_standard_and_the_compose_hardening(
    render: Renderer, answers, overlay
):
    resources = build(render(**answers), overlay)
    labels = one(resources, "Namespace")["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    for pod in pod_specs(resources):
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == UID
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False
        assert not {"hostNetwork", "hostPID", "hostIPC"} & set(pod)
        volumes = {volume["name"]: volume for volume in pod["volumes"]}
        for volume in volumes.values():
            assert set(volume) - {"name"} <= RESTRICTED_VOLUMES, volume
        for container in containers(pod):
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False
            assert security["readOnlyRootFilesystem"] is True
            assert security["capabilities"] == {"drop": ["ALL"]}
            assert not security.get("privileged")
            assert all("hostPort" not in port for port in container.get("ports", []))
            # compose's tmpfs: /tmp is the only scratch space.
            tmp = next(m for m in container["volumeMounts"] if m["mountPath"] == "/tmp")
            assert "emptyDir" in volumes[tmp["name"]]
            assert {"requests", "limits"} <= set(container["resources"])


@by_answers
def test_database_answer_decides_secret_egress_and_migration(render: Renderer, answers):
    database = answers["database"]
    project = render(**answers)
    slug = yaml.safe_load((project / ".copier-answers.yml").read_text())["project_slug"]
    resources = build(project, "production")
    deployment = one(resources, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    secrets = {
        variable["valueFrom"]["secretKeyRef"]["name"]
        for spec in pod_specs(resources)
        for container in containers(spec)
        for variable in container.get("env", [])
        if "secretKeyRef" in variable.get("valueFrom", {})
    }
    assert not of_kind(resources, "Secret"), "secret values are never built from git"
    policy = one(resources, "NetworkPolicy")["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    assert [rule["ports"] for rule in policy["ingress"]] == [
        [{"port": APP_PORT, "protocol": "TCP"}],
        [{"port": METRICS_PORT, "protocol": "TCP"}],
    ]
    dns, *database_rules = policy["egress"]
    assert {(port["port"], port["protocol"]) for port in dns["ports"]} == {
        (53, "UDP"),
        (53, "TCP"),
    }
    assert dns["to"][0]["podSelector"]["matchLabels"] == {"k8s-app": "kube-dns"}
    migrations = [
        c for spec in pod_specs(resources) for c in containers(spec) if c["name"] == "migrate"
    ]
    if database in DATABASE_SERVERS:
        assert secrets == {f"{slug}-database"}
        assert [rule["ports"] for rule in database_rules] == [
            [{"port": DATABASE_PORT[database], "protocol": "TCP"}]
        ]
        assert one(resources, "Job")["spec"]["backoffLimit"] == 0
        assert "initContainers" not in pod
    else:
        assert not secrets
        assert not database_rules
    if database == "sqlite":
        # One writer for the file: one pod, replaced, never two at once.
        assert deployment["spec"]["replicas"] == 1
        assert deployment["spec"]["strategy"] == {"type": "Recreate"}
        assert [c["name"] for c in pod["initContainers"]] == ["migrate"]
        claim = one(resources, "PersistentVolumeClaim")["metadata"]["name"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0]["volumeMounts"]}
        assert volumes[mounts["/app/data"]]["persistentVolumeClaim"]["claimName"] == claim
    assert len(migrations) == (0 if database == "none" else 1)


@pytest.mark.parametrize("workers", [1, 2, 5])
def test_pods_are_sized_like_a_one_worker_container_and_counted_from_workers(
    render: Renderer, workers
):
    """A pod runs one server process: the memory compose gives a one-worker container.
    The autoscaler keeps at least as many pods as the compose container has workers."""
    compose = compose_production(render(**answers("postgresql"), workers=1))["backend"]
    resources = build(render(**answers("postgresql"), workers=workers), "production")
    pod = one(resources, "Deployment")["spec"]["template"]["spec"]["containers"][0]["resources"]
    compose_memory = {
        "limits": compose["deploy"]["resources"]["limits"]["memory"],
        "requests": compose["deploy"]["resources"]["reservations"]["memory"],
    }
    for kind, size in compose_memory.items():
        assert pod[kind]["memory"] == f"{int(size) // 2**20}Mi", kind
    autoscaler = one(resources, "HorizontalPodAutoscaler")["spec"]
    assert autoscaler["minReplicas"] == max(workers, 2)
    assert autoscaler["maxReplicas"] > autoscaler["minReplicas"]


@pytest.mark.parametrize("database", sorted(DATABASE_SERVERS))
def test_a_release_can_apply_the_migration_and_what_it_needs_before_the_server(
    render: Renderer, database
):
    """The README's release applies `-l 'app.kubernetes.io/component!=server'` first."""
    resources = build(render(**answers(database)), "production")
    first = [
        resource
        for resource in resources
        if resource["metadata"].get("labels", {}).get("app.kubernetes.io/component") != "server"
    ]
    kinds = {resource["kind"] for resource in first}
    assert "Deployment" not in kinds
    assert {"Namespace", "ServiceAccount", "ConfigMap", "NetworkPolicy", "Job"} <= kinds
    readme = (render(**answers(database)) / "README.md").read_text()
    assert "-l 'app.kubernetes.io/component!=server'" in readme


# Kinds whose names are DNS labels (Services, Namespaces) or become label values (Jobs).
LABEL_NAMED_KINDS = {"Namespace", "Service", "Job"}
LONGEST_SLUG = "s" * 55


@by_overlay
def test_the_longest_slug_allowed_gives_valid_kubernetes_names(render: Renderer, overlay):
    resources = build(render(**answers("postgresql"), project_slug=LONGEST_SLUG), overlay)
    for resource in resources:
        metadata = resource["metadata"]
        if resource["kind"] in LABEL_NAMED_KINDS:
            assert len(metadata["name"]) <= 63, metadata["name"]
        assert all(len(value) <= 63 for value in metadata.get("labels", {}).values())
