"""Files the user names: read only from regular files and within a size limit, written only onto
regular files, atomically, leaving no temporary file behind.

A device (``/dev/zero`` reads forever), a FIFO (blocks until a writer comes), a
socket or a folder is refused with one line naming the key that pointed at it,
before anything is read or written. Reads stop one byte past the limit (the
limits are stated in ``docs/artifacts.md``); a parser that recurses past
Python's depth (YAML or JSON nested thousands deep) or meets an integer longer
than Python converts is refused the same way.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import io
import json
import os
import stat
import tempfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from ditmeter.errors import ConfigError

MIB = 2**20
#: YAML the user names or the tool wrote: calibration files, measurement files, run manifests.
TEXT_LIMIT_BYTES = 64 * MIB
#: A torch.profiler Chrome trace, after gzip decompression (a whole 720p video's trace is about 2 GiB).
TRACE_LIMIT_BYTES = 8 * 2**30
#: A Parquet table of a run folder.
TABLE_LIMIT_BYTES = 4 * 2**30
#: An nccl-tests output (``device.fabric=<file>``): one sweep's table is a few kB.
NCCL_TESTS_LIMIT_BYTES = MIB

_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def _reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def regular_file(path: Path, field: str, limit: int) -> os.stat_result:
    """``path``'s status when it is a regular file of at most ``limit`` bytes; else a one-line
    error naming ``field`` that says what the path is."""
    try:
        info = path.stat()
    except FileNotFoundError:
        what = "a symbolic link to nothing" if os.path.islink(path) else "no such file"
        raise ConfigError(field, f"{what}: {path}") from None
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
        reason = _reason(exc) if isinstance(exc, OSError) else "not a path"
        raise ConfigError(field, f"cannot read {str(path)[:200]} ({reason})") from None
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(field, f"{path} is {_kind(info.st_mode)}, not a regular file")
    if info.st_size > limit:
        raise ConfigError(field, f"{path} is {info.st_size:,} bytes; at most {limit:,} are read")
    return info


def read_bytes(path: Path, field: str, limit: int) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes (checked again on the open file, which
    is opened without blocking so a FIFO swapped in after the check cannot hang the read)."""
    regular_file(path, field, limit)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise ConfigError(field, f"cannot read {path} ({_reason(exc)})") from None
    with os.fdopen(fd, "rb") as f:
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise ConfigError(field, f"{path} is {_kind(os.fstat(fd).st_mode)}, not a regular file")
            data = f.read(limit + 1)
        except OSError as exc:
            raise ConfigError(field, f"cannot read {path} ({_reason(exc)})") from None
    if len(data) > limit:
        raise ConfigError(field, f"{path} grew past {limit:,} bytes while read; at most {limit:,} are read")
    return data


def read_text(path: Path, field: str, limit: int = TEXT_LIMIT_BYTES) -> str:
    """A regular file's UTF-8 text, at most ``limit`` bytes."""
    try:
        return read_bytes(path, field, limit).decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(field, f"{path} is not UTF-8 text") from None


def gunzip(data: bytes, path: Path, field: str, limit: int) -> bytes:
    """``data`` decompressed when it starts with gzip's magic bytes, at most ``limit`` bytes out."""
    if data[:2] != b"\x1f\x8b":
        return data
    try:
        out = gzip.GzipFile(fileobj=io.BytesIO(data)).read(limit + 1)
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        raise ConfigError(field, f"cannot decompress {path} ({exc})") from None
    if len(out) > limit:
        raise ConfigError(field, f"{path} decompresses to more than {limit:,} bytes; at most that is read")
    return out


def _parsed(parse: Any, text: str | bytes, path: Path, field: str) -> Any:
    try:
        return parse(text)
    except RecursionError:
        raise ConfigError(field, f"{path} is nested too deeply to read") from None
    except MemoryError:
        raise ConfigError(field, f"{path} does not fit in memory once parsed") from None
    except (yaml.YAMLError, ValueError) as exc:  # ValueError: bad JSON, an over-long integer
        if "maximum nesting depth" in str(exc):  # libyaml's own depth limit, not a RecursionError
            raise ConfigError(field, f"{path} is nested too deeply to read") from None
        raise ConfigError(field, f"cannot read {path} ({' '.join(str(exc).split())[:200]})") from None


#: ``yaml.safe_load``'s loader on libyaml's parser where PyYAML has it (the same resolvers and
#: constructors, several times faster on the measurement files ``validate`` reads).
SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _safe_load(text: str) -> Any:
    return yaml.load(text, Loader=SAFE_LOADER)  # a SafeLoader: no Python objects


def load_yaml(path: Path, field: str, limit: int = TEXT_LIMIT_BYTES) -> Any:
    """A regular YAML file of at most ``limit`` bytes, parsed safely."""
    return _parsed(_safe_load, read_text(path, field, limit), path, field)


#: Peak memory of reading JSON over its size: measured here, ``json.load`` of a 58.7 MB
#: torch.profiler-like trace (200,000 kernel events with their args) peaks at 280 MB resident
#: (4.8x), rounded up. A file larger than the memory free over this factor is refused before it is
#: read, not left to exhaust the machine.
JSON_MEMORY_FACTOR = 5
#: Below this size the check is skipped (every file but a trace).
_CHECKED_ABOVE_BYTES = 64 * 2**20


