"""XML the adapters can trust: a hardened parser and namespaced paths for mappings.

Parsing refuses every document type declaration. SOAP forbids DTDs anyway
(SOAP 1.1 §3, SOAP 1.2 part 1 §5), and without one there is no external
entity to read a local file or reach the network (XXE) and no entity to
expand into gigabytes (billion laughs, quadratic blow-up); defusedxml also
refuses entity declarations and external references should one slip through.

A mapping addresses an answer with ElementTree paths using the prefixes the
configuration declares (``lr:Owners/lr:Owner``), a trailing ``@attr`` (or
``.../@lr:attr``) for an attribute and ``.`` for the element's own text.
Elements marked ``xsi:nil="true"`` have no value.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from xml.etree.ElementTree import Element, ParseError

from defusedxml import DTDForbidden, EntitiesForbidden, ExternalReferenceForbidden
from defusedxml.ElementTree import fromstring

__all__ = ["XmlError", "XmlNode", "check_xml_path", "escape", "local_name", "parse_xml"]

XSI = "http://www.w3.org/2001/XMLSchema-instance"
_ESCAPES = {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&apos;"}


class XmlError(ValueError):
    """The bytes are not XML this adapter accepts; the message says which rule failed."""


def parse_xml(data: bytes) -> Element:
    """Parse a document with no DTD, no entities and no external references."""
    try:
        return fromstring(data, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DTDForbidden as e:
        raise XmlError("the document has a DTD, which SOAP forbids") from e
    except EntitiesForbidden as e:
        raise XmlError("the document declares entities") from e
    except ExternalReferenceForbidden as e:
        raise XmlError("the document refers to an external resource") from e
    except ParseError as e:
        line, column = e.position
        raise XmlError(f"not well-formed XML at line {line} column {column}") from e
    except LookupError as e:  # the XML declaration names an encoding Python has no codec for
        raise XmlError("the document declares an encoding that is not known here") from e
    except ValueError as e:  # expat reads no multi-byte encoding but UTF-8 and UTF-16 (GBK)
        raise XmlError("the document declares a multi-byte encoding the parser cannot read") from e


def escape(value: str) -> str:
    """Text safe inside an element or a quoted attribute; refuses characters XML cannot hold."""
    for c in value:
        o = ord(c)
        if (o < 0x20 and c not in "\t\n\r") or 0xD800 <= o <= 0xDFFF or o in (0xFFFE, 0xFFFF):
            raise XmlError(f"character U+{o:04X} cannot appear in XML")
    return "".join(_ESCAPES.get(c, c) for c in value)


def local_name(tag: str) -> str:
    """``{uri}Name`` or ``prefix:Name`` without its namespace."""
    return tag.rsplit("}", 1)[-1].rsplit(":", 1)[-1]


def _split(path: str) -> tuple[str, str | None]:
    """(element path, attribute or None)."""
    if path.startswith("@"):
        return ".", path[1:]
    head, sep, attr = path.rpartition("/@")
    if sep:
        return head, attr
    return path, None


def _qualify(name: str, namespaces: Mapping[str, str]) -> str:
    prefix, sep, local = name.partition(":")
    if not sep:
        return name
    if prefix not in namespaces:
        raise ValueError(f"namespace prefix {prefix!r} is not declared under namespaces")
    return f"{{{namespaces[prefix]}}}{local}"


def check_xml_path(path: str, namespaces: Mapping[str, str]) -> None:
    """ValueError unless ``path`` is an element path (plus attribute) valid with ``namespaces``."""
    element, attr = _split(path)
    if not element:
        raise ValueError("empty element path")
    try:
        Element("probe").find(element, dict(namespaces))
    except (SyntaxError, KeyError) as e:
        raise ValueError(f"not a valid element path: {e}") from None
    if attr is not None:
        if not attr or "/" in attr:
            raise ValueError("an attribute is named by a trailing @name")
        _qualify(attr, namespaces)


@dataclass(frozen=True)
class XmlNode:
    element: Element
    namespaces: Mapping[str, str]

    def get(self, path: str) -> str | None:
        element_path, attr = _split(path)
        found = self.element.find(element_path, dict(self.namespaces))
        if found is None:
            return None
        if attr is not None:
            return found.get(_qualify(attr, self.namespaces))
        if found.get(f"{{{XSI}}}nil") in ("true", "1"):
            return None
        if len(found):
            raise ValueError(f"{path} is an element with children, not a single value")
        return found.text

    def each(self, path: str) -> Sequence[XmlNode]:
        return [
            XmlNode(e, self.namespaces) for e in self.element.findall(path, dict(self.namespaces))
        ]
