"""Corpus enhancement: plan, shard, run, resume and record ``audiodiff enhance`` over many files.

One process, or one per device under torchrun (``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` set): every
rank plans the same corpus from the soundfile headers (no decoding), takes its duration-balanced
shard, enhances it on its own device in length-sorted groups and appends one JSON row per file to
``OUT/.manifest-rank<r>.jsonl``; rank 0 merges the parts into ``OUT/manifest.jsonl`` at the end.
Outputs are written atomically and carry per-file seeds derived from the seed and the file's
relative path, so they depend neither on the number of ranks nor on what a file is batched with.
A rerun skips complete outputs (``--overwrite`` recomputes them).
"""

from __future__ import annotations

import errno
import functools
import glob
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import soundfile as sf
from tqdm import tqdm

from .audio import AudioError, read_audio, write_audio
from .errors import UsageError
from .files import atomic_write
from .jobs import (
    Interrupted,
    Progress,
    World,
    barrier,
    close_part,
    detect_world,
    ignore_signals,
    merge_manifest,
    open_part,
    process_group,
    rank_device,
    signals_interrupt,
)

SETTINGS = ".enhance-settings.json"  # what the outputs in OUT were made with


@dataclass(frozen=True)
class Item:
    """One input file of the corpus, as its header describes it (rate 0: header unreadable)."""

    index: int  # position in the expanded input list: the manifest's order
    source: Path
    relative: Path
    target: Path
    frames: int = 0
    rate: int = 0
    channels: int = 0
    subtype: str | None = None

    @property
    def seconds(self) -> float:
        return self.frames / self.rate if self.rate else 0.0


def probe(index: int, source: Path, relative: Path, out_dir: Path) -> Item:
    """The header of ``source`` (frames, rate, channels, subtype); nothing is decoded."""
    item = Item(index, source, relative, out_dir / relative)
    try:
        info = sf.info(str(source))
    except Exception:  # noqa: BLE001 - read_audio names the problem when the file is read
        return item
    subtype = info.subtype if sf.check_format(info.format, info.subtype) else None
    return replace(
        item, frames=info.frames, rate=info.samplerate, channels=info.channels, subtype=subtype
    )


def shard(groups: list[list[Item]], size: int) -> list[list[list[Item]]]:
    """Split length groups over ``size`` ranks balanced by duration: longest to the lightest rank.

    Greedy longest-processing-time over whole groups, so a file meets the same batch on any
    number of ranks: deterministic (ties broken by first path, then rank), and no rank ends more
    than one group's duration above the lightest.
    """
    loads, shards = [0.0] * size, [[] for _ in range(size)]
    for group in sorted(groups, key=lambda g: (-group_seconds(g), g[0].relative.as_posix())):
        lightest = min(range(size), key=lambda r: (loads[r], r))
        shards[lightest].append(group)
        loads[lightest] += group_seconds(group)
    return [sorted(s, key=lambda g: min(i.index for i in g)) for s in shards]


def group_seconds(group: list[Item]) -> float:
    return sum(i.seconds for i in group)


