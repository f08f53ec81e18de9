"""`audiodiff enhance` over a corpus: torchrun sharding, resume after a kill, the manifest, and
the interrupt / unwritable-output rows of the bad-input table."""

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
import torch

from audiodiff import Enhancer
from audiodiff.cli import main
from audiodiff.corpus import Item, batch_geometry, chunk_frames, file_seed, length_groups, shard
from audiodiff.jobs import World, detect_world, rank_device

REPO = Path(__file__).resolve().parents[1]
SOURCES = sorted((REPO / "tests" / "data" / "pairs" / "noisy").glob("*.wav")) + sorted(
    (REPO / "audiodiff" / "assets" / "examples" / "noisy").glob("*.wav")
)
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """12 real speech files of 0.4-1.6 s cut from the committed audio, three in a subfolder.

    Written as float WAV, so the outputs are float too and can be compared to 1e-5.
    """
    folder = tmp_path_factory.mktemp("corpus") / "in"
    (folder / "sub").mkdir(parents=True)
    rng = np.random.default_rng(16)
    for k in range(12):
        audio, rate = sf.read(str(SOURCES[k % len(SOURCES)]), dtype="float32")
        length = int(rate * rng.uniform(0.4, 1.6))
        start = int(rng.integers(0, audio.size - length))
        name = f"sub/s{k:02d}.wav" if k % 4 == 3 else f"f{k:02d}.wav"
        sf.write(str(folder / name), audio[start : start + length], rate, subtype="FLOAT")
    return folder


def wavs(folder: Path) -> dict[str, np.ndarray]:
    return {
        p.relative_to(folder).as_posix(): sf.read(str(p), dtype="float32")[0]
        for p in sorted(folder.rglob("*.wav"))
    }


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha1(p.read_bytes()).hexdigest() for p in folder.rglob("*.wav")}


def leftovers(folder: Path) -> list[str]:
    """Temp files and manifest parts: what a clean finish must not leave."""
    return [p.name for p in folder.rglob("*") if p.suffix == ".tmp" or "rank" in p.name]


def enhance_json(capsys, *args: str) -> dict:
    assert main(["enhance", *args, "--quiet", "--json"]) in (0, 1)
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def reference(corpus, tmp_path_factory):
    """Single-process runs of the bundled model (predictive, its default) at batch 8 and 1."""
    out = {}
    for batch in ("8", "1"):
        out[batch] = tmp_path_factory.mktemp(f"ref{batch}")
        code = main(["enhance", str(corpus), "-o", str(out[batch]), "--batch-size", batch])
        assert code == 0
    return out


