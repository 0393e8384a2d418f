"""Evaluation: the attack suite (`attack_suite`), result records, tables, reports."""

from robustdistill.evaluate.record import environment, markdown_table, print_table, read_record, write_record
from robustdistill.evaluate.suite import DEFAULT_ATTACKS, attack_suite, parse_attacks

__all__ = [
    "DEFAULT_ATTACKS",
    "attack_suite",
    "environment",
    "markdown_table",
    "parse_attacks",
    "print_table",
    "read_record",
    "write_record",
]
