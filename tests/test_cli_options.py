"""One CLI convention: the shared options read the same in every command's parser."""

import argparse

import pytest

from audiodiff import STREAM_MODEL, cli_options
from audiodiff.bench import MODES as BENCH_MODES
from audiodiff.cli import build_parser
from audiodiff.enhance import PRECISIONS

SHARED = ("--model", "--mode", "--steps", "--device", "--threads", "--precision",
          "--atten-lim-db", "--seed")  # fmt: skip
ENHANCING = ("enhance", "demo", "stream", "serve")
WHO_HAS = {
    "--model": ENHANCING,
    "--device": (*ENHANCING, "bench"),
    "--threads": (*ENHANCING, "bench", "eval", "train"),
    "--precision": ENHANCING,
    "--atten-lim-db": ENHANCING,
    "--seed": (*ENHANCING, "bench"),
    "--mode": ("enhance", "stream", "serve"),
    "--steps": ("enhance", "stream", "serve"),
}


def commands() -> dict[str, argparse.ArgumentParser]:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {a.option_strings[-1]: a for a in parser._actions if a.option_strings}


def test_shared_options_are_where_they_belong():
    found = {name: options(p) for name, p in commands().items()}
    for option, where in WHO_HAS.items():
        for command in where:
            assert option in found[command], (option, command)


@pytest.mark.parametrize("option", SHARED)
def test_a_shared_option_has_one_name_help_default_and_type_everywhere(option):
    actions = {
        c: o[option] for c, o in ((c, options(p)) for c, p in commands().items()) if option in o
    }
    assert len(actions) >= 3, actions.keys()
    first = next(iter(actions.values()))
    for command, action in actions.items():
        if option == "--model" and command in ("stream", "serve"):  # the bundled streaming model
            assert action.default == STREAM_MODEL and action.help == first.help
            continue
        same = (action.help, action.default, action.type, action.metavar, action.option_strings)
        assert same == (
            first.help,
            first.default,
            first.type,
            first.metavar,
            first.option_strings,
        ), (
            option,
            command,
        )
        if option == "--mode":  # the streaming commands add modes; the offline ones are common
            assert set(cli_options.OFFLINE_MODES) <= set(action.choices)
        else:
            assert action.choices == first.choices, (option, command)


def test_every_option_has_help_and_shows_its_default():
    for command, parser in commands().items():
        for flag, action in options(parser).items():
            if flag in ("--help",):
                continue
            assert action.help, (command, flag)
            silent = action.default in (None, False, argparse.SUPPRESS) or isinstance(
                action, (argparse._StoreTrueAction, argparse._StoreFalseAction)
            )
            if not silent:
                assert "default" in action.help, (command, flag, action.help)


def test_the_literal_lists_match_the_library():
    from audiodiff import cli, enhance

    assert cli_options.PRECISIONS == PRECISIONS
    assert cli.CROSSFADE_SECONDS == enhance.CROSSFADE_SECONDS
    assert set(BENCH_MODES) == set(cli_options.OFFLINE_MODES)


def test_validators_refuse_what_cannot_work():
    for bad in ("0", "-3", "1.5", "x"):
        with pytest.raises(argparse.ArgumentTypeError):
            cli_options.positive_int(bad)
    for bad in ("0", "-1", "inf", "nan", "-inf", "x"):
        with pytest.raises(argparse.ArgumentTypeError):
            cli_options.positive_float(bad)
    assert cli_options.positive_float("2.5") == 2.5 and cli_options.threads_value("auto") == "auto"
    for bad in ("potato", "cuda:x", "gpu", "cuda:99"):
        with pytest.raises(argparse.ArgumentTypeError):
            cli_options.device_value(bad)
    assert cli_options.device_value("auto") == "auto" and cli_options.device_value("cpu") == "cpu"


def test_auto_threads_counts_idle_cores(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert cli_options.auto_threads() == 3  # the user's setting wins
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setattr(
        cli_options.os, "sched_getaffinity", lambda pid: set(range(8)), raising=False
    )
    for load, expected in ((0.0, 4), (5.2, 3), (7.9, 1), (30.0, 1)):
        monkeypatch.setattr(cli_options.os, "getloadavg", lambda load=load: (load, 0.0, 0.0))
        assert cli_options.auto_threads() == expected, load
