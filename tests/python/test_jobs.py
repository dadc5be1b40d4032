"""couponcore.jobs: the maintenance jobs on procrastinate, on both deployments.

Each maintenance job does its effect (embedded: procrastinate's in-memory connector in this
process; production: procrastinate's tables in the run's PostgreSQL); a failing job retries with
backoff + jitter, ends failed, and re-runs successfully once its cause is fixed; cancel (queued
and running); a seconds-level schedule fires; the retention purge; typed errors for a bad
configuration and unknown jobs; and a worker process killed with SIGKILL mid-job whose job a new
worker takes over (procrastinate's heartbeats) without granting anybody twice.
"""

from __future__ import annotations

import csv
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import couponcore
import couponcore.jobs
import pytest
from conftest import env_url, production_kwargs, stats

FAST = {
    "retry": {"base_s": 0.05, "max_s": 0.2},
    "worker": {"heartbeat_s": 0.5, "stalled_after_s": 2.0, "poll_s": 0.2},
    "retention": {"cron": ""},
    "jobs": {name: {"cron": ""} for name in couponcore.jobs.JOB_NAMES},
}


def config(**jobs: dict[str, Any]) -> dict[str, Any]:
    """FAST with nothing scheduled, plus the given job tables."""
    cfg: dict[str, Any] = {k: dict(v) for k, v in FAST.items()}
    cfg["jobs"] = {name: dict(t) for name, t in FAST["jobs"].items()}
    for name, table in jobs.items():
        cfg["jobs"][name] = {**cfg["jobs"][name], **table}
    return cfg


def wait_for(what: str, check: Callable[[], Any], timeout_s: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def write_users(path: Path, n: int, prefix: str = "u") -> list[str]:
    users = [f"{prefix}{i}" for i in range(n)]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["user_id"])
        w.writerows([u] for u in users)
    return users


_db_counter = iter(range(1_000_000))


@pytest.fixture(params=["embedded", "production"])
def whole_store_engine(request: pytest.FixtureRequest, db_path: str) -> Iterator[couponcore.Engine]:
    """An engine alone in its store: the maintenance jobs work across every partner and campaign,
    so production gets a database of its own (named after the run's, which the test environment
    drops with it)."""
    if request.param == "embedded":
        e = couponcore.open(db_path)
        e.jobs.configure(config())
        yield e
        e.close()
        return
    import psycopg

    admin = env_url("COUPONCORE_TEST_POSTGRES_ADMIN_URL")
    name = f"{os.environ['COUPONCORE_TEST_POSTGRES_DB']}_jobs{os.getpid()}x{next(_db_counter)}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    where = production_kwargs()
    base, _, query = where["postgres"].partition("?")
    where["postgres"] = base.rsplit("/", 1)[0] + "/" + name + (f"?{query}" if query else "")
    e = couponcore.open(**where)
    e.jobs.configure(config())
    try:
        yield e
    finally:
        e.close()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_bad_configuration_and_unknown_jobs_are_typed_errors_that_change_nothing(
    embedded: couponcore.Engine, tmp_path: Path
) -> None:
    jobs = embedded.jobs
    yaml_file = tmp_path / "jobs.yaml"
    yaml_file.write_text("jobs:\n  reconcile:\n    cron: '*/2 * * * *'\n    max_attempts: 2\nretry:\n  base_s: 1\n")
    cfg = jobs.configure(str(yaml_file))
    assert cfg.jobs["reconcile"].cron == "*/2 * * * *" and cfg.jobs["reconcile"].max_attempts == 2
    assert cfg.jobs["expire_coupons"].cron == couponcore.jobs.DEFAULT_CRON["expire_coupons"]
    assert cfg.retry_base_s == 1.0
    before = jobs.configure(config(expire_coupons={"cron": "*/7 * * * *"}))
    with pytest.raises(couponcore.InvalidArgument, match="not a valid cron"):
        jobs.configure(config(expire_coupons={"cron": "every five minutes"}))
    with pytest.raises(couponcore.InvalidArgument, match="not a valid cron"):
        jobs.configure(config(reconcile={"cron": "61 * * * *"}))
    with pytest.raises(couponcore.NotFound, match="no job named 'expire_everything'"):
        jobs.configure({"jobs": {"expire_everything": {"cron": "* * * * *"}}})
    with pytest.raises(couponcore.InvalidArgument, match="unknown keys"):
        jobs.configure({"jobs": {"reconcile": {"corn": "* * * * *"}}})
    with pytest.raises(couponcore.InvalidArgument, match="unknown argument"):
        jobs.configure(config(expire_coupons={"args": {"chunk": 5}}))
    with pytest.raises(couponcore.InvalidArgument, match="max_attempts"):
        jobs.configure(config(reconcile={"max_attempts": 0}))
    assert jobs.config == before  # nothing changed
    assert jobs.config.jobs["expire_coupons"].cron == "*/7 * * * *"

    with pytest.raises(couponcore.NotFound):
        jobs.run("expire_everything")
    with pytest.raises(couponcore.NotFound):
        jobs.defer("expire_everything")
    with pytest.raises(couponcore.InvalidArgument, match="unknown argument"):
        jobs.defer("expire_coupons", chunks=3)
    with pytest.raises(couponcore.InvalidType):
        jobs.defer("expire_coupons", chunk_rows="many")
    with pytest.raises(couponcore.InvalidArgument, match="within"):
        jobs.defer("expire_coupons", chunk_rows=0)
    with pytest.raises(couponcore.InvalidArgument, match="job_key"):
        jobs.defer("bulk_grant", path="x.csv")
    with pytest.raises(couponcore.InvalidArgument, match="state must be"):
        jobs.list(state="done")
    with pytest.raises(couponcore.NotFound):
        jobs.get(12345)
    assert jobs.list() == []  # nothing was queued by the refused calls


