"""Bookkeeping of what an ingestion read, kept and dropped.

Every loader fills one :class:`IngestReport`; it is logged, stored as JSON
next to the tensor (the manifest) and copied into the tensor's attributes.
"""

from __future__ import annotations

import datetime as _dt
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import xarray as xr

from .._io import sha256_file, write_json
from .._logging import get_logger

log = get_logger("ingest")

MAX_EXAMPLES_PER_REASON = 5


@dataclass
class IngestReport:
    """Counts and reasons collected while one loader reads its inputs.

    Attributes
    ----------
    loader
        Registered name of the loader.
    dataset
        Name given to the resulting tensor.
    files
        One entry per input file: path, SHA-256, rows read and rows kept.
    dropped
        Number of dropped rows per reason.
    dropped_cells
        Number of dropped tensor cells per reason (a row may hold many cells).
    notes
        Facts about the data the user should know (for example an inferred
        example count), in plain sentences.
    """

    loader: str
    dataset: str
    options: dict[str, Any] = field(default_factory=dict)
    files: list[dict[str, Any]] = field(default_factory=list)
    rows_read: int = 0
    rows_kept: int = 0
    cells_read: int = 0
    cells_kept: int = 0
    dropped: Counter = field(default_factory=Counter)
    dropped_cells: Counter = field(default_factory=Counter)
    drop_examples: dict[str, list[str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    duplicates_merged: int = 0
    conflicts: int = 0

    def add_file(self, path: str | Path, *, rows_read: int, rows_kept: int) -> None:
        """Record one input file with its hash and row counts."""
        path = Path(path)
        self.files.append(
            {
                "path": str(path),
                "sha256": sha256_file(path) if path.is_file() else None,
                "rows_read": int(rows_read),
                "rows_kept": int(rows_kept),
            }
        )
        self.rows_read += int(rows_read)
        self.rows_kept += int(rows_kept)

    def add_metadata_file(self, path: str | Path) -> None:
        """Record a file that was read for metadata only (no data rows), with its hash."""
        path = Path(path)
        self.files.append({"path": str(path), "sha256": sha256_file(path) if path.is_file() else None, "role": "metadata"})

    def drop(self, reason: str, *, rows: int = 1, cells: int = 0, where: str | None = None) -> None:
        """Count ``rows`` dropped rows (and ``cells`` dropped cells) for ``reason``."""
        if rows:
            self.dropped[reason] += int(rows)
        if cells:
            self.dropped_cells[reason] += int(cells)
        if where is not None:
            examples = self.drop_examples.setdefault(reason, [])
            if len(examples) < MAX_EXAMPLES_PER_REASON:
                examples.append(where)

    def note(self, text: str) -> None:
        """Record a fact about the data and log it as a warning."""
        self.notes.append(text)
        log.warning("%s: %s", self.dataset, text)

    def finish(self, ds: xr.Dataset) -> dict[str, Any]:
        """Attach the report to ``ds`` (in place) and return it as a dictionary."""
        self.duplicates_merged += int(ds.attrs.get("duplicates_merged", 0))
        self.conflicts += int(ds.attrs.get("conflicts", 0))
        observed = int(ds["observed"].sum())
        manifest = self.to_dict()
        manifest["cells"] = {
            "total": int(ds["observed"].size),
            "observed": observed,
            "missing": int(ds["observed"].size) - observed,
        }
        manifest["sizes"] = {str(k): int(v) for k, v in ds.sizes.items()}
        ds.attrs["manifest"] = manifest
        self.log_summary(manifest)
        return manifest

    def to_dict(self) -> dict[str, Any]:
        """Return the report as a JSON-ready dictionary."""
        from .. import __version__

        return {
            "loader": self.loader,
            "dataset": self.dataset,
            "robustscope_version": __version__,
            "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in self.options.items()},
            "rows": {
                "read": self.rows_read,
                "kept": self.rows_kept,
                "dropped": int(sum(self.dropped.values())),
            },
            "dropped_rows_by_reason": dict(self.dropped),
            "cells_read": self.cells_read,
            "cells_kept": self.cells_kept,
            "dropped_cells_by_reason": dict(self.dropped_cells),
            "drop_examples": self.drop_examples,
            "duplicates_merged": self.duplicates_merged,
            "conflicts": self.conflicts,
            "notes": list(self.notes),
            "files": self.files,
        }

    def log_summary(self, manifest: dict[str, Any]) -> None:
        """Log rows and cells read, kept and dropped with reasons."""
        rows = manifest["rows"]
        log.info(
            "%s: read %d rows from %d files, kept %d, dropped %d",
            self.dataset,
            rows["read"],
            len(self.files),
            rows["kept"],
            rows["dropped"],
        )
        for reason, count in sorted(self.dropped.items()):
            log.info("%s: dropped %d rows: %s", self.dataset, count, reason)
        for reason, count in sorted(self.dropped_cells.items()):
            log.info("%s: dropped %d cells: %s", self.dataset, count, reason)
        cells = manifest.get("cells")
        if cells:
            log.info("%s: tensor has %d observed and %d missing cells", self.dataset, cells["observed"], cells["missing"])


def write_manifest(manifest: dict[str, Any], path: str | Path) -> Path:
    """Write the manifest JSON atomically."""
    return write_json(path, manifest)


def manifest_path(tensor_path: str | Path) -> Path:
    """Return the manifest path that belongs to a tensor file (``X.nc`` -> ``X.manifest.json``)."""
    tensor_path = Path(tensor_path)
    return tensor_path.with_name(tensor_path.stem + ".manifest.json")
