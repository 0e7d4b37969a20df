"""Secrets never reach a log line: a logging filter that redacts tokens, tickets and passwords.

uvicorn's access log and its WebSocket lines print the request path *with its query string*, and a
query string may carry a console ticket (``?ticket=``), an old-style ``?token=`` or a form-style
``password=``. :func:`install` attaches :class:`RedactSecrets` to every handler of the root, ``uvicorn``,
``uvicorn.access`` and ``uvicorn.error`` loggers (call it after uvicorn configured its logging), so every
record that reaches a handler is rewritten before it is formatted:

- ``NAME=VALUE`` for query/form parameters named like a secret (token, ticket, password, secret,
  csrf_token, key, passwd) becomes ``NAME=[redacted]``;
- kvmkit's own secrets (``kvk_...`` API/session tokens, ``kvt_...`` console tickets) and
  ``Bearer ...`` credentials are replaced wherever they appear.

kvmkit's own code never logs passwords or tokens in the first place; this is the net under it.
"""

from __future__ import annotations

import logging
import re

_PARAM = re.compile(r"(?i)\b((?:[a-z_]*token|ticket|password|passwd|secret|csrf_token|api_key|key))=([^&\s\"']+)")
_SECRET = re.compile(r"\b(kv[kt])_[A-Za-z0-9_\-]{8,}")
_BEARER = re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/\-]+=*")
LOGGERS = ("", "uvicorn", "uvicorn.access", "uvicorn.error", "kvmkit")


def redact(text: str) -> str:
    text = _PARAM.sub(r"\1=[redacted]", text)
    text = _SECRET.sub(r"\1_[redacted]", text)
    return _BEARER.sub(r"\1 [redacted]", text)


class RedactSecrets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken record: let logging report it as it would
            return True
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:  # the formatter uses exc_text when it is set
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


def install() -> RedactSecrets:
    """Attach the filter to the handlers (and loggers) that exist now; idempotent."""
    filt = next((f for h in logging.getLogger().handlers for f in h.filters if isinstance(f, RedactSecrets)),
                None) or RedactSecrets()
    for name in LOGGERS:
        logger = logging.getLogger(name)
        if filt not in logger.filters:
            logger.addFilter(filt)
        for handler in logger.handlers:
            if filt not in handler.filters:
                handler.addFilter(filt)
    return filt
