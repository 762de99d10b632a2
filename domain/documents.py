"""Bounded reading of the YAML and JSON documents users hand us (settings files,
run config files, Kubernetes job templates).

PyYAML's safe loader runs no code, but it expands aliases without bound (a
600-byte "billion laughs" document becomes millions of nodes) and recurses once
per nesting level (a deep document ends in a RecursionError). `load_yaml`
refuses both before anything is built, and `check_depth` bounds data parsed by
other parsers. Errors say what and where (line, column), never quote the
document: it may hold secrets.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import yaml

# Limits of a document we read: generous for configuration, small for an attack.
MAX_DOCUMENT_CHARS = 1_000_000
MAX_DEPTH = 100
MAX_NODES = 100_000
_TOO_DEEP = f"is nested more than {MAX_DEPTH} levels deep"


class DocumentError(ValueError):
    """A document that does not parse or is beyond our limits.

    Attributes:
        problem: What is wrong, without any of the document's content.
        line: 1-based line of the problem, when known.
        column: 1-based column of the problem, when known.
        syntax: True when the text does not parse (rather than being too large).
    """

    def __init__(
        self, problem: str, line: Optional[int] = None, column: Optional[int] = None, *, syntax: bool = False
    ) -> None:
        self.problem = problem
        self.line = line
        self.column = column
        self.syntax = syntax
        where = f" (line {line}, column {column})" if line is not None and column is not None else ""
        super().__init__(f"{problem}{where}")


def _at(problem: str, mark: Any, *, syntax: bool = False) -> DocumentError:
    if mark is None:
        return DocumentError(problem, syntax=syntax)
    return DocumentError(problem, mark.line + 1, mark.column + 1, syntax=syntax)


# libyaml's parser and composer, when PyYAML was built with it: fast, and its
# parser is not recursive, so nesting can be measured on its events first.
_FAST_LOADER: Any = getattr(yaml, "CSafeLoader", None)


def _check_nesting(text: str) -> None:
    """Measure nesting on libyaml's parse events, before anything is composed."""
    depth = 0
    try:
        for event in yaml.parse(text, Loader=_FAST_LOADER):
            if isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
                depth += 1
                if depth > MAX_DEPTH:
                    raise _at(_TOO_DEEP, event.start_mark)
            elif isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
                depth -= 1
    except yaml.MarkedYAMLError as err:
        # libyaml's scanner looks ahead and stops at its own limit (1000 levels).
        if "nesting depth" not in str(err.problem):
            raise
        mark = err.problem_mark
    else:
        return
    raise _at(_TOO_DEEP, mark)


class _BoundedLoader(yaml.SafeLoader):
    """The pure-Python safe loader with a bound on nesting, checked while composing
    (used when PyYAML has no libyaml)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if not self.check_event(yaml.SequenceStartEvent, yaml.MappingStartEvent):
            return super().compose_node(parent, index)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _at(_TOO_DEEP, self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _children(node: yaml.Node) -> List[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def _check_expanded_size(root: yaml.Node) -> None:
    """Count the nodes the document has once every alias is expanded (each
    shared node counted once per reference), without expanding anything.

    Raises:
        DocumentError: More than `MAX_NODES`, or an alias inside the node it names.
    """
    sizes: Dict[int, int] = {}
    open_nodes: set[int] = set()
    stack: List[Tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        if finished:
            open_nodes.discard(key)
            size = 1 + sum(sizes[id(child)] for child in _children(node))
            if size > MAX_NODES:
                raise _at(
                    f"has more than {MAX_NODES} nodes once its aliases are expanded", node.start_mark
                )
            sizes[key] = size
            continue
        if key in sizes:
            continue
        if key in open_nodes:
            raise _at("has an alias that refers to a node containing it", node.start_mark)
        open_nodes.add(key)
        stack.append((node, True))
        for child in _children(node):
            if id(child) in open_nodes:
                raise _at("has an alias that refers to a node containing it", child.start_mark)
            if id(child) not in sizes:
                stack.append((child, False))


def yaml_problem(err: yaml.YAMLError) -> DocumentError:
    """PyYAML's error as one line: what and where, without the quoted snippet."""
    if isinstance(err, yaml.MarkedYAMLError):
        mark = err.problem_mark or err.context_mark
        return _at(str(err.problem or err.context or "syntax error"), mark, syntax=True)
    return DocumentError(type(err).__name__, syntax=True)


def load_yaml(text: str) -> Any:
    """Parse one YAML document with the safe loader, within our limits.

    Args:
        text: The document.

    Returns:
        Plain data (mappings, lists, scalars).

    Raises:
        DocumentError: The text is longer than `MAX_DOCUMENT_CHARS`, nested more
            than `MAX_DEPTH` levels, has more than `MAX_NODES` nodes once aliases
            are expanded (or a recursive alias), or is not valid YAML (a tag such
            as ``!!python/object`` included).
    """
    check_size(text)
    try:
        return _load(text)
    except yaml.YAMLError as err:
        problem = yaml_problem(err)
    # Raised outside the handler: PyYAML's error quotes the document, and must
    # not even be the context of ours (a traceback would show it).
    raise problem


def _load(text: str) -> Any:
    if _FAST_LOADER is not None:
        _check_nesting(text)
        loader = _FAST_LOADER(text)
    else:
        loader = _BoundedLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expanded_size(node)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def check_size(text: str) -> None:
    """Raise `DocumentError` when ``text`` is longer than `MAX_DOCUMENT_CHARS`."""
    if len(text) > MAX_DOCUMENT_CHARS:
        raise DocumentError(f"is larger than {MAX_DOCUMENT_CHARS} characters")


def read_document(path: str) -> str:
    """The text of a UTF-8 file, read no further than `MAX_DOCUMENT_CHARS`.

    Raises:
        OSError, UnicodeDecodeError: It cannot be read.
        DocumentError: It is larger than the limit.
    """
    with open(path, encoding="utf-8") as handle:
        text = handle.read(MAX_DOCUMENT_CHARS + 1)
    check_size(text)
    return text


def too_deep() -> DocumentError:
    """The error for data nested beyond `MAX_DEPTH` (e.g. a parser's RecursionError)."""
    return DocumentError(_TOO_DEEP)


def check_depth(data: Any) -> None:
    """Raise `DocumentError` when parsed data nests more than `MAX_DEPTH` levels
    (checked without recursion, so any depth can be checked)."""
    stack: List[Tuple[Any, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            children: Any = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        if depth > MAX_DEPTH:
            raise DocumentError(_TOO_DEEP)
        stack.extend((child, depth + 1) for child in children)


__all__ = [
    "MAX_DEPTH",
    "MAX_DOCUMENT_CHARS",
    "MAX_NODES",
    "DocumentError",
    "check_depth",
    "check_size",
    "load_yaml",
    "read_document",
    "too_deep",
    "yaml_problem",
]
