"""Run N `flywheel serve` replicas behind nginx, sharing one Postgres store.

    python deploy/replicas.py --replicas 2 --db-url postgresql+psycopg://USER@HOST/DB \
        [--home DIR] [--port 8000] [-- SERVE ARGS...]

Each replica is `flywheel serve` on its own free loopback port with the same
FLYWHEEL_HOME (the model files) and FLYWHEEL_DB_URL (the store); nginx
(``deploy/nginx.conf.template``, Debian package ``nginx``, installed by
``deploy/ensure-packages.sh`` when missing) listens on ``--port`` and spreads requests
over them. Everything lives in a temp dir (config, logs, pid) that is removed on exit.
Ctrl-C (or SIGTERM) stops the replicas gracefully (they store what they answered), then
nginx.

What the replicas share is the store: a promote or rollback is a row there, and every
replica's champion poller (``--reload-interval``, default 2 s) swaps to it; idempotency
keys are unique in the store, so a retry that lands on another replica gets the first
answer. ``replicas()`` is the same as a context manager (used by the tests and
``benchmarks/load.py --replicas``).
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
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

TEMPLATE = Path(__file__).with_name("nginx.conf.template")


class DeployError(RuntimeError):
    """A replica or nginx did not start (the message says why and where the log is)."""


@dataclass
class Replica:
    process: subprocess.Popen
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class Deployment:
    """Running replicas and the nginx in front of them."""

    root: Path
    port: int
    replicas: list[Replica]
    nginx: subprocess.Popen
    home: Path
    env: dict[str, str] = field(repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def find_nginx() -> str:
    found = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )
    if found is None:
        raise DeployError(
            "nginx is not installed; run deploy/ensure-packages.sh nginx "
            "(or `sudo apt-get install nginx`)"
        )
    return found


def nginx_config(root: Path, port: int, replica_ports: Sequence[int]) -> str:
    upstreams = "\n".join(
        f"        server 127.0.0.1:{p} max_fails=1 fail_timeout=2s;" for p in replica_ports
    )
    return (
        TEMPLATE.read_text(encoding="utf-8")
        .replace("@ROOT@", str(root))
        .replace("@PORT@", str(port))
        .replace("@UPSTREAMS@", upstreams)
    )


def _wait_ready(url: str, process: subprocess.Popen, log: Path, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while True:
        if process.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
            raise DeployError(f"{url} exited with {process.returncode} before ready:\n{tail}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise DeployError(f"{url} was not ready after {seconds:.0f} s (log: {log})")
        time.sleep(0.1)


def start_replica(root: Path, env: dict[str, str], serve_args: Sequence[str]) -> Replica:
    """One `flywheel serve` on a free loopback port (not waited for)."""
    port = free_port()
    log = root / f"replica-{port}.log"
    command = [
        sys.executable,
        "-m",
        "aiflywheel.cli",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        *serve_args,
    ]
    with log.open("wb") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    return Replica(process, port, log)


def stop_process(process: subprocess.Popen, sig: int = signal.SIGTERM, wait: float = 60) -> None:
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            process.kill()
    process.wait()


@contextmanager
def replicas(
    count: int,
    *,
    db_url: str,
    home: Path,
    serve_args: Sequence[str] = (),
    port: int | None = None,
    ready_seconds: float = 120,
) -> Iterator[Deployment]:
    """Start ``count`` replicas on ``db_url`` and nginx in front; stop them all on exit
    (replicas with SIGTERM, so they store what they answered)."""
    if count < 1:
        raise DeployError(f"--replicas must be at least 1, got {count}")
    if not db_url.startswith("postgresql"):
        raise DeployError(
            f"replicas share one Postgres store; got FLYWHEEL_DB_URL {db_url.split(':')[0]!r}:... "
            "(expected postgresql+psycopg://USER@HOST:PORT/DB)"
        )
    nginx = find_nginx()
    root = Path(tempfile.mkdtemp(prefix="flywheel-replicas-"))
    env = {**os.environ, "FLYWHEEL_HOME": str(home), "FLYWHEEL_DB_URL": db_url}
    running: list[Replica] = []
    proxy: subprocess.Popen | None = None
    try:
        running = [start_replica(root, env, serve_args) for _ in range(count)]
        for replica in running:  # their startups overlap
            _wait_ready(replica.url, replica.process, replica.log, ready_seconds)
        port = port or free_port()
        for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (root / "nginx-tmp" / name).mkdir(parents=True, exist_ok=True)
        config = root / "nginx.conf"
        config.write_text(nginx_config(root, port, [r.port for r in running]), encoding="utf-8")
        nginx_log = root / "nginx-stderr.log"
        with nginx_log.open("wb") as out:
            proxy = subprocess.Popen(
                [nginx, "-c", str(config), "-p", str(root), "-e", str(root / "nginx-error.log")],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        _wait_ready(f"http://127.0.0.1:{port}", proxy, nginx_log, 30)
        yield Deployment(root, port, running, proxy, home, env)
    finally:
        for replica in running:
            if replica.process.poll() is None:
                replica.process.send_signal(signal.SIGTERM)
        for replica in running:
            stop_process(replica.process)
        if proxy is not None:
            stop_process(proxy, signal.SIGQUIT, wait=10)
        shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replicas", type=int, default=2, help="how many `flywheel serve`")
    parser.add_argument(
        "--db-url",
        default=os.environ.get("FLYWHEEL_DB_URL", ""),
        help="the shared Postgres store (default: $FLYWHEEL_DB_URL)",
    )
    parser.add_argument(
        "--home",
        type=Path,
        default=Path(os.environ.get("FLYWHEEL_HOME", "~/.flywheel")).expanduser(),
        help="FLYWHEEL_HOME of every replica (where the model files are)",
    )
    parser.add_argument("--port", type=int, default=8000, help="nginx's port on 127.0.0.1")
    parser.add_argument("serve_args", nargs="*", help="passed to each `flywheel serve` (after --)")
    args = parser.parse_args(argv)
    try:
        with replicas(
            args.replicas,
            db_url=args.db_url,
            home=args.home.absolute(),
            serve_args=args.serve_args,
            port=args.port,
        ) as deployment:
            shown = ", ".join(r.url for r in deployment.replicas)
            print(f"nginx at {deployment.url} -> {shown} (logs in {deployment.root}); Ctrl-C stops")
            stop = []
            signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
            try:
                while not stop:
                    time.sleep(0.5)
                    dead = [r for r in deployment.replicas if r.process.poll() is not None]
                    if dead:
                        print(f"replica {dead[0].url} exited with {dead[0].process.returncode}")
                        return 1
            except KeyboardInterrupt:
                pass
    except DeployError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
