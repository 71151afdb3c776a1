"""The images the chart runs: pinned bases, the chart's non-root user, and entry points that
start what the chart and the launcher ask for.

No image is built here (that needs a Docker daemon and, for the trainer, gigabytes of CUDA
wheels); these checks read the Dockerfiles and hold them to the chart and the code.
"""

from __future__ import annotations

import importlib.util
import json
import pathlib
import re

import pytest
import yaml
from kubernetes import client as k8s

from tests.chart import render
from tunewire import cli
from tunewire.core.launchers import kubejobs, launching

IMAGES = render.ROOT / "images"
DOCKERFILES = sorted(IMAGES.glob("*/Dockerfile"))
BUILD_TOOLS = re.compile(r"\b(build-essential|gcc|g\+\+|make|git|cmake|python3[.\d]*-dev)\b")


def _instructions(path: pathlib.Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    lines: list[str] = []
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        lines.append(pending + line)
        pending = ""
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def _args(path: pathlib.Path) -> dict[str, str]:
    return dict(arg.split("=", 1) for op, arg in _instructions(path) if op == "ARG" and "=" in arg)


def _final_stage(path: pathlib.Path) -> list[tuple[str, str]]:
    instructions = _instructions(path)
    last_from = max(i for i, (op, _) in enumerate(instructions) if op == "FROM")
    return instructions[last_from:]


def _entrypoint(path: pathlib.Path) -> list[str]:
    (entrypoint,) = [arg for op, arg in _final_stage(path) if op == "ENTRYPOINT"]
    parsed: list[str] = json.loads(entrypoint)  # exec form: a JSON array, so signals reach it
    return parsed


def test_both_images_exist() -> None:
    assert [p.parent.name for p in DOCKERFILES] == ["control-plane", "trainer"]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_base_images_are_pinned(dockerfile: pathlib.Path) -> None:
    args = _args(dockerfile)
    bases = [arg.split()[0] for op, arg in _instructions(dockerfile) if op == "FROM"]
    assert bases
    for base in bases:
        if base.startswith("${"):
            base = args[base.strip("${}")]
        repository, _, tag = base.rpartition(":")
        assert repository and tag and tag != "latest", f"{dockerfile}: {base}"
        assert re.search(r"\d+\.\d+", tag), f"{dockerfile}: {base} is not pinned to a version"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_the_final_stage_runs_as_the_charts_user_without_build_tools(
    dockerfile: pathlib.Path,
) -> None:
    values = yaml.safe_load((render.CHART / "values.yaml").read_text(encoding="utf-8"))
    context = values["global"]["podSecurityContext"]
    final = _final_stage(dockerfile)
    (user,) = [arg for op, arg in final if op == "USER"]
    assert user == f"{context['runAsUser']}:{context['runAsGroup']}"
    assert [op for op, _ in final].index("USER") > max(
        i for i, (op, _) in enumerate(final) if op in {"RUN", "COPY"}
    ), "USER comes after every RUN and COPY"
    for op, arg in final:
        if op == "RUN":
            assert not BUILD_TOOLS.search(arg), f"{dockerfile}: {arg}"
    environment = " ".join(arg for op, arg in final if op == "ENV")
    assert "PYTHONUNBUFFERED=1" in environment


def test_the_control_plane_starts_every_service_the_chart_deploys() -> None:
    assert _entrypoint(IMAGES / "control-plane" / "Dockerfile") == ["tunewire"]
    parser = cli.build_parser()
    services = render.render()["tunewire/templates/NOTES.txt"]
    for service in ("ingest", "label", "train", "evaluate", "serve"):
        assert f"  {service}: http://" in services
        # The chart's `args: [service]` after the entry point.
        assert parser.parse_args([service]).func is cli.cmd_service


def test_the_trainer_image_runs_the_launchers_commands() -> None:
    entrypoint = _entrypoint(IMAGES / "trainer" / "Dockerfile")
    train = launching.WorkloadSpec(name="tw-train-x", kind="train", args=[], labels={})
    evaluate = launching.WorkloadSpec(name="tw-evaluate-x", kind="evaluate", args=[], labels={})
    # The launcher sets the whole command; the entry point is the trainer's, for `docker run`.
    assert entrypoint == train.command("python")
    for spec in (train, evaluate):
        module = spec.command("python")[2]
        assert importlib.util.find_spec(module) is not None, module
    # The image points the workloads at the model cache the launcher mounts, for `docker run`.
    final = _final_stage(IMAGES / "trainer" / "Dockerfile")
    environment = dict(
        item.split("=", 1) for op, arg in final if op == "ENV" for item in arg.split()
    )
    with k8s.ApiClient() as client:
        launcher = kubejobs.KubernetesLauncher(
            launching.KubernetesLauncherSettings(), kind="train", api_client=client
        )
        (container,) = launcher.manifest(train).spec.template.spec.containers
    (cache,) = [e.value for e in container.env if e.name == "TUNEWIRE_MODEL_CACHE"]
    assert environment["TUNEWIRE_MODEL_CACHE"] == cache
