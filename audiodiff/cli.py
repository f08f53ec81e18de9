"""Command line: ``audiodiff enhance|train|export|convert|demo|...``."""

from __future__ import annotations

import argparse
import glob
import json
import math
import sys
import time
from pathlib import Path

from tqdm import tqdm

from . import DEFAULT_MODEL

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")


def add_model_argument(parser: argparse.ArgumentParser, default: str = DEFAULT_MODEL) -> None:
    """``--model NAME|DIR``, a bundled model by default (every command that enhances has it)."""
    parser.add_argument(
        "--model",
        default=default,
        help=f"model folder or bundled model name (default: {default})",
    )


def expand_inputs(inputs: list[str]) -> list[tuple[Path, Path]]:
    """Files, folders (recursive) and globs -> [(file, path relative to what the user named)]."""
    found: list[tuple[Path, Path]] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
            found += [(p, p.relative_to(path)) for p in files]
        elif not path.exists() and glob.has_magic(item):
            found += [
                (Path(p), Path(Path(p).name)) for p in sorted(glob.glob(item, recursive=True))
            ]
        else:
            found.append((path, Path(path.name)))  # a missing file is reported when it is read
    return found


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def cmd_enhance(args: argparse.Namespace) -> int:
    from .audio import AudioError, read_audio, write_audio
    from .enhance import Enhancer

    overrides = {
        k: v
        for k, v in {
            "steps": args.steps,
            "corrector_steps": args.corrector_steps,
            "snr": args.snr,
            "method": args.sampler,
            "mode": args.mode,
        }.items()
        if v is not None
    }
    enhancer = Enhancer.from_pretrained(
        args.model,
        device=args.device,
        batch_size=args.batch_size,
        chunk_seconds=args.chunk_seconds,
        precision=args.precision,
    )
    out_dir = Path(args.output)
    jobs = expand_inputs(args.inputs)
    inputs = {p.resolve() for p, _ in jobs}
    failures, audio_seconds, start = 0, 0.0, time.monotonic()
    for source, relative in tqdm(jobs, desc="enhance", unit="file", disable=args.quiet):
        target = out_dir / relative
        try:
            if target.resolve() in inputs:
                raise AudioError(
                    source, f"output {target} would overwrite an input; choose another -o"
                )
            audio, rate = read_audio(source)
            enhanced = enhancer(
                audio, rate, seed=args.seed, atten_lim_db=args.atten_lim_db, **overrides
            )
            write_audio(target, enhanced, rate)
            audio_seconds += audio.shape[-1] / rate
        except AudioError as err:
            failures += 1
            tqdm.write(f"error: {err}", file=sys.stderr)
        except (ValueError, RuntimeError) as err:  # a problem the model met with this file
            failures += 1
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            tqdm.write(f"error: {source}: {reason}", file=sys.stderr)
    wall = time.monotonic() - start
    summary = {
        "files": len(jobs) - failures,
        "failed": failures,
        "audio_seconds": audio_seconds,
        "wall_seconds": wall,
        "rtf": wall / audio_seconds if audio_seconds else None,
    }
    if args.json:
        print(json.dumps(summary))
    else:
        rtf = f"{summary['rtf']:.3f}" if summary["rtf"] is not None else "n/a"
        print(
            f"{summary['files']} files enhanced, {failures} failed, {audio_seconds:.1f} s of audio "
            f"in {wall:.1f} s (RTF {rtf})"
        )
    return 1 if failures else 0


def cmd_convert(args: argparse.Namespace) -> int:
    from .convert import convert_sgmse_checkpoint

    out = convert_sgmse_checkpoint(
        args.checkpoint, args.output, use_ema=not args.no_ema, trust_pickle=args.trust_pickle
    )
    print(f"wrote {out}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(Path(args.output), model=args.model, modes=tuple(args.modes) if args.modes else None)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="audiodiff", description="Diffusion-based speech enhancement"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    enhance = sub.add_parser("enhance", help="enhance audio files")
    enhance.add_argument("inputs", nargs="+", help="files, folders (searched recursively) or globs")
    enhance.add_argument("-o", "--output", required=True, help="output folder")
    add_model_argument(enhance)
    enhance.add_argument(
        "--sampler",
        choices=("pc", "ode_euler", "ode_heun"),
        help="reverse sampler (default: the model's)",
    )
    enhance.add_argument("--steps", type=int, help="reverse steps N (default: the model's)")
    enhance.add_argument("--corrector-steps", type=int, help="Langevin corrector steps per step")
    enhance.add_argument("--snr", type=float, help="corrector step-size parameter r")
    enhance.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    enhance.add_argument("--batch-size", type=int, default=8, help="signals per sampler batch")
    enhance.add_argument("--seed", type=int, default=0, help="random seed of the sampler")
    enhance.add_argument(
        "--chunk-seconds",
        type=float,
        default=5.0,
        help="long files run in chunks of this length, cross-faded over 0.5 s",
    )
    enhance.add_argument(
        "--mode",
        choices=("storm", "score", "predictive"),
        help="inference mode (default: the model's)",
    )
    enhance.add_argument(
        "--precision",
        choices=("fp32", "bf16"),
        default="fp32",
        help="bf16: networks under autocast (for GPUs with bf16; very slow on most CPUs)",
    )
    enhance.add_argument(
        "--atten-lim-db",
        type=positive_float,
        help="attenuate the input by at most this many dB: mixes it back in (default: no limit)",
    )
    enhance.add_argument("--json", action="store_true", help="print the summary as JSON")
    enhance.add_argument("--quiet", action="store_true", help="no progress bar")
    enhance.set_defaults(func=cmd_enhance)

    convert = sub.add_parser("convert", help="convert an official SGMSE+ .ckpt to our model folder")
    convert.add_argument("checkpoint", help="the .ckpt file")
    convert.add_argument("-o", "--output", required=True, help="model folder to write")
    convert.add_argument("--no-ema", action="store_true", help="use raw instead of EMA weights")
    convert.add_argument(
        "--trust-pickle",
        action="store_true",
        help="allow arbitrary pickled objects in the .ckpt (only for trusted files)",
    )
    convert.set_defaults(func=cmd_convert)

    from .bench import add_bench_parser
    from .evaluate import add_eval_parser
    from .serve import add_serve_parser
    from .stream_cli import add_stream_parser
    from .train import add_export_parser, add_train_parser

    add_train_parser(sub)
    add_export_parser(sub)
    add_stream_parser(sub)
    add_serve_parser(sub)
    add_eval_parser(sub)
    add_bench_parser(sub)

    demo = sub.add_parser(
        "demo", help="enhance the bundled example with the bundled model and score it"
    )
    demo.add_argument("-o", "--output", default="outputs/demo", help="where to write the results")
    add_model_argument(demo)
    demo.add_argument(
        "--modes",
        nargs="+",
        choices=("storm", "score", "predictive"),
        help="modes to run (default: the model's own, then predictive)",
    )
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
