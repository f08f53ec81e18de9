"""The distributed side of a corpus job: torchrun's world, a device per rank, barriers, SIGINT
and SIGTERM as an exception, per-rank manifest parts that rank 0 merges, and the job's progress bar.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from tqdm import tqdm

from .files import atomic_write

MANIFEST = "manifest.jsonl"
PART = ".manifest-rank{}.jsonl"  # one per rank while the run lasts
BARRIER_TIMEOUT = timedelta(hours=12)  # ranks wait for the slowest shard at the end


@dataclass(frozen=True)
class World:
    """This process's place in a torchrun job (rank 0 of 1 when run alone)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0


def detect_world(env=None) -> World:
    """Read torchrun's ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` (absent: a single process)."""
    env = os.environ if env is None else env
    size = int(env.get("WORLD_SIZE", 1))
    return World(int(env.get("RANK", 0)), size, int(env.get("LOCAL_RANK", 0)))


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived: stop where we are (temp files are removed on the way out)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextmanager
def signals_interrupt() -> Iterator[None]:
    """Turn SIGINT and SIGTERM into :class:`Interrupted` for the duration (main thread only)."""

    def handler(signum, _frame):
        raise Interrupted(signum)

    previous = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            if signal.getsignal(signum) != signal.SIG_IGN:  # what the parent ignores stays so
                previous[signum] = signal.signal(signum, handler)
        except ValueError:  # not the main thread: leave the signals alone
            break
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def ignore_signals() -> None:
    """While the account of an interrupted run is written: a second Ctrl-C must not break it."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            signal.signal(signum, signal.SIG_IGN)
        except ValueError:
            pass


def rank_device(requested: str, world: World) -> str:
    """Each rank on its own device: ``auto``/``cuda`` become ``cuda:LOCAL_RANK`` under torchrun."""
    import torch

    if requested in ("auto", "cuda") and torch.cuda.is_available():
        return f"cuda:{world.local_rank}" if world.size > 1 else "cuda"
    return "cpu" if requested == "auto" else requested


@contextmanager
def process_group(world: World, device: str) -> Iterator[None]:
    """torch.distributed for the job's barriers: NCCL when the rank runs on CUDA, else gloo."""
    import torch
    import torch.distributed as dist

    if world.size == 1 or dist.is_initialized():
        yield
        return
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.set_device(torch.device(device))
        dist.init_process_group("nccl", timeout=BARRIER_TIMEOUT, device_id=torch.device(device))
    else:
        dist.init_process_group("gloo", timeout=BARRIER_TIMEOUT)
    try:
        yield
    finally:
        dist.destroy_process_group()


def barrier(world: World) -> None:
    """Wait for every rank (nothing to wait for when alone)."""
    if world.size > 1:
        import torch.distributed as dist

        dist.barrier()


def open_part(out_dir: Path, world: World):
    """This rank's manifest part, opened for appending; None when OUT cannot be written."""
    try:
        return open(out_dir / PART.format(world.rank), "a", encoding="utf-8")
    except OSError:
        return None


def read_rows(path: Path) -> list[dict]:
    """The whole lines of a part file (a rank killed mid-line leaves at most a broken tail)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    rows = []
    for line in lines:
        try:
            rows.append(json.loads(line))
        except ValueError:
            pass
    return rows


def merge_manifest(out_dir: Path, rows: list[dict], order: dict, world: World) -> list[dict]:
    """Rank 0: its rows and the other ranks' parts -> OUT/manifest.jsonl, sorted by ``order``
    ((input, output) -> position)."""
    for rank in range(1, world.size):
        rows = rows + read_rows(out_dir / PART.format(rank))
    rows = sorted(rows, key=lambda r: order.get((r["input"], r["output"]), len(order)))
    text = "".join(json.dumps(r) + "\n" for r in rows)
    try:
        atomic_write(out_dir / MANIFEST, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
        for rank in range(world.size):
            (out_dir / PART.format(rank)).unlink(missing_ok=True)
    except OSError as err:
        tqdm.write(f"error: {out_dir / MANIFEST}: cannot write ({err.strerror})", file=sys.stderr)
    return rows


class Progress:
    """Rank 0's bar over the whole job: its own rows plus the lines the other ranks appended."""

    def __init__(self, total: int, out_dir: Path, world: World, quiet: bool):
        enabled = world.rank == 0 and not quiet and sys.stderr.isatty()
        self.bar = tqdm(total=total, desc="enhance", unit="file", disable=not enabled)
        self.parts = [out_dir / PART.format(r) for r in range(1, world.size)] if enabled else []
        self.sizes = [0] * len(self.parts)
        self.lines = [0] * len(self.parts)

    def update(self, own_rows: int) -> None:
        for k, part in enumerate(self.parts):
            try:
                with open(part, "rb") as f:
                    f.seek(self.sizes[k])
                    chunk = f.read()
            except OSError:
                continue
            self.sizes[k] += len(chunk)
            self.lines[k] += chunk.count(b"\n")
        self.bar.update(own_rows + sum(self.lines) - self.bar.n)

    def close(self) -> None:
        self.bar.close()


def close_part(run) -> None:
    """Close the part file a run (anything with a ``part`` attribute) appends to."""
    if run.part is not None:
        run.part.close()
        run.part = None
