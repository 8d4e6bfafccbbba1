"""One redaction for every text that may carry a receiver's secret.

Every secret the process loads for a receiver (webhook URLs, routing keys, tokens, SMTP
credentials, HMAC secrets) is registered here by :func:`remember` as it is read, and
:func:`redact` replaces every registered value, whatever text carries it: a receiver's 500 body
that echoes the URL's credentials or the routing key, an exception message, a log line. For a URL,
its parts are secrets too (user-info, user name, password, path and query, long path segments and
query values), so an echo of one part is caught as well as the whole. The user-info of any URL,
registered or not, is always replaced.

:func:`remember` also makes every log record of the process redacted from then on (once), so a
debug log of a request line does not print a webhook's path.
"""

import logging
import re
import threading
from collections.abc import Iterable
from urllib.parse import parse_qsl, quote, urlsplit

MASK = "***"
# Shorter values are not redacted: they would mask ordinary words and numbers everywhere.
MIN_LENGTH = 4
# URL path segments and query values at least this long are treated as tokens on their own.
TOKEN_LENGTH = 12

_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@?#]+@")

_lock = threading.Lock()
_secrets: set[str] = set()
_ordered: tuple[str, ...] = ()
_filter_installed = False


def url_parts(value: str) -> list[str]:
    """The secret parts of ``value`` if it is a URL: user-info, user name, password, path and
    query, long path segments and query values (empty for text that is not a URL)."""
    if "://" not in value:
        return []
    try:
        parts = urlsplit(value.strip())
    except ValueError:
        return []
    out = []
    if "@" in parts.netloc:
        userinfo = parts.netloc.rsplit("@", 1)[0]
        out.extend([userinfo, *userinfo.split(":", 1)])
    tail = parts.path + (f"?{parts.query}" if parts.query else "")
    if len(tail) > 1:
        out.append(tail)
    out.extend(s for s in parts.path.split("/") if len(s) >= TOKEN_LENGTH)
    out.extend(v for _, v in parse_qsl(parts.query) if len(v) >= TOKEN_LENGTH)
    return out


def credentials(url: str | None) -> list[str]:
    """The user-info of a URL that is not itself a secret (a plain ``url:`` in the policy)."""
    if not url or "://" not in url:
        return []
    netloc = urlsplit(url).netloc
    if "@" not in netloc:
        return []
    userinfo = netloc.rsplit("@", 1)[0]
    return [userinfo, *userinfo.split(":", 1)]


def remember(*values: str | None) -> None:
    """Register secret values (and, for URLs, their parts) for every later :func:`redact`."""
    global _ordered
    fresh = set()
    for value in values:
        if not value or not isinstance(value, str):
            continue
        for item in (value, value.strip(), *url_parts(value)):
            for form in (item, quote(item, safe=""), quote(item)):
                if len(form) >= MIN_LENGTH:
                    fresh.add(form)
    with _lock:
        if not fresh - _secrets:
            return
        _secrets.update(fresh)
        _ordered = tuple(sorted(_secrets, key=len, reverse=True))
    install_log_filter()


def forget_all() -> None:
    """Drop every registered secret (tests start from a clean process state)."""
    global _ordered
    with _lock:
        _secrets.clear()
        _ordered = ()


def redact(text: str | None, extra: Iterable[str | None] = ()) -> str | None:
    """``text`` with every registered secret, every value in ``extra`` (and their URL parts and
    URL-quoted forms) and the user-info of every URL replaced by ``***``."""
    if not text:
        return text
    secrets = _ordered
    more = [v for v in extra if v]
    if more:
        candidates = set()
        for value in more:
            for item in (value, *url_parts(value)):
                candidates.update({item, quote(item, safe=""), quote(item)})
        secrets = tuple(
            sorted({*secrets, *(c for c in candidates if len(c) >= MIN_LENGTH)}, key=len)
        )[::-1]
    out = str(text)
    for secret in secrets:
        if secret in out:
            out = out.replace(secret, MASK)
    return _USERINFO.sub(rf"\1{MASK}@", out)


def _redact_record(record: logging.LogRecord) -> None:
    try:
        message = record.getMessage()
    except Exception:  # a broken format string: leave it to the handler to report
        return
    safe = redact(message)
    if safe != message:
        record.msg, record.args = safe, None
    if record.exc_info and not record.exc_text:
        record.exc_text = logging.Formatter().formatException(record.exc_info)
    if record.exc_text:
        record.exc_text = redact(record.exc_text)


def install_log_filter() -> None:
    """Redact every log record of the process from now on (once). A record factory rather than a
    filter: filters on a logger do not see its children's records, and a secret may be logged by
    any library a receiver uses (urllib3 logs request lines, with a webhook's path, at DEBUG)."""
    global _filter_installed
    with _lock:
        if _filter_installed:
            return
        _filter_installed = True
    make = logging.getLogRecordFactory()

    def factory(*args, **kwargs) -> logging.LogRecord:
        record = make(*args, **kwargs)
        _redact_record(record)
        return record

    logging.setLogRecordFactory(factory)
