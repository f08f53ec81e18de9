"""Command line: ``audiodiff enhance|train|export|convert|demo|...``.

Every command reports an expected failure as one line, ``error: <file or option>: <problem>``,
and exits with 2 for a bad option (:class:`~audiodiff.errors.UsageError`, parse errors), 1 for an
input that cannot be used (:class:`~audiodiff.errors.InputError`), 130 on Ctrl-C; ``--debug``
shows the traceback instead. The shared options live in :mod:`audiodiff.cli_options`.
"""

from __future__ import annotations

import argparse
import glob
import json
import sys
from pathlib import Path

from .cli_options import (
    OFFLINE_MODES,
    Parser,
    add_debug_option,
    add_inference_options,
    add_model_option,
    add_threads_option,
    apply_threads,
    non_negative_int,
    positive_float,
    positive_int,
)
from .errors import EXIT_FAILED_INPUT, EXIT_INTERRUPTED, InputError

__all__ = ["build_parser", "expand_inputs", "main", "positive_float"]

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")
CROSSFADE_SECONDS = 0.5  # = audiodiff.enhance.CROSSFADE_SECONDS: chunks need two of them

add_model_argument = add_model_option  # the name other modules used before cli_options


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


def cmd_enhance(args: argparse.Namespace) -> int:
    """Enhance files, folders or a whole corpus (sharded when run under torchrun)."""
    from .corpus import Options, enhance_corpus
    from .enhance import Enhancer
    from .errors import UsageError

    out_dir = Path(args.output)
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(out_dir, "exists and is not a folder; -o names the output folder")
    sampler = {
        "steps": args.steps,
        "corrector_steps": args.corrector_steps,
        "snr": args.snr,
        "method": args.sampler,
        "mode": args.mode,
    }
    options = Options(
        output=out_dir,
        model=args.model,
        mode=args.mode or "",
        steps=args.steps or 0,
        overrides={k: v for k, v in sampler.items() if v is not None},
        device=args.device,
        seed=args.seed,
        atten_lim_db=args.atten_lim_db,
        overwrite=args.overwrite,
        quiet=args.quiet,
    )

    def load(device: str) -> Enhancer:
        return Enhancer.from_pretrained(
            args.model,
            device=device,
            batch_size=args.batch_size,
            chunk_seconds=args.chunk_seconds,
            precision=args.precision,
        )

    code, summary = enhance_corpus(expand_inputs(args.inputs), options, load)
    if summary:  # rank 0 of a run that finished
        print(json.dumps(summary) if args.json else summary_line(summary))
    return code


def summary_line(s: dict) -> str:
    """One line: files, hours of audio, throughput, errors, and what ran (model, mode, steps)."""
    plural = "" if s["steps"] == 1 else "s"
    steps = "one predictor pass" if s["mode"] == "predictive" else f"{s['steps']} step{plural}"
    speed = f"{s['throughput']:.2f} audio s/s" if s["enhanced"] else "nothing to enhance"
    return (
        f"{s['files']} files ({s['enhanced']} enhanced, {s['skipped']} skipped), "
        f"{s['failed']} errors, {s['hours']:.3f} h of audio; {s['wall_seconds']:.1f} s "
        f"({speed}) on {s['ranks']} rank(s); model {s['model']}, mode {s['mode']}, {steps}; "
        f"padding {100 * s['padding_fraction']:.1f}%, batch fill {100 * s['batch_fill']:.0f}%"
    )


def cmd_convert(args: argparse.Namespace) -> int:
    from .convert import convert_sgmse_checkpoint

    out = convert_sgmse_checkpoint(
        args.checkpoint, args.output, use_ema=not args.no_ema, trust_pickle=args.trust_pickle
    )
    print(f"wrote {out}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(
        Path(args.output),
        model=args.model,
        modes=tuple(args.modes) if args.modes else None,
        device=args.device,
        precision=args.precision,
        atten_lim_db=args.atten_lim_db,
        seed=args.seed,
    )
    return 0


def chunk_seconds(text: str) -> float:
    """argparse type for ``--chunk-seconds``: finite, and long enough for two cross-fades."""
    value = positive_float(text)
    if value < 2 * CROSSFADE_SECONDS:
        raise argparse.ArgumentTypeError(
            f"must be at least {2 * CROSSFADE_SECONDS:g} (two {CROSSFADE_SECONDS:g} s cross-fades)"
            f", got {text}"
        )
    return value


