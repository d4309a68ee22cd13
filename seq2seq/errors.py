"""Errors the library raises for bad input (corpus, files, checkpoints), never for bugs."""

from __future__ import annotations


class DataError(Exception):
    """Bad input a user can fix: the message names the problem, `fix` says what to do."""

    def __init__(self, problem: str, fix: str | None = None) -> None:
        super().__init__(problem)
        self.problem = problem
        self.fix = fix

    def __str__(self) -> str:
        return f"{self.problem}. Fix: {self.fix}" if self.fix else self.problem


class CheckpointError(DataError):
    """A checkpoint that is missing, corrupt, tampered with or incompatible."""


class PrecisionError(DataError):
    """A reduced-precision mode (bf16) asked for on hardware whose kernels cannot run it."""
