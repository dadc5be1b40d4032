"""The self-contained wheel (`make wheel`), installed into a fresh virtual environment.

Run by `make test-wheel` (part of `make test`), which builds the wheel and the sdist first and
passes their paths in COUPONCORE_TEST_WHEEL and COUPONCORE_TEST_SDIST; the servers come from
scripts/with-test-env.sh (COUPONCORE_TEST_REDIS_URL, COUPONCORE_TEST_POSTGRES_URL,
COUPONCORE_TEST_KEY_PREFIX). Not under tests/python: that suite runs against the development
install in .venv, this one against the wheel alone. The fresh venv is made once per module and
every command runs outside the repository, so nothing can be imported from the source tree.
"""

from __future__ import annotations

import importlib.resources
import json
import os
import re
import subprocess
import sys
import tarfile
import textwrap
from collections.abc import Sequence
from pathlib import Path

import pytest

# The manylinux policy's allowed system libraries are read from auditwheel itself (the same
# table `auditwheel repair` used); everything else the extension loads must come from the wheel.
_POLICY_FILE = "manylinux-policy.json"


def _env_path(name: str) -> Path:
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"{name} is not set: run `make test-wheel`, which builds the wheel and sdist first")
    p = Path(value)
    if not p.is_absolute():
        p = Path(__file__).resolve().parents[2] / p
    assert p.is_file(), f"{name}={value}: no such file"
    return p


def _env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"{name} is not set: run the suite with `make test`, which starts the servers")
    return value


def _run(
    args: Sequence[str | os.PathLike[str]], cwd: Path, timeout: float = 300, env: dict[str, str] | None = None
) -> str:
    out = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    assert out.returncode == 0, f"{args} exited {out.returncode}\nstdout:\n{out.stdout}\nstderr:\n{out.stderr}"
    return out.stdout


