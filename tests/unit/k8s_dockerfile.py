"""Reads the Dockerfile and .dockerignore statically (there is no Docker engine to build with).

`parse_dockerfile` splits a Dockerfile into instructions the way the builder does for the forms the
image uses: backslash continuations joined, comment lines dropped (also inside a continuation),
exec-form arguments read as JSON. `DockerIgnore` answers whether a path is left out of the build
context: patterns in order, `!` re-includes, the last match wins, and a pattern that matches a
directory matches everything under it.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DockerIgnore", "Instruction", "copy_from_context", "exec_form", "final_stage",
           "parse_dockerfile", "split_flags", "stages"]


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case, e.g. "RUN"
    arguments: str  # the rest of the logical line, continuations joined
    line: int  # where it starts, 1-based


def parse_dockerfile(text: str) -> list[Instruction]:
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
        raise ValueError(f"line {start}: the file ends inside a continued instruction")
    return instructions


def stages(instructions: list[Instruction]) -> list[list[Instruction]]:
    """The build stages, each from its FROM to the next one."""
    starts = [index for index, item in enumerate(instructions) if item.keyword == "FROM"]
    if not starts or starts[0] != 0:
        raise ValueError("a Dockerfile must start with FROM")
    return [instructions[start:end] for start, end in zip(starts, [*starts[1:], None], strict=True)]


def final_stage(instructions: list[Instruction]) -> list[Instruction]:
    """The instructions from the last FROM on: what the built image is made of."""
    return stages(instructions)[-1]


def split_flags(arguments: str) -> tuple[dict[str, str], str]:
    """Leading `--name=value` flags (as COPY, RUN and HEALTHCHECK take) and the rest."""
    flags: dict[str, str] = {}
    rest = arguments
    while rest.startswith("--"):
        flag, _, rest = rest.partition(" ")
        name, _, value = flag[2:].partition("=")
        flags[name] = value
        rest = rest.lstrip()
    return flags, rest


def exec_form(arguments: str) -> list[str] | None:
    """The argument list of an exec-form instruction (`["a", "b"]`), None for shell form."""
    if not arguments.startswith("["):
        return None
    parsed = json.loads(arguments)
    if not isinstance(parsed, list) or not all(isinstance(item, str) for item in parsed):
        raise ValueError(f"exec form is not a list of strings: {arguments}")
    return parsed


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    parts: list[str] = []
    index = 0
    while index < len(pattern):
        if pattern.startswith("**/", index):
            parts.append("(?:.*/)?")
            index += 3
        elif pattern.startswith("**", index):
            parts.append(".*")
            index += 2
        elif pattern[index] == "*":
            parts.append("[^/]*")
            index += 1
        elif pattern[index] == "?":
            parts.append("[^/]")
            index += 1
        elif pattern[index] == "[":
            end = pattern.index("]", index)
            parts.append(pattern[index:end + 1])
            index = end + 1
        else:
            parts.append(re.escape(pattern[index]))
            index += 1
    return re.compile("".join(parts))


class DockerIgnore:
    def __init__(self, text: str) -> None:
        self._rules: list[tuple[bool, re.Pattern[str]]] = []
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            negated = line.startswith("!")
            pattern = line.lstrip("!").strip().strip("/")
            self._rules.append((negated, _pattern_regex(pattern)))

    def excludes(self, path: str) -> bool:
        parts = path.strip("/").split("/")
        candidates = ["/".join(parts[:end]) for end in range(1, len(parts) + 1)]
        excluded = False
        for negated, regex in self._rules:
            if any(regex.fullmatch(candidate) for candidate in candidates):
                excluded = not negated
        return excluded


def copy_from_context(stage: list[Instruction], context: Path, ignore: DockerIgnore,
                      target: Path) -> list[str]:
    """Do what the stage's COPY instructions from the build context do, into `target` standing
    for its WORKDIR: a file source lands in the destination directory, a directory source's
    contents in the destination; files the context leaves out are skipped. Returns the files."""
    copied: list[str] = []
    for item in stage:
        if item.keyword != "COPY":
            continue
        flags, rest = split_flags(item.arguments)
        if "from" in flags:
            continue
        *sources, destination = rest.split()
        for source in sources:
            origin = context / source
            files = [origin] if origin.is_file() else sorted(p for p in origin.rglob("*") if p.is_file())
            for path in files:
                relative = path.relative_to(context).as_posix()
                if ignore.excludes(relative):
                    continue
                inside = path.name if path == origin else path.relative_to(origin).as_posix()
                landed = target / destination / inside
                landed.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, landed)
                copied.append(landed.relative_to(target).as_posix())
    return copied
