"""The Dockerfile, checked without docker: stages, base image, user, health check, port, what it copies, and that
its command line is one `webhook serve` accepts."""

from __future__ import annotations

import fnmatch
import functools
import json
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction]

    def all(self, keyword: str) -> list[Instruction]:
        return [instruction for instruction in self.instructions if instruction.keyword == keyword]


def instructions(text: str) -> list[Instruction]:
    """Logical lines (continuations joined, comments and blank lines dropped) as (KEYWORD, arguments)."""
    found: list[Instruction] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):  # a comment inside a continuation is dropped, as docker does
            continue
        if line.endswith("\\"):
            pending += line[:-1].rstrip() + " "
            continue
        logical = (pending + line).strip()
        pending = ""
        keyword, _, arguments = logical.partition(" ")
        found.append(Instruction(keyword.upper(), arguments.strip()))
    assert not pending, "the Dockerfile ends inside a continuation"
    return found


def substitute(text: str, variables: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda match: variables.get(match.group(1) or match.group(2), match.group(0)),
                  text)


def stages() -> list[Stage]:
    """The build stages, with FROM resolved through the global ARG defaults (the ARGs before the first FROM)."""
    global_arguments: dict[str, str] = {}
    found: list[Stage] = []
    for instruction in instructions(DOCKERFILE.read_text()):
        if instruction.keyword == "FROM":
            words = [word for word in instruction.arguments.split() if not word.startswith("--platform")]
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            found.append(Stage(substitute(words[0], global_arguments), name, []))
        elif not found:
            assert instruction.keyword == "ARG", f"{instruction.keyword} before the first FROM"
            key, _, default = instruction.arguments.partition("=")
            global_arguments[key] = default.strip("\"'")
        else:
            found[-1].instructions.append(instruction)
    return found


def exec_form(instruction: Instruction) -> list[str]:
    parsed = json.loads(instruction.arguments)
    assert isinstance(parsed, list)
    assert all(isinstance(item, str) for item in parsed)
    return parsed


def copy_parts(instruction: Instruction) -> tuple[list[str], str, dict[str, str]]:
    """The sources, the destination and the --flags of a COPY (exec or shell form)."""
    words = shlex.split(instruction.arguments)
    flags = {}
    while words and words[0].startswith("--"):
        key, _, value = words.pop(0)[2:].partition("=")
        flags[key] = value
    rest = " ".join(words)
    paths = exec_form(Instruction("COPY", rest)) if rest.startswith("[") else words
    assert len(paths) >= 2, f"COPY needs a source and a destination: {instruction.arguments}"
    return paths[:-1], paths[-1], flags


def command_line() -> list[str]:
    final = stages()[-1]
    entrypoint, command = final.all("ENTRYPOINT"), final.all("CMD")
    assert len(entrypoint) == 1
    assert len(command) == 1
    return exec_form(entrypoint[0]) + exec_form(command[0])


@functools.cache
def serve_flags() -> frozenset[str]:
    """The long options `webhook serve --help` lists."""
    result = subprocess.run([sys.executable, "-m", "webhook", "serve", "--help"], capture_output=True, text=True,
                            cwd=ROOT, timeout=120, check=True)
    return frozenset(re.findall(r"--[a-z][a-z-]*", result.stdout))


def option(arguments: list[str], name: str) -> str:
    """The value of `--name VALUE` or `--name=VALUE`."""
    for index, argument in enumerate(arguments):
        if argument == name:
            return arguments[index + 1]
        if argument.startswith(f"{name}="):
            return argument.partition("=")[2]
    raise AssertionError(f"{name} is not in {arguments}")


def test_the_parser_reads_continuations_and_skips_comments() -> None:
    parsed = instructions("# comment\nFROM a AS b\nRUN one \\\n    # inside\n    two\n\nUSER 1\n")
    assert parsed == [Instruction("FROM", "a AS b"), Instruction("RUN", "one two"), Instruction("USER", "1")]


def test_multi_stage_build() -> None:
    found = stages()
    assert len(found) >= 2
    assert found[0].name is not None
    # the builder makes the venv; the final stage takes only the venv from it
    copies_from_builder = [copy_parts(instruction) for instruction in found[-1].all("COPY")
                           if copy_parts(instruction)[2].get("from") == found[0].name]
    assert [(sources, destination) for sources, destination, _ in copies_from_builder] == [(["/opt/venv"], "/opt/venv")]
    assert any("pip install --no-cache-dir ." in run.arguments for run in found[0].all("RUN"))