def _enhance_parser(sub) -> None:
    enhance = sub.add_parser("enhance", help="enhance audio files")
    enhance.add_argument("inputs", nargs="+", help="files, folders (searched recursively) or globs")
    enhance.add_argument("-o", "--output", required=True, help="output folder")
    add_inference_options(enhance)
    enhance.add_argument(
        "--sampler",
        choices=("pc", "ode_euler", "ode_heun", "sb_ode", "sb_sde"),
        help="reverse sampler (default: the model's)",
    )
    enhance.add_argument(
        "--corrector-steps",
        type=non_negative_int,
        help="Langevin corrector steps per reverse step (default: the model's)",
    )
    enhance.add_argument(
        "--snr", type=positive_float, help="corrector step-size parameter r (default: the model's)"
    )
    enhance.add_argument(
        "--batch-size",
        type=positive_int,
        default=8,
        help="signals per sampler batch (default: %(default)s)",
    )
    enhance.add_argument(
        "--chunk-seconds",
        type=chunk_seconds,
        default=5.0,
        help="long files run in chunks of this length, cross-faded over 0.5 s "
        "(default: %(default)s)",
    )
    enhance.add_argument("--json", action="store_true", help="print the summary as JSON")
    enhance.add_argument("--quiet", action="store_true", help="no progress bar")
    enhance.add_argument(
        "--overwrite", action="store_true", help="recompute outputs that already exist"
    )
    enhance.set_defaults(func=cmd_enhance)


def _convert_parser(sub) -> None:
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


def _demo_parser(sub) -> None:
    from .cli_options import (
        add_atten_lim_option,
        add_device_option,
        add_precision_option,
        add_seed_option,
    )

    demo = sub.add_parser(
        "demo", help="enhance the bundled example with the bundled model and score it"
    )
    demo.add_argument(
        "-o",
        "--output",
        default="outputs/demo",
        help="where to write the results (default: %(default)s)",
    )
    add_model_option(demo)
    demo.add_argument(
        "--modes",
        nargs="+",
        choices=OFFLINE_MODES,
        help="modes to run (default: the model's own, then predictive)",
    )
    add_device_option(demo)
    add_threads_option(demo)
    add_precision_option(demo)
    add_atten_lim_option(demo)
    add_seed_option(demo)
    demo.set_defaults(func=cmd_demo)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="audiodiff", description="Diffusion-based speech enhancement")
    add_debug_option(parser, top=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    from .bench import add_bench_parser
    from .evaluate import add_eval_parser
    from .serve import add_serve_parser
    from .stream_cli import add_stream_parser
    from .train import add_export_parser, add_train_parser

    _enhance_parser(sub)
    _convert_parser(sub)
    add_train_parser(sub)
    add_export_parser(sub)
    add_stream_parser(sub)
    add_serve_parser(sub)
    add_eval_parser(sub)
    add_bench_parser(sub)
    _demo_parser(sub)
    for command in sub.choices.values():
        add_debug_option(command)
    return parser


def describe_error(err: BaseException) -> tuple[str, int]:
    """An exception -> (the one line after ``error: ``, the exit code)."""
    from .data.pairs import PairingError  # here: the error path only, not every start-up

    first = str(err).splitlines()[0] if str(err).strip() else type(err).__name__
    if isinstance(err, PairingError) and err.problems:  # one line per problem, each naming a file
        more = len(err.problems) - 1
        first = err.problems[0] + (f" (and {more} more problem{'s' * (more > 1)})" if more else "")
    if isinstance(err, InputError):  # incl. AudioError, UsageError
        return first, err.exit_code
    if isinstance(err, OSError) and err.filename is not None:
        return f"{err.filename}: {err.strerror or first}", EXIT_FAILED_INPUT
    if isinstance(err, FileNotFoundError):  # our own "PATH: no such folder", naming the path
        return first, EXIT_FAILED_INPUT
    if isinstance(err, ValueError):  # a file, recipe or model the command could not use
        return first, EXIT_FAILED_INPUT
    return (
        f"{type(err).__name__}: {first} (unexpected; --debug shows the traceback)",
        EXIT_FAILED_INPUT,
    )


def main(argv: list[str] | None = None) -> int:
    """``audiodiff COMMAND ...``; returns the exit code (a parse error exits with 2)."""
    args = build_parser().parse_args(argv)
    debug = getattr(args, "debug", False)
    try:
        if getattr(args, "threads", None) is not None:
            apply_threads(args.threads)
        return args.func(args)
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"interrupted: audiodiff {args.command} stopped (Ctrl-C)", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as err:
        if debug:
            raise
        line, code = describe_error(err)
        print(f"error: {line}", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