def test_maintenance_jobs_do_their_effect(whole_store_engine: couponcore.Engine) -> None:
    e = whole_store_engine
    # expire_coupons: a coupon whose validity passed is persisted as expired
    c = e.campaigns.create("expiring", quantity=10, valid_until=time.time() + 0.5)
    r = e.issue(c.id, "user-1")
    assert r.status == "ISSUED"
    stats(e, c.id)
    time.sleep(0.6)
    run = e.jobs.run("expire_coupons")
    assert run.state == "succeeded", run
    assert run.result is not None and run.result["expired"] == 1 and run.result["rows"] == 1
    assert e.coupons.counts(c.id).expired == 1
    assert [ev.type for ev in run.events] == ["queued", "started", "progress", "succeeded"]
    assert e.jobs.run("expire_coupons").result["expired"] == 0  # already persisted

    # expire_points: a lot past its date is written off
    e.points.earn("user-2", 100, idempotency_key="earn-1", expires_at=time.time() + 0.3)
    e.points.earn("user-2", 50, idempotency_key="earn-2")
    time.sleep(0.4)
    run = e.jobs.run("expire_points")
    assert run.state == "succeeded", run
    assert e.points.balance("user-2").total == 50

    # purge_idempotency: records older than the cut are deleted
    run = e.jobs.run("purge_idempotency", older_than_days=0)
    assert run.state == "succeeded" and run.result["deleted"] >= 2, run

    # reconcile: every active campaign (the closed one is left out)
    other = e.campaigns.create("other", quantity=5)
    closed = e.campaigns.create("closed", quantity=5)
    e.campaigns.close(closed.id)
    run = e.jobs.run("reconcile")
    assert run.state == "succeeded", run
    assert run.result["campaigns"] == 2 and run.progress_done == 2 and run.progress_total == 2
    assert {c.id, other.id} <= {c.id, other.id}

    runs = e.jobs.list()
    assert [r.name for r in runs][:2] == ["reconcile", "purge_idempotency"]
    assert all(r.state == "succeeded" for r in runs)
    text = e.metrics_text()
    assert 'couponcore_job_runs_total{job_name="expire_coupons",outcome="succeeded"} 2' in text
    assert 'couponcore_job_rows_total{job_name="expire_coupons"} 1' in text
    assert 'couponcore_job_last_success_timestamp_seconds{job_name="reconcile"}' in text
    from couponcore.metrics import CouponcoreCollector
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry()
    registry.register(CouponcoreCollector(e))
    scraped = generate_latest(registry).decode()
    assert 'couponcore_job_runs_total{job_name="expire_coupons",outcome="succeeded"} 2.0' in scraped
    assert 'couponcore_job_duration_seconds_count{job_name="reconcile"} 1.0' in scraped


