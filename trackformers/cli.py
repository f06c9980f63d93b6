"""The command-line style of the tools that are not pipeline steps.

The pipeline steps (``simulate``, ``train``, ``evaluate``) take Hydra overrides
(``key=value``); the tools (``demo``, ``latency``, ``export``, ``results``, ``data.convert``,
``reproduce.*``) take ``--options`` through :func:`argument_parser`, so that
``python -m trackformers.<tool> --help`` shows the command, the module docstring as written
and every option with its help and default.
"""

from __future__ import annotations

import argparse


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps the docstring's line breaks (usage examples stay readable) and shows defaults."""


def argument_parser(module: str, doc: str | None) -> argparse.ArgumentParser:
    """The parser of a ``python -m`` tool.

    Args:
        module: dotted name of the module run with ``python -m`` (the usage line shows it).
        doc: the module docstring, shown as the description.

    Returns:
        An ``argparse.ArgumentParser`` with :class:`HelpFormatter`.
    """
    return argparse.ArgumentParser(
        prog=f"python -m {module}", description=doc, formatter_class=HelpFormatter
    )
