"""Every difference between two JSON Schemas that matters to their readers and writers.

``compare(original, update)`` walks two loaded schemas (:mod:`nodes`) side by
side and lists each change with its JSON pointer: a maximum lowered, a
property added to an open content model, an ``anyOf`` branch dropped, ...
The change types and the walk follow Confluent's JSON Schema provider, so a
subject moves between Confluent and Shahrah with the same verdicts; which
changes are *compatible* is decided by :mod:`compat` from the policy.

``original`` is the schema data was written with and ``update`` the one it is
read with: the update is compatible when everything the original accepts, it
accepts too.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from registry.schemareg import nodes as n
from registry.schemareg.documents import PatternMatcher, pattern_matcher
from registry.schemareg.errors import SchemaTooComplexError

__all__ = ["MAX_STEPS", "Context", "Difference", "compare"]


@dataclass(frozen=True)
class Difference:
    """One change: its Confluent type name and where, as ``#/...`` (Confluent's notation)."""

    type: str
    path: tuple[str, ...] = ()

    @property
    def pointer(self) -> str:
        return "#/" + "/".join(self.path)

    def rebased(self, prefix: tuple[str, ...]) -> Difference:
        return Difference(self.type, prefix + self.path)


_Pair = tuple[int, int]

#: The work one comparison may do: subschema pairs met, patternProperties tried, differences
#: recorded. Comparing a 200-property record with its next version takes about 210 steps
#: (1.6 ms); a compatibility check is anonymous, and a crafted schema reaches the limit in a
#: few tenths of a second. (Compiling patterns is bounded apart: see MAX_PATTERN_PROPERTIES.)
MAX_STEPS = 50_000


@dataclass(frozen=True, eq=False)
class _Found:
    """The differences under one compared pair, relative to it, in the order found: its own,
    and (by reference, never copied) those of the pairs beneath it with where they were met.

    A pair is met at many places when definitions ``$ref`` each other: a definition
    referenced twice by the one above it, n levels deep, is met along 2^n paths. Copying each
    memoised list into its parent doubled the work per level; sharing costs one entry per
    meeting, and only the few differences reported are ever spelt out (:meth:`Context.listed`).
    """

    entries: tuple[Difference | _Nested, ...]
    count: int  # differences along every path, however many
    compatible: bool


_Nested = tuple[tuple[str, ...], _Found]  # (path within the enclosing pair, what was found)


@dataclass
class _Shared:
    """The memo, cycle guard and work budget of one comparison.

    A pair met again while it is still being compared is *assumed* compatible (as in
    Confluent), so a "compatible" computed under that assumption holds only if the
    pair turns out compatible. Such results are memoised provisionally, tagged with
    the shallowest pair they rest on, and settled when that pair finishes: dropped
    if it fails (e.g. an ``anyOf`` branch tried and rejected), kept otherwise.
    Without this, a failed trial left behind "compatible" verdicts that a later
    trial reused.
    """

    compatible: frozenset[str]
    lenient: bool
    memo: dict[_Pair, _Found] = field(default_factory=dict)
    active: dict[_Pair, int] = field(default_factory=dict)  # pair → depth, outermost 0
    lows: list[int] = field(default_factory=list)  # per active pair: shallowest depth used
    provisional: dict[_Pair, int] = field(default_factory=dict)  # memo key → depth used
    journal: list[_Pair] = field(default_factory=list)  # provisional keys, oldest first
    steps: int = 0
    # Compiled here once per comparison, whatever other requests do to the shared cache:
    # compiling one pattern with lookarounds can take 40 ms.
    matchers: dict[str, PatternMatcher | None] = field(default_factory=dict)

    def spend(self) -> None:
        """Count one step of work; refuse the schema once the comparison has had its share."""
        self.steps += 1
        if self.steps > MAX_STEPS:
            raise SchemaTooComplexError(MAX_STEPS)

    def matches(self, regex: str, name: str) -> bool:
        """Whether ``regex`` matches ``name`` as the validators decide; a step of the budget."""
        self.spend()
        if regex not in self.matchers:
            self.matchers[regex] = pattern_matcher(regex)
        matcher = self.matchers[regex]
        return matcher is not None and matcher.is_valid(name)

    def rests_on(self, depth: int) -> None:
        """The result being computed relies on the pair at ``depth`` being compatible."""
        if self.lows and depth < self.lows[-1]:
            self.lows[-1] = depth

    def settle(self, depth: int, mark: int, holds: bool, low: int) -> None:
        """The pair at ``depth`` finished; ``journal[mark:]`` was memoised meanwhile."""
        made = self.journal[mark:]
        for key in made:
            if key not in self.provisional:
                continue
            if not holds:
                # Compatible only if this pair were: forget it, recomputing is cheap
                # next to a wrong verdict.
                del self.provisional[key]
                del self.memo[key]
            elif self.provisional[key] == depth:
                if low < depth:
                    self.provisional[key] = low  # now rests on what this pair rests on
                else:
                    del self.provisional[key]  # its only assumption held: final
        self.journal[mark:] = [key for key in made if key in self.provisional]