def _delays(run: couponcore.jobs.JobRun) -> list[float]:
    return [
        float(m.group(1))
        for ev in run.events
        if ev.type == "retry_scheduled"
        for m in [re.search(r"in ([0-9.]+) s$", ev.message)]
        if m
    ]


def test_failing_job_retries_with_backoff_then_fails_and_reruns_once_fixed(
    engine: couponcore.Engine, tmp_path: Path
) -> None:
    engine.jobs.configure(config(bulk_grant={"max_attempts": 3}))
    c = engine.campaigns.create("bulk", quantity=100)
    path = tmp_path / "users.csv"  # not there yet: the cause of the failure
    run = engine.jobs.run("bulk_grant", job_key="k1", path=str(path), campaign_id=c.id)
    assert run.state == "failed", run
    assert run.attempts == 3
    assert run.error is not None and "NotFound" in run.error
    types = [ev.type for ev in run.events]
    assert types == ["queued", "started", "retry_scheduled", "started", "retry_scheduled", "started", "failed"]
    d1, d2 = _delays(run)
    assert 0.025 <= d1 <= 0.05 and 0.05 <= d2 <= 0.1  # equal jitter on base 0.05 s, doubling
    starts = [ev.at for ev in run.events if ev.type == "started"]
    assert (starts[1] - starts[0]).total_seconds() >= d1 * 0.9  # the backoff was waited
    assert 'couponcore_job_runs_total{job_name="bulk_grant",outcome="failed"} 1' in engine.metrics_text()

    users = write_users(path, 50)  # the cause fixed
    again = engine.jobs.rerun(run.id)
    assert again.id != run.id and again.state == "queued" and again.args == run.args
    assert [ev.type for ev in engine.jobs.get(run.id).events][-1] == "rerun"
    engine.jobs.start_periodic()
    done = wait_for("the re-run", lambda: (r := engine.jobs.get(again.id)).state == "succeeded" and r)
    assert done.result["granted"] == 50
    s = stats(engine, c.id)
    assert s.rows == 50 and s.distinct_users == 50
    assert engine.issue(c.id, users[0]).status == "ALREADY_ISSUED"
    with pytest.raises(couponcore.Conflict):
        engine.jobs.rerun(again.id)  # only failed or cancelled jobs


def test_cancel_a_queued_and_a_running_job(engine: couponcore.Engine, tmp_path: Path) -> None:
    engine.jobs.configure(config())
    queued = engine.jobs.defer("expire_coupons")
    assert queued.state == "queued"
    cancelled = engine.jobs.cancel(queued.id)
    assert cancelled.state == "cancelled" and cancelled.events[-1].type == "cancelled"
    with pytest.raises(couponcore.Conflict):
        engine.jobs.cancel(queued.id)

    c = engine.campaigns.create("slow bulk", quantity=1000)
    users = write_users(tmp_path / "u.csv", 300)
    job = engine.jobs.defer(
        "bulk_grant", job_key="slow", path=str(tmp_path / "u.csv"), campaign_id=c.id, rows_per_s=100, chunk_size=10
    )
    engine.jobs.start_periodic()
    wait_for("the bulk grant to run", lambda: (r := engine.jobs.get(job.id)).state == "running" and r.progress_done > 0)
    engine.jobs.cancel(job.id)
    stopped = wait_for("the cancel", lambda: (r := engine.jobs.get(job.id)).state == "cancelled" and r)
    assert 0 < stopped.progress_done < 300
    assert "cancel_requested" in [ev.type for ev in stopped.events]
    # re-run resumes from the checkpoint: everybody once
    again = engine.jobs.rerun(job.id)
    done = wait_for("the re-run", lambda: (r := engine.jobs.get(again.id)).state == "succeeded" and r)
    assert done.result["resumed_from"] > 0
    s = stats(engine, c.id)
    assert s.rows == len(users) and s.distinct_users == len(users)


