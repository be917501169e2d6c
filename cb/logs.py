"""Logging set-up: RUST_LOG-style filters, readable or JSON lines, secret redaction.

``RUST_LOG`` keeps working as the guide shows it: ``debug`` sets the level of every
logger; ``circuit_breaker=info,circuit_breaker::api=debug`` sets the level per module,
``::`` mapping onto our dotted logger names (``circuit_breaker.api``).
"""

from __future__ import annotations

import contextvars
import functools
import json
import logging
import os
import re
import sys
import time

ROOT = "circuit_breaker"

LEVELS = {
    "trace": logging.DEBUG,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "off": logging.CRITICAL + 10,
}

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)


def get_logger(module: str) -> logging.Logger:
    """The logger for one part of the server, e.g. ``get_logger("api")``."""
    return logging.getLogger(f"{ROOT}.{module}" if module else ROOT)


def parse_filter(spec: str, level_override: str | None = None) -> tuple[int, dict[str, int]]:
    """Turn a RUST_LOG string into (default level, {logger name: level})."""
    default = logging.INFO
    per_module: dict[str, int] = {}
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        module, _, level = part.rpartition("=")
        if level.lower() not in LEVELS:
            raise ValueError(
                f"RUST_LOG={spec!r} is invalid: unknown level {level!r} (use trace, debug, info, warn, error, off)"
            )
        if module:
            per_module[module.replace("::", ".")] = LEVELS[level.lower()]
        else:
            default = LEVELS[level.lower()]
    if level_override:
        if level_override.lower() not in LEVELS:
            raise ValueError(f"LOG_LEVEL={level_override!r} is invalid: use trace, debug, info, warn, error, off")
        default = LEVELS[level_override.lower()]
    return default, per_module


_PLAIN = (int, float, bool, type(None))


class Redactor(logging.Filter):
    """Replaces every known secret in a record's final message with ``[REDACTED]``.

    Short texts are remembered with their redaction until the secrets or patterns change:
    the access line repeats the same method, path, client, model and provider on every request."""

    REMEMBERED = 2048
    SHORT = 256

    def __init__(self) -> None:
        super().__init__()
        self._done: dict[str, str] = {}
        self._secrets: set[str] = set()
        self._known: re.Pattern | None = None  # every known secret, longest first, in one pattern
        self._patterns: list[re.Pattern] = []
        self._screens: list[str] | None = []  # None once a pattern has no screens: every text is searched
        self._screen: re.Pattern | None = None  # matches wherever any pattern might: most text skips them

    def add(self, *secrets: str | None) -> None:
        new = {s for s in secrets if s and len(s) >= 4} - self._secrets
        if new:  # compiled once per new secret, not per log record
            self._secrets |= new
            self._known = re.compile("|".join(re.escape(s) for s in sorted(self._secrets, key=len, reverse=True)))
            self._done = {}

    def add_pattern(self, pattern: str | re.Pattern, screens: tuple[str, ...] = ()) -> None:
        """Also redact whatever matches ``pattern`` (only its ``secret`` group, if it has one).
        ``screens``: substrings one of which every match contains (any case); text holding none
        of them is not searched. A pattern without screens is tried on every text."""
        compiled = re.compile(pattern)
        if compiled in self._patterns:
            return
        self._patterns.append(compiled)
        if not screens:
            self._screens = None
        elif self._screens is not None:
            self._screens.extend(screens)
        self._screen = re.compile("|".join(map(re.escape, self._screens)), re.IGNORECASE) if self._screens else None
        self._done = {}

    def redact(self, text: str) -> str:
        remembered = self._done  # a redaction made while a secret is added stays in the old dict
        done = remembered.get(text)
        if done is not None:
            return done
        done = self._redact(text)
        if len(text) <= self.SHORT:
            if len(remembered) >= self.REMEMBERED:
                remembered.clear()
            remembered[text] = done
        return done

    def _redact(self, text: str) -> str:
        if self._known is not None:
            text = self._known.sub("[REDACTED]", text)
        if self._patterns and (self._screen is None or self._screen.search(text)):
            for pattern in self._patterns:
                text = pattern.sub(_redact_match, text)
        return text

    def redact_fields(self, fields: dict) -> dict:
        return {k: v if isinstance(v, _PLAIN) else self.redact(str(v)) for k, v in fields.items()}

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
            record.exc_text = None
        record.msg, record.args = self.redact(message), ()
        fields = getattr(record, "fields", None)
        if fields:
            record.fields = self.redact_fields(fields)
        return True


def _redact_match(match: re.Match) -> str:
    if "secret" not in match.re.groupindex:
        return "[REDACTED]"
    start, end = match.span("secret")
    return match.string[match.start() : start] + "[REDACTED]" + match.string[end : match.end()]


