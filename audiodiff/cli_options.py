"""The options every ``audiodiff`` command shares: one definition, one wording, one default.

``enhance``, ``demo``, ``stream``, ``serve``, ``bench``, ``eval``, ``train``, ``convert`` and
``export`` add their common options through the ``add_*`` helpers below, so ``--device``,
``--threads``, ``--model`` ... read the same in every ``--help`` (a test compares the parsers).
Values are checked at parse time by the ``type=`` validators: a bad value is one line,
``error: --option: what is wrong``, and exit code 2, before any model is loaded.

Importing this module is cheap: torch is imported only to check a ``--device`` the user typed.
"""

from __future__ import annotations

import argparse
import math
import os
import re

from . import DEFAULT_MODEL

OFFLINE_MODES = ("storm", "score", "predictive", "bridge")  # every mode of audiodiff.config.MODES
PRECISIONS = ("fp32", "bf16")  # = audiodiff.enhance.PRECISIONS (a test checks it)
MAX_AUTO_THREADS = 4  # more intra-op threads did not help the small CPU models (docs/cli.md)
_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?|mps)$")


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line, ``error: --option: problem``, exit 2."""

    def error(self, message: str):
        message = re.sub(r"^argument ", "", message)
        required = re.match(r"the following arguments are required: (.*)", message)
        if required:
            message = f"{required.group(1)}: required"
        self.exit(2, f"error: {message}\n")


# -- parse-time validators (argparse ``type=``) ----------------------------------------------


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0 (``inf`` and ``nan`` are refused)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def non_negative_float(text: str) -> float:
    """argparse type: a finite number >= 0."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (value >= 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def threads_value(text: str) -> int | str:
    """argparse type: ``auto`` or a positive integer."""
    return "auto" if text == "auto" else positive_int(text)


def device_value(text: str) -> str:
    """argparse type: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``, present on this machine.

    ``auto`` is CUDA when torch sees a GPU, else the CPU. torch is imported only here, that is
    only when the option is given.
    """
    if not _DEVICE.match(text):
        raise argparse.ArgumentTypeError(f"unknown device {text!r}: use auto, cpu, cuda or cuda:N")
    if text in ("auto", "cpu"):
        return text
    import torch

    if text == "mps":
        if not torch.backends.mps.is_available():
            raise argparse.ArgumentTypeError("mps is not available on this machine")
        return text
    if not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else "no visible GPU"
        raise argparse.ArgumentTypeError(
            f"{text} is not available: torch {torch.__version__} is {build} "
            "(install a CUDA build of torch, see docs/cli.md, or use --device cpu)"
        )
    index = int(text.split(":")[1]) if ":" in text else 0
    if index >= torch.cuda.device_count():
        count = torch.cuda.device_count()
        raise argparse.ArgumentTypeError(f"{text} is not available: {count} CUDA device(s)")
    return text


# -- the shared options ----------------------------------------------------------------------


def add_model_option(parser: argparse.ArgumentParser, default: str = DEFAULT_MODEL) -> None:
    """``--model``; the streaming commands default to the bundled streaming model."""
    parser.add_argument(
        "--model",
        default=default,
        metavar="NAME|DIR",
        help="model folder or bundled model name (default: %(default)s)",
    )


def add_mode_option(parser: argparse.ArgumentParser, choices=OFFLINE_MODES) -> None:
    """``--mode``; the streaming commands accept more modes than the offline ones."""
    parser.add_argument(
        "--mode", choices=choices, help="inference mode (default: the model's own mode)"
    )


def add_steps_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--steps",
        type=positive_int,
        help="reverse diffusion steps N of the sampling modes (default: the model's)",
    )


def add_device_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device",
        type=device_value,
        default="auto",
        help="cpu, cuda, cuda:N or auto: CUDA when torch sees a GPU, else the CPU "
        "(default: %(default)s)",
    )


def add_threads_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--threads",
        type=threads_value,
        default="auto",
        metavar="N|auto",
        help=f"torch CPU threads; auto: $OMP_NUM_THREADS if set, else the idle cores (cores "
        f"minus the 1-minute load average), 1 to {MAX_AUTO_THREADS} (default: %(default)s)",
    )


def add_precision_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="fp32",
        help="bf16: networks under autocast, for GPUs with bf16; very slow on most CPUs "
        "(default: %(default)s)",
    )


def add_atten_lim_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--atten-lim-db",
        type=positive_float,
        metavar="DB",
        help="attenuate the input by at most this many dB: mixes it back in (default: no limit)",
    )


def add_seed_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="random seed of the sampler: the same seed gives the same output "
        "(default: %(default)s)",
    )


def add_inference_options(
    parser, *, modes=OFFLINE_MODES, steps: bool = True, model_default: str = DEFAULT_MODEL
) -> None:
    """Every command that enhances: model, mode, steps, device, threads, precision, limit, seed."""
    add_model_option(parser, model_default)
    add_mode_option(parser, modes)
    if steps:
        add_steps_option(parser)
    add_device_option(parser)
    add_threads_option(parser)
    add_precision_option(parser)
    add_atten_lim_option(parser)
    add_seed_option(parser)


def add_block_options(parser: argparse.ArgumentParser) -> None:
    """The block layout of the streaming commands (``stream``, ``serve``); None: the model's."""
    parser.add_argument(
        "--block-frames",
        type=positive_int,
        help="STFT frames per block (default: 8; 4 for a causal model)",
    )
    parser.add_argument(
        "--lookahead-frames",
        type=non_negative_int,
        help="future frames a block waits for (default: 4; a causal model: its own)",
    )
    parser.add_argument(
        "--context-frames",
        type=non_negative_int,
        help="past frames the network sees (default: 16; a causal model caches its own)",
    )


def add_debug_option(parser: argparse.ArgumentParser, top: bool = False) -> None:
    """``--debug`` (a traceback instead of the one-line error), before or after the command."""
    parser.add_argument(
        "--debug",
        action="store_true",
        default=False if top else argparse.SUPPRESS,
        help="show the Python traceback of an error instead of one line",
    )


# -- applying them ---------------------------------------------------------------------------


def auto_threads() -> int:
    """``--threads auto``: $OMP_NUM_THREADS if set, else the idle cores, 1 to MAX_AUTO_THREADS.

    Idle cores = the cores this process may use minus the 1-minute load average: on a loaded
    machine torch's default (one thread per core) competes with the other jobs and ran 2.6x
    slower than one thread (docs/cli.md).
    """
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    try:
        busy = os.getloadavg()[0]
    except (AttributeError, OSError):
        busy = 0.0
    return max(1, min(MAX_AUTO_THREADS, int(cores - busy + 0.5)))


def apply_threads(threads: int | str | None) -> int:
    """Set torch's intra-op threads from ``--threads``; returns the number used."""
    import torch

    count = auto_threads() if threads in (None, "auto") else int(threads)
    torch.set_num_threads(count)
    return count