class Context:
    """Collects differences under a current path; shares memo and cycle guard with its
    sub-contexts so a recursive schema is compared in finite time."""

    def __init__(self, shared: _Shared, path: tuple[str, ...] = ()) -> None:
        self.shared = shared
        self.path = path
        self.entries: list[Difference | _Nested] = []

    @classmethod
    def root(cls, compatible: Iterable[str], *, lenient: bool) -> Context:
        return cls(_Shared(frozenset(compatible), lenient))

    def sub(self) -> Context:
        return Context(self.shared, self.path)

    def at(self, *segments: str) -> Context:
        """A context that adds to this one's list, one level deeper."""
        child = Context(self.shared, self.path + segments)
        child.entries = self.entries
        return child

    def add(self, kind: str, *segments: str) -> None:
        self.shared.spend()
        self.entries.append(Difference(kind, self.path + segments))

    def extend(self, other: Context) -> None:
        """Take over what ``other`` (a trial at this context's path) found."""
        self.entries.extend(other.entries)

    def include(self, found: _Found) -> None:
        """Add, by reference, what a memoised pair met here holds."""
        if found.count:
            self.entries.append((self.path, found))

    @property
    def count(self) -> int:
        return sum(1 if isinstance(e, Difference) else e[1].count for e in self.entries)

    @property
    def compatible(self) -> bool:
        return all(
            e.type in self.shared.compatible if isinstance(e, Difference) else e[1].compatible
            for e in self.entries
        )

    def found(self) -> _Found:
        return _Found(tuple(self.entries), self.count, self.compatible)

    def listed(self, limit: int, *, incompatible_only: bool = False) -> list[Difference]:
        """The first ``limit`` differences (or incompatible ones) in the order found, with
        their full paths. Only incompatible subtrees are entered for the latter, so each
        step down leads to at least one difference to report."""
        listed: list[Difference] = []
        stack: list[tuple[tuple[str, ...], Iterator[Difference | _Nested]]] = [
            ((), iter(self.entries))
        ]
        while stack and len(listed) < limit:
            prefix, entries = stack[-1]
            entry = next(entries, None)
            if entry is None:
                stack.pop()
            elif isinstance(entry, Difference):
                if not (incompatible_only and entry.type in self.shared.compatible):
                    listed.append(entry.rebased(prefix))
            elif not (incompatible_only and entry[1].compatible):
                stack.append((prefix + entry[0], iter(entry[1].entries)))
        return listed


def _deref(node: n.Node | None) -> n.Node | None:
    seen = 0
    while isinstance(node, n.Ref):
        node = node.target()
        seen += 1
        if seen > 64:  # a $ref chain that only points at $refs: nothing to compare
            return n.TrueNode()
    return node


def compare(ctx: Context, original: n.Node | None, update: n.Node | None) -> None:
    """Add to ``ctx`` every difference between ``original`` and ``update``."""
    original, update = _deref(original), _deref(update)
    if original is None and update is None:
        return
    if original is None:
        ctx.add("SCHEMA_ADDED")
        return
    if update is None:
        ctx.add("SCHEMA_REMOVED")
        return
    key = (id(original), id(update))
    shared = ctx.shared
    shared.spend()
    cached = shared.memo.get(key)
    if cached is None:
        if key in shared.active:
            # A recursive schema met itself: assume compatible, and say so, so what
            # is memoised on this assumption can be undone if it fails.
            shared.rests_on(shared.active[key])
            return
        cached = _compare_pair(shared, key, original, update)
    elif key in shared.provisional:
        shared.rests_on(shared.provisional[key])
    ctx.include(cached)


def _compare_pair(shared: _Shared, key: _Pair, original: n.Node, update: n.Node) -> _Found:
    """Compare one pair afresh and memoise the result, provisionally if it rests on an
    enclosing pair's assumption."""
    depth = len(shared.active)
    shared.active[key] = depth
    shared.lows.append(depth)
    mark = len(shared.journal)
    inner = Context(shared)
    try:
        _compare(inner, original, update)
    finally:
        del shared.active[key]
        low = shared.lows.pop()
    result = inner.found()
    holds = result.compatible
    shared.settle(depth, mark, holds, low)
    shared.memo[key] = result
    # Every rule grows more compatible as its parts do, so a verdict of incompatible
    # reached under optimistic assumptions is final; only "compatible" can rest on one.
    if holds and low < depth:
        shared.provisional[key] = low
        shared.journal.append(key)
        shared.rests_on(low)
    return result


def _try(ctx: Context, original: n.Node | None, update: n.Node | None) -> Context:
    sub = ctx.sub()
    compare(sub, original, update)
    return sub


def _compare(ctx: Context, original: n.Node, update: n.Node) -> None:
    o_comb, u_comb = isinstance(original, n.Combined), isinstance(update, n.Combined)
    if not o_comb and isinstance(update, n.Combined):
        if len(update.subschemas) == 1:
            sub = _try(ctx, original, update.subschemas[0])
            if sub.compatible:
                ctx.extend(sub)
                return
        elif update.criterion in ("anyOf", "oneOf"):
            for index, branch in enumerate(update.subschemas):
                if update.criterion == "oneOf" and not _alone(ctx, original, index, update):
                    continue  # old data may match this branch and another: oneOf fails
                sub = _try(ctx, original, branch)
                if sub.compatible:
                    ctx.extend(sub)
                    ctx.add("SUM_TYPE_EXTENDED")
                    return
    elif isinstance(original, n.Combined) and not u_comb:
        if len(original.subschemas) == 1:
            sub = _try(ctx, original.subschemas[0], update)
            if sub.compatible:
                ctx.extend(sub)
                return
        elif original.criterion == "allOf":
            for branch in original.subschemas:
                sub = _try(ctx, branch, update)
                if sub.compatible:
                    ctx.extend(sub)
                    ctx.add("PRODUCT_TYPE_NARROWED")
                    return
    if type(original) is not type(update):
        if not isinstance(original, n.FalseNode) and not isinstance(update, n.TrueNode):
            ctx.add("TYPE_CHANGED")
        return
    for attr, kind in (
        ("id", "ID_CHANGED"),
        ("title", "TITLE_CHANGED"),
        ("description", "DESCRIPTION_CHANGED"),
        ("default", "DEFAULT_CHANGED"),
    ):
        if _differ(getattr(original, attr), getattr(update, attr)):
            ctx.add(kind)
    rule = _RULES.get(type(original))
    if rule is not None:
        rule(ctx, original, update)