def test_a_seconds_level_schedule_fires(engine: couponcore.Engine) -> None:
    engine.jobs.start_periodic(config(expire_coupons={"cron": "* * * * * *"}))  # every second
    assert engine.jobs.periodic_running
    runs = wait_for(
        "two scheduled runs", lambda: len(r := engine.jobs.list(name="expire_coupons", state="succeeded")) >= 2 and r
    )
    assert all("timestamp" in r.args for r in runs)  # deferred by the scheduler
    (sched,) = engine.jobs.schedules()
    assert sched.name == "expire_coupons" and sched.interval_s == 1.0 and sched.last_state == "succeeded"
    text = engine.metrics_text()
    assert 'couponcore_job_schedule_interval_seconds{job_name="expire_coupons"} 1' in text
    assert re.search(r'couponcore_job_runs_total\{job_name="expire_coupons",outcome="succeeded"\} [2-9]', text)
    with pytest.raises(couponcore.Conflict):
        engine.jobs.configure(config())  # not while it runs
    engine.jobs.stop_periodic()
    assert not engine.jobs.periodic_running


def test_retention_purges_finished_jobs(engine: couponcore.Engine) -> None:
    engine.jobs.configure(config())
    old = engine.jobs.run("expire_coupons")
    queued = engine.jobs.defer("reconcile")
    cfg = config()
    cfg["retention"] = {"cron": "", "succeeded_s": 0, "failed_s": 3600}
    engine.jobs.configure(cfg)
    time.sleep(0.01)
    purge = engine.jobs.run(couponcore.jobs.RETENTION_JOB)
    assert purge.state == "succeeded" and purge.result["deleted"] >= 1
    with pytest.raises(couponcore.NotFound):
        engine.jobs.get(old.id)
    assert engine.jobs.get(queued.id).state == "queued"  # not finished: kept
    engine.jobs.cancel(queued.id)  # nobody should run it later on this database


def test_cli_runs_a_job_and_refuses_bad_input(tmp_path: Path) -> None:
    db = str(tmp_path / "cli.db")
    cmd = [sys.executable, "-m", "couponcore", "jobs"]
    ok = subprocess.run(
        [*cmd, "run", "expire_coupons", "--path", db, "--json"], capture_output=True, text=True, timeout=60
    )
    assert ok.returncode == 0, ok.stderr
    assert '"state": "succeeded"' in ok.stdout
    bad = subprocess.run([*cmd, "run", "expire_everything", "--path", db], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 3 and "NotFound" in bad.stderr
    cfg = tmp_path / "jobs.toml"
    cfg.write_text('[jobs.reconcile]\ncron = "*/99 * *"\n')
    bad = subprocess.run(
        [*cmd, "schedules", "--path", db, "--config", str(cfg)], capture_output=True, text=True, timeout=60
    )
    assert bad.returncode == 3 and "InvalidArgument" in bad.stderr and "cron" in bad.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.servers
def test_worker_killed_mid_job_leaves_a_job_a_new_worker_finishes(tmp_path: Path) -> None:
    where = production_kwargs()
    cfg = tmp_path / "jobs.toml"
    cfg.write_text(
        '[worker]\nheartbeat_s = 0.5\nstalled_after_s = 2.0\npoll_s = 0.2\n[retention]\ncron = ""\n'
        + "".join(f'[jobs.{n}]\ncron = ""\n' for n in couponcore.jobs.JOB_NAMES)
    )
    users = write_users(tmp_path / "users.csv", 300)
    env = dict(os.environ)
    logs: list[Any] = []

    def worker(port: int) -> subprocess.Popen[str]:
        log = open(tmp_path / f"worker-{port}.log", "w")  # noqa: SIM115 - closed with the test's tmp_path
        logs.append(log)
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "couponcore",
                "jobs",
                "worker",
                "--redis",
                where["redis"],
                "--postgres",
                where["postgres"],
                "--key-prefix",
                where["key_prefix"],
                "--config",
                str(cfg),
                "--metrics-port",
                str(port),
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )

    with couponcore.open(**where) as e:  # its writer takes the grants to PostgreSQL
        e.jobs.configure(str(cfg))
        c = e.campaigns.create("bulk kill", quantity=1000)
        job = e.jobs.defer(
            "bulk_grant",
            job_key="kill",
            path=str(tmp_path / "users.csv"),
            campaign_id=c.id,
            rows_per_s=60,
            chunk_size=10,
        )
        first = worker(_free_port())
        try:
            wait_for(
                "the first worker to start the job",
                lambda: (r := e.jobs.get(job.id)).state == "running" and r.progress_done >= 20,
            )
            first.send_signal(signal.SIGKILL)
            first.wait(10)
        finally:
            if first.poll() is None:
                first.kill()
        assert e.jobs.get(job.id).state == "running"  # left behind by the dead worker
        port = _free_port()
        second = worker(port)
        try:
            done = wait_for(
                "the second worker to finish the job",
                lambda: (r := e.jobs.get(job.id)).state == "succeeded" and r,
                timeout_s=60,
            )
            metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        finally:
            second.send_signal(signal.SIGTERM)
            second.wait(30)
            for log in logs:
                log.close()
        out = "".join(p.read_text() for p in sorted(tmp_path.glob("worker-*.log")))
        assert second.returncode == 0, out
        types = [ev.type for ev in done.events]
        assert "stalled" in types and types.count("started") == 2, types
        assert done.result["resumed_from"] > 0
        s = stats(e, c.id)
        assert s.rows == len(users) and s.distinct_users == len(users)  # nobody twice
        assert 'couponcore_job_runs_total{job_name="bulk_grant",outcome="succeeded"} 1' in metrics
        assert env_url("COUPONCORE_TEST_POSTGRES_URL")


