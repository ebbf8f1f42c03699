"""Run folders that appear only when complete, never collide, and leave nothing when a run fails.

A run reserves its id by creating a hidden staging folder ``.<run_id>.partial``
beside its final place, before any long work (a second run with the same id
fails at once); everything is written into it; ``run.json`` (the manifest: what
ran and when) is written last, and one rename publishes the folder. The run
folder is the one atomic unit, so the files inside are written directly.

A failed run (an error, Ctrl-C or SIGTERM) removes its staging folder and the
folders it created for ``output_root``; a staging folder whose run was killed
(SIGKILL) is removed by the next run under the same ``output_root`` once it is a
day old, and only when it holds the marker file the reservation wrote (a
``.*.partial`` folder ditmeter did not make is never touched).

Layout: ``<output_root>/<run_id>/run.json`` and
``<output_root>/<run_id>/static_analysis/<family slug>/`` with the artifacts
(``static_analysis/wan2_1/`` for Wan2.1).
"""

from __future__ import annotations

import errno
import json
import os
import re
import secrets
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ditmeter.errors import ConfigError
from ditmeter.files import load_json, remove_empty

#: The folder of a run's artifacts, under which each family has its own (``wan2_1``).
STATIC = "static_analysis"
#: The manifest at the top of every published run folder.
MANIFEST = "run.json"
STAGING_SUFFIX = ".partial"
#: Written into a staging folder at its reservation: stale-staging cleanup removes only folders with it.
STAGING_MARKER = ".ditmeter-staging"
#: Room a run folder needs below ``output_root`` (the run id, staging name, artifact folders and file).
_RUN_PATH_BYTES = 600
_PATH_MAX = 4096
#: A staging folder this old belongs to a run that was killed.
STALE_AFTER_S = 24 * 3600
#: Errors of the file system under ``output_root`` that are the environment's, not ditmeter's.
_ENVIRONMENT = {
    errno.ENOSPC,
    errno.EDQUOT,
    errno.EROFS,
    errno.EACCES,
    errno.EPERM,
    errno.ENAMETOOLONG,
    errno.EIO,
}


def analysis_dir(run: Path, slug: str) -> Path:
    """Where a run's artifacts live: ``<run>/static_analysis/<slug>``."""
    return run / STATIC / slug


