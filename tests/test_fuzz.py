"""Over 1,000 generated bad invocations of every command and of the Python API (fixed seed): each
is exit 2 with one line on stderr (a ``ConfigError`` from the API), never a hang, and writes
nothing, neither under the output root nor anywhere else watched.

Each invocation is a valid base (the tiny workload) with one bad ``key=value`` drawn from the
key's family: wrong types, negative and huge numbers, NaN and infinities, special files
(``/dev/zero``, ``/dev/null``, a FIFO, a character device), folders, links to nothing, paths
longer than the OS allows, YAML and JSON nested 30,000 deep, integers past Python's digit limit,
deep brackets and unknown keys. The heavy entry points (tracing, profiling, measuring) are
replaced by a tripwire: a bad input must be refused before them.
"""

from __future__ import annotations

import contextlib
import io
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from test_contract import _within  # the alarm that turns a hang into a failure

from ditmeter import api, cli
from ditmeter.errors import ConfigError

SEED = 24
CLI_CASES = 1000
API_CASES = 150
SUBPROCESS_CASES = 6
TINY = ["model=wan2.1-t2v-1.3b", "workload=w001-tiny"]
MODEL = ("wan2.1-t2v-1.3b", "w001-tiny")

#: A valid start per command; the bad override comes after it.
BASE = {
    "report": TINY,
    "trace": [*TINY, "stages=[dit]"],
    "profile": TINY,
    "ingest": TINY,
    "calibrate": [*TINY, "stages=[dit]"],
    "sweep": [*TINY, "device=h100-sxm"],
    "plan": [*TINY, "device=h100-sxm", "gpus=2"],
    "whatif": [*TINY, "device=h100-sxm", "whatif=[compile]"],
    "compare": [],
    "diff": ["RUN_A", "RUN_B"],
    "validate": [],
}

INT_KEYS = [
    "workload.batch_size",
    "workload.num_frames",
    "workload.height",
    "workload.width",
    "workload.num_inference_steps",
    "workload.context_len",
]
FLOAT_KEYS = ["workload.guidance_scale"]
CHOICE_KEYS = ["workload.dtype", "pipeline", "time.execution", "attention"]
GROUP_KEYS = ["model", "workload", "device"]
#: Keys per command besides the workload's (which the run commands share).
OWN_KEYS = {
    "trace": ["compare.tolerance", "compare.show"],
    "profile": ["profile.num_layers", "profile.warmup", "profile.device_kind", "profile.trace"],
    "ingest": ["trace"],
    "calibrate": ["calibrate.output", "calibrate.max_flops", "calibrate.min_run_time", "device_kind"],
    "plan": ["gpus", "plan.memory_limit_gib", "plan.price_per_gpu_hour", "run_id", "output_root"],
    "whatif": [
        "whatif",
        "methods.cache",
        "methods.cache_skip",
        "methods.magcache_threshold",
        "methods.magcache_k",
        "methods.cfg_free",
        "methods.cfg_batch",
        "methods.cuda_graphs",
        "run_id",
        "output_root",
    ],
    "compare": ["compare.tolerance", "compare.show", "run_id", "output_root"],
    "diff": ["run_id", "output_root", "RUN"],
    "validate": ["validate.data", "run_id", "output_root", "time.execution"],
}
READ_KEYS = {"calibration", "trace", "profile.trace", "validate.data", "host"}
WRITE_KEYS = {"output_root", "calibrate.output"}

NUMBER_WORDS = ["abc", "nan", "inf", "-inf", "NaN", "{a: 1}", "true", "${nope}", "${oc.env:NOPE}"]