redactor = Redactor()


class _LineFormatter(logging.Formatter):
    """A record's line is ``line(...)`` of its parts, which :func:`info_line` calls without a record."""

    def format(self, record: logging.LogRecord) -> str:
        return self.line(
            record.created,
            record.levelname,
            record.name,
            record.getMessage(),
            getattr(record, "request_id", None),
            getattr(record, "fields", None),
        )

    @staticmethod
    def line(created: float, level: str, name: str, message: str, rid: str | None, fields: dict | None) -> str:
        raise NotImplementedError


@functools.lru_cache(maxsize=4)
def _utc_second(second: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))


@functools.lru_cache(maxsize=4)
def _local_second(second: int) -> str:
    return time.strftime("%H:%M:%S", time.localtime(second))


_pid = os.getpid()  # this worker's, asked once (and again in a forked child)


def process_id() -> int:
    """This process's id, kept rather than asked of the kernel on every line or metric write."""
    return _pid


def _note_fork() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_note_fork)


class JsonFormatter(_LineFormatter):
    """One JSON object per line, for log collectors."""

    @staticmethod
    def line(created: float, level: str, name: str, message: str, rid: str | None, fields: dict | None) -> str:
        entry = {
            "ts": _utc_second(int(created)) + f".{int(created % 1 * 1000):03d}Z",
            "level": level.lower(),
            "logger": name,
            "message": message,
            "pid": _pid,  # which gunicorn worker (record.process is not collected: see setup_logging)
        }
        if rid:
            entry["request_id"] = rid
        entry.update(fields or {})
        return json.dumps(entry, default=str)


class TextFormatter(_LineFormatter):
    """Readable lines for a terminal."""

    @staticmethod
    def line(created: float, level: str, name: str, message: str, rid: str | None, fields: dict | None) -> str:
        ts = _local_second(int(created))
        tail = " ".join([f"{k}={v}" for k, v in fields.items()]) if fields else ""
        return " ".join([p for p in (ts, f"{level:<7}", name, f"[{rid}]" if rid else "", message, tail) if p])


_handler: logging.StreamHandler | None = None  # the one setup_logging installed


def info_line(logger: logging.Logger, message: str, rid: str | None, fields: dict) -> None:
    """``logger.info(message)`` with a request id and fields, for a line written on every request.

    When our handler is the only one the line reaches (the server's case), the line is
    redacted, formatted and written straight to it: the same text, without a LogRecord, the
    handler's filters and the logging module's dispatch, which cost several times the line
    itself. Anything else (another handler, a filter on the way) takes the logging path."""
    if not logger.isEnabledFor(logging.INFO):
        return
    handler = _handler
    if handler is None or len(handler.filters) != 2 or not _only_handler(logger, handler):
        logger.info(message, extra={"request_id": rid, "fields": fields})
        return
    line = handler.formatter.line(
        time.time(),
        "INFO",
        logger.name,
        redactor.redact(message),
        rid or request_id.get(),
        redactor.redact_fields(fields),
    )
    try:
        with handler.lock:
            handler.stream.write(line + handler.terminator)
            handler.stream.flush()
    except Exception:  # the logging path reports it its own way
        logger.info(message, extra={"request_id": rid, "fields": fields})


def _only_handler(logger: logging.Logger, handler: logging.Handler) -> bool:
    """Whether ``handler`` is the only handler records of ``logger`` reach, with no logger filters."""
    found = False
    node: logging.Logger | None = logger
    while node is not None:
        if node.filters or node.disabled:
            return False
        for h in node.handlers:
            if h is not handler or found or h.level > logging.INFO:
                return False
            found = True
        node = node.parent if node.propagate else None
    return found


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "request_id", None):
            record.request_id = request_id.get()
        return True


def setup_logging(rust_log: str, log_level: str | None, json_lines: bool, secrets: list[str]) -> None:
    """Configure the root logger once per process."""
    # Our formatters use none of these record attributes; computing them costs a stack walk and,
    # under gevent, a dummy Thread object for every greenlet that logs (Python's documented
    # logging optimisations).
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    default, per_module = parse_filter(rust_log, log_level)
    redactor.add(*secrets)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if json_lines else TextFormatter())
    handler.addFilter(_RequestIdFilter())
    handler.addFilter(redactor)
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_circuit_breaker", False):
            root.removeHandler(old)
    handler._circuit_breaker = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    global _handler
    _handler = handler
    root.setLevel(default)
    logging.getLogger(ROOT).setLevel(per_module.pop(ROOT, default))
    for name, level in per_module.items():
        logging.getLogger(name).setLevel(level)
    for noisy in ("urllib3", "nats", "asyncio"):
        if noisy not in per_module:
            logging.getLogger(noisy).setLevel(max(default, logging.WARNING))