def _differ(a: Any, b: Any) -> bool:
    if a is n.MISSING or b is n.MISSING:
        return a is not b
    return n.json_key(a) != n.json_key(b)


def _bound(ctx: Context, keyword: str, old: float | None, new: float | None, stem: str) -> None:
    """ADDED / REMOVED / INCREASED / DECREASED for one numeric keyword."""
    if old == new:
        return
    if old is None:
        ctx.add(f"{stem}_ADDED", keyword)
    elif new is None:
        ctx.add(f"{stem}_REMOVED", keyword)
    elif old < new:
        ctx.add(f"{stem}_INCREASED", keyword)
    else:
        ctx.add(f"{stem}_DECREASED", keyword)


def _requirement(
    ctx: Context, o: n.String | n.Object | n.Array, u: n.String | n.Object | n.Array
) -> None:
    """From "any type, constrained if a string" to "a string" narrows, and back extends.

    Confluent compares only ``requiresInteger``, so it passes ``{"minLength": 2}`` →
    ``{"type": "string", "minLength": 2}`` although old data such as ``5`` then fails;
    here it is a narrowing.
    """
    if o.requires_type != u.requires_type:
        ctx.add("TYPE_EXTENDED" if o.requires_type else "TYPE_NARROWED")


def _string(ctx: Context, o: n.String, u: n.String) -> None:
    _requirement(ctx, o, u)
    _bound(ctx, "maxLength", o.max_length, u.max_length, "MAX_LENGTH")
    _bound(ctx, "minLength", o.min_length, u.min_length, "MIN_LENGTH")
    if o.pattern is None and u.pattern is not None:
        ctx.add("PATTERN_ADDED", "pattern")
    elif o.pattern is not None and u.pattern is None:
        ctx.add("PATTERN_REMOVED", "pattern")
    elif o.pattern != u.pattern:
        ctx.add("PATTERN_CHANGED", "pattern")
    if o.format is None and u.format is not None:
        ctx.add("FORMAT_ADDED", "format")
    elif o.format is not None and u.format is None:
        ctx.add("FORMAT_REMOVED", "format")
    elif o.format != u.format:
        ctx.add("FORMAT_CHANGED", "format")


def _decimal(value: float) -> Decimal | None:
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return None


def _number(ctx: Context, o: n.Number, u: n.Number) -> None:
    _bound(ctx, "maximum", o.maximum, u.maximum, "MAXIMUM")
    _bound(ctx, "minimum", o.minimum, u.minimum, "MINIMUM")
    _bound(ctx, "exclusiveMaximum", o.exclusive_maximum, u.exclusive_maximum, "EXCLUSIVE_MAXIMUM")
    _bound(ctx, "exclusiveMinimum", o.exclusive_minimum, u.exclusive_minimum, "EXCLUSIVE_MINIMUM")
    old = _decimal(o.multiple_of) if o.multiple_of is not None else None
    new = _decimal(u.multiple_of) if u.multiple_of is not None else None
    if old != new:
        if old is None:
            ctx.add("MULTIPLE_OF_ADDED", "multipleOf")
        elif new is None:
            ctx.add("MULTIPLE_OF_REMOVED", "multipleOf")
        elif new != 0 and old != 0 and new % old == 0:
            ctx.add("MULTIPLE_OF_EXPANDED", "multipleOf")  # fewer numbers are multiples now
        elif new != 0 and old % new == 0:
            ctx.add("MULTIPLE_OF_REDUCED", "multipleOf")
        else:
            ctx.add("MULTIPLE_OF_CHANGED", "multipleOf")
    old_breadth, new_breadth = _numeric_breadth(o), _numeric_breadth(u)
    if old_breadth != new_breadth:
        ctx.add("TYPE_EXTENDED" if old_breadth < new_breadth else "TYPE_NARROWED")


def _numeric_breadth(node: n.Number) -> int:
    """Integers (0) < numbers (1) < anything, if a number then constrained (2); one
    ranking so ``{"minimum": 1}`` → ``integer`` is a single narrowing, not two."""
    if not node.requires_type:
        return 2
    return 0 if node.requires_integer else 1


def _enum(ctx: Context, o: n.Enum, u: n.Enum) -> None:
    old = {n.json_key(v) for v in o.values}
    new = {n.json_key(v) for v in u.values}
    if old == new:
        return
    if new >= old:
        ctx.add("ENUM_ARRAY_EXTENDED", "enum")
    elif old >= new:
        ctx.add("ENUM_ARRAY_NARROWED", "enum")
    else:
        ctx.add("ENUM_ARRAY_CHANGED", "enum")


def _const(ctx: Context, o: n.Const, u: n.Const) -> None:
    if n.json_key(o.value) != n.json_key(u.value):
        ctx.add("ENUM_ARRAY_CHANGED", "const")


def _not(ctx: Context, o: n.Not, u: n.Not) -> None:
    here = ctx.at("not")
    # What the update forbids must be forbidden by the original too: compare reversed.
    sub = _try(here, u.schema, o.schema)
    if sub.count:
        here.add("NOT_TYPE_NARROWED" if sub.compatible else "NOT_TYPE_EXTENDED")


def _conditional(ctx: Context, o: n.Conditional, u: n.Conditional) -> None:
    # ``if`` decides which of ``then`` and ``else`` applies: the update must make the same
    # choice for every instance (compared both ways), then widen each branch (an absent
    # branch accepts everything, so adding one is SCHEMA_ADDED, removing one SCHEMA_REMOVED).
    here = ctx.at("if")
    sub = _try(here, o.condition, u.condition)
    if sub.compatible and _try(here, u.condition, o.condition).compatible:
        ctx.extend(sub)
    else:
        here.add("COMBINED_TYPE_CHANGED")
    compare(ctx.at("then"), o.then, u.then)
    compare(ctx.at("else"), o.otherwise, u.otherwise)