@pytest.fixture(scope="module")
def odd(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The special files and bad paths the generator draws from (made once, checked unchanged)."""
    d = tmp_path_factory.mktemp("odd")
    (d / "folder").mkdir()
    os.mkfifo(d / "fifo")
    (d / "dangling").symlink_to(d / "nothing")
    (d / "afile").write_text("x")
    (d / "empty.yaml").write_text("")
    (d / "binary").write_bytes(bytes(range(256)) * 4)
    (d / "deep.yaml").write_text("[" * 30_000 + "]" * 30_000)
    (d / "deep.json").write_text('{"traceEvents": ' + "[" * 30_000 + "]" * 30_000 + "}")
    (d / "bigint.yaml").write_text("kind: ditmeter-calibration\nversion: " + "9" * 5000 + "\n")
    with (d / "huge.json").open("wb") as f:
        f.truncate(9 * 2**30)  # sparse: past every read limit, no disk used
    deep_run = d / "deeprun" / "static_analysis" / "wan2_1"
    deep_run.mkdir(parents=True)
    (deep_run / "report.json").write_text("[" * 30_000 + "]" * 30_000)
    os.mkfifo(d / "deeprun" / "run.json")
    files = {name: str(d / name) for name in ("folder", "fifo", "dangling", "afile", "deeprun")}
    files |= {p.name: str(p) for p in d.iterdir() if p.suffix in (".yaml", ".json") or p.name == "binary"}
    if os.geteuid() == 0:
        os.mknod(d / "null", 0o666 | 0o020000, os.makedev(1, 3))  # a character device, as /dev/null
        files["device"] = str(d / "null")
    files["long"] = str(d / "/".join(["d" * 200] * 22))
    files["missing"] = str(d / "missing" / "file.yaml")
    return files


def _bad_value(key: str, rng: random.Random, odd: dict[str, str]) -> str:
    """A value ``key`` must refuse."""
    if key in INT_KEYS or key in ("profile.num_layers", "profile.warmup", "compare.show"):
        return rng.choice(["-1", "-7", "1.5", "9" * 5000, "-" + "9" * 40, *NUMBER_WORDS])
    if key in (*FLOAT_KEYS, "compare.tolerance", "calibrate.max_flops", "calibrate.min_run_time"):
        return rng.choice(["-1", "-1e-9", "1e400", "9" * 5000, *NUMBER_WORDS])
    if key in CHOICE_KEYS or key in ("profile.device_kind", "device_kind"):
        return rng.choice(["int4", "nope", "[bf16]", "{}", "1", "${nope}", "BF 16"])
    if key in GROUP_KEYS:
        return rng.choice(["nope", "../config", "/dev/null", "x" * 300, odd["folder"]])
    if key in READ_KEYS:
        names = ["fifo", "folder", "dangling", "deep.yaml", "deep.json", "bigint.yaml", "huge.json", "long"]
        names += ["missing", "binary", "empty.yaml"]
        if key == "validate.data":  # it reads a folder: give it files, and folders of bad files
            names = ["fifo", "dangling", "long", "missing", "afile", "deep.yaml"]
        return rng.choice([*(odd[n] for n in names), "/dev/zero", "/dev/null"])
    if key == "output_root":
        return rng.choice(["/dev/null", "/proc/ditmeter-nope", odd["fifo"], odd["afile"], odd["long"]])
    if key == "calibrate.output":
        names = ["fifo", "folder", "dangling", "long", *(["device"] if "device" in odd else [])]
        return rng.choice(["/", "/tmp", f"{odd['afile']}/cal.yaml", *(odd[n] for n in names)])
    if key == "run_id":
        return rng.choice([".hidden", "..", "a/b", "r" * 300, "-x", "dangling", "a b"])
    return rng.choice(["/dev/zero", odd["fifo"], odd["folder"], odd["deeprun"], "missing", odd["long"]])


def _unknown(rng: random.Random) -> str:
    key = rng.choice(["+foo", "nope", "workload.nope", "+workload.steps", "device.nope", "time.nope"])
    return f"{key}={rng.choice(['1', 'x', '[1]'])}"


def _deep(rng: random.Random, key: str) -> str:
    depth = rng.choice([17, 100, 5000])
    open_, close = rng.choice([("[", "]"), ("{a:", "}")])
    return f"{key}={open_ * depth}1{close * depth}"


def invocations(odd: dict[str, str], count: int, seed: int = SEED) -> list[list[str]]:
    """``count`` bad command lines, each one bad part on a valid base, spread over every command."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        command = list(BASE)[i % len(BASE)]
        base = list(BASE[command])
        run = command in ("report", "trace", "profile", "ingest", "calibrate", "sweep")
        keys = [
            *OWN_KEYS.get(command, []),
            *((INT_KEYS + CHOICE_KEYS + GROUP_KEYS + ["run_id"]) if run else []),
        ]
        keys += ["calibration", "output_root"] if command not in ("compare", "diff", "validate") else []
        family = rng.random()
        if family < 0.08:
            bad = _unknown(rng)
        elif family < 0.14:
            bad = _deep(rng, rng.choice(keys))
        elif family < 0.17:
            bad = rng.choice(["=", "a b=c", "x=${", "workload.height=[", "--nope"])
        else:
            key = rng.choice(keys)
            value = _bad_value(key, rng, odd)
            if key == "RUN":  # a bad run reference instead of RUN_A or RUN_B
                base[rng.randrange(2)] = value
                bad = ""
            else:
                bad = f"{key}={value}"
        if command == "diff" and "RUN_A" in base and "RUN_B" in base and bad and rng.random() < 0.5:
            base = [odd["deeprun"], odd["deeprun"]]
        out.append([command, *base, *([bad] if bad else [])])
    return out


def _tripwire(monkeypatch: pytest.MonkeyPatch) -> None:
    """The heavy work: reaching it means a bad input was not refused first."""
    from ditmeter.tracer import calibrate as bench
    from ditmeter.tracer import capture, profile

    def trip(*_a: Any, **_k: Any) -> Any:
        raise AssertionError("heavy work started on a bad input")

    monkeypatch.setattr(capture, "capture_forward", trip)
    monkeypatch.setattr(profile, "profile_forward", trip)
    for name in (
        "measure_gemm", "measure_attention", "measure_conv", "measure_elementwise", "measure_host",
        "measure_module_host",
    ):  # fmt: skip
        monkeypatch.setattr(bench, name, trip)


def _tree(root: Path) -> set[tuple[str, int]]:
    """Every path under ``root`` with its file type (a FIFO must stay a FIFO)."""
    return {(str(p), os.lstat(p).st_mode >> 12) for p in [root, *root.rglob("*")] if os.path.lexists(p)}


def _outside() -> set[str]:
    """What a stray write would leave where the tool's defaults and fallbacks point: crash logs and
    temporary files in the working folder's default output root, the temp dir, ``/`` and ``/dev``."""
    seen = set()
    for folder in (Path("tmp/profile-output"), Path(tempfile.gettempdir()), Path("/"), Path("/dev")):
        with contextlib.suppress(OSError):
            seen |= {
                str(p)
                for p in folder.iterdir()
                if p.name.startswith("ditmeter-error")
                or p.name.endswith((".tmp", ".partial"))
                or (folder == Path("/dev") and p.is_dir() and (p / "run.json").exists())
            }
    return seen


def _one(argv: list[str]) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with _within(30), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = cli.main(argv)
    return status, err.getvalue()


def _restore(root: Path, before: set[tuple[str, int]]) -> list[str]:
    """Remove what appeared under ``root`` (so one failure does not hide the next); what it was."""
    import shutil

    new = sorted({path for path, _ in _tree(root) - before}, key=len)
    for path in new:
        with contextlib.suppress(OSError):
            p = Path(path)
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
    return new


def test_a_thousand_bad_invocations_are_each_one_line_and_write_nothing(
    odd: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _tripwire(monkeypatch)
    # The parser (its help text composes every config) is the same for every call: build it once.
    root = tmp_path / "runs"
    root.mkdir()
    (root / "dangling").symlink_to(root / "nothing")  # run_id=dangling: a link to nothing where it goes
    odd_root = Path(odd["folder"]).parent
    before, odd_before, outside_before = _tree(root), _tree(odd_root), _outside()
    failures: list[tuple[Any, ...]] = []
    start = time.perf_counter()
    cases = invocations(odd, CLI_CASES)
    for argv in cases:
        given = argv if any(a.startswith("output_root=") for a in argv) else [*argv, f"output_root={root}"]
        status, err = _one(given)
        if status != 2 or err.count("\n") != 1 or not err.startswith("ditmeter: error: "):
            failures.append(([a[:80] for a in given], status, err[:300]))
        written = _restore(root, before)
        if written:
            failures.append(([a[:80] for a in given], "wrote under output_root", written[:3]))
    assert not failures, f"{len(failures)} of {len(cases)}: {failures[:8]}"
    assert _tree(odd_root) == odd_before and _outside() == outside_before
    assert {a[0] for a in cases} == set(BASE) and len(cases) >= 1000
    print(f"{len(cases)} invocations in {time.perf_counter() - start:.1f} s")


def _api_calls(odd: dict[str, str], count: int) -> list[tuple[str, Callable[[], Any]]]:
    """``count`` bad calls of the API's functions: one bad override, argument or output root each."""
    rng = random.Random(SEED + 1)
    calls: list[tuple[str, Callable[[], Any]]] = []
    for i in range(count):
        key = rng.choice([*INT_KEYS, *CHOICE_KEYS, "calibration", "output_root", "unknown", "deep"])
        if key == "unknown":
            entry = _unknown(rng)
        elif key == "deep":
            entry = _deep(rng, rng.choice(INT_KEYS))
        else:
            entry = f"{key}={_bad_value(key, rng, odd)}"
        root: Any = None
        if entry.startswith("output_root="):
            root, entry = entry.partition("=")[2], ""
        overrides = [entry] if entry else None
        kind = ["analyze", "predict", "trace", "ingest", "sweep", "diff", "overrides"][i % 7]
        call: Callable[[], Any]
        if kind == "analyze":
            call = lambda o=overrides, r=root: api.analyze(*MODEL, o, r)  # noqa: E731
        elif kind == "predict":
            call = lambda o=overrides, r=root: api.predict(*MODEL, "h100-sxm", o, r)  # noqa: E731
        elif kind == "trace":
            call = lambda o=overrides, r=root: api.trace(*MODEL, o, r)  # noqa: E731
        elif kind == "ingest":
            path = rng.choice(["/dev/zero", odd["fifo"], odd["deep.json"], odd["huge.json"], odd["folder"]])
            call = lambda p=path, r=root: api.ingest(p, *MODEL, None, r)  # noqa: E731
        elif kind == "sweep":
            call = lambda o=overrides, r=root: api.sweep([*TINY, "device=h100-sxm", *(o or [])], r)  # noqa: E731
        elif kind == "diff":
            ref = rng.choice(["/dev/zero", odd["fifo"], odd["deeprun"], odd["dangling"], odd["long"]])
            call = lambda a=ref: api.diff(a, a, odd["folder"])  # noqa: E731
        else:  # overrides of the wrong shape
            shape = rng.choice([42, "workload.height=1", [1, 2], {1: 2}, {"": 1}, b"x"])
            call = lambda s=shape: api.analyze(*MODEL, s)  # noqa: E731
        calls.append((f"{kind} {overrides} {root}", call))
    return calls


def test_the_python_api_refuses_bad_input_with_a_config_error(
    odd: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _tripwire(monkeypatch)
    monkeypatch.chdir(tmp_path)  # the API's default output root is relative
    odd_root = Path(odd["folder"]).parent
    odd_before, outside_before = _tree(odd_root), _outside()
    failures = []
    for what, call in _api_calls(odd, API_CASES):
        try:
            with _within(30):
                call()
        except ConfigError as exc:
            if "\n" in str(exc):
                failures.append((what, f"two lines: {exc}"))
        except Exception as exc:  # anything else is a bug
            failures.append((what, f"{type(exc).__name__}: {exc}"[:300]))
        else:
            failures.append((what, "accepted"))
    assert not failures, f"{len(failures)} of {API_CASES}: {failures[:5]}"
    assert list(tmp_path.iterdir()) == [] and _tree(odd_root) == odd_before and _outside() == outside_before


def test_a_sample_through_the_real_cli(odd: dict[str, str], tmp_path: Path) -> None:
    """The same generator's first cases, as the installed entry point runs them (in parallel)."""
    root = tmp_path / "runs"
    rng = random.Random(SEED + 2)
    sample = rng.sample(invocations(odd, CLI_CASES), SUBPROCESS_CASES)
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "ditmeter",
                *argv,
                *([] if "output_root=" in str(argv) else [f"output_root={root}"]),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for argv in sample
    ]
    for argv, proc in zip(sample, procs, strict=True):
        try:
            _, err = proc.communicate(timeout=120)
        finally:
            proc.kill()
        assert proc.returncode == 2 and err.count("\n") == 1 and "Traceback" not in err, (argv, err)
    assert not root.exists()