def available_memory_bytes() -> int | None:
    """The memory the kernel says is available for a new allocation (``MemAvailable``); None where
    it does not say (not Linux)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _check_json_fits(size: int, free: int | None, path: Path, field: str) -> None:
    """``size`` bytes of JSON against the memory ``free`` before any of it was read."""
    if size <= _CHECKED_ABOVE_BYTES:
        return
    if free is not None and size * JSON_MEMORY_FACTOR > free:
        raise ConfigError(
            field,
            f"{path} is {size / 2**30:.2f} GiB of JSON; reading it takes about {JSON_MEMORY_FACTOR}x that "
            f"({size * JSON_MEMORY_FACTOR / 2**30:.1f} GiB), more than this machine has free "
            f"({free / 2**30:.1f} GiB); record fewer steps or a smaller model",
        )


def load_json(path: Path, field: str, limit: int = TEXT_LIMIT_BYTES) -> Any:
    """A regular JSON file (gzip-compressed or not) of at most ``limit`` bytes, parsed. One that this
    machine's memory cannot hold (a trace, whose limit is large) is refused as bad input, before it
    is read where its size says so (:data:`JSON_MEMORY_FACTOR`)."""
    try:
        free = available_memory_bytes() if limit > _CHECKED_ABOVE_BYTES else None  # read once, first
        _check_json_fits(regular_file(path, field, limit).st_size, free, path, field)
        # decompressed no further than what the memory free can parse (a gzip bomb stops there)
        out = limit if free is None else max(_CHECKED_ABOVE_BYTES, min(limit, free // JSON_MEMORY_FACTOR))
        raw = gunzip(read_bytes(path, field, limit), path, field, out)
        return _parsed(json.loads, raw, path, field)
    except MemoryError:
        why = "is more than this machine's memory can read and parse; record fewer steps or a smaller model"
        raise ConfigError(field, f"{path} {why}") from None


#: Linux's kernel file systems: the permission check admits root there, but no file can be made
#: (a statvfs test would also catch FUSE and sandbox file systems that report no blocks yet hold files).
PSEUDO_FILE_SYSTEMS = (Path("/proc"), Path("/sys"))


def check_output_file(path: Path, field: str, ours: Callable[[Path], bool] | None = None) -> Path:
    """Where a file the user names will be written: refused unless it is new, or a regular file that
    ``ours`` says this tool wrote (never over what it did not create), in a folder that is (or can
    be made) writable. A symbolic link is refused: writing would replace what it points to, or
    create a file elsewhere. Returns the path to write."""
    if os.path.islink(path):
        raise ConfigError(field, f"{path} is a symbolic link; give the path of a regular file")
    target = Path(os.path.realpath(path))
    if len(os.fsencode(target.name)) > 255 or len(os.fsencode(target)) >= 4096:
        raise ConfigError(field, f"{str(path)[:80]}… is longer than the file system allows")
    try:
        info = target.stat()
    except FileNotFoundError:
        info = None
    except OSError as exc:
        raise ConfigError(field, f"cannot write {path} ({_reason(exc)})") from None
    if info is not None and not stat.S_ISREG(info.st_mode):
        raise ConfigError(field, f"{path} is {_kind(info.st_mode)}; give the path of a regular file")
    if info is not None and (ours is None or not ours(target)):
        raise ConfigError(field, f"{path} exists and ditmeter did not write it; give a new path")
    folder = next((p for p in target.parents if os.path.lexists(p)), Path(target.root))
    if not folder.is_dir():
        raise ConfigError(field, f"{path} is under {folder}, which is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(field, f"cannot write under {folder} (permission denied)")
    if any(folder == p or p in folder.parents for p in PSEUDO_FILE_SYSTEMS):  # now, not after the work
        raise ConfigError(
            field, f"cannot write under {folder} (a kernel's file system, which holds no files)"
        )
    return target


def write_atomically(path: Path, text: str, field: str, ours: Callable[[Path], bool] | None = None) -> Path:
    """Write ``text`` (UTF-8) to ``path`` through a temporary file beside it and one rename, after
    :func:`check_output_file`; on any failure the temporary file and the folders made for it are
    removed and the error names ``field``. Returns the path written."""
    target = check_output_file(path, field, ours)
    missing = [p for p in target.parents if not p.exists()]  # deepest first
    tmp: str | None = None
    written = False
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        check_output_file(target, field, ours)  # still ours (or none) just before the rename
        os.replace(tmp, target)
        written = True
    except OSError as exc:
        reason = "no space left on the device" if exc.errno == errno.ENOSPC else _reason(exc)
        raise ConfigError(field, f"cannot write {path} ({reason})") from None
    finally:
        if not written:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
            remove_empty(missing)
    return target


def remove_empty(folders: list[Path]) -> None:
    """Remove the folders given (deepest first) that exist and are empty: the ones a failed write made."""
    for folder in folders:
        with contextlib.suppress(OSError):
            folder.rmdir()  # fails, and changes nothing, when the folder holds something