def _criterion_change(o: n.Combined, u: n.Combined) -> str | None:
    if o.criterion == u.criterion:
        return None
    if u.criterion == "anyOf":
        return "COMBINED_TYPE_EXTENDED"  # allOf/oneOf to anyOf accepts more
    if u.criterion == "oneOf":
        return "COMBINED_TYPE_EXTENDED" if len(o.subschemas) == 1 else "COMBINED_TYPE_CHANGED"
    if len(o.subschemas) == 1 and len(u.subschemas) == 1:
        return "COMBINED_TYPE_EXTENDED"
    return "COMBINED_TYPE_CHANGED"


def _content_key(node: n.Node) -> tuple[object, ...]:
    """What a branch requires, as a hashable key.

    A combined node's raw is the whole JSON object it came from, which one object can
    share between several nodes (an explicit ``anyOf`` and a ``"type"`` list are both
    any-ofs of the same raw), so combined nodes are keyed by their branches instead.
    """
    if isinstance(node, n.Combined):
        return ("Combined", node.criterion, tuple(_content_key(s) for s in node.subschemas))
    if isinstance(node, n.Ref):  # "$ref" and "$dynamicRef" in one object are two refs
        return ("Ref", n.json_key(node.raw), node.ref)
    return (type(node).__name__, n.json_key(node.raw))


def _distinct(nodes: list[n.Node]) -> list[n.Node]:
    """Branches without repeats (``anyOf: [A, A]`` is ``anyOf: [A]``), in order."""
    seen: set[tuple[object, ...]] = set()
    kept = []
    for node in nodes:
        key = _content_key(node)
        if key not in seen:
            seen.add(key)
            kept.append(node)
    return kept


def _combined(ctx: Context, o: n.Combined, u: n.Combined) -> None:
    change = _criterion_change(o, u)
    if change is not None:
        ctx.add(change)
        if change == "COMBINED_TYPE_CHANGED":
            return
    # A oneOf's branches are never merged: "oneOf": [A, A] accepts nothing.
    olds = o.subschemas if o.criterion == "oneOf" else _distinct(o.subschemas)
    news = u.subschemas if u.criterion == "oneOf" else _distinct(u.subschemas)
    if len(olds) != len(news):
        grew = len(olds) < len(news)
        product = u.criterion == "allOf"
        ctx.add(
            ("PRODUCT" if product else "SUM") + ("_TYPE_EXTENDED" if grew else "_TYPE_NARROWED")
        )
    edges: dict[int, dict[int, Context]] = {}
    for i, old in enumerate(olds):
        here = ctx.at(o.criterion, str(i))
        for j, new in enumerate(news):
            sub = _try(here, old, new)
            if sub.compatible:
                edges.setdefault(i, {})[j] = sub
    matching = _max_matching(edges)
    for i, j in sorted(matching.items()):
        ctx.extend(edges[i][j])
    if len(matching) < min(len(olds), len(news)):
        ctx.add("COMBINED_TYPE_SUBSCHEMAS_CHANGED")
    if u.criterion == "oneOf" and len(news) > 1:
        _one_of(ctx, o, olds, news, matching)


def _one_of(
    ctx: Context, o: n.Combined, olds: list[n.Node], news: list[n.Node], matching: dict[int, int]
) -> None:
    """A ``oneOf`` is not monotone: widening or adding a branch can make old data match two
    branches, and then none. Data of old branch ``i`` matches its new branch ``matching[i]``;
    it must match no other new branch ``k``. That holds when ``k`` is no wider than the old
    branch it is matched with (old data matched one old branch only), or when ``k`` takes
    none of the JSON types branch ``i`` accepts. Otherwise it is refused."""
    matched = {j: i for i, j in matching.items()}
    tight = {
        k
        for k, i in matched.items()
        if o.criterion == "oneOf" and _try(ctx, news[k], olds[i]).compatible
    }
    for i, j in sorted(matching.items()):
        for k, branch in enumerate(news):
            if k != j and k not in tight and _types(ctx, olds[i]) & _types(ctx, branch):
                ctx.at(o.criterion, str(i)).add("COMBINED_TYPE_SUBSCHEMAS_CHANGED")
                break


def _alone(ctx: Context, original: n.Node, index: int, one_of: n.Combined) -> bool:
    """Whether no data of ``original`` can match a ``oneOf`` branch besides the one at
    ``index`` (by place: two equal branches may be one node)."""
    kinds = _types(ctx, original)
    return not any(
        k != index and kinds & _types(ctx, other) for k, other in enumerate(one_of.subschemas)
    )


_ALL_TYPES = frozenset({"null", "boolean", "string", "number", "array", "object"})


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _types(ctx: Context, node: n.Node | None, depth: int = 0) -> frozenset[str]:
    """The JSON types (integers are numbers) ``node`` may accept: at least those it does."""
    ctx.shared.spend()
    node = _deref(node)
    if node is None or depth > 32 or isinstance(node, n.TrueNode | n.Not | n.Conditional):
        return _ALL_TYPES  # (a "not" or an "if" takes types as it pleases)
    if isinstance(node, n.FalseNode):
        return frozenset()
    if isinstance(node, n.Null | n.Boolean):
        return frozenset({"null" if isinstance(node, n.Null) else "boolean"})
    if isinstance(node, n.String | n.Number | n.Object | n.Array):
        name = {n.String: "string", n.Number: "number", n.Object: "object", n.Array: "array"}
        return frozenset({name[type(node)]}) if node.requires_type else _ALL_TYPES
    if isinstance(node, n.Enum):
        return frozenset(_json_type(v) for v in node.values)
    if isinstance(node, n.Const):
        return frozenset({_json_type(node.value)})
    if isinstance(node, n.Combined):
        kinds = [_types(ctx, s, depth + 1) for s in node.subschemas]
        if node.criterion == "allOf":
            return frozenset.intersection(_ALL_TYPES, *kinds)
        return frozenset().union(*kinds)
    return _ALL_TYPES


