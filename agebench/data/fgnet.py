"""What the `reference` stage will read from the optional FG-NET folder, as a small DVC-trackable record.

FG-NET is optional (the `real` row names it skipped when absent), so the folder cannot be a DVC dep:
DVC refuses to run a stage whose dep is missing. Instead the `fgnet` stage (always run, milliseconds)
writes this record to `data/fgnet.json`, and `reference` depends on that file: the record changes, and
`reference` reruns, exactly when the folder's contents, its presence or `evaluate.fgnet_dir` change.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agebench.data.download import folder_digest


def fgnet_manifest(folder: Path | None, configured: str) -> dict[str, Any]:
    """A record of the FG-NET folder: {"fgnet_dir", "status", "files", "sha256"}.

    Args:
        folder: the resolved folder, or None when `evaluate.fgnet_dir` is "" (not configured).
        configured: `evaluate.fgnet_dir` as written in params.yaml (kept, not the resolved absolute
            path, so the record does not change when the checkout moves).
    Returns:
        status "present" with the file count and `agebench.data.download.folder_digest`'s sha256 of its
        regular files (names and contents), or "absent" / "not configured" with neither.
    """
    if folder is None:
        return {"fgnet_dir": configured, "status": "not configured", "files": 0, "sha256": None}
    if not folder.is_dir():
        return {"fgnet_dir": configured, "status": "absent", "files": 0, "sha256": None}
    files, digest = folder_digest(folder)
    return {"fgnet_dir": configured, "status": "present", "files": files, "sha256": digest}
