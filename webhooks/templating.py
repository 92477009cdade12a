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
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

from django.template import Context, Engine, Library, Template, defaultfilters, defaulttags
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
        return Template(source, engine=ENGINE)
    except Exception as exc:  # odd input must still come back as a user-facing error
        message, line = _describe(exc, "Template syntax error")
        raise TemplateSyntaxProblem(message, line=line) from exc


def validate_template(source: str) -> None:
    """Raise TemplateSyntaxProblem when ``source`` does not compile (unknown tag or
    filter, unclosed block, bad arguments...), so mistakes surface when saving the
    webhook rather than at delivery time."""
    _compile(source)


def _default_body(payload: dict) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def render_payload(*, template: str | None, payload: dict) -> tuple[bytes, str]:
    """Return ``(body, content_type)`` for a delivery.

    Without a template (None or empty) the payload is sent as compact JSON.  With one,
    the payload's top-level keys are the template variables; the result is sent as
    ``application/json`` when it parses as JSON, else as UTF-8 text.  Any failure is
    raised as TemplateRenderProblem, never as an arbitrary exception.
    """
    if not template:
        return _default_body(payload), JSON_CONTENT_TYPE
    try:
        compiled = _compile(template)
    except TemplateSyntaxProblem as exc:
        raise TemplateRenderProblem(str(exc), line=exc.line) from exc
    data = json.loads(_default_body(payload))  # plain, detached copy of the payload
    context = Context(data, autoescape=False, use_l10n=False, use_tz=False)
    try:
        rendered = compiled.render(context)
    except Exception as exc:
        message, line = _describe(exc, f"Template failed to render ({type(exc).__name__})")
        raise TemplateRenderProblem(message, line=line) from exc
    try:
        json.loads(rendered)
    except ValueError:
        return rendered.encode("utf-8"), TEXT_CONTENT_TYPE
    return rendered.encode("utf-8"), JSON_CONTENT_TYPE