def _max_matching(edges: dict[int, dict[int, Context]]) -> dict[int, int]:
    """Maximum bipartite matching (augmenting paths; branch counts are small): left → right.

    Among maximum matchings it leans to pairing branches that differ least: each
    branch tries its closest free partner before displacing another's.
    """
    match_right: dict[int, int] = {}

    def augment(left: int, seen: set[int]) -> bool:
        options = sorted(edges.get(left, {}).items(), key=lambda kv: (kv[1].count, kv[0]))
        for right, _ in options:
            if right not in match_right:
                match_right[right] = left
                return True
        for right, _ in options:
            if right in seen:
                continue
            seen.add(right)
            if augment(match_right[right], seen):
                match_right[right] = left
                return True
        return False

    for left in sorted(edges):
        augment(left, set())
    return {left: right for right, left in match_right.items()}


def _open(node: n.Object | n.Array, patterns: dict[str, n.Node]) -> bool:
    """An open content model admits any extra property (item) with any value."""
    if not node.permits_additional or node.additional is not None or patterns:
        return False
    return node.unevaluated is None or isinstance(_deref(node.unevaluated), n.TrueNode)


def _partial(shared: _Shared, node: n.Object | n.Array, name: str | None) -> n.Node | None:
    """The schema a partially open content model gives an extra property (item), if any."""
    if isinstance(node, n.Object) and name is not None:
        for regex, schema in node.pattern_properties.items():
            if shared.matches(regex, name):
                return schema
    if node.additional is not None:
        return node.additional
    if node.permits_additional and node.unevaluated is not None:
        target = _deref(node.unevaluated)
        if not isinstance(target, n.FalseNode | n.TrueNode):
            return node.unevaluated
    return None


def _covered(
    ctx: Context, original: n.Node, update: n.Node, covered: str, not_covered: str
) -> None:
    """Whether a partially open model's schema takes over for a named property (item)."""
    sub = _try(ctx, original, update)
    if sub.compatible:
        ctx.extend(sub)
        ctx.add(covered)
    else:
        # LENIENT trusts readers to ignore what they do not know, so the evidence against
        # coverage is not itself a finding; STRICT reports it.
        if not ctx.shared.lenient:
            ctx.extend(sub)
        ctx.add(not_covered)


def _object(ctx: Context, o: n.Object, u: n.Object) -> None:
    _requirement(ctx, o, u)
    required = ctx.at("required")
    # Every name either side requires, declared in "properties" or not: requiring an
    # undeclared name still refuses the objects without it.
    for name in dict.fromkeys([*o.properties, *o.required, *u.required]):
        if name in u.properties and name not in o.properties:
            continue  # a property added: _properties names it, required or not
        was, now = name in o.required, name in u.required
        if was and not now:
            required.add("REQUIRED_ATTRIBUTE_REMOVED", name)
        elif now and not was:
            with_default = _deref(u.properties.get(name))
            kind = (
                "REQUIRED_ATTRIBUTE_WITH_DEFAULT_ADDED"
                if with_default is not None and with_default.has_default
                else "REQUIRED_ATTRIBUTE_ADDED"
            )
            required.add(kind, name)
    _properties(ctx.at("properties"), o, u)
    _pattern_properties(ctx.at("patternProperties"), o, u)
    compare(ctx.at("propertyNames"), o.property_names, u.property_names)
    _dependencies(ctx, o, u)
    _additional(
        ctx.at("additionalProperties"), o.permits_additional, u.permits_additional,
        o.additional, u.additional, "ADDITIONAL_PROPERTIES",
    )  # fmt: skip
    _unevaluated(ctx, o.unevaluated, u.unevaluated, "unevaluatedProperties", "PROPERTIES")
    _still_evaluated(ctx, o, u)
    _bound(ctx, "maxProperties", o.max_properties, u.max_properties, "MAX_PROPERTIES")
    _bound(ctx, "minProperties", o.min_properties, u.min_properties, "MIN_PROPERTIES")


def _properties(ctx: Context, o: n.Object, u: n.Object) -> None:
    names = list(o.properties) + [k for k in u.properties if k not in o.properties]
    for name in names:
        here = ctx.at(name)
        old, new = o.properties.get(name), u.properties.get(name)
        if old is not None and new is not None:
            compare(here, old, new)
        elif new is None:
            assert old is not None
            _removed(here, old, u, functools.partial(_partial, ctx.shared, u, name))
        else:
            target = _deref(new)
            has_default = target is not None and target.has_default
            is_required = name in u.required
            if _open(o, o.pattern_properties) or _any_value(ctx, o, name):
                if isinstance(target, n.TrueNode):
                    here.add("PROPERTY_WITH_EMPTY_SCHEMA_ADDED_TO_OPEN_CONTENT_MODEL")
                elif is_required:
                    here.add(
                        "REQUIRED_PROPERTY_WITH_DEFAULT_ADDED_TO_OPEN_CONTENT_MODEL"
                        if has_default
                        else "REQUIRED_PROPERTY_ADDED_TO_OPEN_CONTENT_MODEL"
                    )
                else:
                    here.add("OPTIONAL_PROPERTY_ADDED_TO_OPEN_CONTENT_MODEL")
                continue
            if (partial := _partial(ctx.shared, o, name)) is not None:
                _covered(
                    here, partial, new,
                    "PROPERTY_ADDED_IS_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL",
                    "PROPERTY_ADDED_NOT_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL",
                )  # fmt: skip
            if is_required:
                here.add(
                    "REQUIRED_PROPERTY_WITH_DEFAULT_ADDED_TO_UNOPEN_CONTENT_MODEL"
                    if has_default
                    else "REQUIRED_PROPERTY_ADDED_TO_UNOPEN_CONTENT_MODEL"
                )
            else:
                here.add("OPTIONAL_PROPERTY_ADDED_TO_UNOPEN_CONTENT_MODEL")