def test_redrive_dead_letters_job(
    open_deployment: Callable[..., couponcore.Engine], request: pytest.FixtureRequest
) -> None:
    if "embedded" in request.node.name:  # no grant log: nothing is ever dead-lettered
        with open_deployment() as e:
            e.jobs.configure(config())
            run = e.jobs.run("redrive_dead_letters")
            assert run.state == "succeeded" and run.result == {"rows": 0, "redriven": 0}
        return
    import psycopg

    url = env_url("COUPONCORE_TEST_POSTGRES_URL")
    couponcore.migrate(url)
    prefix, constraint = f"jobsblocked{os.getpid()}-", f"jobs_test_refuse_{os.getpid()}"
    with psycopg.connect(url, autocommit=True) as conn:  # PostgreSQL refuses these users' grants
        conn.execute(
            f"ALTER TABLE coupons ADD CONSTRAINT {constraint} CHECK (user_id NOT LIKE '{prefix}%') NOT VALID"
        )
    try:
        with open_deployment(
            writer_claim_idle_ms=100, writer_claim_interval_ms=50, writer_dead_letter_after_deliveries=2
        ) as e:
            e.jobs.configure(config())
            c = e.campaigns.create("dead letters", quantity=10)
            assert all(e.issue(c.id, f"{prefix}{i}").status == "ISSUED" for i in range(2))
            wait_for("two dead letters", lambda: len(e.dead_letters.list(c.id)) == 2)
            with psycopg.connect(url, autocommit=True) as conn:  # the cause fixed
                conn.execute(f"ALTER TABLE coupons DROP CONSTRAINT {constraint}")
            run = e.jobs.run("redrive_dead_letters", campaign_id=c.id)
            assert run.state == "succeeded" and run.result["redriven"] == 2, run
            s = stats(e, c.id)
            assert s.rows == 2 and e.dead_letters.list(c.id) == []
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"ALTER TABLE coupons DROP CONSTRAINT IF EXISTS {constraint}")


