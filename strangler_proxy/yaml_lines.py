r"""YAML read once, with the line of every key: duplicate keys refused, errors located.

``strangler.yaml`` is composed into one node tree; the line of every key, the
duplicate-key check and the Python data all come from it (no second parse).
A key given twice anywhere is an error naming both lines and the field (YAML
would silently keep the last); invalid YAML names the line where the broken
construct starts, the line where the parser noticed, and the key being read.
:func:`field_name` and :func:`line_for` turn a validation error's location
into ``routes[0].mode`` and its line.

    >>> data, lines = read_yaml("proxy:\n  listen: {port: 8080}\n", "s.yaml")
    >>> data["proxy"]["listen"]["port"], lines[("proxy", "listen")]
    (8080, 2)
    >>> field_name(("routes", 0, "mode"))
    'routes[0].mode'
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from strangler_proxy.errors import ConfigError, ConfigErrors

_Path = tuple[Any, ...]


class _LineLoader(yaml.SafeLoader):
    """The SafeLoader that reads ``strangler.yaml`` once: lines, duplicate keys and data come from one node tree."""


class _NodeWalk:
    """Walks a composed node tree: the line of every key and item, and every key given twice in one mapping.

    PyYAML silently keeps the last of two equal keys, so a stray second
    ``routes: []`` would empty the route table; here it is an error naming both lines.
    """

    def __init__(self) -> None:
        self.lines: dict[_Path, int] = {}
        self.duplicates: list[tuple[_Path, int, int]] = []  # (path of the key, first line, repeated line)
        self._checked: set[int] = set()  # a mapping reached again through an alias is checked once

    def walk(self, node: yaml.Node, path: _Path = (), active: frozenset[int] = frozenset()) -> None:
        self.lines[path] = node.start_mark.line + 1
        if id(node) in active:  # a recursive alias (&a [*a]) points back up the tree
            return
        active = active | {id(node)}
        if isinstance(node, yaml.MappingNode):
            check = id(node) not in self._checked
            self._checked.add(id(node))
            first: dict[tuple[str, Any], int] = {}
            for k, v in node.value:
                key = k.value if isinstance(k, yaml.ScalarNode) else "?"
                line = k.start_mark.line + 1
                if check and isinstance(k, yaml.ScalarNode):
                    # The resolved tag tells the key 1 from the key "1": together they are no duplicate.
                    if (k.tag, key) in first:
                        self.duplicates.append((path + (key,), first[(k.tag, key)], line))
                    else:
                        first[(k.tag, key)] = line
                self.walk(v, path + (key,), active)
                self.lines[path + (key,)] = line
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self.walk(item, path + (i,), active)

    def errors(self, file: str) -> list[ConfigError]:
        out = []
        for path, first, again in self.duplicates:
            where = f"twice on line {first}" if first == again else f"on line {first} and again on line {again}"
            out.append(ConfigError(
                f"duplicate key {path[-1]!r}: given {where}; YAML would silently keep only the last one, "
                "so the file is refused (remove or merge one of them)",
                file=file, line=again, field=field_name(path),
            ))
        return out


class _Frame:
    """An open mapping or sequence while reading YAML events (see :func:`_path_at`)."""

    def __init__(self, path: _Path, is_map: bool) -> None:
        self.path = path
        self.is_map = is_map
        self.want_key = is_map
        self.key: Any = None
        self.index = 0


def _path_at(text: str, mark: yaml.Mark) -> _Path:
    """The path of the key (or item) the parser was reading at ``mark``, e.g. ``("store", "bucket_s")``.

    Replays the YAML events up to the mark (or up to the error that stops
    them): the last node that started there is the one being read; between
    two keys of a mapping it is the mapping itself.
    """
    frames: list[_Frame] = []
    found: _Path = ()

    def done(end: yaml.Mark) -> None:  # a node finished inside the innermost open collection
        nonlocal found
        if not frames:
            return
        top = frames[-1]
        if top.is_map:
            top.want_key = not top.want_key
        else:
            top.index += 1
        if end.index <= mark.index and (top.want_key or not top.is_map):  # after a value, not after a key
            found = top.path

    loader = _LineLoader(text)
    try:
        while True:
            event = loader.get_event()
            if isinstance(event, yaml.StreamEndEvent) or event.start_mark.index > mark.index:
                break
            if isinstance(event, yaml.CollectionEndEvent):
                frames.pop()
                done(event.end_mark)
                continue
            if not isinstance(event, (yaml.ScalarEvent, yaml.AliasEvent, yaml.CollectionStartEvent)):
                continue
            top = frames[-1] if frames else None
            if top is None:
                found = ()
            elif top.is_map and top.want_key:
                top.key = event.value if isinstance(event, yaml.ScalarEvent) else "?"
                found = top.path + (top.key,)
            else:
                found = top.path + ((top.key,) if top.is_map else (top.index,))
            if isinstance(event, yaml.CollectionStartEvent):
                frames.append(_Frame(found, isinstance(event, yaml.MappingStartEvent)))
            else:
                done(event.end_mark)
    except yaml.YAMLError:
        pass  # the error being located: everything read before it counts
    finally:
        loader.dispose()
    return found


# "key:" at the start of a line (after indentation and list dashes): the fallback for naming the key.
_KEY_AT_LINE_START = re.compile(r"^\s*(?:-\s+)*([^\s#'\"\[\]{},:-][^#:]*?)\s*:(?:\s|$)")


def _key_near(text: str, mark: yaml.Mark) -> str | None:
    """The first key on the mark's line, or on the nearest line above that has one."""
    lines = text.splitlines()
    for n in range(min(mark.line, len(lines) - 1), -1, -1):
        if m := _KEY_AT_LINE_START.match(lines[n]):
            return m.group(1)
    return None


