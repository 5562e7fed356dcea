"""The deployable server image (top-level Containerfile), run for real with the Docker engine.

Needs the `hpcgym-server` image built first (see the Containerfile's header; CI builds it from the
local base); skips without it. Starts the container with the flags bubblewrap needs, on the host
network, then checks health, auth, OpenEnv validation and one graded episode through the client.
"""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid

import pytest
import requests

from hpcgym.interfaces.openenv.client import HpcEnvClient
from hpcgym.interfaces.openenv.models import HpcAction
from hpcgym.interfaces.openenv.probe import free_port, wait_healthy

IMAGE = "hpcgym-server"
KEY = "container-key"
BWRAP_FLAGS = (
    "--cap-add=SYS_ADMIN",
    "--cap-add=SYS_PTRACE",
    "--security-opt=seccomp=unconfined",
    "--security-opt=apparmor=unconfined",
    "--security-opt=systempaths=unconfined",
)

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def docker(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check, timeout=120)


@pytest.fixture(scope="module")
def image() -> str:
    if shutil.which("docker") is None or docker("info", check=False).returncode != 0:
        pytest.skip("no running Docker engine")
    if docker("image", "inspect", IMAGE, check=False).returncode != 0:
        pytest.skip(f"image {IMAGE} not built (see the Containerfile's header)")
    return IMAGE


def run_container(image: str, *env: str, flags: tuple[str, ...] = BWRAP_FLAGS):
    port = free_port()
    name = f"hpcgym-test-{uuid.uuid4().hex[:8]}"
    docker(
        "run",
        "--detach",
        f"--name={name}",
        "--network=host",
        f"--env=PORT={port}",
        *env,
        *flags,
        image,
    )
    return name, f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def server(image):
    name, url = run_container(image, f"--env=OPENENV_API_KEY={KEY}")
    try:
        wait_healthy(url, 120, episodes_ready=1)
        yield name, url
    finally:
        docker("rm", "--force", name, check=False)


def test_health_auth_and_docker_healthcheck(server):
    name, url = server
    assert requests.get(f"{url}/health", timeout=10).json()["status"] == "healthy"
    assert requests.get(f"{url}/schema", timeout=10).status_code == 401
    assert requests.get(f"{url}/schema", headers={"Authorization": f"Bearer {KEY}"}, timeout=10).ok
    deadline = time.monotonic() + 60
    while (
        status := docker("inspect", "--format={{.State.Health.Status}}", name).stdout.strip()
    ) == "starting":
        assert time.monotonic() < deadline
        time.sleep(1)
    assert status == "healthy"


def test_a_graded_episode_in_the_container(server):
    _, url = server
    with HpcEnvClient(url, api_key=KEY).sync() as env:
        start = env.reset(scenario="hpc_munge", seed=0)
        assert start.observation.scenario == "hpc_munge" and start.observation.output.endswith("# ")
        result = env.step(HpcAction(command="systemctl is-active munge"))
        assert result.observation.step == 1 and result.reward is not None
        assert "return" in result.observation.reward_components


def test_without_the_flags_the_container_never_looks_healthy(image):
    # Depending on where the sandbox set-up breaks, the server exits at start or answers 503.
    name, url = run_container(image, flags=())
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            state = docker("inspect", "--format={{.State.Status}} {{.State.ExitCode}}", name).stdout.split()
            if state[0] == "exited":
                assert state[1] != "0"
                return
            try:
                response = requests.get(f"{url}/health", timeout=5)
            except requests.ConnectionError:
                response = None
            if response is not None and response.status_code != 200:
                assert response.status_code == 503 and response.json()["status"] == "unhealthy"
                return
            time.sleep(0.5)
        pytest.fail("without the bubblewrap flags the server neither exited nor reported itself unhealthy")
    finally:
        docker("rm", "--force", name, check=False)