def _clean_env() -> dict[str, str]:
    """The environment for the fresh venv's processes: nothing pointing into .venv or the tree."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    return env


@pytest.fixture(scope="module")
def wheel() -> Path:
    return _env_path("COUPONCORE_TEST_WHEEL")


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("wheel-work")


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory, wheel: Path, work: Path) -> Path:
    """A fresh venv with the wheel alone, installed without an index: the core needs no other
    package, no compiler and no -dev package."""
    root = tmp_path_factory.mktemp("wheel-venv") / "venv"
    base = getattr(sys, "_base_executable", sys.executable)
    _run([base, "-m", "venv", root], cwd=work, timeout=120)
    py = root / "bin" / "python"
    _run(
        [py, "-m", "pip", "install", "--no-index", "--no-compile", "--disable-pip-version-check", wheel],
        cwd=work,
        env=_clean_env(),
    )
    return root


def _site_packages(venv: Path) -> Path:
    (sp,) = venv.glob("lib/python3*/site-packages")
    return sp


def test_auditwheel_tag(wheel: Path, work: Path) -> None:
    """auditwheel agrees the wheel is manylinux, and the file name carries that tag."""
    show = json.loads(_run([sys.executable, "-m", "auditwheel", "show", "--json", wheel], cwd=work))
    assert "error" not in show, show
    assert show["pure"] is False
    tag = show["overall_tag"]
    assert re.fullmatch(r"manylinux_2_\d+_x86_64|manylinux_2_\d+_aarch64", tag), show
    assert tag in wheel.name, f"{wheel.name} does not carry auditwheel's tag {tag}"
    # Every library the wheel needs outside itself is one the policy allows.
    policy = _policy(tag)
    outside = set(show["external_libs"]) - set(policy["lib_whitelist"])
    assert not outside, f"libraries needed from the system that {tag} does not allow: {sorted(outside)}"


def _policy(tag: str) -> dict[str, object]:
    name = re.sub(r"_(x86_64|aarch64|i686|ppc64le|s390x|armv7l)$", "", tag)  # manylinux_2_35
    text = importlib.resources.files("auditwheel.policy").joinpath(_POLICY_FILE).read_text()
    for p in json.loads(text):
        if p["name"] == name or name in p.get("aliases", []):
            return p  # type: ignore[no-any-return]
    pytest.fail(f"auditwheel has no policy {name!r}")


def test_extension_loads_only_allowed_system_libraries(wheel: Path, venv: Path, work: Path) -> None:
    """ldd of the installed extension: every library resolves, and each one that the manylinux
    policy does not allow from the system (hiredis, libpq and its dependencies, SQLite, OpenSSL)
    resolves inside the installed couponcore.libs/."""
    sp = _site_packages(venv)
    (ext,) = (sp / "couponcore").glob("_core*.so")
    libs_dir = sp / "couponcore.libs"
    assert libs_dir.is_dir(), f"no {libs_dir.name} in the installed wheel"
    tag = next(t for t in wheel.name[: -len(".whl")].split("-")[-1].split(".") if t.startswith("manylinux_"))
    allowed = set(_policy(tag)["lib_whitelist"])  # type: ignore[arg-type]
    allowed |= {"linux-vdso.so.1"}  # the kernel's, not a file
    out = _run(["ldd", ext], cwd=work)
    resolved: dict[str, str] = {}
    for line in out.splitlines():
        line = line.strip()
        assert "not found" not in line, f"unresolved library: {line}\n{out}"
        m = re.match(r"(\S+) => (\S+) \(0x[0-9a-f]+\)$", line) or re.match(r"(\S+) \(0x[0-9a-f]+\)$", line)
        assert m, f"unexpected ldd line: {line!r}"
        name = m.group(1)
        path = m.group(2) if m.lastindex == 2 else name
        resolved[Path(name).name] = path
    bundled = {n for n, p in resolved.items() if Path(p).resolve().parent == libs_dir.resolve()}
    # ld-linux is the program interpreter (glibc's own), listed by its absolute path.
    system = {n for n in resolved if n not in bundled and not n.startswith("ld-linux")}
    assert system <= allowed, f"loaded from the system but not allowed by {tag}: {sorted(system - allowed)}\n{out}"
    stems = {n.split(".so")[0].split("-")[0] for n in bundled}
    for lib in ("libhiredis", "libpq", "libsqlite3", "libcrypto"):
        assert lib in stems, f"{lib} is not bundled in {libs_dir.name}: {sorted(bundled)}"


def test_import_comes_from_the_venv(venv: Path, work: Path) -> None:
    code = "import couponcore, couponcore._core as c; print(couponcore.__file__, c.__file__)"
    out = _run([venv / "bin" / "python", "-c", code], cwd=work, env=_clean_env())
    for f in out.split():
        assert Path(f).resolve().is_relative_to(venv.resolve()), out


def test_embedded_demo(venv: Path, work: Path) -> None:
    out = _run(
        [venv / "bin" / "python", "-m", "couponcore", "demo", "--quantity", "1000", "--json"],
        cwd=work,
        env=_clean_env(),
    )
    s = json.loads(out)
    assert s["ok"] is True, s
    assert s["rows_in_store"] == 1000 and s["distinct_users"] == 1000 and s["max_seq"] == 1000


_EVENT_SCHEMAS = textwrap.dedent(
    """
    import json
    from importlib import resources
    import couponcore.events as ev

    root = resources.files("couponcore.events").joinpath("schemas")
    found = {}
    for t in list(ev.EVENT_TYPES) + ["cloudevent"]:
        found[t] = sorted(p.name for p in root.joinpath(t).iterdir())
        for name in found[t]:
            json.loads(root.joinpath(t, name).read_text())
    envelope = ev.load_schema("cloudevent", 1)["examples"][0]
    print(json.dumps({"files": found, "v2": ev.decode(envelope, version=2).data.issued_at}))
    """
)


def test_event_schemas_ship_in_the_wheel(venv: Path, work: Path) -> None:
    """The JSON Schema files are package data: every event type's v1 (and coupon.issued's v2) is
    installed, parses, and decoding with an upcast works from the installed package alone."""
    out = json.loads(_run([venv / "bin" / "python", "-c", _EVENT_SCHEMAS], cwd=work, env=_clean_env()))
    assert len(out["files"]) == 11, out
    assert all("v1.json" in names for names in out["files"].values()), out
    assert out["files"]["coupon.issued"] == ["v1.json", "v2.json"], out
    assert out["v2"] == "2026-12-06T09:20:00.123456Z", out


_PRODUCTION_SMOKE = textwrap.dedent(
    """
    import json, os, sys
    import couponcore

    with couponcore.open(
        redis=os.environ["COUPONCORE_TEST_REDIS_URL"],
        postgres=os.environ["COUPONCORE_TEST_POSTGRES_URL"],
        key_prefix=os.environ["COUPONCORE_TEST_KEY_PREFIX"] + "wheel:",
    ) as engine:
        key = engine.partners.create("wheel-smoke")
        shop = engine.partner(engine.authenticate(key.api_key))
        drop = shop.campaigns.create("wheel drop", quantity=100, per_user_limit=1)
        users = [f"u{i}" for i in range(150)]
        results = shop.issue_many(drop.id, users) + shop.issue_many(drop.id, users[:10])
        statuses = [r.status.value for r in results]
        assert engine.drain(60.0), "grants did not reach PostgreSQL within 60 s"
        s = shop.stats(drop.id)
        print(json.dumps({
            "campaign_id": drop.id,
            "issued": statuses.count("ISSUED"),
            "sold_out": statuses.count("SOLD_OUT"),
            "already_issued": statuses.count("ALREADY_ISSUED"),
            "rows": s.rows, "distinct_users": s.distinct_users, "min_seq": s.min_seq, "max_seq": s.max_seq,
        }))
    """
)


def test_production_smoke(venv: Path, work: Path) -> None:
    """The wheel's bundled hiredis and libpq against the test run's Redis and PostgreSQL."""
    env = _clean_env()
    for name in ("COUPONCORE_TEST_REDIS_URL", "COUPONCORE_TEST_POSTGRES_URL", "COUPONCORE_TEST_KEY_PREFIX"):
        env[name] = _env(name)
    script = work / "production_smoke.py"
    script.write_text(_PRODUCTION_SMOKE)
    s = json.loads(_run([venv / "bin" / "python", script], cwd=work, env=env, timeout=180))
    assert s["issued"] == 100 and s["sold_out"] == 50 and s["already_issued"] == 10, s
    assert (s["rows"], s["distinct_users"], s["min_seq"], s["max_seq"]) == (100, 100, 1, 100), s
    # The rows themselves, read back with psql (postgresql-client), not through couponcore.
    rows = _run(
        [
            "psql",
            env["COUPONCORE_TEST_POSTGRES_URL"],
            "-tAc",
            f"SELECT count(*), count(DISTINCT user_id), max(seq) FROM coupons WHERE campaign_id = {s['campaign_id']}",
        ],
        cwd=work,
    )
    assert rows.strip() == "100|100|100", rows


_FACES = textwrap.dedent(
    """
    import json, socket, subprocess, sys, time, urllib.request
    from pathlib import Path

    work = Path(sys.argv[1])
    seen = {}

    # [server]: couponcore serve (FastAPI + uvicorn), /healthz over HTTP; the prometheus collector.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cli = Path(sys.executable).with_name("couponcore")
    # With an operator key, the ops page's assets (package data) come from the wheel.
    (work / "operator-key").write_text("wheel-test-operator-key-0123456789")
    server = subprocess.Popen(
        [cli, "serve", "--port", str(port), "--path", str(work / "serve.db"),
         "--operator-key-file", str(work / "operator-key")],
        stdout=sys.stderr,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
                    seen["serve_healthz"] = json.loads(r.read())["status"]
                    break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.2)
        for asset in ("ops.css", "ops.js"):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ops/static/{asset}", timeout=5) as r:
                seen[f"ops_{asset}_bytes"] = len(r.read())
    finally:
        server.terminate()
        server.wait(30)

    import couponcore
    from couponcore.metrics import CouponcoreCollector

    with couponcore.open(str(work / "metrics.db")) as engine:
        seen["collector_families"] = len(list(CouponcoreCollector(engine).collect()))

    # [django]: the app's views through Django's test client.
    import django
    from django.conf import settings

    settings.configure(
        SECRET_KEY="wheel-test", ALLOWED_HOSTS=["*"], ROOT_URLCONF="couponcore.django.urls",
        INSTALLED_APPS=["couponcore.django"], USE_TZ=True,
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
        COUPONCORE={"PATH": str(work / "django.db")},
    )
    django.setup()
    from django.test import Client
    from couponcore.django import close_engine

    seen["django_healthz"] = Client().get("/healthz").json()["status"]
    close_engine()

    # [replay]: generated traffic, a replay, its summary and a plot (pandas + matplotlib).
    import matplotlib
    matplotlib.use("Agg")
    from couponcore import replay

    traffic = replay.flash_sale(users=300, duration_s=1.0, seed=1)
    with couponcore.open(str(work / "replay.db")) as engine:
        result = replay.replay(engine, traffic, quantity=50)
    seen["replay_issued"] = result.summary["issued"]
    ax = replay.plot_issuance(result.df)
    ax.figure.savefig(work / "issuance.png")
    seen["plot_bytes"] = (work / "issuance.png").stat().st_size
    print(json.dumps(seen))
    """
)


def test_extras_suffice_for_each_face(wheel: Path, venv: Path, work: Path) -> None:
    """couponcore[server,django,replay] from the wheel (the extras' packages come from the index)
    is all that `couponcore serve`, couponcore.metrics, couponcore.django and couponcore.replay
    need. Runs after the tests of the wheel alone (pytest keeps the file's order): it adds the
    extras' packages to the module's venv."""
    env = _clean_env()
    py = venv / "bin" / "python"
    _run(
        [py, "-m", "pip", "install", "--no-compile", "--disable-pip-version-check", f"{wheel}[server,django,replay]"],
        cwd=work,
        env=env,
        timeout=600,
    )
    script = work / "faces.py"
    script.write_text(_FACES)
    seen = json.loads(_run([py, script, work], cwd=work, env=env, timeout=300))
    assert seen["serve_healthz"] == "ok" and seen["django_healthz"] == "ok", seen
    assert seen["collector_families"] > 0 and seen["plot_bytes"] > 0, seen
    assert seen["replay_issued"] == 50, seen
    assert seen["ops_ops.css_bytes"] > 0 and seen["ops_ops.js_bytes"] > 0, seen


def test_sdist_holds_the_sources(work: Path) -> None:
    """The sdist has what a build from source needs (make wheel builds from the tree; an sdist
    build is the same CMake project)."""
    sdist = _env_path("COUPONCORE_TEST_SDIST")
    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    for needed in (
        "pyproject.toml",
        "CMakeLists.txt",
        "README.md",
        "python/couponcore/__init__.py",
        "python/couponcore/_core.pyi",
        "python/couponcore/py.typed",
    ):
        assert needed in names, f"{needed} missing from {sdist.name}"
    assert any(n.startswith("cpp/src/") for n in names) and any(n.startswith("python/bindings/") for n in names)
    assert not any(n.startswith(("build/", ".venv/", "dist/")) for n in names), "build outputs in the sdist"