# "unevaluatedProperties" applies to the properties nothing else evaluated, and the in-place
# applicators beside it (allOf, $ref, ...) evaluate some: what the original's constrains
# depends on them. Where unsure, the original is taken to accept the property as it is.


def _constrains(node: n.Object | n.Array) -> bool:
    """Whether ``node``'s unevaluated keyword may refuse something (is not absent or true)."""
    return node.unevaluated is not None and not isinstance(_deref(node.unevaluated), n.TrueNode)


def _any_value(ctx: Context, o: n.Object, name: str) -> bool:
    """Whether the original takes ``name`` with any value although its model is not open:
    no regex of its ``patternProperties`` matches it and nothing (no ``additionalProperties``,
    no ``unevaluatedProperties`` that applies) constrains it."""
    if not o.permits_additional or o.additional is not None:
        return False
    if _constrains(o):
        return _evaluated_beside(ctx, o, name)
    return not any(ctx.shared.matches(regex, name) for regex in o.pattern_properties)


def _evaluated_beside(ctx: Context, o: n.Object, name: str) -> bool:
    """Whether an in-place applicator beside the original's ``unevaluatedProperties`` may
    evaluate ``name`` (which no pattern or ``additionalProperties`` of ``o`` takes): then
    that keyword may not apply to it, and the original may take any value there."""
    if not _constrains(o) or not o.siblings or not o.permits_additional or o.additional:
        return False
    if any(ctx.shared.matches(regex, name) for regex in o.pattern_properties):
        return False
    names = _names(ctx, o.siblings, certain=False)
    return names is None or name in names


def _still_evaluated(ctx: Context, o: n.Object, u: n.Object) -> None:
    """Properties the original's in-place applicators evaluate (so that its
    ``unevaluatedProperties`` let them be) must be evaluated by the update too, or its
    ``unevaluatedProperties`` judges them instead."""
    if not (_constrains(o) and o.siblings and _constrains(u)):
        return
    if not u.permits_additional or u.additional is not None:
        return  # "additionalProperties" evaluates every other property: compared above
    before = _names(ctx, o.siblings, certain=False)
    after = (_names(ctx, u.siblings, certain=True) or set()) | set(u.properties)
    if before is None:
        ctx.at("unevaluatedProperties").add("UNEVALUATED_PROPERTIES_NARROWED")
        return
    for name in sorted(before - after):
        if not any(ctx.shared.matches(regex, name) for regex in u.pattern_properties):
            ctx.at("properties", name).add("PROPERTY_REMOVED_FROM_CLOSED_CONTENT_MODEL")


def _applied(ctx: Context, found: list[n.Node], *, certain: bool) -> Iterator[n.Node]:
    """The nodes the in-place applicators ``found`` apply to the instance itself, through
    ``$ref`` and ``allOf``; unless ``certain``, also those that may apply (``anyOf``,
    ``oneOf``, ``if``/``then``/``else``, an object's ``dependentSchemas``)."""
    seen: set[int] = set()
    found = found[:]  # (a node's own list)
    while found:
        node = found.pop()
        ctx.shared.spend()
        if isinstance(node, n.Ref):
            if id(node) not in seen:
                seen.add(id(node))
                found.append(node.target())
        elif isinstance(node, n.Combined) and (not certain or node.criterion == "allOf"):
            found.extend(node.subschemas)
        elif isinstance(node, n.Conditional) and not certain:
            found.extend(s for s in (node.condition, node.then, node.otherwise) if s)
        else:
            if isinstance(node, n.Object) and not certain:
                found.extend(node.schema_dependencies.values())
            yield node


def _names(ctx: Context, found: list[n.Node], *, certain: bool) -> set[str] | None:
    """The property names the in-place applicators ``found`` may evaluate (None: any), or
    with ``certain`` those they evaluate in every valid instance (through allOf and $ref)."""
    names: set[str] = set()
    for node in _applied(ctx, found, certain=certain):
        if isinstance(node, n.Object):
            names.update(node.properties)
            if not certain and (
                node.pattern_properties
                or "additionalProperties" in node.raw
                or node.unevaluated is not None
            ):
                return None  # evaluates names no list can hold
    return names


def _removed(here: Context, old: n.Node, u: n.Object, partial: Callable[[], n.Node | None]) -> None:
    """A property (or a regex's names) the update no longer names: free in its open model,
    judged by what ``partial`` gives the name in a partially open one (asked only then: a
    regex match is a step of the budget), a removal from a closed one."""
    if _open(u, u.pattern_properties):
        here.add("PROPERTY_REMOVED_FROM_OPEN_CONTENT_MODEL")
    elif (schema := partial()) is not None:
        _covered(
            here, old, schema,
            "PROPERTY_REMOVED_IS_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL",
            "PROPERTY_REMOVED_NOT_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL",
        )  # fmt: skip
    elif isinstance(_deref(old), n.FalseNode):
        here.add("PROPERTY_WITH_FALSE_REMOVED_FROM_CLOSED_CONTENT_MODEL")
    else:
        here.add("PROPERTY_REMOVED_FROM_CLOSED_CONTENT_MODEL")


