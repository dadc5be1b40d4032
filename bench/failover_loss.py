"""Failover and acknowledged grants, measured on a private Redis Cluster.

Each run starts a private cluster (scripts/cluster.sh on a free port range, 3 masters + 3
replicas, cluster-node-timeout 1 s), sells a campaign from client threads that retry every
Unavailable answer with the same request_id, and mid-sale either kills its master with SIGKILL
(its replica is promoted), or first stops the replica for STALL_S (SIGSTOP: a lagging replica)
and then kills the master ("stall-kill"), or runs CLUSTER FAILOVER on the replica. After the drain it counts, in
PostgreSQL itself: the ISSUED answers, the rows, the ISSUED answers without their row (lost),
the seqs answered ISSUED to two users (duplicates), and rows past the quantity (over-issue).

    python bench/failover_loss.py --runs 10               # kill -9, replicas_acked off and on
    python bench/failover_loss.py --runs 3 --mode failover --acked on

Needs COUPONCORE_TEST_POSTGRES_URL (or --postgres) and redis-server / redis-cli on the PATH.
tests/python/test_failover.py uses the same harness (PrivateCluster, run_sale).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional
from urllib.parse import quote

import couponcore
import psycopg
import redis as redispy

ROOT = Path(__file__).resolve().parent.parent
NODES = 6
STALL_S = 0.5  # stall-kill: how long the replica is stopped before its master is killed


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port_range(first: int = 7300, last: int = 7990) -> int:
    """The first of NODES consecutive free ports (and their cluster bus ports, +10000)."""
    for base in range(first + (os.getpid() % 10) * NODES, last, NODES):
        if all(_port_free(p) and _port_free(p + 10000) for p in range(base, base + NODES)):
            return base
    raise RuntimeError(f"no {NODES} free consecutive ports in {first}..{last}")


def start_redis_server(directory: str, port: int, *extra: str) -> None:
    """A daemonized redis-server on 127.0.0.1:port keeping nothing on disk, its pid and log files
    in directory (redis-<port>.pid / .log), with the extra arguments."""
    subprocess.run(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            directory,
            "--daemonize",
            "yes",
            "--pidfile",
            f"{directory}/redis-{port}.pid",
            "--logfile",
            f"{directory}/redis-{port}.log",
            *extra,
        ],
        check=True,
        timeout=30,
    )


class PrivateCluster:
    """A throwaway Redis Cluster for destructive tests; never the shared one."""

    def __init__(self, node_timeout_ms: int = 1000) -> None:
        self.port = free_port_range()
        self.dir = tempfile.mkdtemp(prefix="couponcore-failover-")
        self.env = dict(
            os.environ,
            COUPONCORE_CLUSTER_PORT=str(self.port),
            COUPONCORE_CLUSTER_DIR=self.dir,
            COUPONCORE_CLUSTER_NODE_TIMEOUT_MS=str(node_timeout_ms),
        )
        self.url = ""

    def _script(self, *args: str) -> str:
        out = subprocess.run(
            ["bash", str(ROOT / "scripts" / "cluster.sh"), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if out.returncode != 0:
            raise RuntimeError(f"cluster.sh {' '.join(args)} failed: {out.stderr.strip()}")
        return out.stdout.strip()

    def start(self) -> str:
        self.url = self._script("start", "-q")
        # A replica that never synced cannot be promoted ("disconnected from master for longer
        # than allowed"): wait until every replica's link is up.
        deadline = time.monotonic() + 30
        for p in range(self.port, self.port + NODES):
            while True:
                info = self.client(p).info("replication")
                if info.get("role") == "master" or info.get("master_link_status") == "up":
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"replica {p} did not sync within 30 s")
                time.sleep(0.05)
        return self.url

    def stop(self) -> None:
        """SIGKILL every node (their data is throwaway) and remove their files."""
        try:
            for pidfile in Path(self.dir).glob("redis-*.pid"):
                try:
                    pid = int(pidfile.read_text().strip())
                    if "redis-server" in Path(f"/proc/{pid}/cmdline").read_text(errors="replace"):
                        os.kill(pid, signal.SIGKILL)
                except (OSError, ValueError):
                    pass
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> PrivateCluster:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def client(self, port: int) -> redispy.Redis:
        return redispy.Redis(host="127.0.0.1", port=port, socket_timeout=5)

    def live_ports(self) -> list[int]:
        out = []
        for p in range(self.port, self.port + NODES):
            try:
                if self.client(p).ping():
                    out.append(p)
            except redispy.RedisError:
                pass
        return out

    def slots(self) -> list[Any]:
        for p in self.live_ports():
            try:
                return list(self.client(p).execute_command("CLUSTER", "SLOTS"))
            except redispy.RedisError:
                continue
        raise RuntimeError("no node of the private cluster answers")

    def master_and_replica(self, key: str) -> tuple[int, Optional[int]]:
        """The ports of the master serving key's slot and of its first replica (None if none)."""
        slot = int(self.client(self.live_ports()[0]).execute_command("CLUSTER", "KEYSLOT", key))
        for r in self.slots():
            if int(r[0]) <= slot <= int(r[1]):
                master = int(r[2][1])
                info = self.client(master).info("replication")  # the master's word on its replicas
                replica = info.get("slave0", {}).get("port") if info.get("connected_slaves", 0) else None
                return master, int(replica) if replica is not None else None
        raise RuntimeError(f"slot {slot} is not served")

    def kill9(self, port: int) -> None:
        pid = int(Path(self.dir, f"redis-{port}.pid").read_text().strip())
        os.kill(pid, signal.SIGKILL)

    def restart(self, port: int) -> None:
        """Starts a killed node again on its old cluster config: it rejoins as a replica of the
        master that replaced it (so that master has a replica for WAIT again)."""
        start_redis_server(
            self.dir,
            port,
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            f"nodes-{port}.conf",
            "--cluster-node-timeout",
            self.env["COUPONCORE_CLUSTER_NODE_TIMEOUT_MS"],
        )

    def wait_replica_synced(self, master: int, timeout_s: float = 30.0) -> None:
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout_s:
            try:
                info = self.client(master).info("replication")
                if info.get("connected_slaves", 0) and info.get("slave0", {}).get("state") == "online":
                    return
            except redispy.RedisError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"master {master} got no synced replica within {timeout_s} s")

    def manual_failover(self, replica_port: int) -> None:
        self.client(replica_port).execute_command("CLUSTER", "FAILOVER")

    def wait_master(self, port: int, timeout_s: float = 30.0) -> float:
        """Seconds until the node at port reports itself master (after a promotion)."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout_s:
            try:
                if self.client(port).execute_command("ROLE")[0] in (b"master", "master"):
                    return time.monotonic() - t0
            except redispy.RedisError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"node {port} was not promoted within {timeout_s} s")


def free_ports(n: int) -> list[int]:
    out: list[int] = []
    p = 7400 + (os.getpid() % 50) * 4
    while len(out) < n and p < 8000:
        if _port_free(p):
            out.append(p)
        p += 1
    if len(out) < n:
        raise RuntimeError("no free ports in 7400..8000")
    return out


class PrivateSentinel:
    """A primary, one replica and `sentinels` Redis Sentinels (agreeing on `quorum`) on free
    loopback ports, with the interface of PrivateCluster that run_sale uses. With a
    `sentinel_password` the sentinels require it (requirepass) and the URL carries it. With
    sentinels=0, a primary and its replica only."""

    NAME = "couponcore"

    def __init__(
        self, down_after_ms: int = 1000, sentinels: int = 1, quorum: int = 1, sentinel_password: str = ""
    ) -> None:
        ports = free_ports(2 + sentinels)
        self.primary, self.replica, self.sentinels = ports[0], ports[1], ports[2:]
        self.sentinel = self.sentinels[0] if self.sentinels else 0
        self.quorum = quorum
        self.sentinel_password = sentinel_password
        self.dir = tempfile.mkdtemp(prefix="couponcore-sentinel-")
        self.down_after_ms = down_after_ms
        addrs = ",".join(f"127.0.0.1:{p}" for p in self.sentinels)
        query = f"?sentinel_password={quote(sentinel_password, safe='')}" if sentinel_password else ""
        self.url = f"redis+sentinel://{addrs}/{self.NAME}{query}"

    def client(self, port: int) -> redispy.Redis:
        password = self.sentinel_password if port in self.sentinels and self.sentinel_password else None
        return redispy.Redis(host="127.0.0.1", port=port, socket_timeout=5, password=password)

    def _server(self, port: int, *extra: str) -> None:
        start_redis_server(self.dir, port, *extra)

    def start(self) -> str:
        self._server(self.primary)
        self._server(self.replica, "--replicaof", "127.0.0.1", str(self.primary))
        for port in self.sentinels:
            conf = Path(self.dir, f"sentinel-{port}.conf")
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndaemonize yes\ndir {self.dir}\n"
                f"pidfile {self.dir}/redis-{port}.pid\nlogfile {self.dir}/sentinel-{port}.log\n"
                f"sentinel monitor {self.NAME} 127.0.0.1 {self.primary} {self.quorum}\n"
                f"sentinel down-after-milliseconds {self.NAME} {self.down_after_ms}\n"
                f"sentinel failover-timeout {self.NAME} 5000\n"
                + (
                    # The sentinels talk to each other with the same password (sentinel-pass).
                    f"requirepass {self.sentinel_password}\nsentinel sentinel-pass {self.sentinel_password}\n"
                    if self.sentinel_password
                    else ""
                )
            )
            subprocess.run(["redis-server", str(conf), "--sentinel"], check=True, timeout=30)
        self.wait_replica_synced(self.primary)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if all(self._sentinel_ready(p) for p in self.sentinels):
                    return self.url
            except redispy.RedisError:
                pass
            time.sleep(0.05)
        raise RuntimeError("the sentinels did not come up")

    def _sentinel_ready(self, port: int) -> bool:
        """The sentinel knows the master, its replica and every other sentinel (a quorum can be met)."""
        flat = self.client(port).execute_command("SENTINEL", "master", self.NAME)
        info = dict(zip(flat[::2], flat[1::2])) if isinstance(flat, list) else flat
        get = lambda k: int(info.get(k.encode(), info.get(k, 0)))  # noqa: E731
        return get("num-slaves") >= 1 and get("num-other-sentinels") >= len(self.sentinels) - 1

    def stop(self) -> None:
        PrivateCluster.stop(self)  # type: ignore[arg-type]

    def __enter__(self) -> PrivateSentinel:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def master_and_replica(self, key: str) -> tuple[int, Optional[int]]:
        return self.primary, self.replica

    def kill9(self, port: int) -> None:
        PrivateCluster.kill9(self, port)  # type: ignore[arg-type]

    def manual_failover(self, replica_port: int) -> None:
        self.client(self.sentinel).execute_command("SENTINEL", "FAILOVER", self.NAME)

    def wait_master(self, port: int, timeout_s: float = 30.0) -> float:
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout_s:
            try:
                addr = self.client(self.sentinel).execute_command("SENTINEL", "get-master-addr-by-name", self.NAME)
                if (
                    addr
                    and int(addr[1]) == port
                    and self.client(port).execute_command("ROLE")[0] in (b"master", "master")
                ):
                    return time.monotonic() - t0
            except redispy.RedisError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"node {port} was not promoted within {timeout_s} s")

    def restart(self, port: int) -> None:
        other = self.replica if port == self.primary else self.primary
        self._server(port, "--replicaof", "127.0.0.1", str(other))

    wait_replica_synced = PrivateCluster.wait_replica_synced


@dataclass
class SaleResult:
    mode: str
    acked: bool
    quantity: int
    requests: int = 0
    acks: int = 0  # ISSUED answers
    rows: int = 0
    lost: int = 0  # ISSUED answers whose (user, seq) is not a row
    dup_seqs: int = 0  # seqs answered ISSUED to two or more users
    over: int = 0  # rows past the quantity, or seqs > quantity
    unknown: int = 0  # requests still Unavailable when the client's budget ran out
    unavailable_seen: int = 0  # Unavailable answers the clients retried
    issued_before: int = 0  # ISSUED answers when the fault was injected
    issued_at_promotion: int = 0  # ... and when the replica was a master
    promote_s: float = 0.0
    drained: bool = False
    details: dict[str, Any] = field(default_factory=dict)

    def row(self) -> str:
        return (
            f"| {self.mode} | {'on' if self.acked else 'off'} | {self.requests} | {self.acks} | {self.rows} | "
            f"{self.lost} | {self.dup_seqs} | {self.over} | {self.unknown} | {self.unavailable_seen} | "
            f"{self.promote_s:.1f} |"
        )


TABLE_HEAD = (
    "| fault | replicas_acked | requests | ISSUED | rows | lost | dup seqs | over | unknown | Unavailable retried "
    "| promotion s |\n|---|---|---|---|---|---|---|---|---|---|---|"
)


def run_sale(
    cluster: PrivateCluster | PrivateSentinel,
    postgres: str,
    key_prefix: str,
    *,
    mode: str,
    acked: bool,
    quantity: int = 1500,
    threads: int = 6,
    fault_at: float = 0.3,
    retry_budget_s: float = 30.0,
    pace_s: float = 0.0,
    batch: int = 1,
    shards: int = 1,
    **options: Any,
) -> SaleResult:
    """One sale with one fault ("kill" = SIGKILL the campaign's master, "failover" = CLUSTER
    FAILOVER on its replica, "none"); returns what PostgreSQL holds against what was answered."""
    res = SaleResult(mode=mode, acked=acked, quantity=quantity)
    opts: dict[str, Any] = dict(
        redis=cluster.url,
        postgres=postgres,
        key_prefix=key_prefix,
        writer_claim_idle_ms=500,
        writer_claim_interval_ms=200,
        redis_backoff_max_ms=200,
    )
    if acked:
        opts.update(replicas_acked=1, replica_wait_ms=500)
    opts.update(options)
    answers: list[tuple[str, str, int]] = []  # (user, status, seq)
    lock = threading.Lock()
    sold_out = threading.Event()
    counts = {"issued": 0, "unavailable": 0, "unknown": 0, "requests": 0}
    with couponcore.open(**opts) as e:
        c = e.campaigns.create(f"failover-{mode}-{int(acked)}", quantity=quantity, shards=shards)
        master, replica = cluster.master_and_replica(f"{key_prefix}{{c{c.id}}}:m")

        def worker(t: int) -> None:
            i = 0
            while not sold_out.is_set():
                users = [f"u{t}-{i + k}" for k in range(batch)]
                rids = [f"r{t}-{i + k}" for k in range(batch)]
                i += batch
                deadline = time.monotonic() + retry_budget_s
                rs: Optional[list[Any]] = None
                while rs is None:
                    try:
                        rs = [e.issue(c.id, users[0], rids[0])] if batch == 1 else e.issue_many(c.id, users, rids)
                    except couponcore.Unavailable:
                        with lock:
                            counts["unavailable"] += 1
                        if time.monotonic() > deadline:
                            break
                        time.sleep(0.02)
                with lock:
                    counts["requests"] += batch
                    if rs is None:
                        counts["unknown"] += batch
                        continue
                    for u, r in zip(users, rs):
                        answers.append((u, r.status.name, r.seq))
                        if r.status.name == "ISSUED":
                            counts["issued"] += 1
                if any(r.status.name == "SOLD_OUT" for r in rs):
                    sold_out.set()
                if pace_s:
                    time.sleep(pace_s)  # stretches the sale past a quick promotion

        ths = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
        for th in ths:
            th.start()
        try:
            fault(cluster, mode, master, replica, res, counts, quantity * fault_at, sold_out, ths)
        finally:
            for th in ths:
                th.join()
        res.drained = e.drain(60.0)
        with psycopg.connect(postgres) as pg:
            rows = pg.execute("SELECT user_id, seq FROM coupons WHERE campaign_id = %s", (c.id,)).fetchall()
    res.requests = counts["requests"]
    res.unknown = counts["unknown"]
    res.unavailable_seen = counts["unavailable"]
    issued = [(u, s) for (u, st, s) in answers if st == "ISSUED"]
    res.acks = len(issued)
    res.rows = len(rows)
    row_set = {(u, int(s)) for (u, s) in rows}
    res.lost = sum(1 for a in issued if a not in row_set)
    by_seq: dict[int, set[str]] = defaultdict(set)
    for u, s in issued:
        by_seq[s].add(u)
    res.dup_seqs = sum(1 for users in by_seq.values() if len(users) > 1)
    res.over = max(0, len(rows) - quantity) + sum(1 for (_, s) in rows if int(s) > quantity)
    res.details = {"master": master, "replica": replica, "campaign": c.id, "issued_before": res.issued_before}
    return res


def fault(
    cluster: PrivateCluster | PrivateSentinel,
    mode: str,
    master: int,
    replica: Optional[int],
    res: SaleResult,
    counts: dict[str, int],
    at: float,
    sold_out: threading.Event,
    ths: list[threading.Thread],
) -> None:
    try:
        while counts["issued"] < at and not sold_out.is_set() and any(th.is_alive() for th in ths):
            time.sleep(0.002)
        res.issued_before = counts["issued"]
        if mode == "kill":
            cluster.kill9(master)
        elif mode == "stall-kill":
            # A lagging replica: stopped for stall_s while the sale goes on, then its master is
            # killed and it resumes with what reached it.
            assert replica is not None
            rpid = int(Path(cluster.dir, f"redis-{replica}.pid").read_text().strip())
            os.kill(rpid, signal.SIGSTOP)
            try:
                time.sleep(STALL_S)
                cluster.kill9(master)
            finally:
                os.kill(rpid, signal.SIGCONT)
        elif mode == "failover":
            assert replica is not None, "the campaign's master has no replica"
            cluster.manual_failover(replica)
        if mode != "none" and replica is not None:
            res.promote_s = cluster.wait_master(replica)
        res.issued_at_promotion = counts["issued"]
        if mode in ("kill", "stall-kill"):
            cluster.restart(master)  # back as the promoted replica's replica
            assert replica is not None
            cluster.wait_replica_synced(replica)
    except BaseException:
        sold_out.set()  # the clients stop; the sale is void
        raise


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--mode", choices=["kill", "failover", "stall-kill"], default="kill")
    ap.add_argument("--sentinel", action="store_true", help="a primary + replica + Redis Sentinel, not a cluster")
    ap.add_argument("--acked", choices=["off", "on", "both"], default="both")
    ap.add_argument("--quantity", type=int, default=3000)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--batch", type=int, default=1, help="requests per issue_many call (1: issue)")
    ap.add_argument("--postgres", default=os.environ.get("COUPONCORE_TEST_POSTGRES_URL", ""))
    args = ap.parse_args()
    if not args.postgres:
        ap.error("--postgres or COUPONCORE_TEST_POSTGRES_URL is required")
    settings = {"off": [False], "on": [True], "both": [False, True]}[args.acked]
    results: list[SaleResult] = []
    for acked in settings:
        for run in range(args.runs):
            with PrivateSentinel() if args.sentinel else PrivateCluster() as cluster:
                r = run_sale(
                    cluster,
                    args.postgres,
                    f"ccfail:{os.getpid()}:{int(acked)}:{run}:",
                    mode=args.mode,
                    acked=acked,
                    quantity=args.quantity,
                    threads=args.threads,
                    batch=args.batch,
                )
            results.append(r)
            print(r.row(), flush=True, file=sys.stderr)
    print()
    print(TABLE_HEAD)
    for r in results:
        print(r.row())
    for acked in settings:
        rs = [r for r in results if r.acked == acked]
        print(
            f"\nreplicas_acked {'on' if acked else 'off'}: {len(rs)} runs, {sum(r.acks for r in rs)} ISSUED, "
            f"{sum(r.lost for r in rs)} lost, {sum(r.dup_seqs for r in rs)} duplicate seqs, "
            f"{sum(r.over for r in rs)} over-issued, runs with a loss: {sum(1 for r in rs if r.lost)}"
        )


if __name__ == "__main__":
    main()
