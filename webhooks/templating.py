"""Payload templates: let users shape the webhook body with Django's template language.

Templates are written by account owners and rendered on our workers, so the engine
is deliberately small and separate from the project's HTML engine:

* Only the payload's plain data is in the context (a JSON round-trip copy: dicts,
  lists, strings, numbers, booleans, None), so nothing can reach settings, models or
  request objects, and built-in methods a template may call (``{{ list.pop }}``)
  only touch the copy.
* No loaders and no ``{% load %}``-able libraries: no ``{% include %}``/``{% extends %}``
  of files, no third-party tags.  ``{% debug %}`` (dumps ``sys.modules``), ``{% url %}``
  (reveals routes), ``{% csrf_token %}`` and ``{% lorem %}`` (unbounded output) are not
  available; ``stringformat`` is removed and the padding/precision arguments of
  ``ljust``/``rjust``/``center``/``floatformat`` are capped, so a one-line template
  cannot allocate gigabytes.
* Autoescape is off (the output is JSON or text, not HTML); ``{{ value|json }}``
  emits a JSON literal, which is how values should go into a JSON template.
* Numbers render as ``str(value)`` without localisation (no thousand separators in
  JSON); rendering plain values needs no Django settings.  Filters that do need
  settings (``date``, ``timesince``...) work once the project's settings are loaded.

Missing variables render as "" (``{{ nope|json }}`` gives ``""``), like Django.

The box: every render is bounded
--------------------------------
A template is code from one account running on workers every account shares, so a
render must end quickly whatever the template and the message (three nested
``{% for %}`` over a 25 MB text would otherwise run for hours). Python threads
cannot be killed, so the bound is cooperative: the work itself counts and stops.
``RenderLimits`` (settings ``CONDUIT_TEMPLATE_MAX_OUTPUT_BYTES``,
``CONDUIT_TEMPLATE_MAX_RENDER_SECONDS``, ``CONDUIT_TEMPLATE_MAX_LOOP_ITERATIONS``)
is checked at every step a render can repeat or grow through:

* every node (text, ``{{ }}``, tags) charges the characters it adds to the output,
  counted once however deeply nested, and the clock is read each time;
* every ``{% for %}`` iteration counts against the loop limit (loops with empty
  bodies included), through the loop's sequence;
* every filter's result is size-checked, and ``join``/``add`` refuse before
  building a result over the limit, so a chain such as
  ``|escapejs|escapejs|...`` stops at the first step over it;
* ``.encode`` lookups are refused at compile time: ``text.encode.hex.encode.hex``
  doubles the data at each step inside one variable, where no check could run.

Between two checks a render does one filter or method call on data at most a
constant factor larger than the message, so a render overruns its time limit by
at most one such call. A limit, once hit, fails the render even where Django
swallows exceptions (``{% if %}`` conditions). No template, no box: the default
payload never enters this code path.
"""

from __future__ import annotations

import contextvars
import functools
import json
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

from django.template import Context, Engine, Library, Template, defaultfilters, defaulttags
from django.template.base import Lexer, Node, TokenType
from django.template.defaulttags import ForNode
from django.utils.safestring import SafeString, mark_safe

BLOCKED_TAGS = frozenset({"debug", "url", "csrf_token", "lorem"})
BLOCKED_FILTERS = frozenset({"stringformat"})
MAX_PAD_WIDTH = 1000
MAX_FLOAT_DIGITS = 30

JSON_CONTENT_TYPE = "application/json"
TEXT_CONTENT_TYPE = "text/plain; charset=utf-8"


class TemplateSyntaxProblem(ValueError):
    """The template does not compile; the message is meant for the template's author."""

    def __init__(self, message: str, *, line: int | None = None) -> None:
        super().__init__(message)
        self.line = line


class TemplateRenderProblem(ValueError):
    """The template could not be rendered for this payload."""

    def __init__(self, message: str, *, line: int | None = None) -> None:
        super().__init__(message)
        self.line = line


# --- the box: limits and the budget of one render ---------------------------------


