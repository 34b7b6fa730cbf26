"""Every target of the generated Makefile runs the commands the README promises. A stand-in
`docker` on PATH records each call, so no engine is needed; `make test` itself runs for
real in the Docker set."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from pathlib import Path

import pytest

from conftest import DATABASES, DEFAULT_TASK_QUEUE, TASK_QUEUES, Renderer, run

SLUG = "my-service"  # derived from the default project name
IMAGE = f"{SLUG}-backend"
AS_YOU = ["--user", f"{os.getuid()}:{os.getgid()}"]
DEV_RUN = ["compose", "run", "--rm", "--no-deps", *AS_YOU, "backend"]
PRODUCTION = ["-f", "docker-compose.yml", "-f", "docker-compose.production.yml"]
BUILD_DEV = ["build", "--target", "development", "--tag", f"{IMAGE}:dev", "backend"]
BUILD_PROD = ["build", "--target", "production", "--tag", f"{IMAGE}:latest", "backend"]

# Target -> the docker calls it must make, in order.
EXPECTED = {
    "build-backend": [BUILD_DEV, BUILD_PROD],
    "build-backend-dev": [BUILD_DEV],
    "build-backend-prod": [BUILD_PROD],
    "dev-setup": [["compose", "build"], ["compose", "up", "--detach", "--wait"]],
    "up": [["compose", "up", "--detach", "--build", "--wait"]],
    "up-prod": [["compose", *PRODUCTION, "up", "--detach", "--build", "--wait"]],
    "down": [["compose", "down", "--remove-orphans"]],
    "logs": [["compose", "logs", "--follow", "--tail=100"]],
    "lint": [[*DEV_RUN, "sh", "-c", "ruff check . && ruff format --check . && mypy"]],
    "shell": [["compose", "run", "--rm", *AS_YOU, "backend", "bash"]],
    "clean": [
        ["compose", "down", "--volumes", "--remove-orphans"],
        ["image", "rm", f"{IMAGE}:dev", f"{IMAGE}:latest"],
    ],
}
EXPECTED_WITH_DATABASE = {
    "migrate": [["compose", "run", "--rm", "migrate"]],
    "test": [["compose", "run", "--rm", *AS_YOU, "backend", "pytest"]],
}
# The development database belongs to the stack's user: the tests take a file of their own.
OWN_SQLITE_FILE = ["--env", "DATABASE_URL=sqlite+aiosqlite:////tmp/test.db"]
TEST_ON_OWN_SQLITE_FILE = [
    ["compose", "run", "--rm", *AS_YOU, *OWN_SQLITE_FILE, "backend", "pytest"],
]
EXPECTED_WITHOUT_DATABASE = {"migrate": [], "test": [[*DEV_RUN, "pytest"]]}
# Proven with their own arguments by test_swarm_targets_deploy_roll_out_and_roll_back.
SWARM_TARGETS = ["swarm-deploy", "swarm-rollout", "swarm-rollback"]
# Stands in for docker: records its arguments; `image rm` fails as for an image never built;
# a service's update ended in UPDATE_STATE.
FAKE_DOCKER = f"""#!{sys.executable}
import json, os, sys
with open(os.environ["DOCKER_CALLS"], "a") as log:
    log.write(json.dumps(sys.argv[1:]) + "\\n")
if sys.argv[1:3] == ["service", "inspect"]:
    print(os.environ["UPDATE_STATE"])
