"""Fault: the output disk fills up while a job runs.

The stack's video volume is a small tmpfs; a ballast file fills it, a job runs, then the ballast
goes and another job runs. Expected: the job fails with code `storage_full` and a message without server paths,
nothing of it is left in storage or served (content answers 409, no partial MP4 anywhere), and
the next job after space returns completes. Mounting needs root or an unprivileged user
namespace: run as root, or the script re-runs itself under `unshare --user --map-root-user --mount`.

    .venv/bin/python -m bench.faults.disk_full --trials 3
"""

from __future__ import annotations

import argparse
import errno
import os
import shutil
import subprocess
import sys
from contextlib import contextmanager
from collections.abc import Iterator
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.faults.ledger import Audit, Ledger, api, wait_for
from bench.faults.stack import ComposeStack, scratch_dir

USERNS_ENV = "SPACETIME_FAULT_IN_USERNS"


class NoSmallFilesystem(RuntimeError):
    pass


@contextmanager
def small_filesystem(path: Path, size_mb: int = 8) -> Iterator[Path]:
    """A tmpfs of `size_mb` at `path` (root, or root in a user namespace); unmounted afterwards."""
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0755", "tmpfs", str(path)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise NoSmallFilesystem(f"cannot mount a tmpfs at {path}: {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(folder: Path) -> Path:
    """Write a ballast file until the filesystem says ENOSPC; returns it."""
    ballast = folder / "ballast.bin"
    block = b"\0" * (64 * 1024)
    with open(ballast, "wb", buffering=0) as f:  # unbuffered: nothing left to flush at close
        for chunk in (block, b"\0" * 512):  # big blocks, then the last partial block
            try:
                while True:
                    f.write(chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
    return ballast


def run_trials(stack: ComposeStack, ledger: Ledger, trials: int) -> Audit:
    """`stack`'s /videos must be a small filesystem (see `small_filesystem`)."""
    audit = Audit("output disk full")
    videos = Path(stack.host_path("/videos"))
    for _ in range(trials):
        ballast = fill(videos)
        video = ledger.submit(allowed={"failed"})
        final = wait_for(ledger.client, video["id"], ("failed", "completed"), timeout_s=180)
        ballast.unlink()
        content = ledger.client.get(f"/v1/videos/{video['id']}/content")
        leftovers = [p for p in videos.rglob("*") if video["id"] in str(p)]
        workspaces = [p for p in (videos / ".tmp").glob("*")] if (videos / ".tmp").exists() else []
        error = final.get("error") or {}
        if final["status"] != "failed" or error.get("code") != "storage_full" or str(videos) in error.get("message", ""):
            audit.notes.append(f"FAIL: {video['id']} ended {final['status']}: {error}")
        if content.status_code == 200 or leftovers or workspaces:
            audit.notes.append(f"FAIL: content {content.status_code}, files left: {leftovers + workspaces}")
        after = ledger.submit(allowed={"completed"})  # space is back: the service recovers by itself
        ledger.audit(audit, ids=[video["id"], after["id"]])
        audit.trials += 1
    return audit


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep the stack's folder (logs)")
    args = parser.parse_args()
    with scratch_dir(args.keep) as tmp:
        try:
            with small_filesystem(tmp / "videos"), ComposeStack(tmp) as stack:
                stack.start(workers=1)
                audit = run_trials(stack, Ledger(stack, api(stack)), args.trials)
        except NoSmallFilesystem as exc:
            if os.environ.get(USERNS_ENV) or not shutil.which("unshare"):
                print(f"error: {exc}; run as root or where unprivileged user namespaces are allowed",
                      file=sys.stderr)
                return 2
            print(f"{exc}; retrying inside a user namespace", file=sys.stderr)
            cmd = ["unshare", "--user", "--map-root-user", "--mount", sys.executable, "-m", "bench.faults.disk_full",
                   *sys.argv[1:]]
            return subprocess.call(cmd, env={**os.environ, USERNS_ENV: "1"}, cwd=Path(__file__).resolve().parents[2])
    return audit.report()


if __name__ == "__main__":
    sys.exit(main())
