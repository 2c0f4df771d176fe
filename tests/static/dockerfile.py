"""Just enough of Dockerfile and .dockerignore semantics to replay a build stage without Docker."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import PurePosixPath

# Flags of RUN that shape the build sandbox, not the command (cache mounts, network, security mode).
RUN_FLAG = re.compile(r"^--(mount|network|security)=\S+\s+")


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str
    line: int


@dataclass(frozen=True)
class Stage:
    image: str
    name: str | None
    instructions: tuple[Instruction, ...]

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def env(self) -> dict[str, str]:
        values: dict[str, str] = {}
        for instruction in self.all("ENV"):
            values.update(env_assignments(instruction))
        return values


def env_assignments(instruction: Instruction) -> dict[str, str]:
    """One ENV's values; only the `KEY=value` form, which is all this project writes."""
    values: dict[str, str] = {}
    for item in shlex.split(instruction.arguments):
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"line {instruction.line}: write ENV as KEY=value, not {item!r}")
        values[key] = value
    return values


def parse(text: str) -> list[Instruction]:
    """Instructions with continuation lines joined and comment lines dropped, as Docker reads them."""
    instructions: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending.append(stripped[:-1].strip())
            continue
        pending.append(stripped)
        keyword, _, arguments = " ".join(pending).partition(" ")
        instructions.append(Instruction(keyword.upper(), arguments.strip(), start))
        pending = []
    if pending:
        raise ValueError(f"line {start}: instruction ends in a line continuation")
    return instructions


def stages(text: str) -> list[Stage]:
    found: list[Stage] = []
    current: list[Instruction] = []
    header: Instruction | None = None
    for instruction in parse(text):
        if instruction.keyword == "FROM":
            if header is not None:
                found.append(_stage(header, current))
            header, current = instruction, []
        elif header is not None:
            current.append(instruction)
    if header is not None:
        found.append(_stage(header, current))
    return found


def stage_named(all_stages: list[Stage], name: str) -> Stage:
    for stage in all_stages:
        if stage.name == name:
            return stage
    raise LookupError(f"no stage named {name!r}")


def _stage(header: Instruction, instructions: list[Instruction]) -> Stage:
    words = header.arguments.split()
    name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
    return Stage(image=words[0], name=name, instructions=tuple(instructions))


def run_command(instruction: Instruction) -> str:
    """The shell command of a RUN, without the flags that only configure BuildKit."""
    command = instruction.arguments
    while match := RUN_FLAG.match(command):
        command = command[match.end() :]
    if command.startswith("--"):
        raise ValueError(f"line {instruction.line}: unknown RUN flag in {command.split()[0]!r}")
    if command.startswith("["):
        raise ValueError(f"line {instruction.line}: exec-form RUN is not replayed; use the shell form")
    return command


class DockerIgnore:
    """The .dockerignore rules: last matching pattern wins, `!` re-includes, a match on a directory
    covers everything below it, `**` spans directories."""

    def __init__(self, text: str) -> None:
        self.rules: list[tuple[bool, re.Pattern[str]]] = []
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            include = line.startswith("!")
            pattern = str(PurePosixPath(line.lstrip("!").strip().strip("/")))
            self.rules.append((include, re.compile(_glob_to_regex(pattern))))

    def excludes(self, relative: str) -> bool:
        parts = PurePosixPath(relative).parts
        candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        excluded = False
        for include, regex in self.rules:
            if any(regex.fullmatch(candidate) for candidate in candidates):
                excluded = not include
        return excluded


def _glob_to_regex(pattern: str) -> str:
    regex = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            regex, i = regex + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            regex, i = regex + ".*", i + 2
        elif pattern[i] == "*":
            regex, i = regex + "[^/]*", i + 1
        elif pattern[i] == "?":
            regex, i = regex + "[^/]", i + 1
        else:
            regex, i = regex + re.escape(pattern[i]), i + 1
    return regex


# --- pip in RUN steps ----------------------------------------------------------------------------------

SHELL_OPERATORS = {"&&", "||", ";", "|", "&"}
# pip's general options that take a value (before or after the subcommand).
PIP_VALUE_OPTIONS = {"--python", "--cache-dir", "--log", "--proxy", "--timeout", "--cert", "--retries"}


@dataclass(frozen=True)
class PipCall:
    """One pip invocation in a shell command: `python -m pip [--python P] SUBCOMMAND ...`."""

    python: str | None  # the --python target, None for the interpreter running pip
    subcommand: str
    options: dict[str, list[str]]  # "--require-hashes": [], "-r": ["requirements.lock"], ...
    arguments: tuple[str, ...]  # positional: requirements, paths

    def has(self, option: str) -> bool:
        return option in self.options


# Options of the subcommands used here that take a value; any other option is a flag.
_SUBCOMMAND_VALUE_OPTIONS = {
    "-r",
    "--requirement",
    "-c",
    "--constraint",
    "-w",
    "--wheel-dir",
    "--only-binary",
    "--no-binary",
    "-f",
    "--find-links",
    "-i",
    "--index-url",
    "--extra-index-url",
    "--target",
    "-t",
    "--prefix",
    "--root",
}


def pip_calls(command: str) -> list[PipCall]:
    """Every pip invocation in a shell command, split at &&, ||, ; and pipes."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    segments: list[list[str]] = [[]]
    for token in lexer:
        if token in SHELL_OPERATORS:
            segments.append([])
        else:
            segments[-1].append(token)
    return [call for segment in segments if (call := _pip_call(segment)) is not None]


def _pip_call(words: list[str]) -> PipCall | None:
    if words[:3] in (["python", "-m", "pip"], ["python3", "-m", "pip"]):
        rest = words[3:]
    elif words and re.fullmatch(r"(.*/)?pip3?(\.\d+)?", words[0]):
        rest = words[1:]
    else:
        return None
    options: dict[str, list[str]] = {}
    arguments: list[str] = []
    subcommand = ""
    i = 0
    while i < len(rest):
        word = rest[i]
        if word.startswith("-"):
            name, sep, value = word.partition("=")
            takes_value = name in PIP_VALUE_OPTIONS or (subcommand and name in _SUBCOMMAND_VALUE_OPTIONS)
            if takes_value and not sep:
                i += 1
                value = rest[i] if i < len(rest) else ""
            options.setdefault(name, [])
            if takes_value:
                options[name].append(value)
        elif not subcommand:
            subcommand = word
        else:
            arguments.append(word)
        i += 1
    python = options.pop("--python", [None])[-1]
    return PipCall(python, subcommand, options, tuple(arguments))