sys.exit(1 if sys.argv[1:3] == ["image", "rm"] else 0)
"""
UPDATED, ROLLED_BACK = "completed", "rollback_completed"


@pytest.fixture
def make_target(tmp_path: Path):
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "docker").write_text(FAKE_DOCKER)
    (fake / "docker").chmod(0o755)
    calls = tmp_path / "calls.jsonl"

    def _make(
        project: Path,
        target: str,
        *variables: str,
        update_state: str = UPDATED,
        succeeds: bool = True,
    ) -> tuple[str, list[list[str]]]:
        """The output and docker calls of a target that succeeds, or fails when an update
        ended in another state than `completed` or when told it must fail."""
        calls.write_text("")
        env = {
            "PATH": f"{fake}:{os.environ['PATH']}",
            "DOCKER_CALLS": str(calls),
            "UPDATE_STATE": update_state,
        }
        result = run("make", target, *variables, cwd=project, env=env, check=False)
        assert (result.returncode == 0) is (succeeds and update_state == UPDATED), result.stderr
        return result.stdout, [json.loads(line) for line in calls.read_text().splitlines()]

    return _make


def targets(project: Path) -> list[str]:
    return re.findall(r"^([a-z-]+):.*## ", (project / "Makefile").read_text(), re.M)


@pytest.mark.parametrize("database", DATABASES)
def test_every_make_target_runs_what_it_promises(
    render: Renderer, tmp_path: Path, make_target, database: str
) -> None:
    project = tmp_path / "project"
    shutil.copytree(render(database=database), project)
    expected = EXPECTED | (
        EXPECTED_WITH_DATABASE if database != "none" else EXPECTED_WITHOUT_DATABASE
    )
    if database == "sqlite":
        expected["test"] = TEST_ON_OWN_SQLITE_FILE
    # `revision` needs its message: test_make_revision_autogenerates_as_you.
    with_arguments = {"revision"} if database != "none" else set()
    assert set(targets(project)) == {*expected, *SWARM_TARGETS, *with_arguments, "help", "lock"}
    for target, calls in expected.items():
        assert make_target(project, target)[1] == calls, target


@pytest.mark.parametrize("database", [d for d in DATABASES if d != "none"])
def test_make_revision_autogenerates_as_you(
    render: Renderer, tmp_path: Path, make_target, database: str
) -> None:
    project = tmp_path / "project"
    shutil.copytree(render(database=database), project)
    # Not --no-deps: autogenerate compares the models with the stack's migrated database.
    autogenerate = ["alembic", "revision", "--autogenerate", "-m", "add the tags table"]
    calls = make_target(project, "revision", "m=add the tags table")[1]
    assert calls == [["compose", "run", "--rm", *AS_YOU, "backend", *autogenerate]]
    # Without a message: refused before any docker call (the stand-in's PATH, in case).
    env = {"PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}"}
    refused = run("make", "revision", cwd=project, env=env, check=False)
    assert refused.returncode != 0
    assert 'make revision m="' in refused.stderr


# Every database without a queue, and with each queue.
SWARM_VARIANTS = [(database, queue) for queue in TASK_QUEUES for database in DATABASES]


@pytest.mark.parametrize(("database", "task_queue"), SWARM_VARIANTS)
def test_swarm_targets_deploy_roll_out_and_roll_back(
    render: Renderer, tmp_path: Path, make_target, database: str, task_queue: str
) -> None:
    queued = task_queue != DEFAULT_TASK_QUEUE
    # The default stays implicit: the rendering the other tests use.
    project = tmp_path / "project"
    shutil.copytree(
        render(database=database, **({"task_queue": task_queue} if queued else {})), project
    )
    deploy = ["stack", "deploy", "--detach=false", "--compose-file", "deploy/swarm/stack.yml"]
    assert make_target(project, "swarm-deploy", "TAG=1.2.3")[1] == [[*deploy, SLUG]]
    secrets = sorted(path.name for path in (project / "deploy/swarm/secrets").glob("*"))
    database_secrets = {"postgresql": ["db_password"], "mysql": ["db_password", "db_root_password"]}
    expected_secrets = database_secrets.get(database, []) + (["redis_password"] if queued else [])
    assert secrets == sorted(expected_secrets)
    for name in secrets:
        assert (project / "deploy/swarm/secrets" / name).stat().st_mode & 0o077 == 0

    update = ["service", "update", "--detach=false", "--image", f"{IMAGE}:1.2.3"]
    rollback_worker = ["service", "rollback", "--detach=false", f"{SLUG}_worker"]
    # Migrations first; the worker before the backend, which enqueues its jobs; then
    # whether the backend's update completed, as its exit status does not say.
    services = ["migrate"] if database != "none" else []
    services += ["worker", "backend"] if queued else ["backend"]
    rollout = [[*update, f"{SLUG}_{service}"] for service in services]
    rollout.append(["service", "inspect", "--format", "{{.UpdateStatus.State}}", f"{SLUG}_backend"])
    assert make_target(project, "swarm-rollout", "TAG=1.2.3")[1] == rollout
    # A backend rolled back fails the rollout, and takes the worker back with it.
    rolled_back = make_target(project, "swarm-rollout", "TAG=1.2.3", update_state=ROLLED_BACK)
    assert rolled_back[1] == [*rollout, *([rollback_worker] if queued else [])]
    rollback = [["service", "rollback", "--detach=false", f"{SLUG}_backend"]]
    rollback += [rollback_worker] if queued else []
    assert make_target(project, "swarm-rollback")[1] == rollback


@pytest.mark.parametrize("target", ["swarm-deploy", "swarm-rollout"])
@pytest.mark.parametrize("tag", [[], ["TAG=latest"], ["TAG="]], ids=["unset", "latest", "empty"])
def test_swarm_targets_refuse_to_run_without_a_release_tag(
    render: Renderer, tmp_path: Path, make_target, target: str, tag: list[str]
) -> None:
    project = tmp_path / "project"
    shutil.copytree(render(), project)
    output, calls = make_target(project, target, *tag, succeeds=False)
    assert "release's own tag" in output
    assert calls == []


def test_swarm_deploy_hands_the_tag_to_the_stack_file(render: Renderer) -> None:
    dry_run = run("make", "--dry-run", "swarm-deploy", "TAG=1.2.3", cwd=render()).stdout
    deploy = next(line for line in dry_run.splitlines() if "docker stack deploy" in line)
    assert f"BACKEND_IMAGE={IMAGE} BACKEND_TAG=1.2.3 " in deploy


def test_dev_setup_starts_from_the_example_settings(render: Renderer, tmp_path: Path, make_target):
    project = tmp_path / "project"
    shutil.copytree(render(), project)
    make_target(project, "dev-setup")
    assert (project / ".env").read_text() == (project / ".env.example").read_text()
    # A second run keeps the team's own .env.
    (project / ".env").write_text("LOG_LEVEL=DEBUG\n")
    make_target(project, "dev-setup")
    assert (project / ".env").read_text() == "LOG_LEVEL=DEBUG\n"


@pytest.mark.parametrize("database", DATABASES)
def test_make_help_lists_every_target(render: Renderer, make_target, database: str) -> None:
    project = render(database=database)
    output, calls = make_target(project, "help")
    assert calls == []
    assert re.findall(r"^  ([a-z-]+) ", output, re.M) == targets(project)
