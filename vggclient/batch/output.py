"""The resumable output file: rows appended to CSV or JSONL, each flushed.

Opening it recovers what a killed run left: a last line cut short is dropped,
and so are rows whose error only said "not now", so a rerun retries them.
`done` is then every image that has its final row; `write` never adds a
second row for one image, whichever engine or thread calls it.
"""

from __future__ import annotations

import csv
import io
import json
import os
import threading
from pathlib import Path
from typing import IO

from vggclient.batch.rows import FIELDS, Row, is_retryable, key


class Output:
    """Appends rows to a CSV or JSONL file, flushing each; knows what is done."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.jsonl = path.suffix.lower() in {".jsonl", ".ndjson"}
        self.done = self._recover()
        self.written = {"ok": 0, "error": 0}
        new = not path.exists() or path.stat().st_size == 0
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[str] = path.open("a", newline="", encoding="utf-8")
        self._csv = csv.DictWriter(self._file, FIELDS) if not self.jsonl else None
        self._lock = threading.Lock()  # the request thread writes unreadable-file rows
        if new and self._csv is not None:
            self._csv.writeheader()
            self._file.flush()

    def _recover(self) -> set[str]:
        """Paths already answered. Drops a last line cut short by a kill, and rows
        whose error was only "not now" (so they are retried), rewriting the file
        atomically when either is found."""
        if not self.path.exists():
            return set()
        data = self.path.read_bytes()
        cut = bool(data) and not data.endswith(b"\n")
        if cut:
            data = data[: data.rfind(b"\n") + 1]
        text = data.decode("utf-8")
        if self.jsonl:
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            rows = list(csv.DictReader(io.StringIO(text)))
        kept = [row for row in rows if not is_retryable(row)]
        if cut or len(kept) < len(rows):
            self._rewrite(kept)
        return {key(row["path"]) for row in kept}

    def _rewrite(self, rows: list[dict[str, object]]) -> None:
        # Temp file + rename: a kill during the rewrite leaves the old file whole.
        temp = self.path.with_name(f".{self.path.name}.tmp")
        with temp.open("w", newline="", encoding="utf-8") as handle:
            if self.jsonl:
                handle.writelines(json.dumps(row) + "\n" for row in rows)
            else:
                writer = csv.DictWriter(handle, FIELDS, extrasaction="ignore")
                writer.writeheader()
                writer.writerows(rows)
        os.replace(temp, self.path)

    def count(self) -> int:
        with self._lock:
            return self.written["ok"] + self.written["error"]

    def write(self, row: Row) -> None:
        values = {name: getattr(row, name) for name in FIELDS}
        with self._lock:
            if row.path in self.done:  # never two rows for one image
                return
            if self._csv is not None:
                self._csv.writerow(values)
            else:
                self._file.write(json.dumps(values) + "\n")
            self._file.flush()
            self.done.add(row.path)
            self.written[row.status] += 1

    def close(self) -> None:
        self._file.close()
