"""Reading a YAML configuration so that every error can name its line.

PyYAML's safe composer gives a node tree with positions; this module turns it
into plain Python values while remembering the line of every key and item,
so a pydantic error at ``services → PK/... → routes → GET /x → mapping`` can
be reported as ``adapter.yaml:42``. It also closes YAML's traps for
configuration files:

- duplicate keys are refused (YAML says they are an error; PyYAML keeps the last);
- mapping keys are always the text as written, so a code-table key ``012``
  stays ``"012"`` instead of becoming the octal number 10;
- anchors and aliases are refused, so no alias bomb can expand;
- ``${NAME}`` in a string is replaced by the variable ``NAME`` (an unknown
  variable is an error; ``$${`` writes a literal ``${``), which keeps
  passwords and machine-specific addresses out of the file.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from adapters.errors import ConfigError

__all__ = ["Document", "load_yaml", "validate"]

Path_ = tuple[str | int, ...]
M = TypeVar("M", bound=BaseModel)

_VARIABLE = re.compile(r"\$(\$?)\{([A-Za-z_][A-Za-z0-9_]*)\}")
MAX_CONFIG_BYTES = 4 * 2**20


@dataclass
class Document:
    """A parsed file: its values and the line (1-based) of every key and list item."""

    file: str
    data: Any
    lines: dict[Path_, int] = field(default_factory=dict)

    def line_of(self, path: Sequence[str | int]) -> int | None:
        """The line of the deepest part of ``path`` that the file spells out.

        Parts the file does not contain (a pydantic union tag, a default) are
        skipped, so the answer is the nearest line the integrator wrote.
        """
        best: int | None = self.lines.get(())
        here: Path_ = ()
        node = self.data
        for part in path:
            if isinstance(node, dict) and str(part) in node:
                here = (*here, str(part))
                node = node[str(part)]
            elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
                here = (*here, part)
                node = node[part]
            else:
                continue
            best = self.lines.get(here, best)
        return best


def _substitute(text: str, variables: Mapping[str, str], file: str, line: int) -> str:
    def replace(m: re.Match[str]) -> str:
        if m.group(1):
            return "${" + m.group(2) + "}"
        name = m.group(2)
        if name not in variables:
            raise ConfigError(f"variable ${{{name}}} is not set", file=file, line=line)
        return variables[name]

    return _VARIABLE.sub(replace, text)


class _Converter:
    def __init__(self, file: str, variables: Mapping[str, str]) -> None:
        self.file = file
        self.variables = variables
        self.lines: dict[Path_, int] = {}
        self.seen: set[int] = set()
        self.constructor = yaml.SafeLoader("")

    def convert(self, node: yaml.Node, path: Path_) -> Any:
        line = node.start_mark.line + 1
        self.lines.setdefault(path, line)
        # The composer turns an alias into the anchored node itself: a node met twice is one.
        if id(node) in self.seen:
            raise ConfigError(
                "YAML anchors and aliases are not accepted", file=self.file, line=line
            )
        self.seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            out: dict[str, Any] = {}
            for key_node, value_node in node.value:
                kline = key_node.start_mark.line + 1
                if not isinstance(key_node, yaml.ScalarNode):
                    raise ConfigError("a key must be plain text", file=self.file, line=kline)
                if key_node.tag == "tag:yaml.org,2002:merge":
                    raise ConfigError(
                        "YAML merge keys are not accepted", file=self.file, line=kline
                    )
                key = str(key_node.value)
                if key in out:
                    raise ConfigError(f"duplicate key {key!r}", file=self.file, line=kline)
                self.lines[(*path, key)] = kline
                out[key] = self.convert(value_node, (*path, key))
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.convert(item, (*path, i)) for i, item in enumerate(node.value)]
        value = self.constructor.construct_object(node, deep=True)
        if isinstance(value, str):
            return _substitute(value, self.variables, self.file, line)
        return value


def load_yaml(path: Path, variables: Mapping[str, str]) -> Document:
    """Parse ``path`` into a :class:`Document`; syntax errors name the line."""
    name = str(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read: {e.strerror}", file=name) from e
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"larger than {MAX_CONFIG_BYTES} bytes", file=name)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"not UTF-8 (byte {e.start})", file=name) from e
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else None
        raise ConfigError(f"YAML syntax: {e.problem or e.context}", file=name, line=line) from e
    except yaml.YAMLError as e:
        raise ConfigError(f"YAML syntax: {e}", file=name) from e
    except RecursionError:  # the composer recurses once per level of nesting
        raise ConfigError("the file nests too deeply", file=name) from None
    if root is None:
        raise ConfigError("the file is empty", file=name)
    converter = _Converter(name, variables)
    value = converter.convert(root, ())
    return Document(file=name, data=value, lines=converter.lines)


def _field_name(loc: Sequence[str | int]) -> str:
    return " → ".join(str(p) for p in loc) or "(top level)"


def validate(model: type[M], doc: Document, context: dict[str, Any]) -> M:
    """Validate ``doc`` into ``model``; the first error names its line and field."""
    try:
        return model.model_validate(doc.data, context=context)
    except ValidationError as e:
        err = e.errors()[0]
        loc = [p for p in err["loc"] if isinstance(p, str | int)]
        if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
            # The error is about the tag itself: point at the key that holds it.
            loc.append(str(err.get("ctx", {}).get("discriminator", "")).strip("'"))
        more = f" (and {e.error_count() - 1} more)" if e.error_count() > 1 else ""
        message = err["msg"].removeprefix("Value error, ")
        raise ConfigError(
            message + more, file=doc.file, line=doc.line_of(loc), field=_field_name(loc)
        ) from e
