"""Scale-out: two server replicas on one PostgreSQL, one S3 endpoint and the Mosquitto broker.

Both replicas start from the deployment's own ``deploy/server.toml`` (the environment
overrides the addresses, as ``/etc/unbroken/server.env`` does in production) and share the
server and encryption keys; nginx runs the deployment's ``deploy/nginx.conf`` in front of
them (only the listening port, TLS and the upstream addresses are rewritten for the test).
A simulated fleet (``unbroken sim fleet``) records and syncs through nginx, which balances
record batches over both replicas and keeps each device's media uploads on one.

Afterwards nothing is lost (every record and segment of every device is receipted, in the
database and in the bucket) and nothing is duplicated (one log leaf per record, one object
per segment, one event row per announcement, each announcement consumed by one replica).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from protocol.api import API_PREFIX
from protocol.verify import verify_path
from tests.broker import Broker, free_port
from tests.servers import ServerProcess

ROOT = Path(__file__).resolve().parents[2]
SERVER_TOML = ROOT / "deploy" / "server.toml"
NGINX_CONF = ROOT / "deploy" / "nginx.conf"
PG_ADMIN = "postgres://postgres@127.0.0.1:5432/test"
S3_KEYS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
DEVICES = 6
SECONDS = 12

pytestmark = pytest.mark.slow


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _pg(sql: str, database: str = "test") -> list[Any]:
    import asyncpg

    async def run() -> list[Any]:
        conn = await asyncpg.connect(f"postgres://postgres@127.0.0.1:5432/{database}")
        try:
            return list(await conn.fetch(sql))
        finally:
            await conn.close()

    return asyncio.run(run())


@pytest.fixture
def database() -> Iterator[str]:
    if not _answers(5432):
        pytest.skip("no PostgreSQL on 127.0.0.1:5432")
    name = f"unbroken_scale_{uuid.uuid4().hex[:10]}"
    _pg(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        _pg(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def s3() -> Iterator[tuple[str, str]]:
    """moto's S3 server and a bucket with object lock, as the guide asks for."""
    server_mod = pytest.importorskip("moto.moto_server.threaded_moto_server")
    import boto3

    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    bucket = f"evidence-{uuid.uuid4().hex[:10]}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **S3_KEYS).create_bucket(
        Bucket=bucket, ObjectLockEnabledForBucket=True
    )
    try:
        yield endpoint, bucket
    finally:
        server.stop()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[str]:
    """The machine's Mosquitto, or a private one when none answers."""
    if _answers(1883):
        yield "mqtt://127.0.0.1:1883"
        return
    if not Broker.available():
        pytest.skip("no MQTT broker")
    private = Broker(tmp_path / "mosquitto")
    private.start()
    try:
        yield f"mqtt://127.0.0.1:{private.port}"
    finally:
        private.stop()


def _replica(name: str, data: Path, env: dict[str, str]) -> ServerProcess:
    """One replica: the command line with the deployment's settings file."""
    port = free_port()
    args = ["server", "--config", str(SERVER_TOML), "--data", str(data), "--port", str(port)]
    data.mkdir(parents=True, exist_ok=True)
    return ServerProcess(
        data,
        port,
        args=args,
        env={**env, "UNBROKEN_SERVER_NAME": name},
        log=data.parent / f"{name}.log",
    )