def _yaml_error(text: str, exc: yaml.MarkedYAMLError, file: str) -> ConfigError:
    """Where invalid YAML starts (and where the parser noticed), and the key it was reading."""
    problem, context = exc.problem_mark, exc.context_mark
    parts: list[tuple[str, str]] = []
    for what, mark in ((exc.context, context), (exc.problem, problem)):
        if not what:
            continue
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        if parts and where and parts[-1][0] == where:  # both at one place: say it once
            parts[-1] = (where, f"{parts[-1][1]}, {what}")
        else:
            parts.append((where, what))
    # The context is where the unfinished thing starts (an unclosed '[' or quote): that line comes first.
    # A block mapping's context is merely where the enclosing block began, so there the problem line leads.
    lead = context if context is not None and "block" not in (exc.context or "") else problem or context
    field = None
    if lead is not None:
        # The scanner reads a whole line ahead, so an error on a key's own line comes before its
        # event: then the first key on that line (or above) is the best name there is.
        path = _path_at(text, problem or lead)
        field = field_name(path) if path else _key_near(text, lead)
    return ConfigError(
        "not valid YAML: " + ("; ".join(where + what for where, what in parts) or str(exc)),
        file=file, line=lead.line + 1 if lead else None, field=field,
    )


def field_name(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def line_for(loc: tuple[Any, ...], lines: dict[tuple[Any, ...], int]) -> int | None:
    for n in range(len(loc), -1, -1):
        if loc[:n] in lines:
            return lines[loc[:n]]
    return None


def read_yaml(text: str, file: str) -> tuple[Any, dict[_Path, int]]:
    """Compose the text once; refuse invalid YAML and duplicate keys; build the data from the same nodes."""
    loader = _LineLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise ConfigErrors([ConfigError("the file is empty; it needs at least 'upstreams:'", file=file)])
        nodes = _NodeWalk()
        nodes.walk(node)
        if nodes.duplicates:
            raise ConfigErrors(nodes.errors(file))
        return loader.construct_document(node), nodes.lines
    except yaml.MarkedYAMLError as exc:
        raise ConfigErrors([_yaml_error(text, exc, file)]) from exc
    except yaml.YAMLError as exc:
        raise ConfigErrors([ConfigError(f"not valid YAML: {exc}", file=file)]) from exc
    finally:
        loader.dispose()
