"""Errors a user can act on. Every message names the thing that is wrong and where."""

from __future__ import annotations


class NncertError(Exception):
    """Base class: the CLI turns these into one line on stderr and exit status 2."""


class UnsupportedOpError(NncertError):
    """An op (ONNX node, torch module, or IR op) that a loader or a method cannot handle."""

    def __init__(self, op: str, node: str, where: str, supported: list[str] | None = None):
        self.op, self.node, self.where = op, node, where
        msg = f"{where} does not support op {op!r} (node {node!r})"
        if supported:
            msg += "; supported: " + ", ".join(sorted(supported))
        super().__init__(msg)


class SpecError(NncertError):
    """A malformed or inconsistent specification (VNN-LIB syntax, variable out of range, ...)."""

    def __init__(self, message: str, line: int | None = None, path: str | None = None):
        self.line, self.path = line, path
        where = ""
        if path is not None:
            where = f"{path}:"
        if line is not None:
            where += f"{line}:"
        super().__init__(f"{where} {message}" if where else message)


class ModelError(NncertError):
    """A model file that cannot be read, or a graph that is inconsistent."""


class ShapeError(NncertError):
    """Two shapes that had to agree do not; the message names both."""

    def __init__(self, what: str, expected: tuple[int, ...], got: tuple[int, ...]):
        self.expected, self.got = tuple(expected), tuple(got)
        super().__init__(f"{what}: expected shape {self.expected}, got {self.got}")


class DataError(NncertError):
    """A dataset file that is missing, truncated or of the wrong format."""


class ConfigError(NncertError):
    """An option value outside its valid range (negative epsilon, alpha outside (0, 1), ...)."""


class NumericalError(NncertError):
    """NaN or infinite weights, input bounds or computed bounds."""
