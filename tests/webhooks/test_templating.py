"""Tests for payload templates.  They need no Django settings (and don't configure any)."""

import json

import pytest

from webhooks.templating import (
    TemplateRenderProblem,
    TemplateSyntaxProblem,
    render_payload,
    validate_template,
)

PAYLOAD = {
    "subject": 'Re: "quoted"\nsecond line \u2013 ünïcødé ✉ </script>',
    "from": {"address": "alice@example.com", "name": "Alice"},
    "envelope": {"mail_from": "bounce@example.com", "rcpt_to": ["a@x.test", "b@x.test"]},
    "size": 12345,
    "spam": False,
    "score": 1.5,
    "reply_to": None,
    "headers": {"X-Tag": "v"},
    "attachments": [],
}

JSON = "application/json"
TEXT = "text/plain; charset=utf-8"


def render(template: str, payload: dict | None = None) -> tuple[str, str]:
    body, content_type = render_payload(template=template, payload=payload or PAYLOAD)
    return body.decode("utf-8"), content_type


# --- no template ------------------------------------------------------------------


@pytest.mark.parametrize("template", [None, ""])
def test_no_template_is_compact_json(template):
    body, content_type = render_payload(template=template, payload=PAYLOAD)
    assert content_type == JSON
    assert json.loads(body) == PAYLOAD
    assert b", " not in body and b'": ' not in body
    assert "ünïcødé ✉".encode() in body  # ensure_ascii=False


# --- the json filter --------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    ["subject", "from", "envelope", "size", "spam", "score", "reply_to", "attachments"],
)
def test_json_filter_round_trips(key):
    body, content_type = render(f"{{{{ {key}|json }}}}")
    assert content_type == JSON
    assert json.loads(body) == PAYLOAD[key]


def test_json_filter_string_escaping_and_unicode():
    body, _ = render("{{ subject|json }}")
    assert body.startswith('"Re: \\"quoted\\"\\nsecond line')
    assert "ünïcødé ✉" in body  # not \u-escaped
    assert "\n" not in body


def test_json_filter_nested_lookups_and_none():
    body, content_type = render(
        '{"from": {{ from.address|json }}, "to": {{ envelope.rcpt_to|json }},'
        ' "first": {{ envelope.rcpt_to.0|json }}, "reply": {{ reply_to|json }}}'
    )
    assert content_type == JSON
    assert json.loads(body) == {
        "from": "alice@example.com",
        "to": ["a@x.test", "b@x.test"],
        "first": "a@x.test",
        "reply": None,
    }


def test_json_filter_is_not_escaped_even_with_autoescape_on():
    body, _ = render("{% autoescape on %}{{ subject|json }}{% endautoescape %}")
    assert json.loads(body) == PAYLOAD["subject"]


def test_json_filter_on_non_json_values():
    body, _ = render("{{ headers.items|json }}")
    assert json.loads(body) == [["X-Tag", "v"]]


def test_missing_variable_is_empty_string():
    assert render("{{ nope|json }}") == ('""', JSON)
    assert render("[{{ nope }}]") == ("[]", JSON)


# --- content types and plain rendering ----------------------------------------------


def test_text_template_is_text_plain():
    body, content_type = render("Mail from {{ from.name }} <{{ from.address }}> ({{ size }} B)")
    assert content_type == TEXT
    assert body == "Mail from Alice <alice@example.com> (12345 B)"


def test_no_html_autoescape_and_no_number_localisation():
    body, _ = render("{{ subject }}|{{ size }}|{{ score }}")
    assert body == PAYLOAD["subject"] + "|12345|1.5"


def test_json_template_with_loops_is_application_json():
    template = (
        '{"to": [{% for r in envelope.rcpt_to %}{{ r|json }}'
        "{% if not forloop.last %},{% endif %}{% endfor %}],"
        ' "big": {% if size > 10000 %}true{% else %}false{% endif %}}'
    )
    body, content_type = render(template)
    assert content_type == JSON
    assert json.loads(body) == {"to": ["a@x.test", "b@x.test"], "big": True}


def test_invalid_json_output_is_text():
    # Forgetting |json around a string is the classic mistake: the output is not JSON.
    body, content_type = render('{"subject": "{{ subject }}"}')
    assert content_type == TEXT
    assert body.startswith('{"subject": "Re: "quoted"')


def test_payload_is_not_mutated_by_the_template():
    payload = {"items": [1, 2, 3], "meta": {"a": 1}}
    body, _ = render("{{ items.pop }} {{ meta.clear }} {{ items|json }}", payload)
    assert body.endswith("[1, 2]")  # the template saw its own copy change...
    assert payload == {"items": [1, 2, 3], "meta": {"a": 1}}  # ...the caller's data did not


# --- syntax errors ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "fragment"),
    [
        ("{% if subject %}open", "Unclosed tag"),
        ("{% for r in envelope.rcpt_to %}{{ r }}", "Unclosed tag"),
        ("{% frobnicate %}", "Invalid block tag"),
        ("{{ subject|frobnicate }}", "Invalid filter"),
        ("{% load static %}", "not a registered tag library"),
        ("{% load i18n %}{% trans 'x' %}", "not a registered tag library"),
        ("{% include 'secrets.txt' %}", "Invalid block tag"),
        ("{% extends 'base.html' %}", "Invalid block tag"),
        ("{% debug %}", "Invalid block tag"),
        ("{% url 'admin:index' %}", "Invalid block tag"),
        ("{% lorem 100000000 w %}", "Invalid block tag"),
        ("{{ subject.__class__ }}", "may not begin with underscores"),
        ("{{ subject|stringformat:'999999999s' }}", "Invalid filter"),
    ],
)
def test_syntax_errors(template, fragment):
    with pytest.raises(TemplateSyntaxProblem) as excinfo:
        validate_template(template)
    assert fragment in str(excinfo.value)
    assert excinfo.value.line == 1
    # The same template at delivery time is a render problem, not a crash.
    with pytest.raises(TemplateRenderProblem):
        render_payload(template=template, payload=PAYLOAD)


def test_syntax_error_reports_the_line():
    with pytest.raises(TemplateSyntaxProblem) as excinfo:
        validate_template('{\n  "a": {{ subject|json }},\n  "b": {{ size|nope }}\n}')
    assert excinfo.value.line == 3
    assert "(line 3: {{ size|nope }})" in str(excinfo.value)


def test_valid_templates_pass_validation():
    validate_template("")
    validate_template("plain text")
    validate_template('{"s": {{ subject|json }}, "n": {{ size }}}')
    validate_template("{% if spam %}x{% elif size %}y{% else %}z{% endif %}")


# --- nothing leaks ----------------------------------------------------------------


@pytest.mark.parametrize(
    "template",
    [
        "{{ settings }}",
        "{{ settings.SECRET_KEY }}",
        "{{ request }}",
        "{{ user.password }}",
        "{{ view }}",
        "{{ csrf_token }}",
        "{{ perms }}",
    ],
)
def test_context_holds_only_payload_data(template):
    assert render(template) == ("", TEXT)


def test_render_time_errors_become_render_problems():
    with pytest.raises(TemplateRenderProblem) as excinfo:
        render_payload(template='x\n{{ subject|ljust:"2000000000" }}', payload=PAYLOAD)
    assert excinfo.value.line == 2
    assert "too large" in str(excinfo.value)
    with pytest.raises(TemplateRenderProblem):
        render_payload(template='{{ score|floatformat:"-999999999" }}', payload=PAYLOAD)


def test_small_padding_still_works():
    assert render('[{{ from.name|ljust:"7" }}]')[0] == "[Alice  ]"