def new_run_id(model: str, workload: str) -> str:
    """UTC time + model + workload + random suffix: sortable and unique."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    slug = re.sub(r"[^A-Za-z0-9.-]+", "-", f"{model}_{workload}")[:150]
    return f"{stamp}_{slug}_{secrets.token_hex(3)}"


def ensure_free(output_root: Path, run_id: str) -> None:
    """Refuse a run id that is taken or being written (said before any long work)."""
    taken = output_root / run_id
    if os.path.lexists(taken):
        what = " (a symbolic link to nothing)" if not taken.exists() else ""
        raise ConfigError("run_id", f"{run_id!r} already exists under {output_root}{what}; pick another")
    staging = _staging(output_root, run_id)
    if os.path.lexists(staging):
        raise ConfigError(
            "run_id", f"{run_id!r} is being written by another run (or by a killed one: remove {staging})"
        )


def check_output_root(root: Path) -> None:
    """Refuse an ``output_root`` no run can be written under: one line naming the path."""
    for part in root.parts:
        if len(os.fsencode(part)) > 255:
            raise ConfigError("output_root", f"a folder name is longer than 255 bytes: {part[:40]}…")
    if len(os.fsencode(root.absolute())) > _PATH_MAX - _RUN_PATH_BYTES:
        raise ConfigError(
            "output_root",
            f"{str(root)[:40]}… is {len(os.fsencode(root.absolute())):,} bytes long; the run folder under "
            f"it needs the path to be at most {_PATH_MAX - _RUN_PATH_BYTES:,}",
        )
    existing = next((p for p in (root, *root.parents) if os.path.lexists(p)), Path("."))
    if not existing.is_dir():
        what = "is not a folder" if existing == root else f"is under {existing}, which is not a folder"
        raise ConfigError("output_root", f"{root} {what}")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError("output_root", f"cannot write under {existing} (permission denied)")


def check_run_folder(output_root: Path, run_id: str | None) -> None:
    """Refuse a run folder that cannot be published: an ``output_root`` no run can be written
    under, a ``run_id`` taken or being written (None, a fresh unique id: ``output_root`` only).
    Commands call it before their work, to fail at once; :func:`staged_run` calls it again, since
    the folder can appear meanwhile."""
    check_output_root(output_root)
    if run_id is not None:
        ensure_free(output_root, run_id)


def _staging(output_root: Path, run_id: str) -> Path:
    return output_root / f".{run_id}{STAGING_SUFFIX}"


def _ours(staging: Path) -> bool:
    """A real folder (not a link) holding the marker file a reservation writes."""
    return not staging.is_symlink() and staging.is_dir() and (staging / STAGING_MARKER).is_file()


def remove_stale(output_root: Path, now: float | None = None) -> list[Path]:
    """Remove staging folders of killed runs (older than a day, with ditmeter's marker); the
    folders removed."""
    now = time.time() if now is None else now
    stale = [
        p
        for p in output_root.glob(f".*{STAGING_SUFFIX}")
        if _ours(p) and now - p.lstat().st_mtime > STALE_AFTER_S
    ]
    for p in stale:
        shutil.rmtree(p, ignore_errors=True)
    return stale


def _environment_error(exc: OSError, output_root: Path) -> ConfigError | None:
    if exc.errno in _ENVIRONMENT:
        return ConfigError("output_root", f"cannot write under {output_root}: {exc.strerror or exc}")
    return None


@contextmanager
def staged_run(output_root: Path, run_id: str, slug: str, manifest: dict[str, Any]) -> Iterator[Path]:
    """Reserve ``run_id``, yield the artifact folder inside the staging folder, publish on success.

    ``manifest`` (what ran: command, family, model, workload) is written as
    ``run.json`` with the creation time. File-system failures of the
    environment (disk full, read-only, permission) become one-line errors
    naming ``output_root``; on any error nothing is left behind.
    """
    check_run_folder(output_root, run_id)
    created = [p for p in (output_root, *output_root.parents) if not p.exists()]  # deepest first
    staging, final = _staging(output_root, run_id), output_root / run_id
    reserved = published = False
    try:
        try:
            output_root.mkdir(parents=True, exist_ok=True)
            remove_stale(output_root)
            staging.mkdir()  # the reservation: atomic, so two runs with one id cannot both pass
        except FileExistsError:
            raise ConfigError(
                "run_id", f"{run_id!r} is being written by another run under {output_root}"
            ) from None
        except OSError as exc:  # /proc, a folder that vanished: nothing of the run can be written there
            raise ConfigError(
                "output_root", f"cannot create a run under {output_root}: {exc.strerror or exc}"
            ) from None
        reserved = True
        (staging / STAGING_MARKER).write_text(f"{os.getpid()}\n", encoding="utf-8")
        out = analysis_dir(staging, slug)
        out.mkdir(parents=True)
        yield out
        created_utc = datetime.now(UTC).isoformat(timespec="microseconds")
        body = {
            "run_id": run_id,
            "created_utc": created_utc,
            "artifacts": str(out.relative_to(staging)),
            **manifest,
        }
        (staging / MANIFEST).write_text(json.dumps(body, indent=2) + "\n", encoding="utf-8")
        (staging / STAGING_MARKER).unlink()
        try:
            os.rename(staging, final)  # fails, and changes nothing, if a non-empty final folder exists
        except OSError:
            if os.path.lexists(final):
                raise ConfigError(
                    "run_id", f"{run_id!r} appeared under {output_root} while this run wrote"
                ) from None
            raise
        published = True
    except OSError as exc:
        env = _environment_error(exc, output_root)
        if env is None:
            raise
        raise env from exc
    finally:
        if reserved and staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
        if not published:
            remove_empty(created)  # deepest first; only the ones this run made, only if empty


def list_runs(output_root: Path) -> list[Path]:
    """Published run folders, oldest first by the creation time in their manifests (a folder
    without one, written before manifests existed, by its modification time)."""
    try:
        runs = [p for p in output_root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    except OSError:  # none there, not a folder, a path longer than the OS allows
        return []
    return sorted(runs, key=lambda p: (created(p), p.name))


def read_manifest(run: Path) -> dict[str, Any]:
    """A run's ``run.json`` ({} when it has none or it is not a JSON object)."""
    try:
        data = load_json(run / MANIFEST, "run_id")
    except ConfigError:  # none, not a regular file, too large, not JSON
        return {}
    return data if isinstance(data, dict) else {}


def created(run: Path) -> str:
    """The run's creation time (UTC, ISO 8601) from its manifest, else from the folder."""
    stamp = read_manifest(run).get("created_utc")
    if isinstance(stamp, str):
        return stamp
    return datetime.fromtimestamp(run.stat().st_mtime, UTC).isoformat(timespec="microseconds")


def artifact_dirs(run: Path) -> list[Path]:
    """The family artifact folders of a run (one per run)."""
    static = run / STATIC
    return sorted(p for p in static.iterdir() if p.is_dir()) if static.is_dir() else []