@dataclass(frozen=True)
class RenderLimits:
    """What one render may cost. Defaults match the settings' defaults."""

    max_output_bytes: int = 50 * 1024 * 1024
    max_seconds: float = 2.0
    max_loop_iterations: int = 100_000

    @classmethod
    def from_settings(cls) -> RenderLimits:
        from django.conf import settings

        return cls(
            max_output_bytes=settings.CONDUIT_TEMPLATE_MAX_OUTPUT_BYTES,
            max_seconds=settings.CONDUIT_TEMPLATE_MAX_RENDER_SECONDS,
            max_loop_iterations=settings.CONDUIT_TEMPLATE_MAX_LOOP_ITERATIONS,
        )


class TemplateLimitExceeded(Exception):
    """A render hit one of its limits. Not a ValueError/TypeError: Django's variable
    resolution swallows those, and this one must end the render."""


class _Budget:
    """The running cost of one render; every check raises once a limit is passed."""

    def __init__(self, limits: RenderLimits) -> None:
        self.limits = limits
        self.deadline = time.monotonic() + limits.max_seconds
        self.produced = 0  # characters added to the output, each counted once
        self.iterations = 0
        self.failure: TemplateLimitExceeded | None = None

    def _fail(self, message: str) -> None:
        self.failure = TemplateLimitExceeded(message)
        raise self.failure

    def tick(self) -> None:
        if self.failure is not None:
            raise self.failure
        if time.monotonic() > self.deadline:
            self._fail(
                f"rendering took longer than {self.limits.max_seconds:g} s "
                "(CONDUIT_TEMPLATE_MAX_RENDER_SECONDS); simplify the template: fewer or "
                "smaller loops over the message"
            )

    def produce(self, characters: int) -> None:
        if characters > 0:
            self.produced += characters
        self.tick()
        if self.produced > self.limits.max_output_bytes:
            self._fail(self._too_big())

    def check_size(self, value: object) -> None:
        self.tick()
        if isinstance(value, str | bytes | list | tuple | dict):
            self.check_length(len(value))

    def check_length(self, length: int) -> None:
        if length > self.limits.max_output_bytes:
            self._fail(self._too_big())

    def iterate(self) -> None:
        self.iterations += 1
        if self.iterations > self.limits.max_loop_iterations:
            self._fail(
                f"its loops ran more than {self.limits.max_loop_iterations:,} iterations "
                "(CONDUIT_TEMPLATE_MAX_LOOP_ITERATIONS); loop over fewer items (nested "
                "loops multiply)"
            )
        self.tick()

    def _too_big(self) -> str:
        return (
            f"its output is over {self.limits.max_output_bytes:,} bytes "
            "(CONDUIT_TEMPLATE_MAX_OUTPUT_BYTES); send less of the message, e.g. "
            "{{ text|truncatechars:10000|json }}"
        )


_BUDGET: contextvars.ContextVar[_Budget | None] = contextvars.ContextVar(
    "template_budget", default=None
)


def _metered_node(render_annotated: Callable[[Context], str]) -> Callable[[Context], str]:
    """Wrap one node's render: charge what it adds beyond what its children charged."""

    def render(context: Context) -> str:
        budget = _BUDGET.get()
        if budget is None:
            return render_annotated(context)
        before = budget.produced
        output = render_annotated(context)
        budget.produce(len(output) - (budget.produced - before))
        return output

    return render


class _MeteredValues:
    """A ``{% for %}`` loop's values; each item handed out counts as one iteration."""

    def __init__(self, values: Any) -> None:
        self._values = values

    def __len__(self) -> int:
        return len(self._values)

    def _metered(self, items: Iterable[Any]) -> Iterator[Any]:
        budget = _BUDGET.get()
        for item in items:
            if budget is not None:
                budget.iterate()
            yield item

    def __iter__(self) -> Iterator[Any]:
        return self._metered(self._values)

    def __reversed__(self) -> Iterator[Any]:
        return self._metered(reversed(self._values))