@pytest.mark.servers
def test_jobs_schema_is_applied_by_migrate_idempotently() -> None:
    import psycopg

    url = env_url("COUPONCORE_TEST_POSTGRES_URL")
    out = subprocess.run(
        [sys.executable, "-m", "couponcore", "migrate", "--postgres", url], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert "jobs schema (procrastinate)" in out.stdout
    assert couponcore.jobs.migrate(url) == 0  # up to date: nothing more to do
    with psycopg.connect(url) as conn:
        tables = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables")}
        (version,) = conn.execute("SELECT procrastinate_version FROM couponcore_jobs_schema").fetchone() or (None,)
    assert {"procrastinate_jobs", "procrastinate_events", "couponcore_job_runs", "couponcore_job_events"} <= tables
    import procrastinate

    assert version == procrastinate.__version__


@pytest.mark.servers
def test_a_new_worker_exports_when_a_scheduled_job_last_succeeded() -> None:
    where = production_kwargs()
    with couponcore.open(**where) as e:
        e.jobs.configure(config())
        done = e.jobs.run("expire_points")
        assert done.state == "succeeded" and done.finished_at is not None
        # another process's runner, its schedule far away: nothing runs, yet the gauge is there
        other = couponcore.jobs.Jobs(e, config(expire_points={"cron": "0 0 1 1 *"}), dsn=where["postgres"])
        try:
            other.start_periodic()
            text = other.metrics_text()
        finally:
            other.close()
        m = re.search(r'couponcore_job_last_success_timestamp_seconds\{job_name="expire_points"\} ([0-9.e+]+)', text)
        assert m and float(m.group(1)) >= done.finished_at.timestamp() - 1e-3, text
        assert 'couponcore_job_schedule_interval_seconds{job_name="expire_points"}' in text


@pytest.mark.servers
def test_two_workers_never_run_the_same_job_at_once(tmp_path: Path) -> None:
    where = production_kwargs()
    users = write_users(tmp_path / "users.csv", 120)
    with couponcore.open(**where) as e:
        e.jobs.configure(config())
        c = e.campaigns.create("two workers", quantity=1000)
        args = {"job_key": "twice", "path": str(tmp_path / "users.csv"), "campaign_id": c.id, "rows_per_s": 150}
        first, second = e.jobs.defer("bulk_grant", **args), e.jobs.defer("bulk_grant", **args)
        workers = [couponcore.jobs.Jobs(e, config(), dsn=where["postgres"]) for _ in range(2)]
        try:
            for w in workers:
                w.start_periodic()
            runs = [
                wait_for(f"job {j.id}", lambda j=j: (r := e.jobs.get(j.id)).state == "succeeded" and r)
                for j in (first, second)
            ]
        finally:
            for w in workers:
                w.close()
        a, b = sorted(runs, key=lambda r: r.started_at)
        assert a.finished_at is not None and b.started_at is not None
        assert b.started_at >= a.finished_at  # the lock: one after the other, never side by side
        assert a.result["granted"] == len(users) and a.result["resumed_from"] == 0
        assert b.result["resumed_from"] == len(users)  # the second found the first's checkpoint: done
        s = stats(e, c.id)
        assert s.rows == len(users) and s.distinct_users == len(users)


@pytest.mark.servers
def test_cli_on_production_defers_shows_cancels_lists_and_reruns() -> None:
    import json

    where = production_kwargs()
    servers = ["--redis", where["redis"], "--postgres", where["postgres"], "--key-prefix", where["key_prefix"]]

    def cli(*args: str) -> Any:
        out = subprocess.run(
            [sys.executable, "-m", "couponcore", "jobs", *args, *servers, "--json"],
            capture_output=True, text=True, timeout=60,
        )
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    queued = cli("defer", "expire_coupons", "--arg", "chunk_rows=10")
    assert queued["state"] == "queued" and queued["args"] == {"chunk_rows": 10}
    shown = cli("show", str(queued["id"]))
    assert shown["id"] == queued["id"] and [e["type"] for e in shown["events"]] == ["queued"]
    assert cli("cancel", str(queued["id"]))["state"] == "cancelled"
    assert queued["id"] in [r["id"] for r in cli("list", "--state", "cancelled", "--name", "expire_coupons")]
    again = cli("rerun", str(queued["id"]))
    assert again["state"] == "queued" and again["args"] == {"chunk_rows": 10}
    assert cli("cancel", str(again["id"]))["state"] == "cancelled"  # nobody runs it later on this database
