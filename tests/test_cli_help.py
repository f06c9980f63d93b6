"""Every command a user runs answers ``python -m trackformers.<step> --help`` with its options.

Pipeline steps take Hydra overrides; the tools take ``--options`` in one style
(``trackformers.cli.argument_parser``: the usage line names the ``python -m`` command, every
option has a help text). Each module is run as ``__main__`` (``runpy``), so the entry-point
guard is what is tested, in this process (no interpreter start per command).
"""

from __future__ import annotations

import argparse
import ast
import runpy
import sys
import warnings
from pathlib import Path

import pytest

from trackformers.cli import HelpFormatter

REPO = Path(__file__).resolve().parents[1]

# pipeline steps (Hydra): a key of their config that --help must show
HYDRA_STEPS = {
    "trackformers.simulate": "n_events:",
    "trackformers.train": "trainer:",
    "trackformers.evaluate": "ckpt:",
}
TOOLS = [
    "trackformers.demo",
    "trackformers.latency",
    "trackformers.export",
    "trackformers.results",
    "trackformers.data.convert",
    "trackformers.reproduce.physics_run",
    "trackformers.reproduce.pu200_run",
    "trackformers.reproduce.physics_table",
    "trackformers.reproduce.recipe_sweep",
    "trackformers.reproduce.track_spread",
]


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__main__" else parts)


def _entry_points() -> set[str]:
    """Modules of the package with an ``if __name__ == "__main__":`` guard."""
    found = set()
    for path in (REPO / "trackformers").rglob("*.py"):
        if path.is_symlink() or "kernels" in path.relative_to(REPO).parts:
            continue
        for node in ast.parse(path.read_text()).body:
            test = getattr(node, "test", None)
            retired = all(  # raise SystemExit("the command is ..."): a retired form
                isinstance(b, ast.Raise)
                and isinstance(b.exc, ast.Call)
                and all(
                    isinstance(a, ast.Constant) and isinstance(a.value, str) for a in b.exc.args
                )
                for b in getattr(node, "body", [])
            )
            if isinstance(node, ast.If) and "__main__" in ast.unparse(test) and not retired:
                found.add(_module_name(path))
    return found


def _run_help(module: str, monkeypatch, capsys) -> tuple[str, list[argparse.ArgumentParser]]:
    """Run ``module --help`` as __main__; returns its output and the parsers it asked."""
    parsers: list[argparse.ArgumentParser] = []
    original = argparse.ArgumentParser.parse_args

    def recording(self, *args, **kwargs):
        parsers.append(self)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", recording)
    monkeypatch.setattr(sys, "argv", [module, "--help"])
    with pytest.raises(SystemExit) as exit_, warnings.catch_warnings():
        # runpy warns that an already imported module runs again as __main__: intended here
        warnings.simplefilter("ignore", RuntimeWarning)
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    assert exit_.value.code in (0, None), f"{module} --help exited with {exit_.value.code}"
    return capsys.readouterr().out, parsers


def test_every_entry_point_is_listed():
    assert _entry_points() == set(HYDRA_STEPS) | set(TOOLS)


@pytest.mark.parametrize("module", sorted(HYDRA_STEPS))
def test_pipeline_step_help_shows_its_config(module, monkeypatch, capsys):
    out, _ = _run_help(module, monkeypatch, capsys)
    assert "== Config ==" in out and HYDRA_STEPS[module] in out, out[-2000:]


def help_problems(module: str, out: str, parsers: list[argparse.ArgumentParser]) -> list[str]:
    """What a tool's --help lacks: one parser in the house style, each option with a help."""
    if len(parsers) != 1:
        return [f"expected one argparse parser, got {len(parsers)}"]
    parser = parsers[0]
    bad = []
    if parser.prog != f"python -m {module}" or not out.startswith(f"usage: {parser.prog}"):
        bad.append(f"usage line is {out.splitlines()[0] if out else ''!r}")
    if parser.formatter_class is not HelpFormatter:
        bad.append("not made by trackformers.cli.argument_parser")
    for action in parser._actions:
        name = action.option_strings[0] if action.option_strings else action.metavar
        if name is None:  # a positional: its choices ({a,b}) or its name
            name = "{" + ",".join(action.choices) + "}" if action.choices else action.dest
        if not action.help:
            bad.append(f"option {name} has no help text")
        elif name not in out:
            bad.append(f"option {name} is not in --help")
        subcommands = action.choices if isinstance(action.choices, dict) else {}
        for command, sub in subcommands.items():  # subcommands: their own --help
            if isinstance(sub, argparse.ArgumentParser):
                bad += [
                    f"option {a.option_strings[0] if a.option_strings else a.dest} of {command} "
                    "has no help text"
                    for a in sub._actions
                    if not a.help
                ]
                if sub.formatter_class is not HelpFormatter:
                    bad.append(f"subcommand {command} is not in the house style")
    return bad


@pytest.mark.parametrize("module", TOOLS)
def test_tool_help_lists_every_option(module, monkeypatch, capsys):
    out, parsers = _run_help(module, monkeypatch, capsys)
    assert not help_problems(module, out, parsers), help_problems(module, out, parsers)


def test_the_help_check_catches_an_option_without_help(monkeypatch, capsys, tmp_path):
    """A planted tool whose option lacks a help text fails the check above."""
    (tmp_path / "planted_tool.py").write_text(
        "from trackformers.cli import argument_parser\n"
        "if __name__ == '__main__':\n"
        "    ap = argument_parser('planted_tool', 'doc')\n"
        "    ap.add_argument('--n', type=int, default=1, help='n')\n"
        "    ap.add_argument('--m', type=int, default=1)\n"
        "    ap.parse_args()\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    out, parsers = _run_help("planted_tool", monkeypatch, capsys)
    assert help_problems("planted_tool", out, parsers) == ["option --m has no help text"]


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("trackformers.results.table", "trackformers.results"),
        ("trackformers.results.export", "trackformers.export"),
    ],
)
def test_old_module_forms_name_the_new_command(old, new):
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-m", old], capture_output=True, text=True, timeout=120)
    assert run.returncode != 0 and f"python -m {new} " in run.stderr
