"""Evaluation: the attack suite (`attack_suite`), result records, tables, reports."""

from robustdistill.evaluate.record import environment, markdown_table, print_table, write_record
from robustdistill.evaluate.suite import attack_suite, parse_attacks

__all__ = [
    "attack_suite",
    "environment",
    "markdown_table",
    "parse_attacks",
    "print_table",
    "write_record",
]