def _pattern_properties(ctx: Context, o: n.Object, u: n.Object) -> None:
    """Each ``patternProperties`` schema applies to every property its regex matches, declared
    or not: one kept must not narrow; one added takes over names the original gave to
    ``additionalProperties`` (or let through), and must not narrow a property the original
    declares that it matches; one removed hands its names to the update's
    ``additionalProperties``. (Names another regex also matches are judged as if it did not:
    a property meeting both schemas meets each.)"""
    for regex in list(o.pattern_properties) + [
        r for r in u.pattern_properties if r not in o.pattern_properties
    ]:
        here = ctx.at(regex)
        old, new = o.pattern_properties.get(regex), u.pattern_properties.get(regex)
        if old is None and new is not None:
            # It applies to the properties the original declares that it matches too.
            for name, declared in o.properties.items():
                if ctx.shared.matches(regex, name):
                    compare(here, declared, new)
        if old is not None and new is not None:
            compare(here, old, new)
        elif new is None:
            assert old is not None
            _removed(here, old, u, lambda: u.additional)
        elif not o.permits_additional and not o.pattern_properties:
            here.add("OPTIONAL_PROPERTY_ADDED_TO_UNOPEN_CONTENT_MODEL")  # none were accepted
        elif o.additional is not None and not o.pattern_properties:
            _covered(
                here, o.additional, new,
                "PROPERTY_ADDED_IS_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL",
                "PROPERTY_ADDED_NOT_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL",
            )  # fmt: skip
        elif not isinstance(_deref(new), n.TrueNode):
            # The original may have taken these names with any value (unconstrained, or
            # under another regex this one overlaps): the new schema narrows them.
            here.add("OPTIONAL_PROPERTY_ADDED_TO_OPEN_CONTENT_MODEL")


def _dependencies(ctx: Context, o: n.Object, u: n.Object) -> None:
    here = ctx.at(o.keywords["dependencies"])
    for name in list(o.property_dependencies) + [
        k for k in u.property_dependencies if k not in o.property_dependencies
    ]:
        old, new = o.property_dependencies.get(name), u.property_dependencies.get(name)
        if new is None:
            here.add("DEPENDENCY_ARRAY_REMOVED", name)
        elif old is None:
            here.add("DEPENDENCY_ARRAY_ADDED", name)
        elif set(old) != set(new):
            if set(new) >= set(old):
                here.add("DEPENDENCY_ARRAY_EXTENDED", name)
            elif set(old) >= set(new):
                here.add("DEPENDENCY_ARRAY_NARROWED", name)
            else:
                here.add("DEPENDENCY_ARRAY_CHANGED", name)
    here = ctx.at(o.keywords["dependentSchemas"])
    for name in list(o.schema_dependencies) + [
        k for k in u.schema_dependencies if k not in o.schema_dependencies
    ]:
        old_s, new_s = o.schema_dependencies.get(name), u.schema_dependencies.get(name)
        if new_s is None:
            here.add("DEPENDENCY_SCHEMA_REMOVED", name)
        elif old_s is None:
            here.add("DEPENDENCY_SCHEMA_ADDED", name)
        else:
            compare(here.at(name), old_s, new_s)


def _additional(
    ctx: Context,
    o_permits: bool,
    u_permits: bool,
    o_schema: n.Node | None,
    u_schema: n.Node | None,
    stem: str,
) -> None:
    """``additionalProperties`` / ``additionalItems``: allowed at all, and with what schema."""
    if o_permits != u_permits:
        ctx.add(f"{stem}_ADDED" if u_permits else f"{stem}_REMOVED")
    elif o_schema is None and u_schema is not None:
        ctx.add(f"{stem}_NARROWED")
    elif u_schema is None and o_schema is not None:
        ctx.add(f"{stem}_EXTENDED")
    else:
        compare(ctx, o_schema, u_schema)


def _unevaluated(
    ctx: Context, old: n.Node | None, new: n.Node | None, keyword: str, what: str
) -> None:
    if old is None and new is None:
        return
    here = ctx.at(keyword)
    old_t, new_t = _deref(old), _deref(new)
    stem = f"UNEVALUATED_{what}"
    if old_t is None:
        here.add(f"{stem}_REMOVED" if isinstance(new_t, n.FalseNode) else f"{stem}_NARROWED")
    elif new_t is None:
        here.add(f"{stem}_ADDED" if isinstance(old_t, n.FalseNode) else f"{stem}_EXTENDED")
    elif isinstance(old_t, n.FalseNode) and not isinstance(new_t, n.FalseNode):
        here.add(f"{stem}_ADDED")
    elif not isinstance(old_t, n.FalseNode) and isinstance(new_t, n.FalseNode):
        here.add(f"{stem}_REMOVED")
    elif isinstance(old_t, n.TrueNode) and not isinstance(new_t, n.TrueNode):
        here.add(f"{stem}_NARROWED")
    elif not isinstance(old_t, n.TrueNode) and isinstance(new_t, n.TrueNode):
        here.add(f"{stem}_EXTENDED")
    else:
        compare(here, old, new)


