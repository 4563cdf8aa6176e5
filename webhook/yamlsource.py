"""YAML documents with the file position of every value, so that problems can say `path:line:column`."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import yaml
from pydantic import ValidationError
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from webhook.errors import SourceProblem

FieldPath = tuple[str | int, ...]

try:  # the C composer is several times faster; PyYAML without libyaml falls back to pure Python
    _Loader: type[yaml.SafeLoader] = yaml.CSafeLoader  # type: ignore[assignment]
except AttributeError:  # pragma: no cover - depends on how PyYAML was built
    _Loader = yaml.SafeLoader


@dataclass(frozen=True, slots=True)
class Position:
    """Where a value starts in its file (1-based), and how a string value is written there."""

    line: int
    column: int
    style: str | None = None  # None for plain scalars, one of ' " | > for the others
    block_indent: int = 0  # column (1-based) of the first content line of a | or > block


@dataclass(slots=True)
class Document:
    """One YAML document of a file: its plain data plus positions keyed by field path."""

    path: str
    index: int
    data: Any
    positions: dict[FieldPath, Position] = field(default_factory=dict)
    key_positions: dict[FieldPath, Position] = field(default_factory=dict)

    def where(self, path: FieldPath) -> Position:
        """The position of `path`, or of its nearest ancestor that has one."""
        for cut in range(len(path), -1, -1):
            prefix = path[:cut]
            if prefix in self.positions:
                return self.positions[prefix]
        return Position(1, 1)

    def key_where(self, path: FieldPath) -> Position:
        """The position of the key that names `path` (for unknown or misplaced fields)."""
        return self.key_positions.get(path) or self.where(path)

    def problem(self, path: FieldPath, message: str, *, at_key: bool = False) -> SourceProblem:
        position = self.key_where(path) if at_key else self.where(path)
        return SourceProblem(self.path, position.line, position.column, message)

    def expression_problem(self, path: FieldPath, *, line: int, column: int, message: str) -> SourceProblem:
        """Map a (line, column) inside the expression string at `path` to the file."""
        position = self.where(path)
        if position.style in ("|", ">"):
            file_line = position.line + line
            file_column = position.block_indent + column - 1
        elif line == 1:
            file_line = position.line
            file_column = position.column + column - 1 + (1 if position.style in ("'", '"') else 0)
        else:  # a plain or quoted scalar folded over several lines: the first line is the best we know
            file_line, file_column = position.line, position.column
        return SourceProblem(self.path, file_line, file_column, message)


class _Builder:
    """Plain data from a composed YAML document. Aliases (`*name`) are refused: the composer hands an alias back
    as the anchored node itself, and building it again for each use made a 527-byte file of nested aliases
    (a "billion laughs") grow past gigabytes; no Kubernetes object needs them."""

    def __init__(self, document: Document, lines: list[str]) -> None:
        self.document = document
        self.lines = lines
        self.constructor = SafeConstructor()
        self.problems: list[SourceProblem] = []
        self.built: set[int] = set()  # the collection nodes already built (by id): one seen again is an alias
        self.reported: set[int] = set()

    def position(self, node: Node) -> Position:
        mark = node.start_mark
        style = node.style if isinstance(node, ScalarNode) else None
        indent = 0
        if style in ("|", ">"):
            for text in self.lines[mark.line + 1 :]:
                if text.strip():
                    indent = len(text) - len(text.lstrip(" ")) + 1
                    break
        return Position(mark.line + 1, mark.column + 1, style or None, indent)

    def build(self, node: Node, path: FieldPath) -> Any:
        if isinstance(node, MappingNode | SequenceNode):
            if id(node) in self.built:  # reported at the anchor: the composer keeps no position of the alias
                if id(node) not in self.reported:
                    self.reported.add(id(node))
                    self.problems.append(self.at(node, "this value is used again through a YAML alias (*name); "
                                                       "aliases are not allowed: write the value out where it is used"))
                return None
            self.built.add(id(node))
        self.document.positions[path] = self.position(node)
        if isinstance(node, MappingNode):
            result: dict[str, Any] = {}
            for key_node, value_node in node.value:
                if not isinstance(key_node, ScalarNode):
                    self.problems.append(self.at(key_node, "mapping keys must be plain strings"))
                    continue
                key = str(self.constructor.construct_object(key_node))
                if key in result:
                    self.problems.append(self.at(key_node, f"duplicate key {key!r}"))
                    continue
                self.document.key_positions[(*path, key)] = self.position(key_node)
                result[key] = self.build(value_node, (*path, key))
            return result
        if isinstance(node, SequenceNode):
            return [self.build(item, (*path, index)) for index, item in enumerate(node.value)]
        return self.constructor.construct_object(node)

    def at(self, node: Node, message: str) -> SourceProblem:
        return SourceProblem(self.document.path, node.start_mark.line + 1, node.start_mark.column + 1, message)


def parse_documents(text: str, *, path: str) -> tuple[list[Document], list[SourceProblem]]:
    """Every non-empty document of a YAML text, with positions; syntax errors become problems."""
    documents: list[Document] = []
    problems: list[SourceProblem] = []
    lines = text.splitlines()
    try:
        nodes: Iterator[Node] = yaml.compose_all(text, Loader=_Loader)
        for index, node in enumerate(nodes):
            if node is None:
                continue
            document = Document(path=path, index=index, data=None)
            builder = _Builder(document, lines)
            try:
                document.data = builder.build(node, ())
            except yaml.YAMLError as error:
                problems.append(_yaml_problem(path, error))
                continue
            problems.extend(builder.problems)
            documents.append(document)
    except yaml.YAMLError as error:
        problems.append(_yaml_problem(path, error))
    return documents, problems


def _yaml_problem(path: str, error: yaml.YAMLError) -> SourceProblem:
    mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
    line, column = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
    what = getattr(error, "problem", None) or str(error)
    context = getattr(error, "context", None)
    message = f"YAML syntax error: {what}" + (f" ({context})" if context else "")
    return SourceProblem(path, line, column, message)


def validation_problems(document: Document, error: ValidationError, prefix: FieldPath = ()) -> list[SourceProblem]:
    """Pydantic errors as problems at the position of the field they name."""
    problems = []
    for item in error.errors():
        location = (*prefix, *item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            problems.append(document.problem(location, f"unknown field {location[-1]!r}", at_key=True))
        elif item["type"] == "missing":
            problems.append(document.problem(location[:-1], f"missing field {location[-1]!r}"))
        else:
            dotted = ".".join(str(part) for part in location)
            problems.append(document.problem(location, f"{dotted}: {message}"))
    return problems
