"""One small module per subcommand; :data:`COMMANDS` lists them for the group in ``main``."""

from __future__ import annotations

import click

from .chain import chain
from .convert import convert
from .einsum import einsum
from .info import info
from .loglik import loglik
from .merge import merge
from .multiply import multiply
from .plan import plan
from .power import power
from .project import project
from .sample_data import sample_data

__all__ = ["COMMANDS"]

#: every subcommand, in the order ``logmm --help`` lists them
COMMANDS: list[click.Command] = [multiply, chain, power, einsum, project, loglik, info,
                                merge, plan, convert, sample_data]