class _MeteredSequence:
    """Stands in for a ForNode's ``sequence`` (a FilterExpression)."""

    def __init__(self, expression: Any) -> None:
        self.expression = expression

    def resolve(self, context: Context, ignore_failures: bool = False) -> Any:
        values = self.expression.resolve(context, ignore_failures=ignore_failures)
        if values is None:
            return None
        if not hasattr(values, "__len__"):
            values = list(values)
        return _MeteredValues(values)

    def __str__(self) -> str:
        return str(self.expression)


def _instrument(template: Template) -> Template:
    """Put every node of a compiled template under the budget (once, at compile)."""
    for node in template.nodelist.get_nodes_by_type(Node):
        # An instance attribute: only this engine's compiled nodes are metered.
        node.render_annotated = _metered_node(node.render_annotated)  # type: ignore[method-assign]
        if isinstance(node, ForNode):
            node.sequence = _MeteredSequence(node.sequence)
    return template


# --- the tag and filter library (the engine's only builtins) -----------------------

register = Library()
register.tags.update(
    {name: tag for name, tag in defaulttags.register.tags.items() if name not in BLOCKED_TAGS}
)
register.filters.update(
    {
        name: func
        for name, func in defaultfilters.register.filters.items()
        if name not in BLOCKED_FILTERS
    }
)


def _json_default(value: Any) -> Any:
    if isinstance(value, Iterable) and not isinstance(value, str | bytes):
        return list(value)  # tuples, sets, dict views...
    return str(value)


@register.filter(name="json", is_safe=True)
def json_filter(value: Any) -> SafeString:
    """Render ``value`` as a JSON literal: ``{{ subject|json }}`` -> ``"Re: \\"hi\\""``."""
    return mark_safe(json.dumps(value, ensure_ascii=False, default=_json_default))  # noqa: S308


def _capped(func: Callable[[Any, Any], Any], limit: int) -> Callable[[Any, Any], Any]:
    """Wrap a filter whose integer argument sizes its output, refusing huge values."""

    @functools.wraps(func)
    def wrapper(value: Any, arg: Any = None) -> Any:
        try:
            size = abs(int(str(arg).rstrip("gu")))  # floatformat allows "2g", "2u"
        except ValueError:
            size = 0
        if size > limit:
            raise ValueError(f"{func.__name__} argument {arg!r} is too large (max {limit})")
        return func(value, arg) if arg is not None else func(value)

    return wrapper


for _name in ("ljust", "rjust", "center"):
    register.filter(_name, _capped(defaultfilters.register.filters[_name], MAX_PAD_WIDTH))
register.filter(
    "floatformat", _capped(defaultfilters.register.filters["floatformat"], MAX_FLOAT_DIGITS)
)


