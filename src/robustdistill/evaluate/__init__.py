"""Evaluation: the attack suite, result records, tables."""

from robustdistill.evaluate.record import environment, markdown_table, print_table, read_record, write_record
from robustdistill.evaluate.suite import DEFAULT_ATTACKS, parse_attacks, run

__all__ = [
    "DEFAULT_ATTACKS",
    "environment",
    "markdown_table",
    "parse_attacks",
    "print_table",
    "read_record",
    "run",
    "write_record",
]