def test_the_final_base_is_debian_slim_python_not_alpine() -> None:
    base = stages()[-1].base
    assert re.fullmatch(r"python:3\.11-slim-(bookworm|trixie)(@sha256:[0-9a-f]{64})?", base), base
    assert "alpine" not in base
    # builder and final stage share the base, so the venv's interpreter symlink resolves in both
    assert stages()[0].base == base
    assert "digest" in DOCKERFILE.read_text()  # the comment telling to pin by digest in production


def test_the_final_stage_runs_as_a_non_root_numeric_user() -> None:
    users = stages()[-1].all("USER")
    assert users, "no USER in the final stage"
    user, _, group = users[-1].arguments.partition(":")
    assert user.isdigit()
    assert int(user) != 0
    assert user == "65532"
    assert group in {"", user}


def test_health_check_and_port() -> None:
    final = stages()[-1]
    checks = final.all("HEALTHCHECK")
    assert len(checks) == 1
    check = checks[0].arguments
    assert "https://127.0.0.1:8443/healthz" in check
    assert "ssl._create_unverified_context()" in check
    # neither curl nor wget is in the slim image
    assert "curl" not in check
    assert "wget" not in check
    command = exec_form(Instruction("CMD", check.partition("CMD")[2].strip()))
    assert command[:2] == ["python", "-c"]
    compile(command[2], "<HEALTHCHECK>", "exec")  # the one-liner is valid Python
    exposed = [port for instruction in final.all("EXPOSE") for port in instruction.arguments.split()]
    assert "8443" in exposed or "8443/tcp" in exposed


def test_environment_and_volume() -> None:
    final = stages()[-1]
    environment = " ".join(instruction.arguments for instruction in final.all("ENV"))
    assert "PYTHONDONTWRITEBYTECODE=1" in environment
    assert "PYTHONUNBUFFERED=1" in environment
    assert "/opt/venv/bin" in environment
    volumes = [path for instruction in final.all("VOLUME") for path in exec_form(instruction)]
    assert "/var/lib/webhook" in volumes


def test_every_copy_source_exists_and_is_not_docker_ignored() -> None:
    ignored = [line.strip() for line in DOCKERIGNORE.read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    checked = 0
    for stage in stages():
        for instruction in stage.all("COPY") + stage.all("ADD"):
            sources, _, flags = copy_parts(instruction)
            if "from" in flags:
                continue
            for source in sources:
                checked += 1
                assert (ROOT / source).exists(), f"COPY source {source} does not exist"
                relative = str(PurePosixPath(source.rstrip("/")))
                assert not any(fnmatch.fnmatch(relative, pattern) for pattern in ignored), \
                    f"COPY source {source} is excluded by .dockerignore"
    assert checked >= 4  # pyproject.toml, README.md, webhook/, policies/


def test_dockerignore_keeps_the_context_small() -> None:
    ignored = {line.strip() for line in DOCKERIGNORE.read_text().splitlines()}
    assert {".venv", ".git", "tests", "bench", ".webhook", "__pycache__", "*.pyc", ".mypy_cache", ".ruff_cache",
            ".pytest_cache"} <= ignored
    # patterns match from the context root: bytecode inside webhook/ needs the ** forms
    assert {"**/__pycache__", "**/*.pyc"} <= ignored


def test_the_command_is_webhook_serve_with_flags_it_accepts() -> None:
    arguments = command_line()
    assert arguments[:2] == ["webhook", "serve"]
    used = {argument.partition("=")[0] for argument in arguments if argument.startswith("--")}
    assert {"--host", "--policies", "--state-dir"} <= used
    assert sorted(used - serve_flags()) == []
    assert option(arguments, "--host") == "0.0.0.0"
    assert option(arguments, "--port") == "8443"
    assert option(arguments, "--policies") == "/etc/webhook/policies"


def test_nothing_is_written_outside_the_volume() -> None:
    """Read-only root file system: the state and the generated certificates go to the declared volume."""
    arguments = command_line()
    volumes = [PurePosixPath(path) for instruction in stages()[-1].all("VOLUME") for path in exec_form(instruction)]
    for name in ("--state-dir", "--cert-dir"):
        path = PurePosixPath(option(arguments, name))
        assert path.is_absolute()
        assert any(path == volume or volume in path.parents for volume in volumes), f"{name} {path}"
    # the shipped policies are copied to where --policies points
    copies = [copy_parts(instruction) for instruction in stages()[-1].all("COPY")]
    destinations = [destination.rstrip("/") for sources, destination, _ in copies if sources == ["policies/"]]
    assert destinations == [option(arguments, "--policies")]
