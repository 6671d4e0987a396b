"""Click parameter types for numbers that refuse what Click's own accept: nan and inf (Click's FloatRange
lets nan through every bound), negative seeds. A refusal is an LtexportError: one `ltexport: error:`
line and exit 1, raised while Click parses the command line, so before any work starts."""

import math

import click

from ltexport.errors import LtexportError


class Finite(click.ParamType):
    """A finite float within [min, max] (an open lower bound with min_open)."""

    name = "float"

    def __init__(self, min: float | None = None, max: float | None = None, min_open: bool = False):
        self.min, self.max, self.min_open = min, max, min_open

    def convert(self, value, param, ctx):
        if isinstance(value, float):
            number = value
        else:
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise LtexportError(f"{_name(param)} must be a number, got {value!r}; {_help(ctx)}") from None
        if not math.isfinite(number):
            raise LtexportError(f"{_name(param)} must be a finite number, got {value}; {_help(ctx)}")
        too_low = self.min is not None and (number <= self.min if self.min_open else number < self.min)
        if too_low or (self.max is not None and number > self.max):
            raise LtexportError(f"{_name(param)} must be {self._range()}, got {value}; {_help(ctx)}")
        return number

    def _range(self) -> str:
        low = None if self.min is None else f"{'>' if self.min_open else '>='} {self.min:g}"
        high = None if self.max is None else f"<= {self.max:g}"
        return " and ".join(filter(None, (low, high)))


class Whole(click.ParamType):
    """An integer >= min (a seed, a thread count, a context length)."""

    name = "integer"

    def __init__(self, min: int = 0):
        self.min = min

    def convert(self, value, param, ctx):
        try:
            number = value if isinstance(value, int) else int(str(value).strip())
        except ValueError:
            raise LtexportError(f"{_name(param)} must be an integer, got {value!r}; {_help(ctx)}") from None
        if number < self.min:
            raise LtexportError(f"{_name(param)} must be an integer >= {self.min}, got {number}; {_help(ctx)}")
        return number


def _name(param) -> str:
    return param.opts[0] if param is not None and param.opts else "value"


def _help(ctx) -> str:
    return f"see `{ctx.command_path} --help`" if ctx is not None else "see --help"