def _array(ctx: Context, o: n.Array, u: n.Array) -> None:
    _requirement(ctx, o, u)
    compare(ctx.at("items"), o.all_items, u.all_items)
    _item_list(ctx, o, u)
    _additional(
        ctx.at(o.keywords["additionalItems"]), o.permits_additional, u.permits_additional,
        o.additional, u.additional, "ADDITIONAL_ITEMS",
    )  # fmt: skip
    _unevaluated(ctx, o.unevaluated, u.unevaluated, "unevaluatedItems", "ITEMS")
    _still_evaluated_items(ctx, o, u)
    _bound(ctx, "maxItems", o.max_items, u.max_items, "MAX_ITEMS")
    _bound(ctx, "minItems", o.min_items, u.min_items, "MIN_ITEMS")
    if o.unique_items != u.unique_items:
        ctx.add("UNIQUE_ITEMS_REMOVED" if o.unique_items else "UNIQUE_ITEMS_ADDED", "uniqueItems")
    here = ctx.at("contains")
    compare(here, o.contains, u.contains)  # at least minContains items must match it
    # ... and at most maxContains: so it may match no item the original's did not.
    bounded = u.max_contains is not None and None not in (o.contains, u.contains)
    if bounded and not _try(here, u.contains, o.contains).compatible:
        here.add("TYPE_CHANGED")
    _bound(ctx, "maxContains", o.max_contains, u.max_contains, "MAX_CONTAINS")
    _bound(ctx, "minContains", _min_contains(o), _min_contains(u), "MIN_CONTAINS")


def _min_contains(node: n.Array) -> int | None:
    """How many items must match ``contains``: ``minContains``, which defaults to 1 (so
    removing ``"minContains": 0`` narrows), and means nothing without ``contains``."""
    if node.contains is None:
        return None
    return 1 if node.min_contains is None else node.min_contains


# "unevaluatedItems" likewise leaves alone the items that its in-place applicators (and a
# "contains" beside it) evaluate.


def _items_beside(ctx: Context, o: n.Array) -> int | bool | None:
    """False if nothing beside the original's ``unevaluatedItems`` may evaluate items past its
    own ``prefixItems``; else how many leading items they may evaluate (None: any)."""
    if not _constrains(o) or not o.permits_additional or o.additional is not None:
        return False
    if o.contains is not None:
        return None
    if not o.siblings:
        return False
    return _evaluated_items(ctx, o.siblings, certain=False)


def _beside(evaluated: int | bool | None, index: int) -> bool:
    """Whether item ``index`` may be evaluated beside ``unevaluatedItems`` (see above)."""
    return evaluated is None or (evaluated is not False and index < evaluated)


def _still_evaluated_items(ctx: Context, o: n.Array, u: n.Array) -> None:
    """Items the original's in-place applicators evaluate must be evaluated in the update
    too (as for properties, :func:`_still_evaluated`)."""
    before = _items_beside(ctx, o)
    if before is False or not _constrains(u) or u.contains is not None:
        if before is not False and _constrains(u):
            ctx.at("unevaluatedItems").add("UNEVALUATED_ITEMS_NARROWED")
        return
    if not u.permits_additional or u.additional is not None:
        return  # the update's own items keyword evaluates the rest: compared above
    after = _evaluated_items(ctx, u.siblings, certain=True)
    own = len(u.item_list or [])
    if after is not None and (before is None or max(after, own) < before):
        ctx.at("unevaluatedItems").add("UNEVALUATED_ITEMS_NARROWED")


def _evaluated_items(ctx: Context, found: list[n.Node], *, certain: bool) -> int | None:
    """How many leading items the in-place applicators ``found`` may evaluate (None: any),
    or with ``certain`` evaluate in every valid instance (through allOf and $ref)."""
    most = 0
    for node in _applied(ctx, found, certain=certain):
        if isinstance(node, n.Array):
            every = node.all_items is not None or node.additional is not None
            if every and certain:
                return None
            if not certain and (every or node.contains or node.unevaluated is not None):
                return None
            most = max(most, len(node.item_list or []))
    return most


def _item_list(ctx: Context, o: n.Array, u: n.Array) -> None:
    olds, news = o.item_list or [], u.item_list or []
    keyword = o.keywords["items"]
    for i in range(max(len(olds), len(news))):
        here = ctx.at(keyword, str(i))
        if i < len(olds) and i < len(news):
            compare(here, olds[i], news[i])
        elif i < len(olds):
            if _open(u, {}):
                here.add("ITEM_REMOVED_FROM_OPEN_CONTENT_MODEL")
            elif (partial := _partial(ctx.shared, u, None)) is not None:
                _covered(
                    here, olds[i], partial,
                    "ITEM_REMOVED_IS_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL",
                    "ITEM_REMOVED_NOT_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL",
                )  # fmt: skip
            elif isinstance(_deref(olds[i]), n.FalseNode):
                here.add("ITEM_WITH_FALSE_REMOVED_FROM_CLOSED_CONTENT_MODEL")
            else:
                here.add("ITEM_REMOVED_FROM_CLOSED_CONTENT_MODEL")
        elif _open(o, {}) or _beside(_items_beside(ctx, o), i):
            here.add(
                "ITEM_WITH_EMPTY_SCHEMA_ADDED_TO_OPEN_CONTENT_MODEL"
                if isinstance(_deref(news[i]), n.TrueNode)
                else "ITEM_ADDED_TO_OPEN_CONTENT_MODEL"
            )
        elif (partial := _partial(ctx.shared, o, None)) is not None:
            _covered(
                here, partial, news[i],
                "ITEM_ADDED_IS_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL",
                "ITEM_ADDED_NOT_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL",
            )  # fmt: skip
        else:
            here.add("ITEM_ADDED_TO_CLOSED_CONTENT_MODEL")


_RULES: dict[type, Callable[[Context, Any, Any], None]] = {
    n.String: _string,
    n.Number: _number,
    n.Enum: _enum,
    n.Const: _const,
    n.Not: _not,
    n.Conditional: _conditional,
    n.Combined: _combined,
    n.Object: _object,
    n.Array: _array,
}
