"""A throwaway PostgreSQL cluster for the tests: initdb in a temp dir, one free loopback
port, stopped and deleted at the end of the session.

The binaries come from Debian's ``postgresql`` package (``make test`` installs it when
missing, see ``deploy/ensure-packages.sh``); the newest ``/usr/lib/postgresql/N/bin`` is
used, or ``pg_config --bindir``. initdb and postgres refuse to run as root, so as root the
cluster runs as the ``postgres`` user the package creates. Each test of the Postgres leg
gets a fresh database, copied from a template that is already migrated to head.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from itertools import count
from pathlib import Path

USER = "flywheel"
TEMPLATE = "flywheel_template"
OPT_OUT = "FLYWHEEL_TEST_POSTGRES"  # "0": skip the Postgres leg (developers only, never CI)


class PostgresUnavailable(RuntimeError):
    """The cluster could not be found or started (the message says why)."""


def opted_out() -> bool:
    return os.environ.get(OPT_OUT, "").strip() == "0"


def find_bindir() -> Path:
    """The newest installed PostgreSQL server's bin directory."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if found:
        return found[-1].parent
    pg_config = shutil.which("pg_config")
    if pg_config:
        bindir = Path(
            subprocess.run([pg_config, "--bindir"], capture_output=True, text=True).stdout.strip()
        )
        if (bindir / "initdb").exists():
            return bindir
    raise PostgresUnavailable(
        "no PostgreSQL server binaries (initdb) under /usr/lib/postgresql/*/bin or from "
        "pg_config; run `make test` (it installs Debian's postgresql package) or "
        f"`sudo apt-get install postgresql`, or set {OPT_OUT}=0 to skip the Postgres leg"
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PostgresCluster:
    """A running throwaway cluster; ``new_database`` hands out fresh databases."""

    def __init__(self, bindir: Path, root: Path, port: int, run_as: list[str]) -> None:
        self.bindir, self.root, self.port, self._run_as = bindir, root, port, run_as
        self.data = root / "data"
        self._names = count(1)
        self._admin = None

    def url(self, database: str, driver: str = "postgresql+psycopg") -> str:
        return f"{driver}://{USER}@127.0.0.1:{self.port}/{database}"

    def _pg(self, tool: str, *args: str, timeout: float = 120) -> None:
        command = [*self._run_as, str(self.bindir / tool), *args]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            log = self.root / "postgres.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise PostgresUnavailable(
                f"{tool} failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}"
                f"\n{tail}"
            )

    def start(self) -> None:
        self._pg(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            USER,
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        )
        options = " ".join(
            [
                f"-p {self.port}",
                "-c listen_addresses=127.0.0.1",
                f"-c unix_socket_directories={self.root}",
                "-c max_connections=400",
                # Throwaway data: no durability needed, and it saves seconds per test run.
                "-c fsync=off",
                "-c synchronous_commit=off",
                "-c full_page_writes=off",
                "-c shared_buffers=64MB",
            ]
        )
        self._pg(
            "pg_ctl",
            "-D",
            str(self.data),
            "-l",
            str(self.root / "postgres.log"),
            "-o",
            options,
            "-w",
            "-t",
            "60",
            "start",
        )
        self._make_template()

    def admin(self):
        """An autocommit connection to the ``postgres`` database (CREATE/DROP DATABASE)."""
        if self._admin is None or self._admin.closed:
            import psycopg

            self._admin = psycopg.connect(
                host="127.0.0.1", port=self.port, user=USER, dbname="postgres", autocommit=True
            )
        return self._admin

    def _make_template(self) -> None:
        from aiflywheel.store import Store

        self.admin().execute(f"CREATE DATABASE {TEMPLATE}")
        store = Store(self.url(TEMPLATE))  # migrated to head once; copies start there
        store.engine.dispose()

    def new_database(self, *, empty: bool = False) -> str:
        """A fresh database's URL: a copy of the migrated template, or ``empty``."""
        name = f"t{os.getpid()}_{next(self._names)}"
        template = "template0" if empty else TEMPLATE
        self.admin().execute(f"CREATE DATABASE {name} TEMPLATE {template}")
        return self.url(name)

    def drop_database(self, url: str) -> None:
        name = url.rsplit("/", 1)[1]
        self.admin().execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def stop(self) -> None:
        if self._admin is not None:
            self._admin.close()
        pid_file = self.data / "postmaster.pid"
        if pid_file.exists():
            try:
                self._pg("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
            except (PostgresUnavailable, subprocess.TimeoutExpired):
                # pg_ctl could not stop it: end the postmaster itself (its children follow).
                with suppress(OSError, ValueError, IndexError):
                    os.kill(int(pid_file.read_text().split()[0]), signal.SIGQUIT)
        shutil.rmtree(self.root, ignore_errors=True)


def _run_as() -> list[str]:
    """The command prefix that runs initdb/postgres unprivileged (as root: the postgres user)."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise PostgresUnavailable(
            "running as root, and there is no 'postgres' user to run the cluster as "
            "(Debian's postgresql package creates it)"
        ) from None
    runuser = shutil.which("runuser")
    if runuser is None:
        raise PostgresUnavailable("running as root without runuser to drop privileges")
    return [runuser, "-u", "postgres", "--"]


@contextmanager
def postgres_cluster() -> Iterator[PostgresCluster]:
    """Start a cluster in a temp dir on a free port; stop and delete it on the way out."""
    bindir = find_bindir()
    run_as = _run_as()
    root = Path(tempfile.mkdtemp(prefix="flywheel-pg-"))
    if run_as:
        entry = pwd.getpwnam("postgres")
        os.chown(root, entry.pw_uid, entry.pw_gid)
    last: Exception | None = None
    for _ in range(3):  # the free port may be taken between choosing it and binding it
        cluster = PostgresCluster(bindir, root, free_port(), run_as)
        try:
            cluster.start()
        except PostgresUnavailable as exc:
            last = exc
            cluster.stop()
            root.mkdir()
            if run_as:
                os.chown(root, entry.pw_uid, entry.pw_gid)
            time.sleep(0.2)
            continue
        try:
            yield cluster
        finally:
            cluster.stop()
        return
    shutil.rmtree(root, ignore_errors=True)
    raise PostgresUnavailable(f"PostgreSQL did not start: {last}")