def test_two_gloo_ranks_give_the_single_process_outputs(corpus, reference, tmp_path):
    out = tmp_path / "out"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc-per-node", "2", "-m", "audiodiff.cli", "enhance", str(corpus)]
    command += ["-o", str(out), "--json", "--quiet"]
    done = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])  # printed by rank 0 only
    assert summary["ranks"] == 2 and summary["enhanced"] == 12 and summary["failed"] == 0
    single, double = wavs(reference["8"]), wavs(out)
    assert single.keys() == double.keys() and len(single) == 12
    for name, audio in single.items():
        assert np.abs(double[name] - audio).max() <= 1e-5, name
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    inputs = [str(p) for p in sorted(corpus.rglob("*.wav"))]
    assert [r["input"] for r in rows] == inputs  # one merged manifest, in input order
    assert {r["rank"] for r in rows} == {0, 1} and {r["status"] for r in rows} == {"ok"}
    for row in rows:
        assert row["seconds"] == pytest.approx(sf.info(row["input"]).duration, abs=1e-3)
        assert row["compute_seconds"] > 0 and row["error"] is None
    assert leftovers(out) == []


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killed_run_resumes_without_recomputing(corpus, reference, tmp_path, capsys, sig):
    out = tmp_path / "out"
    args = [str(corpus), "-o", str(out), "--batch-size", "1"]
    command = [sys.executable, "-m", "audiodiff.cli", "enhance", *args, "--quiet"]
    run = subprocess.Popen(command, env=ENV, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while len(list(out.rglob("*.wav"))) < 3 and run.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    run.send_signal(sig)
    stderr = run.communicate(timeout=60)[1]
    if sig == signal.SIGTERM:
        assert run.returncode == 128 + sig and "Traceback" not in stderr
        assert len(stderr.strip().splitlines()) == 1 and "interrupted by SIGTERM" in stderr
        assert [p for p in out.rglob("*") if p.suffix == ".tmp"] == []
    else:
        assert run.returncode == -sig
    finished = wavs(out)
    assert 3 <= len(finished) < 12, "the kill must land midway"
    for name, audio in finished.items():  # whole files only
        assert audio.shape == sf.read(str(corpus / name))[0].shape
    summary = enhance_json(capsys, *args)
    status = {Path(r["output"]).relative_to(out).as_posix(): r["status"] for r in summary["rows"]}
    assert {n for n, s in status.items() if s == "skipped"} == set(finished)
    assert {n for n, s in status.items() if s == "ok"} == set(wavs(reference["1"])) - set(finished)
    final, expected = wavs(out), wavs(reference["1"])
    assert final.keys() == expected.keys()
    for name, audio in expected.items():
        assert np.abs(final[name] - audio).max() <= 1e-5, name
    assert leftovers(out) == []


def test_each_file_comes_out_as_alone_with_its_own_seed(corpus, tiny_model_dir, tmp_path, capsys):
    """Generative mode: per-file seeds from the relative path, whatever the batch or position."""
    small = tmp_path / "in"
    shutil.copytree(corpus / "sub", small / "sub")  # three files, in a subfolder
    shutil.copy(corpus / "f00.wav", small)
    out = tmp_path / "out"
    args = [str(small), "-o", str(out), "--model", str(tiny_model_dir), "--steps", "1"]
    summary = enhance_json(capsys, *args)
    assert (summary["mode"], summary["steps"], summary["enhanced"]) == ("score", 1, 4)
    enhancer = Enhancer.from_pretrained(tiny_model_dir, device="cpu")
    for name, audio in wavs(out).items():
        noisy, rate = sf.read(str(small / name), dtype="float32")
        alone = enhancer(noisy, rate, seed=file_seed(0, Path(name)), steps=1)
        assert np.abs(alone - audio).max() <= 1e-5, name
    assert main(["enhance", *args[:2], str(tmp_path / "seed1"), *args[3:], "--seed", "1"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]  # the summary names what ran
    assert line.startswith("4 files (4 enhanced, 0 skipped), 0 errors")
    assert f"model {tiny_model_dir}, mode score, 1 step;" in line
    assert not np.allclose(wavs(tmp_path / "seed1")["f00.wav"], wavs(out)["f00.wav"])


def test_other_settings_are_refused_and_clashing_outputs_named(corpus, tmp_path, capsys):
    out = tmp_path / "out"
    one = str(corpus / "f00.wav")
    assert main(["enhance", one, "-o", str(out), "--quiet"]) == 0
    before = (out / "f00.wav").read_bytes()
    again = ["enhance", one, "-o", str(out), "--mode", "storm", "--steps", "1", "--quiet"]
    assert main(again) == 2  # old predictive outputs must not pass for storm ones
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {out}: holds outputs made with other settings (mode ")
    assert "--overwrite" in err and (out / "f00.wav").read_bytes() == before
    assert main([*again, "--overwrite"]) == 0
    assert (out / "f00.wav").read_bytes() != before
    capsys.readouterr()
    twin = tmp_path / "twin" / "f00.wav"  # same name, other folder: same output
    twin.parent.mkdir()
    shutil.copy(corpus / "f01.wav", twin)
    summary = enhance_json(capsys, one, str(twin), "-o", str(tmp_path / "o2"))
    assert [r["status"] for r in summary["rows"]] == ["ok", "error"]
    assert f"is also the output of {one}" in summary["rows"][1]["error"]


# -- planning: sharding and length groups ------------------------------------------------------


def synthetic_items(count: int, seed: int, longest: float = 20.0) -> list[Item]:
    rng = random.Random(seed)
    return [
        Item(k, Path(f"x{k}.wav"), Path(f"x{k}.wav"), Path(f"o/x{k}.wav"), frames, 16000, 1)
        for k, frames in enumerate(int(16000 * rng.uniform(0.5, longest)) for _ in range(count))
    ]


@pytest.mark.parametrize("ranks", [2, 3, 8])
def test_shards_balance_duration_and_are_deterministic(ranks):
    items = synthetic_items(200, ranks)
    groups = [[i] for i in items]
    shards = shard(groups, ranks)
    assigned = sorted(i.index for s in shards for g in s for i in g)
    assert assigned == list(range(200))  # every file exactly once
    loads = [sum(i.seconds for g in s for i in g) for s in shards]
    assert max(loads) - min(loads) <= max(i.seconds for i in items)
    shuffled = groups[:]
    random.Random(1).shuffle(shuffled)
    again = shard(shuffled, ranks)
    assert [{i.index for g in s for i in g} for s in again] == [
        {i.index for g in s for i in g} for s in shards
    ]


def test_torchrun_environment_and_devices():
    world = detect_world({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"})
    assert world == World(rank=3, size=4, local_rank=1)
    assert detect_world({}) == World(0, 1, 0)
    cuda = torch.cuda.is_available()
    assert rank_device("auto", world) == ("cuda:1" if cuda else "cpu")
    assert rank_device("cpu", world) == "cpu" and rank_device("cuda:0", world) == "cuda:0"


def test_shards_balance_duration_not_file_count():
    long = Item(0, Path("long.wav"), Path("long.wav"), Path("o/long.wav"), 16000 * 100, 16000, 1)
    short = [
        Item(k, Path(f"s{k}.wav"), Path(f"s{k}.wav"), Path(f"o/s{k}.wav"), 16000 * 10, 16000, 1)
        for k in range(1, 11)
    ]
    shards = shard([[i] for i in [long, *short]], 2)
    assert sorted(len(s) for s in shards) == [1, 10]


def test_length_groups_fill_batches_better_than_input_order():
    enhancer = Enhancer.from_pretrained(device="cpu")  # only its geometry is used
    chunks = lambda item: chunk_frames(item, enhancer)  # noqa: E731
    items = synthetic_items(300, 0, longest=4.5)  # utterances: one chunk each at 5 s chunks
    groups = length_groups(items, 8, chunks)
    assert sorted(i.index for g in groups for i in g) == list(range(300))
    for group in groups:
        assert sum(len(chunks(i)) for i in group) <= 8 or len(group) == 1
        singles = {chunks(i)[0][1] for i in group if len(chunks(i)) == 1}
        assert len(singles) <= 1  # short files of one group share their padded size
    naive = [items[k : k + 8] for k in range(0, 300, 8)]
    padding, fill = batch_geometry(groups, 8, chunks)
    assert batch_geometry(naive, 8, chunks)[0] == pytest.approx(padding)  # padding is per chunk
    assert fill > 0.8 and fill > 2 * batch_geometry(naive, 8, chunks)[1]
    one = SimpleNamespace(rate=16000, frames=16000, channels=1)  # 1 s: 126 frames -> 128
    assert chunk_frames(one, enhancer) == [(126, 128)]
    assert 0 < padding < 0.5


# -- bad-input rows (issue 18) that live in the enhance loop -----------------------------------


@pytest.fixture
def work(tmp_path):
    """A scratch folder; a folder made immutable for the read-only case is released after."""
    yield tmp_path
    if os.geteuid() == 0 and (tmp_path / "ro").exists():
        subprocess.run(["chattr", "-i", str(tmp_path / "ro")], check=False)


def existing_file(work: Path) -> tuple[list[str], Path]:
    (work / "taken.txt").write_text("x")
    return ["-o", str(work / "taken.txt")], work / "taken.txt"


def read_only_folder(work: Path) -> tuple[list[str], Path]:
    (work / "ro").mkdir()
    (work / "ro").chmod(0o555)
    if os.geteuid() == 0:  # root ignores permissions, not the immutable attribute
        done = subprocess.run(["chattr", "+i", str(work / "ro")], capture_output=True, check=False)
        if done.returncode != 0:
            pytest.skip("running as root where chattr +i is not allowed")
    return ["-o", str(work / "ro")], work / "ro"


def interrupt(work: Path) -> tuple[list[str], Path]:
    return ["-o", str(work / "out"), "--batch-size", "1"], work / "out"


CASES = {  # name -> (arguments and what the error line must name, exit code, stop with)
    "-o names a file": (existing_file, 2, None),
    "read-only output": (read_only_folder, 1, None),
    "Ctrl-C": (interrupt, 130, signal.SIGINT),
}


def default_sigint() -> None:
    """A child of a background job inherits an ignored SIGINT, and audiodiff keeps it ignored
    (as Python does): give the child the terminal's default, as Ctrl-C would find it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("case", CASES)
def test_bad_output_and_interrupt_rows(case, corpus, work):
    setup, code, sig = CASES[case]
    shutil.copytree(corpus, work / "in")
    before = digest(work / "in")
    args, named = setup(work)
    command = [sys.executable, "-m", "audiodiff.cli", "enhance", str(work / "in"), *args]
    run = subprocess.Popen(
        [*command, "--quiet"],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=work,
        preexec_fn=default_sigint,
    )
    if sig is not None:
        deadline = time.monotonic() + 120
        while not list(named.rglob("*.wav")) and run.poll() is None:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        run.send_signal(sig)
    stderr = run.communicate(timeout=120)[1]
    lines = stderr.strip().splitlines()
    assert run.returncode == code, stderr
    assert "Traceback" not in stderr
    if case == "read-only output":  # one line per file, each naming its output
        for name in before:
            assert sum(name in line for line in lines) == 1, (name, lines)
        assert all(line.startswith(f"error: {named}") for line in lines)
    elif case == "Ctrl-C":
        assert len(lines) == 1 and lines[0].startswith("interrupted by SIGINT: ")
        assert 1 <= len(wavs(named)) < 12
    else:
        assert lines == [f"error: {named}: exists and is not a folder; -o names the output folder"]
    assert digest(work / "in") == before  # inputs unchanged
    assert [p.name for p in work.rglob("*") if p.suffix == ".tmp"] == []
    for name, audio in wavs(named).items() if named.is_dir() else ():
        assert audio.shape == sf.read(str(work / "in" / name))[0].shape  # no partial file