def _bounded(func: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a filter so its result is size-checked against the render's budget."""

    @functools.wraps(func)  # keeps Django's flags (is_safe...) and the signature
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        budget = _BUDGET.get()
        if budget is None:
            return func(*args, **kwargs)
        budget.tick()
        result = func(*args, **kwargs)
        budget.check_size(result)
        return result

    return wrapper


def _join_precheck(value: Any, arg: Any = None) -> None:
    # A long separator between many items: the result would be len(arg) * n.
    budget = _BUDGET.get()
    if budget is not None and hasattr(value, "__len__") and isinstance(arg, str):
        budget.check_length(len(arg) * max(len(value) - 1, 0))


def _add_precheck(value: Any, arg: Any = None) -> None:
    # "a"|add:"b" concatenates strings and lists; nested {% with %} doubles them.
    budget = _BUDGET.get()
    if budget is not None and hasattr(value, "__len__") and hasattr(arg, "__len__"):
        budget.check_length(len(value) + len(arg))


def _prechecked(func: Callable[..., Any], check: Callable[..., None]) -> Callable[..., Any]:
    @functools.wraps(func)
    def wrapper(value: Any, arg: Any, **kwargs: Any) -> Any:
        check(value, arg)
        return func(value, arg, **kwargs)

    return wrapper


register.filters["join"] = _prechecked(register.filters["join"], _join_precheck)
register.filters["add"] = _prechecked(register.filters["add"], _add_precheck)
register.filters.update({name: _bounded(func) for name, func in register.filters.items()})

# "text.encode.hex.encode.hex..." doubles the data at every step of one lookup.
_UNBOUNDED_LOOKUP = re.compile(r"\.encode\b")


class _PayloadEngine(Engine):
    # Django always adds its default builtins; we replace them with ``register``
    # above, which is a vetted copy of the default tags and filters.
    default_builtins: ClassVar[list[str]] = []


ENGINE = _PayloadEngine(
    debug=True,  # annotate errors with the template line; nothing else changes
    loaders=[],
    libraries={},
    builtins=[__name__],
    autoescape=False,
    string_if_invalid="",
)


# --- public API --------------------------------------------------------------------


def _describe(exc: BaseException, prefix: str) -> tuple[str, int | None]:
    """Build "<prefix>: <Django's message> (line N: <offending tag>)" for users."""
    message = str(exc)
    if "is not a registered tag library" in message:
        message = message.split(". Must be one of")[0] + "; payload templates cannot load tags"
    info = getattr(exc, "template_debug", None) or {}
    line = info.get("line")
    during = " ".join(str(info.get("during", "")).split())
    if len(during) > 80:
        during = during[:77] + "..."
    if line:
        message += f" (line {line}: {during})" if during else f" (line {line})"
    return f"{prefix}: {message}", line


@functools.lru_cache(maxsize=256)
def _compile(source: str) -> Template:
    try:
        template = Template(source, engine=ENGINE)
    except Exception as exc:  # odd input must still come back as a user-facing error
        message, line = _describe(exc, "Template syntax error")
        raise TemplateSyntaxProblem(message, line=line) from exc
    for token in Lexer(source).tokenize():
        if token.token_type in (TokenType.VAR, TokenType.BLOCK) and _UNBOUNDED_LOOKUP.search(
            token.contents
        ):
            raise TemplateSyntaxProblem(
                "Template syntax error: payload templates cannot use .encode (text as "
                f"bytes); use the json or urlencode filter (line {token.lineno})",
                line=token.lineno,
            )
    return _instrument(template)


def validate_template(source: str) -> None:
    """Raise TemplateSyntaxProblem when ``source`` does not compile (unknown tag or
    filter, unclosed block, bad arguments...), so mistakes surface when saving the
    webhook rather than at delivery time."""
    _compile(source)


def _default_body(payload: dict) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def render_payload(
    *, template: str | None, payload: dict, limits: RenderLimits | None = None
) -> tuple[bytes, str]:
    """Return ``(body, content_type)`` for a delivery.

    Without a template (None or empty) the payload is sent as compact JSON.  With one,
    the payload's top-level keys are the template variables; the result is sent as
    ``application/json`` when it parses as JSON, else as UTF-8 text.  The render is
    bounded by ``limits`` (the settings when None; see "The box" above).  Any
    failure, a limit included, is raised as TemplateRenderProblem, never as an
    arbitrary exception.
    """
    if not template:
        return _default_body(payload), JSON_CONTENT_TYPE
    try:
        compiled = _compile(template)
    except TemplateSyntaxProblem as exc:
        raise TemplateRenderProblem(str(exc), line=exc.line) from exc
    budget = _Budget(limits or RenderLimits.from_settings())
    data = json.loads(_default_body(payload))  # plain, detached copy of the payload
    context = Context(data, autoescape=False, use_l10n=False, use_tz=False)
    token = _BUDGET.set(budget)
    try:
        rendered = compiled.render(context)
        if budget.failure is not None:  # hit inside something that swallowed it
            raise budget.failure
        body = rendered.encode("utf-8")
        budget.check_length(len(body))
    except TemplateLimitExceeded as exc:
        message, line = _describe(exc, "Template stopped")
        raise TemplateRenderProblem(message, line=line) from exc
    except Exception as exc:
        message, line = _describe(exc, f"Template failed to render ({type(exc).__name__})")
        raise TemplateRenderProblem(message, line=line) from exc
    finally:
        _BUDGET.reset(token)
    try:
        json.loads(body)
    except ValueError:
        return body, TEXT_CONTENT_TYPE
    return body, JSON_CONTENT_TYPE
