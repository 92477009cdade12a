"""aiosmtpd's SMTP protocol, made cheaper where it spends the most per session.

The protocol behaves as aiosmtpd's (same replies, limits and hooks; tests
compare them); what changes is the work per session, which decided how many
messages the ingress accepts per second:

- DATA is read in chunks (ingress.smtpdata), not one awaited line at a time;
- a plain <local@domain> path is read by a regular expression, not the email
  package's address parser;
- the idle timer moves its deadline instead of being replaced on every command;
- dir() of the protocol and of the handler lists only their hook methods;
- the EHLO hook's signature, which aiosmtpd inspects on every connection,
  is built once (signature_once).

Two things differ from aiosmtpd on purpose (README, "The SMTP ingress"):
a DATA line may be up to DATA_LINE_LIMIT octets (aiosmtpd refuses more than
1,001), and the refusal of a longer one says what was wrong.

It overrides private parts of aiosmtpd (smtp_DATA's helpers, _getaddr, the
timer), so pyproject.toml bounds aiosmtpd to the versions tested, and
check_aiosmtpd() stops the ingress at start if a name it relies on is gone.
The tests run it side by side with the installed aiosmtpd.

It knows nothing of Django: bench/bare_smtpd.py serves it with a handler that
discards, to show what storing costs on top of the protocol.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import re
from collections.abc import Callable
from email._header_value_parser import get_addr_spec, get_angle_addr
from email.errors import HeaderParseError
from typing import Any, TypeVar

import aiosmtpd
from aiosmtpd.smtp import MISSING, SMTP, syntax

from ingress import smtpdata

_HOOK_PREFIXES = ("smtp_", "auth_", "handle_")

# "<" dot-atom "@" a host name ">", then optional whitespace and parameters.
# A comment, a quoted local part, a source route, an address literal or any
# non-ASCII character is left to the full parser.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_PLAIN_PATH = re.compile(
    rf"<({_ATEXT}(?:\.{_ATEXT})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)>[ \t]*([^ \t(].*)?\Z",
    re.DOTALL,
)


# The longest DATA line accepted, CRLF and a transparency dot included.
# RFC 5321 4.5.3.1.6 sets 1,000 octets, but 4.5.3.1 asks receivers not to
# refuse more where they can: one-line HTML from mail clients and bulk
# mailers runs to tens of kilobytes. A bare LF or CR does not end a line (only
# CRLF does), so an LF-only message counts as one line. The SIZE limit
# applies as ever.
DATA_LINE_LIMIT = 1024 * 1024

# The replies to a body over the limits: aiosmtpd's for the size (the
# protocol of ingress.smtp adds its enhanced code), and for a line too long,
# one that tells the sender what to fix.
_REFUSED = {
    smtpdata.Outcome.TOO_LONG: (
        f"500 5.6.0 Line too long: more than {DATA_LINE_LIMIT} octets without a CRLF "
        "(a bare LF or CR does not end a line)"
    ),
    smtpdata.Outcome.TOO_MUCH: "552 Error: Too much mail data",
}

# What of aiosmtpd.smtp.SMTP this module and ingress.smtp call or override,
# beyond its documented API: methods of the class, and attributes its
# constructor sets.
_PRIVATE_METHODS = (
    "_getaddr",
    "_reset_timeout",
    "_timeout_cb",
    "_set_post_data_state",
    "_call_handler_hook",
    "_cb_client_connected",
    "_authenticate",
    "check_helo_needed",
    "check_auth_needed",
    "auth_PLAIN",
    "auth_LOGIN",
    "smtp_DATA",
)
_PRIVATE_ATTRIBUTES = ("_timeout_handle", "_timeout_duration", "_smtp_methods", "_handle_hooks")
SUPPORTED = "aiosmtpd>=1.4.6,<1.5"


class UnsupportedAiosmtpd(RuntimeError):
    pass


def check_aiosmtpd(smtp_class: type = SMTP) -> None:
    """Raise UnsupportedAiosmtpd, naming what is missing, if the installed aiosmtpd
    lacks a private name this protocol relies on: better a clear stop at
    start than every DATA answered 451."""
    missing = [name for name in _PRIVATE_METHODS if not callable(getattr(smtp_class, name, None))]
    loop = asyncio.new_event_loop()
    try:
        probe = smtp_class(object(), loop=loop)
        missing += [name for name in _PRIVATE_ATTRIBUTES if not hasattr(probe, name)]
    except Exception as error:
        missing.append(f"a constructor that takes (handler, loop=...) ({error})")
    finally:
        loop.close()
    if missing:
        raise UnsupportedAiosmtpd(
            f"aiosmtpd {aiosmtpd.__version__} lacks {', '.join(missing)}, which "
            f"ingress/protocol.py relies on; install {SUPPORTED} (pyproject.toml)"
        )


@functools.cache
def _hook_names(cls: type) -> tuple[str, ...]:
    return tuple(sorted(name for name in dir(cls) if name.startswith(_HOOK_PREFIXES)))


class HooksOnlyDir:
    """dir() lists only the protocol's and handler's hook methods.

    aiosmtpd's SMTP constructor finds the smtp_*, auth_* and handle_* methods
    with dir() and inspect.getmembers() of the protocol and of the handler, on
    every connection; getmembers fetches every attribute (properties run) and
    sorts them. That was a tenth of an ingress process's CPU. The names are a
    class's own, so they are listed once per class.
    """

    def __dir__(self) -> list[str]:
        return list(_hook_names(type(self)))


F = TypeVar("F", bound=Callable[..., Any])


def signature_once(hook: F) -> F:
    """Keep a hook's signature on it, as inspect allows (``__signature__``).

    aiosmtpd's SMTP constructor calls inspect.signature() on the handler's
    handle_EHLO on every connection, to tell its deprecated 4-argument form
    from the 5-argument one, and inspect builds the signature anew each time
    (a Parameter per argument): 28 us of a session's CPU, 7 us once kept.
    """
    hook.__signature__ = inspect.signature(hook)  # type: ignore[attr-defined]
    return hook


class LeanSMTP(HooksOnlyDir, SMTP):
    """aiosmtpd's SMTP with the per-session costs above cut."""

    data_line_limit = DATA_LINE_LIMIT

    @syntax("DATA")  # as aiosmtpd's: HELP lists DATA and HELP DATA answers
    async def smtp_DATA(self, arg: str) -> None:
        # aiosmtpd's own, with the body read by ingress.smtpdata rather than
        # one awaited line at a time; the replies are aiosmtpd's. The content
        # stays bytes, as aiosmtpd leaves it unless decode_data is set (never here).
        if await self.check_helo_needed():
            return
        if await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        try:
            outcome, content = await smtpdata.read_data(
                self._reader, size_limit=self.data_size_limit, line_limit=self.data_line_limit
            )
        except asyncio.CancelledError:
            # The connection went away during DATA.
            self._writer.close()
            raise
        if outcome is not smtpdata.Outcome.OK:
            await self.push(_REFUSED[outcome])
            self._set_post_data_state()
            return
        self.envelope.content = self.envelope.original_content = content
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()
        await self.push("250 OK" if status is MISSING else status)

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        # aiosmtpd's own, less the typing.Protocol class it defines on every
        # call (for MAIL and every RCPT): that definition cost more CPU than
        # parsing the address. A plain <local@domain>, as nearly every
        # sender writes it, is read by a regular expression that gives what
        # the email package's parser gives (tested); anything else goes to it.
        if not arg:
            return "", ""
        plain = _PLAIN_PATH.match(arg)
        if plain is not None:
            addr, rest = plain.group(1), plain.group(2) or ""
        else:
            try:
                if arg.lstrip().startswith("<"):
                    address, rest = get_angle_addr(arg)
                else:
                    address, rest = get_addr_spec(arg)
            except HeaderParseError:
                return None, None
            addr = address.addr_spec
        if self.local_part_limit and len(addr.rpartition("@")[0]) > self.local_part_limit:
            return None, None
        return addr, rest

    def _reset_timeout(self, duration: float | None = None) -> None:
        # aiosmtpd cancels its timer and schedules a new one on every command.
        # Here the deadline moves and one timer follows it: when the timer
        # comes due early, it waits again for what is left.
        loop = self.loop
        self._deadline = loop.time() + (duration or self._timeout_duration)
        handle = self._timeout_handle
        if handle is None or handle.cancelled() or handle.when() > self._deadline:
            if handle is not None:
                handle.cancel()
            self._timeout_handle = loop.call_at(self._deadline, self._on_deadline)

    def _on_deadline(self) -> None:
        if self.loop.time() < self._deadline:
            self._timeout_handle = self.loop.call_at(self._deadline, self._on_deadline)
        elif self.transport is not None:
            self._timeout_cb()
