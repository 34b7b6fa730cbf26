"""The Swarm stack file of every rendering: accepted by `docker stack deploy`'s loader,
holding the services its answers need and no password in any environment value."""

from __future__ import annotations

import re
import shutil

import pytest
import yaml

from conftest import ANSWER_MATRIX, matrix_id, run

pytestmark = pytest.mark.parametrize("answers", ANSWER_MATRIX, ids=matrix_id)

STACK = "deploy/swarm/stack.yml"
# A URL with a password: scheme://user:password@host
URL_WITH_PASSWORD = re.compile(r"://[^/@:]+:[^/@]+@")


def stack_config(project, **env: str) -> dict:
    """The stack as `docker stack deploy` loads it: its schema, then interpolated. The
    loader runs in the client, so no engine is needed."""
    if shutil.which("docker") is None:
        pytest.skip("the docker command is not installed")
    result = run(
        "docker",
        "stack",
        "config",
        "--compose-file",
        STACK,
        cwd=project,
        env={"DOCKER_HOST": "tcp://127.0.0.1:1", **env},
    )
    return yaml.safe_load(result.stdout)


def test_docker_stack_deploy_accepts_the_stack(render, answers):
    stack = stack_config(render(**answers), BACKEND_TAG="1.0.0", REPLICAS="3")
    database = answers["database"]
    expected = {"backend"} | ({"migrate"} if database != "none" else set())
    expected |= {"db"} if database in ("postgresql", "mysql") else set()
    assert set(stack["services"]) == expected
    backend = stack["services"]["backend"]
    assert backend["deploy"]["replicas"] == (1 if database == "sqlite" else 3)
    update = backend["deploy"]["update_config"]
    assert (update["order"], update["failure_action"]) == ("start-first", "rollback")
    assert backend["deploy"]["rollback_config"]["order"] == "start-first"
    if database != "none":
        assert stack["services"]["migrate"]["deploy"]["mode"] == "replicated-job"
    hardened = answers["production_hardening"]
    assert backend.get("read_only", False) is hardened
    assert backend.get("cap_drop", []) == (["ALL"] if hardened else [])


def test_the_stack_needs_the_release_tag(render, answers):
    if shutil.which("docker") is None:
        pytest.skip("the docker command is not installed")
    result = run("docker", "stack", "config", "-c", STACK, cwd=render(**answers), check=False)
    assert result.returncode != 0
    assert "BACKEND_TAG" in result.stderr


def test_passwords_are_secrets_never_environment_values(render, answers):
    stack = stack_config(render(**answers), BACKEND_TAG="1.0.0")
    server = answers["database"] in ("postgresql", "mysql")
    assert bool(stack.get("secrets")) is server
    for name, service in stack["services"].items():
        for key, value in service.get("environment", {}).items():
            assert "PASSWORD" not in key or key.endswith("_FILE"), f"{name}: {key}"
            assert not URL_WITH_PASSWORD.search(str(value)), f"{name}: {key}={value}"
            if key.endswith("_FILE"):
                secret = value.removeprefix("/run/secrets/")
                assert secret in [used["source"] for used in service["secrets"]]
                assert secret in stack["secrets"]