def file_seed(seed: int, relative: Path) -> int:
    """A file's sampler seed from the run's seed and its relative path (not its position)."""
    digest = hashlib.sha256(f"{seed}\0{relative.as_posix()}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def chunk_frames(item: Item, enhancer) -> list[tuple[int, int]]:
    """(valid, padded) STFT frames of each chunk the enhancer cuts one channel of ``item`` into."""
    from .enhance import CROSSFADE_SECONDS, chunk_offsets
    from .spec import num_frames

    if not item.rate:
        return []
    spec, rate = enhancer.config.spec, enhancer.sample_rate
    chunk, overlap = round(enhancer.chunk_seconds * rate), round(CROSSFADE_SECONDS * rate)
    length = round(item.frames * rate / item.rate)
    sizes = []
    for offset in chunk_offsets(length, chunk, overlap):
        frames = num_frames(max(min(chunk, length - offset), spec.n_fft), spec)
        sizes.append((frames, -(-frames // spec.frame_multiple) * spec.frame_multiple))
    return sizes


def length_groups(items: list[Item], batch_size: int, chunks) -> list[list[Item]]:
    """Length bucketing across the shard: sort by duration, cut into groups of at most
    ``batch_size`` chunk rows (``chunks(item)``: its chunks) of one rate and, for short files,
    one padded size, so the enhancer's network batches come out full."""
    order = sorted(items, key=lambda i: (i.rate, i.channels, i.seconds, i.relative.as_posix()))
    groups: list[list[Item]] = []
    rows, key = 0, None
    for item in order:
        sizes = chunks(item)
        weight = item.channels * len(sizes)
        new_key = (item.rate, item.channels, sizes[0][1] if len(sizes) == 1 else len(sizes) > 1)
        if not groups or rows + weight > batch_size or new_key != key:
            groups.append([])
            rows, key = 0, new_key
        groups[-1].append(item)
        rows += weight
    return groups


def batch_geometry(groups: list[list[Item]], batch_size: int, chunks) -> tuple[float, float]:
    """(padding fraction, batch fill) the enhancer meets on these groups.

    Padding: frames added to reach each chunk's padded size over all frames the network sees.
    Fill: chunk rows over batch slots (``batch_size`` per network batch; a bucket per size).
    """
    valid = padded = slots = rows = 0
    for group in groups:
        buckets: dict[int, int] = {}
        for item in group:
            for frames, size in chunks(item):
                buckets[size] = buckets.get(size, 0) + item.channels
                valid += frames * item.channels
                padded += size * item.channels
        rows += sum(buckets.values())
        slots += sum(-(-n // batch_size) * batch_size for n in buckets.values())
    return (1 - valid / padded if padded else 0.0), (rows / slots if slots else 0.0)


# -- running one rank ------------------------------------------------------------------------


@dataclass
class Options:
    """Everything ``audiodiff enhance`` was asked, after the model resolved its defaults."""

    output: Path
    model: str
    mode: str
    steps: int
    overrides: dict
    device: str = "auto"
    seed: int = 0
    atten_lim_db: float | None = None
    overwrite: bool = False
    quiet: bool = False

    def fingerprint(self, enhancer) -> dict:
        """The settings an output depends on (a rerun with others must not skip it)."""
        model = Path(self.model)
        settings = {
            "model": str(model.resolve()) if model.exists() else self.model,
            "mode": self.mode,
            "atten_lim_db": self.atten_lim_db,
            "precision": enhancer.precision,
            "chunk_seconds": enhancer.chunk_seconds,
        }
        if self.mode != "predictive":
            sampler = replace(enhancer.config.sampler, **self.overrides)
            settings |= {
                "seed": self.seed,
                "steps": self.steps,
                "method": sampler.method,
                "corrector_steps": sampler.corrector_steps,
                "snr": sampler.snr,
            }
        return settings


@dataclass
class Shard:
    """One rank's run: its enhancer, its items and the rows it has written so far."""

    enhancer: object
    options: Options
    world: World
    rows: list[dict] = field(default_factory=list)
    part: object = None  # the open part file, or None when OUT cannot be written

    def row(
        self,
        item: Item,
        status: str,
        error: str | None = None,
        compute: float = 0.0,
        name: Path | None = None,
    ) -> None:
        """Record one file (and print its error line, naming ``name`` or the input)."""
        row = {
            "input": str(item.source),
            "output": str(item.target),
            "seconds": round(item.seconds, 4),
            "status": status,
            "error": error,
            "rank": self.world.rank,
            "compute_seconds": round(compute, 4),
            "mode": self.options.mode,
            "steps": self.options.steps,
        }
        self.rows.append(row)
        if error is not None:
            tqdm.write(f"error: {name or item.source}: {error}", file=sys.stderr)
        if self.part is not None:
            self.part.write(json.dumps(row) + "\n")
            self.part.flush()

    def usable(self, item: Item, seen: dict[Path, Path]) -> bool:
        """False (with an error row) for another input's output or an unwritable folder."""
        target, name = item.target.resolve(), None
        if seen.get(target, item.source) != item.source:
            problem = f"output {item.target} is also the output of {seen[target]}"
        elif item.target.parent.is_dir() and not os.access(item.target.parent, os.W_OK):
            problem = f"cannot write ({os.strerror(errno.EACCES)})"
            name = item.target  # the line names the output
        else:
            return True
        self.row(item, "error", problem, name=name)
        return False

    def run_group(self, group: list[Item], seen: dict[Path, Path]) -> None:
        """Read, enhance in one call (the enhancer batches by length) and write one group.

        Complete outputs are skipped; a group that a kill left half-written is recomputed whole
        (its finished files are not rewritten), so its batches and results stay the same.
        """
        group = [i for i in group if self.usable(i, seen)]
        done = {i.index for i in group if not self.options.overwrite and is_complete(i)}
        if len(done) == len(group):
            for item in group:
                self.row(item, "skipped")
            return
        items, audio = [], []
        for item in group:
            try:
                audio.append(read_audio(item.source)[0])
                items.append(item)
            except AudioError as err:
                self.row(item, "error", err.problem)
        start = time.perf_counter()
        outputs = self.enhance(items, audio, seen) if items else []
        elapsed = time.perf_counter() - start
        total = sum(i.seconds for i in items) or 1.0
        for item, out in zip(items, outputs):
            if item.index in done:
                self.row(item, "skipped")
                continue
            try:
                write_audio(item.target, out, item.rate, subtype=item.subtype)
            except OSError as err:
                reason = err.strerror or type(err).__name__
                self.row(item, "error", f"cannot write ({reason})", name=item.target)
                continue
            self.row(item, "ok", compute=elapsed * item.seconds / total)

    def enhance(self, items: list[Item], audio: list, seen: dict[Path, Path]) -> list:
        """The enhancer over one group with per-file seeds; [] when it failed (rows written)."""
        try:
            return self.enhancer(
                audio,
                items[0].rate,
                seed=[file_seed(self.options.seed, i.relative) for i in items],
                atten_lim_db=self.options.atten_lim_db,
                **self.options.overrides,
            )
        except (ValueError, RuntimeError) as err:  # a problem the model met with one file
            if len(items) > 1:  # find it: each file alone
                for item in items:
                    self.run_group([item], seen)
                return []
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            self.row(items[0], "error", reason)
            return []


def is_complete(item: Item) -> bool:
    """An output exists with the input's frames, rate and channels (writes are atomic)."""
    if not item.rate or not item.target.is_file():
        return False
    try:
        info = sf.info(str(item.target))
    except Exception:  # noqa: BLE001 - an unreadable output is recomputed
        return False
    return (info.frames, info.samplerate, info.channels) == (item.frames, item.rate, item.channels)


# -- the whole job ----------------------------------------------------------------------------


def plan(jobs: list[tuple[Path, Path]], out_dir: Path) -> list[Item]:
    """Every input with its header and target, in the order the user named them."""
    return [probe(k, source, relative, out_dir) for k, (source, relative) in enumerate(jobs)]


def prepare(out_dir: Path, settings: dict, overwrite: bool, world: World, mine: list[list[Item]]):
    """Refuse a folder made with other settings; clear the last run's parts and temp files."""
    try:
        previous = json.loads((out_dir / SETTINGS).read_text())
    except (OSError, ValueError):
        previous = None
    if previous not in (None, settings) and not overwrite:
        changed = ", ".join(
            f"{k} {previous.get(k)!r} -> {v!r}" for k, v in settings.items() if previous.get(k) != v
        )
        raise UsageError(
            out_dir,
            f"holds outputs made with other settings ({changed}); pass "
            "--overwrite to recompute them, or choose another -o",
        )
    barrier(world)  # every rank has read the old settings before rank 0 replaces them
    if world.rank == 0:
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
            for stale in out_dir.glob(".manifest-rank*.jsonl"):
                stale.unlink()
            atomic_write(out_dir / SETTINGS, lambda tmp: Path(tmp).write_text(json.dumps(settings)))
        except OSError:
            pass  # an unwritable folder: every file gets its own error row
    for item in (i for group in mine for i in group):  # temp files of a run killed by SIGKILL
        pattern = glob.escape(f".{item.target.name}.") + "*.tmp"
        for stale in item.target.parent.glob(pattern):
            stale.unlink(missing_ok=True)
    barrier(world)


def enhance_corpus(jobs: list[tuple[Path, Path]], options: Options, load) -> tuple[int, dict]:
    """Run the job on this rank; returns (exit code, summary: rank 0's covers every rank).

    ``load(device)`` builds the :class:`~audiodiff.enhance.Enhancer`. SIGINT/SIGTERM stop the run
    with a one-line account on stderr and exit code 128 + signal; the files written stay whole.
    """
    refuse_overwriting_inputs(jobs, options.output)
    world, state = detect_world(), {}
    device = rank_device(options.device, world)
    try:
        with signals_interrupt(), process_group(world, device):
            return run_rank(jobs, options, load(device), world, time.monotonic(), state)
    except Interrupted as stop:
        ignore_signals()  # a second Ctrl-C must not break the account below
        rows = state["shard"].rows if "shard" in state else []
        if world.size == 1 and "shard" in state:
            close_part(state["shard"])
            merge_manifest(options.output, rows, input_order(state["items"]), world)
        done = sum(r["status"] != "error" for r in rows)
        total = len(state.get("items", jobs))
        prefix = f"rank {world.rank}: " if world.size > 1 else ""
        print(
            f"{prefix}interrupted by {stop}: {done} of {total} files done ("
            f"{sum(r['status'] == 'ok' for r in rows)} enhanced, "
            f"{sum(r['status'] == 'skipped' for r in rows)} skipped); "
            "run the same command again to resume",
            file=sys.stderr,
        )
        return 128 + stop.signum, {}


def refuse_overwriting_inputs(jobs: list[tuple[Path, Path]], out_dir: Path) -> None:
    """A usage error, before anything is loaded or written, if an output would be an input."""
    inputs = {source.resolve() for source, _ in jobs}
    for source, relative in jobs:
        if (out_dir / relative).resolve() in inputs:
            problem = f"the output for {source} would overwrite an input; choose another -o"
            raise UsageError(f"-o {out_dir}", problem)


def resolve(options: Options, enhancer) -> Options:
    """Fill in the mode and step count the model's own defaults give."""
    from .config import MODES

    sampler = replace(enhancer.config.sampler, **options.overrides)
    mode = sampler.mode or enhancer.config.default_mode
    if mode not in MODES[enhancer.config.kind]:
        raise UsageError(
            "--mode",
            f"a {enhancer.config.kind} model runs "
            f"{', '.join(MODES[enhancer.config.kind])}, not {mode}",
        )
    return replace(options, mode=mode, steps=0 if mode == "predictive" else sampler.steps)


def run_rank(jobs, options: Options, enhancer, world: World, start: float, state: dict):
    options = resolve(options, enhancer)
    out_dir = options.output
    items = state["items"] = plan(jobs, out_dir)
    chunks = functools.partial(chunk_frames, enhancer=enhancer)
    groups = length_groups(items, enhancer.batch_size, chunks)  # across the whole corpus
    mine = shard(groups, world.size)[world.rank]
    prepare(out_dir, options.fingerprint(enhancer), options.overwrite, world, mine)
    run = state["shard"] = Shard(enhancer, options, world, part=open_part(out_dir, world))
    seen = first_targets(items)
    progress = Progress(len(items), out_dir, world, options.quiet)
    for group in mine:
        run.run_group(group, seen)
        progress.update(len(run.rows))
    progress.close()
    close_part(run)
    barrier(world)  # every rank's part is complete
    if world.rank != 0:
        return int(any(r["status"] == "error" for r in run.rows)), {}
    rows = merge_manifest(out_dir, run.rows, input_order(items), world)
    padding, fill = batch_geometry(groups, enhancer.batch_size, chunks)
    summary = summarize(rows, time.monotonic() - start, options, world)
    summary |= {"padding_fraction": round(padding, 4), "batch_fill": round(fill, 4)}
    return int(summary["failed"] > 0), summary | {"rows": rows}


def first_targets(items: list[Item]) -> dict[Path, Path]:
    """target -> the input that owns it, for targets that several inputs would write."""
    owners: dict[Path, Path] = {}
    clashes: dict[Path, Path] = {}
    for item in items:
        target = item.target.resolve()
        if target in owners:
            clashes[target] = owners[target]
        owners.setdefault(target, item.source)
    return clashes


def input_order(items: list[Item]) -> dict[tuple[str, str], int]:
    return {(str(i.source), str(i.target)): i.index for i in items}


def summarize(rows: list[dict], wall: float, options: Options, world: World) -> dict:
    """Totals of the merged rows: files, hours of audio, throughput, errors."""
    count = {s: sum(r["status"] == s for r in rows) for s in ("ok", "skipped", "error")}
    enhanced = sum(r["seconds"] for r in rows if r["status"] == "ok")
    return {
        "model": options.model,
        "mode": options.mode,
        "steps": options.steps,
        "files": count["ok"] + count["skipped"],
        "enhanced": count["ok"],
        "skipped": count["skipped"],
        "failed": count["error"],
        "audio_seconds": round(enhanced, 3),
        "hours": round(sum(r["seconds"] for r in rows if r["status"] != "error") / 3600, 4),
        "wall_seconds": round(wall, 3),
        "throughput": round(enhanced / wall, 3) if wall > 0 else None,
        "rtf": round(wall / enhanced, 4) if enhanced else None,
        "ranks": world.size,
    }