class Proxy:
    """nginx with the deployment's reverse-proxy configuration in front of the replicas."""

    def __init__(self, work: Path, upstreams: list[str]) -> None:
        self.work = work
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        work.mkdir(parents=True, exist_ok=True)
        site = _render_site(NGINX_CONF.read_text(), self.port, upstreams)
        (work / "site.conf").write_text(site)
        user = "user root;\n" if os.geteuid() == 0 else ""
        temp = "".join(
            f"    {kind}_temp_path {work}/{kind};\n"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        (work / "nginx.conf").write_text(
            f"{user}daemon off;\npid {work}/nginx.pid;\nerror_log {work}/error.log;\n"
            f"events {{ worker_connections 1024; }}\n"
            f"http {{\n    access_log {work}/access.log;\n{temp}"
            f"    include {work}/site.conf;\n}}\n"
        )

    def start(self) -> None:
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        if not Path(nginx).exists():
            pytest.skip("nginx is not installed (scripts/check installs it)")
        with (self.work / "stderr.log").open("wb") as out:
            self.proc = subprocess.Popen(
                [nginx, "-p", str(self.work), "-c", str(self.work / "nginx.conf")],
                stdout=subprocess.DEVNULL,
                stderr=out,
            )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, (self.work / "stderr.log").read_text()
            if _answers(self.port):
                return
            time.sleep(0.1)
        raise AssertionError("nginx did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=20)


def _render_site(conf: str, port: int, upstreams: list[str]) -> str:
    """The guide's site with plain HTTP on ``port`` and the test's replicas as upstreams."""
    out: list[str] = []
    for line in conf.splitlines():
        bare = line.strip()
        if bare.startswith(("ssl_certificate", "server_name")):
            continue
        if bare.startswith("listen "):
            out.append(f"    listen 127.0.0.1:{port};")
        elif bare.startswith("server 10.0.0."):
            address = bare.split()[1].rstrip(";")
            index = int(address.split(":")[0].rsplit(".", 1)[1]) - 11
            out.append(line.replace(address, upstreams[index]))
        else:
            out.append(line)
    return "\n".join(out) + "\n"


def test_two_replicas_split_a_fleet_and_nothing_is_lost_or_duplicated(
    tmp_path: Path, database: str, s3: tuple[str, str], broker: str
) -> None:
    endpoint, bucket = s3
    group = f"scale-{uuid.uuid4().hex[:8]}"  # apart from any other server on the broker
    env = {
        **os.environ,
        "UNBROKEN_DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{database}",
        "UNBROKEN_S3_ENDPOINT_URL": endpoint,
        "UNBROKEN_S3_BUCKET": bucket,
        "UNBROKEN_S3_ACCESS_KEY_ID": S3_KEYS["aws_access_key_id"],
        "UNBROKEN_S3_SECRET_ACCESS_KEY": S3_KEYS["aws_secret_access_key"],
        "UNBROKEN_S3_RETENTION_DAYS": "1",
        "UNBROKEN_MQTT_URL": broker,
        "UNBROKEN_MQTT_GROUP": group,
        "UNBROKEN_CHECKPOINT_INTERVAL": "2",
    }
    first = _replica("unbroken-a", tmp_path / "a", env)
    second = _replica("unbroken-b", tmp_path / "b", env)
    proxy: Proxy | None = None
    try:
        first.start()
        # The guide: replicas share the server and encryption keys (and the admin token).
        shutil.copytree(first.data / "keys", second.data / "keys")
        second.start()
        token = (first.data / "keys" / "admin.token").read_text().strip()
        proxy = Proxy(tmp_path / "nginx", [first.url[7:], second.url[7:]])
        proxy.start()
        fleet = subprocess.run(
            [
                sys.executable,
                "-m",
                "cli",
                "sim",
                "fleet",
                "--server",
                proxy.url,
                "--mqtt",
                broker,
                "--devices",
                str(DEVICES),
                "--seconds",
                str(SECONDS),
                "--speed",
                "2",
                "--prefix",
                "cam",
                "--admin-token",
                token,
                "--work",
                str(tmp_path / "fleet"),
            ],
            capture_output=True,
            cwd=ROOT,
            timeout=300,
            check=False,
        )
        assert fleet.returncode == 0, (fleet.stdout[-2000:], fleet.stderr[-3000:])
        outcomes = {
            row["device"]: row for row in map(json.loads, fleet.stdout.decode().splitlines()[:-1])
        }
        assert len(outcomes) == DEVICES
        # Announcements are consumed after the fleets stop: give the consumers a moment.
        time.sleep(3)
        _check_nothing_lost_or_duplicated(database, endpoint, bucket, outcomes)
        received = [r.metric("unbroken_events_received_total") for r in (first, second)]
        events = _pg("SELECT count(*) AS n FROM event", database)[0]["n"]
        assert all(n > 0 for n in received), received  # the shared subscription split them
        assert sum(received) == events  # and no announcement was taken by both
        verified = [r.metric("unbroken_segments_verified_total") for r in (first, second)]
        assert all(n > 0 for n in verified), verified  # nginx balanced the record batches
        assert sum(verified) == sum(o["segments"] for o in outcomes.values())
        _check_cross_replica_export(first, second, token, tmp_path)
    finally:
        if proxy is not None:
            proxy.stop()
        second.stop()
        first.stop()


def _check_nothing_lost_or_duplicated(
    database: str, endpoint: str, bucket: str, outcomes: dict[str, dict[str, Any]]
) -> None:
    import boto3

    size = _pg("SELECT size FROM log_head WHERE id = 1", database)[0]["size"]
    rows = _pg("SELECT device, seq, log_index FROM record", database)
    assert len(rows) == size  # one leaf per record
    assert sorted(r["log_index"] for r in rows) == list(range(size))
    per_device: dict[str, list[int]] = {}
    for r in rows:
        per_device.setdefault(r["device"], []).append(r["seq"])
    for device, outcome in outcomes.items():
        assert sorted(per_device.get(device, [])) == list(range(outcome["records"])), device
        assert outcome["unreceipted_records"] == 0
        assert outcome["unreceipted_media"] == 0
    media = _pg("SELECT device, seq, blob FROM media", database)
    segments = sum(o["segments"] for o in outcomes.values())
    assert len(media) >= segments  # photos carry media too
    listed = boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1", **S3_KEYS
    ).list_objects_v2(Bucket=bucket, MaxKeys=1000)
    keys = [o["Key"] for o in listed.get("Contents", [])]
    assert len(keys) == len(set(keys)) == len({m["blob"] for m in media})
    devices = _pg("SELECT device FROM fleet_state", database)
    assert {d["device"] for d in devices} >= set(outcomes)


def _check_cross_replica_export(
    first: ServerProcess, second: ServerProcess, token: str, tmp: Path
) -> None:
    """A device synced through one replica exports, through the other, and verifies."""
    headers = {"authorization": f"Bearer {token}"}
    pin = httpx.get(f"{first.url}{API_PREFIX}/trust", timeout=10).json()["fingerprint"]
    for replica, device in ((second, "cam-0000"), (first, "cam-0001")):
        answer = httpx.post(
            f"{replica.url}{API_PREFIX}/admin/exports/zip",
            json={"device": device},
            headers=headers,
            timeout=120,
        )
        assert answer.status_code == 200, answer.text[:500]
        bundle = tmp / f"{device}.zip"
        bundle.write_bytes(answer.content)
        report = verify_path(bundle, pin)
        assert report.verdict == "authentic", [f.code for f in report.findings]
        assert report.segments > 0
