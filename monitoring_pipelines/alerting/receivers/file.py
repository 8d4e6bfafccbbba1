"""A JSON-lines file, one line per notification (a report's line carries its figures, summary and
paths): the offline default of ``make demo``."""

import contextlib
import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import ClassVar

from monitoring_pipelines.alerting import types
from monitoring_pipelines.alerting.message import Message
from monitoring_pipelines.alerting.receivers.base import (
    COMMON_KEYS,
    DeliveryError,
    Receiver,
    SpecReader,
    locked_file,
    report_body,
)
from monitoring_pipelines.alerting.types import Notification


@dataclass
class FileReceiver(Receiver):
    """Appends one JSON line per notification to ``path``; the offline default of ``make demo``.

    Each line carries its ``idempotency_key`` and a key is never written twice: before appending,
    under an exclusive lock (between threads and between processes), the file is scanned for the
    key. So a dispatcher killed after writing but before marking the row sent writes nothing the
    second time. A line cut short by a crash is ignored and the next line starts on its own.
    """

    path: str = ""
    # MONITORING_HOME of the policy this receiver comes from (else the settings' one).
    home: Path | None = None
    _index: dict = field(default_factory=dict, init=False, repr=False)

    type: ClassVar[str] = "file"
    spec_keys: ClassVar[frozenset[str]] = COMMON_KEYS | {"path"}
    spec_hints: ClassVar[dict[str, str]] = {}

    @classmethod
    def from_spec(cls, spec: SpecReader, locale: str) -> "FileReceiver":
        receiver = cls(
            name=spec.name, locale=locale, path=spec.string("path", required=True), home=spec.home
        )
        if spec.home is not None:
            home = Path(spec.home).expanduser().resolve()
            # resolve() follows symbolic links and "..", so neither can lead outside.
            if not receiver.target.resolve().is_relative_to(home):
                raise spec.error(
                    "path", f"must stay inside MONITORING_HOME ({home}), got {receiver.path!r}"
                )
        return receiver

    def describe(self) -> str:
        return f"file receiver {self.name!r} at {self.target}"

    @property
    def target(self) -> Path:
        """The JSON-lines file: a relative ``path`` is under ``MONITORING_HOME``, and a path
        without a suffix is a directory holding ``notifications.jsonl``."""
        path = Path(self.path).expanduser()
        if not path.is_absolute():
            home = self.home
            if home is None:
                from monitoring_pipelines.settings import load_settings

                home = load_settings().home
            path = Path(home) / path
        return path if path.suffix else path / "notifications.jsonl"

    def _scan(self, fh) -> set[str]:
        """Keys in the file, read incrementally from where the previous scan stopped."""
        stat = os.fstat(fh.fileno())
        identity = (stat.st_dev, stat.st_ino)
        if self._index.get("identity") != identity or stat.st_size < self._index.get("offset", 0):
            self._index = {"identity": identity, "offset": 0, "keys": set()}
        fh.seek(self._index["offset"])
        data = fh.read()
        # Only complete lines count; a torn last line is re-read (and ignored) next time.
        complete = data[: data.rfind(b"\n") + 1]
        for line in complete.splitlines():
            with contextlib.suppress(ValueError, AttributeError):
                key = json.loads(line).get("idempotency_key")
                if key:
                    self._index["keys"].add(key)
        self._index["offset"] += len(complete)
        return self._index["keys"]

    def send(self, notification: Notification, message: Message) -> None:
        record = {
            "idempotency_key": notification.idempotency_key,
            "fingerprint": notification.fingerprint,
            "receiver": notification.receiver,
            "tenant": notification.tenant,
            "event": notification.event,
            "locale": message.locale,
            "severity": message.severity,
            "title": message.title,
            "text": message.text,
            "next_step": message.next_step,
            "incident": notification.incident,
            "links": notification.links,
            "written_at": datetime.now(UTC).isoformat(),
        }
        if notification.event == types.REPORT:
            del record["incident"]
            record["report"] = report_body(notification.report)
        elif notification.event == types.DIGEST:
            del record["incident"]
            record["digest"] = notification.digest
        line = json.dumps(record, ensure_ascii=False, sort_keys=True).encode() + b"\n"
        target = self.target
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with locked_file(target) as fh:
                if notification.idempotency_key in self._scan(fh):
                    return
                fh.seek(0, os.SEEK_END)
                if fh.tell() > 0:
                    fh.seek(-1, os.SEEK_END)
                    if fh.read(1) != b"\n":
                        line = b"\n" + line  # after a torn line, start a fresh one
                fh.seek(0, os.SEEK_END)
                fh.write(line)
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            raise DeliveryError(
                f"cannot write {target.name} ({type(exc).__name__}: {exc.strerror})",
                retryable=True,
            ) from None
