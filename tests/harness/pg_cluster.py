"""A throwaway PostgreSQL cluster for tests and benchmarks: initdb + pg_ctl on a Unix socket in a temporary folder.

The server binaries come from PATH or Debian's /usr/lib/postgresql/*/bin (``.ci/run`` installs the
``postgresql`` package when they are missing). PostgreSQL refuses to run as root, so as root the
cluster runs as ``nobody`` in a folder it owns. It listens on no TCP port, only on the socket, and
asks every client for a password (scram-sha-256), so wrong-password errors are real.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

SUPERUSER = "costbench"
PASSWORD = "s3cret-pw"


def server_bin() -> Path | None:
    """The folder with initdb and pg_ctl, or None when no PostgreSQL server is installed."""
    for pg_ctl in [shutil.which("pg_ctl"), *sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), reverse=True)]:
        if pg_ctl and Path(pg_ctl).resolve().with_name("initdb").exists():
            return Path(pg_ctl).resolve().parent
    return None


@dataclass
class Cluster:
    """A running cluster: its folder (data and socket), port, and how to reach it."""

    root: Path
    port: int
    bin: Path
    run_as: str | None

    @property
    def socket_dir(self) -> Path:
        return self.root

    def url(self, db: str = "postgres", user: str = SUPERUSER, password: str | None = PASSWORD) -> str:
        auth = f"{user}:{password}" if password is not None else user
        return f"postgresql://{auth}@/{db}?host={self.socket_dir}&port={self.port}"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        kw = {"user": self.run_as} if self.run_as else {}
        return subprocess.run([str(self.bin / args[0]), *args[1:]], capture_output=True, text=True, check=check,
                              env={**os.environ, "LC_ALL": "C.UTF-8"}, cwd=self.root, **kw)

    def create_db(self, name: str) -> str:
        """Create database ``name``; returns its URL (with the superuser's password)."""
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.root / "data"), "-m", "immediate", "stop", check=False)
        shutil.rmtree(self.root, ignore_errors=True)


def start_cluster(port: int = 54329) -> Cluster:
    """initdb a new cluster in a temporary folder and start it; ``Cluster.stop()`` ends and removes it."""
    bin_dir = server_bin()
    if bin_dir is None:
        raise FileNotFoundError("no PostgreSQL server binaries (initdb, pg_ctl) on this machine")
    run_as = "nobody" if os.geteuid() == 0 else None
    root = Path(tempfile.mkdtemp(prefix="costbench-pg-"))
    if run_as:
        shutil.chown(root, user=run_as)
    cluster = Cluster(root, port, bin_dir, run_as)
    pwfile = root / "pw"
    pwfile.write_text(PASSWORD + "\n")
    if run_as:
        shutil.chown(pwfile, user=run_as)
    try:
        cluster._run("initdb", "-D", str(root / "data"), "-U", SUPERUSER, f"--pwfile={pwfile}", "-A", "scram-sha-256",
                     "-E", "UTF8", "--no-sync")
        pwfile.unlink()
        cluster._run("pg_ctl", "-D", str(root / "data"), "-l", str(root / "log"), "-w", "-t", "60",
                     "-o", f"-c listen_addresses='' -k {root} -p {port} -c fsync=off -c max_connections=50", "start")
    except subprocess.CalledProcessError as exc:
        log = (root / "log").read_text() if (root / "log").exists() else ""
        cluster.stop()
        raise RuntimeError(f"could not start PostgreSQL: {exc.stderr or exc.stdout}\n{log}") from exc
    return cluster
