"""Tests for payload templates.  They need no Django settings (and don't configure any)."""

import json

import pytest

from webhooks.templating import (
    RenderLimits,
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


# --- the box: output, loop and time limits ------------------------------------------

SMALL = RenderLimits(max_output_bytes=100_000, max_seconds=60.0, max_loop_iterations=10_000)
HOSTILE_TEXT = "<" * 1000  # escapejs makes each "<" longer at every pass
THREE_LOOPS = (
    "{% for a in text %}{% for b in text %}{% for c in text %}{{ c }}"
    "{% endfor %}{% endfor %}{% endfor %}"
)
NESTED_WITH = "{% with a=text|add:text %}" + "{% with a=a|add:a %}" * 12 + "{{ a|length }}"


def boxed(template: str, limits: RenderLimits = SMALL, text: str = HOSTILE_TEXT) -> str:
    with pytest.raises(TemplateRenderProblem) as caught:
        render_payload(template=template, payload={"text": text}, limits=limits)
    return str(caught.value)


LOOPS_MESSAGE = (
    "Template stopped: its loops ran more than 10,000 iterations "
    "(CONDUIT_TEMPLATE_MAX_LOOP_ITERATIONS); loop over fewer items (nested loops multiply)"
)
OUTPUT_MESSAGE = (
    "Template stopped: its output is over 100,000 bytes (CONDUIT_TEMPLATE_MAX_OUTPUT_BYTES); "
    "send less of the message, e.g. {{ text|truncatechars:10000|json }}"
)


def test_three_nested_loops_over_the_text_stop_at_the_loop_limit():
    assert boxed(THREE_LOOPS) == LOOPS_MESSAGE + " (line 1: {% for c in text %})"


def test_loops_with_empty_bodies_count_too():
    template = "{% for a in text %}" * 3 + "{% endfor %}" * 3
    assert boxed(template).startswith(LOOPS_MESSAGE)


def test_reversed_loops_count_too():
    template = "{% for a in text reversed %}{% for b in text reversed %}x{% endfor %}{% endfor %}"
    assert boxed(template).startswith(LOOPS_MESSAGE)


def test_a_loop_under_the_limit_runs_whole():
    limits = RenderLimits(max_output_bytes=100_000, max_loop_iterations=1000)
    body, _ = render_payload(
        template="{% for c in text %}{{ forloop.counter0|divisibleby:999 }}{% endfor %}",
        payload={"text": "x" * 1000},
        limits=limits,
    )
    assert body.count(b"True") == 2 and len(body) == 2 * 4 + 998 * 5


@pytest.mark.parametrize(
    "template",
    [
        "{{ text }}" * 200,  # repetition without a loop
        "{% for c in text %}{{ text }}{% endfor %}",  # each iteration adds 1000
        "{% for c in text %}" + "static text " * 10 + "{% endfor %}",  # text nodes count
        "{{ text" + "|escapejs" * 30 + " }}",  # a filter chain that keeps growing
        "{% filter escapejs %}" * 20 + "{{ text }}" + "{% endfilter %}" * 20,
        NESTED_WITH + "{% endwith %}" * 13,  # doubling without output
        "{{ text|make_list|join:text }}",  # refused before the join is built
    ],
)
def test_output_and_intermediate_values_stop_at_the_output_limit(template):
    assert boxed(template).startswith(OUTPUT_MESSAGE)


def test_a_limit_hit_inside_an_if_condition_still_fails_the_render():
    # Django's {% if %} swallows exceptions from its condition; the budget does not.
    assert boxed("{% if text" + "|escapejs" * 30 + " %}yes{% endif %}").startswith(OUTPUT_MESSAGE)
    assert boxed("{% if text" + "|escapejs" * 30 + " %}yes{% endif %}after").startswith(
        OUTPUT_MESSAGE
    )


def test_the_output_limit_counts_the_encoded_bytes():
    limits = RenderLimits(max_output_bytes=2000)
    render_payload(template="{{ text }}", payload={"text": "é" * 1000}, limits=limits)
    with pytest.raises(TemplateRenderProblem, match="its output is over 2,000 bytes"):
        render_payload(template="{{ text }}{{ text }}", payload={"text": "é" * 1000}, limits=limits)


def test_nested_output_is_counted_once():
    # 3 levels of nesting around 90,000 characters: under a 100,000 limit.
    template = "{% for a in t %}{% if a %}{% with b=a %}{{ b }}{% endwith %}{% endif %}{% endfor %}"
    body, _ = render_payload(template=template, payload={"t": ["x" * 900] * 100}, limits=SMALL)
    assert len(body) == 90_000


def test_the_time_limit_stops_a_render():
    limits = RenderLimits(max_seconds=-1.0)  # already past: deterministic
    message = boxed("{{ text }}", limits=limits)
    assert message.startswith(
        "Template stopped: rendering took longer than -1 s (CONDUIT_TEMPLATE_MAX_RENDER_SECONDS)"
    )


def test_encode_lookups_are_refused_when_saving():
    with pytest.raises(TemplateSyntaxProblem) as caught:
        validate_template("ok\n{{ text.encode.hex.encode.hex }}")
    assert str(caught.value) == (
        "Template syntax error: payload templates cannot use .encode (text as bytes); use "
        "the json or urlencode filter (line 2)"
    )


def test_filters_keep_working_in_the_box():
    body, content_type = render_payload(
        template='{"s": {{ subject|upper|json }}, "n": {{ envelope.rcpt_to|length }}, '
        '"j": {{ envelope.rcpt_to|join:", "|json }}, "a": {{ size|add:1 }}}',
        payload=PAYLOAD,
        limits=SMALL,
    )
    assert content_type == JSON
    data = json.loads(body)
    assert data["n"] == 2 and data["a"] == 12346 and data["j"] == "a@x.test, b@x.test"


def test_no_template_never_enters_the_box(monkeypatch):
    def no_settings():
        raise AssertionError("limits read without a template")

    monkeypatch.setattr(RenderLimits, "from_settings", no_settings)
    assert render_payload(template=None, payload=PAYLOAD)[1] == JSON
    assert render_payload(template="", payload=PAYLOAD)[1] == JSON
