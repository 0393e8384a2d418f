"""Result tables say what they measured: images per column, ± noise, a scoped worst case, bold only beyond noise."""

from __future__ import annotations

import math
import re

import pytest
import torch

from robustdistill import data, models
from robustdistill.evaluate import attack_suite, markdown_table, table
from robustdistill.evaluate.record import cpu_name, environment
from robustdistill.evaluate.report import _accuracy_table


def _record(accuracy: dict[str, float], n: int = 500, **sizes: int) -> dict:
    attacks = {name: ({"n_examples": sizes[name]} if name in sizes else {}) for name in accuracy}
    return {"accuracy": dict(accuracy), "n_examples": n, "attacks": attacks}


@pytest.fixture(scope="module")
def measured() -> dict:
    """A real record of the attack suite, with a substitute for AutoAttack merged in from a smaller subset."""
    torch.manual_seed(0)
    model = models.create("smallcnn", num_classes=10, in_channels=1, width=0.25, hidden=16, dropout=0.0)
    test = data.load("digits", "test")
    record = attack_suite(model, test, attacks="clean,fgsm", eps=0.1, n=40, progress=False)
    small = attack_suite(model, test, attacks="apgd-ce", eps=0.1, n=20, progress=False)
    record["accuracy"]["apgd-ce"] = small["accuracy"]["apgd-ce"]
    record["attacks"]["apgd-ce"] = small["attacks"]["apgd-ce"]
    return record


def test_the_suite_records_images_per_attack_and_the_worst_case_scope(measured):
    assert measured["worst_case_over"] == ["clean", "fgsm"]
    assert {name: table.column_size(measured, name) for name in ("clean", "fgsm", "apgd-ce")} == {
        "clean": 40,
        "fgsm": 40,
        "apgd-ce": 20,
    }


def test_markdown_table_gives_images_per_column_and_names_the_substitute(measured):
    text = markdown_table({"teacher": measured, "student": measured})
    header = text.splitlines()[0]
    assert "clean, n=40" in header and "fgsm, n=40" in header
    assert "APGD-CE (AutoAttack substitute), n=20" in header
    assert "worst case (excl. apgd-ce: other images), n=40" in header


def test_report_table_gives_per_cell_counts_when_runs_differ():
    rows = [
        ("a", "student", _record({"clean": 0.8, "pgd-20": 0.4}, n=500)),
        ("b", "student", _record({"clean": 0.7, "pgd-20": 0.3}, n=200)),
    ]
    text = _accuracy_table(rows, None)
    assert text.splitlines()[0] == "| run | role | clean | pgd-20 |"  # no shared n: each cell names its own
    assert "| a | student | **80.0 ± 1.8 (n=500)** |" in text  # sqrt(0.8 * 0.2 / 500) = 1.79%; 10 points > noise
    assert "| b | student | 70.0 ± 3.2 (n=200) |" in text


def _cells(text: str, row: str) -> list[float]:
    line = next(line for line in text.splitlines() if line.startswith(f"| {row} |"))
    return [float(v) for v in re.findall(r"(\d+\.\d) ±", line)]


def test_worst_case_never_exceeds_an_included_column(measured):
    text = markdown_table({"m": measured})
    clean, fgsm, _, worst = _cells(text, "m")
    assert worst <= min(clean, fgsm)
    # a record whose stored worst case is above an attack it covers (an older record, a hand edit): capped
    odd = _record({"clean": 0.9, "pgd-20": 0.3, "cw": 0.35, "worst_case": 0.5, "autoattack": 0.2}, autoattack=100)
    assert table.worst_case_scope(odd) == ["clean", "pgd-20", "cw"]
    assert table.cell(odd, "worst_case").value == pytest.approx(0.3)
    assert "autoattack" not in table.worst_case_scope(odd)  # another subset: excluded and labelled
    assert "excl. autoattack: other images" in table.column_title("worst_case", {"x": odd})


def test_standard_error_is_binomial_and_on_every_figure():
    record = _record({"clean": 0.9, "pgd-20": 0.31, "worst_case": 0.3})
    c = table.cell(record, "pgd-20")
    assert c.error == pytest.approx(math.sqrt(0.31 * 0.69 / 500))
    line = markdown_table({"m": record}).splitlines()[2]
    assert line.count("±") == 3


def test_bold_only_for_a_difference_beyond_the_noise():
    near = {"t": _record({"pgd-20": 0.6}), "a": _record({"pgd-20": 0.33}), "b": _record({"pgd-20": 0.31})}
    assert "**" not in markdown_table({"teacher": near["t"], "a": near["a"], "b": near["b"]})
    far = {"teacher": near["t"], "a": _record({"pgd-20": 0.40}), "b": near["b"]}
    text = markdown_table(far)
    assert "| a | **40.0 ± 2.2** |" in text and "| teacher | 60.0" in text  # the teacher is never bold


def test_several_seeds_give_mean_and_t_interval():
    seeds = [_record({"clean": v, "pgd-20": v - 0.4}) for v in (0.80, 0.82, 0.84)]
    combined = table.combine_seeds(seeds)
    c = table.cell(combined, "clean")
    assert c.value == pytest.approx(0.82) and c.seeds == 3
    # t(0.975, 2) = 4.303, sd 0.02: half-width 4.303 * 0.02 / sqrt(3) = 4.97 points
    assert c.text() == "82.0 ± 5.0"
    with pytest.raises(ValueError, match="at least two seeds"):
        table.combine_seeds(seeds[:1])


def test_records_name_the_processor_they_ran_on(tmp_path, monkeypatch):
    """Training seconds compare only on one processor, so a CPU record names it (not a bare "cpu")."""
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Processor\nflags\t: fpu avx2 avx512f\n")
    assert cpu_name(cpuinfo) == "Intel(R) Xeon(R) Processor (avx512f)"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: AMD EPYC\nflags\t: fpu sse2\n")
    assert cpu_name(cpuinfo) == "AMD EPYC"
    monkeypatch.setattr("robustdistill.evaluate.record.platform.processor", lambda: "")
    assert cpu_name(tmp_path / "missing") == "cpu"
    cpuinfo.write_text("processor\t: 0\nmodel name\t:\n")
    assert cpu_name(cpuinfo) == "cpu"
    if not torch.cuda.is_available():
        assert environment()["device"] == cpu_name()
