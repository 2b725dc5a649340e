"""The demo's delivery check: it must count every kind of mismatch, or exit code 0 would mean nothing."""

from __future__ import annotations

import pytest

from realtime.demo import DemoError, DemoReport, _compare, load_corpus


def delivered(*contents: str, seqs: list[int] | None = None) -> list[dict]:
    seqs = seqs or list(range(1, len(contents) + 1))
    return [{"content": content, "seq": seq} for content, seq in zip(contents, seqs)]


def test_compare_identical_lines_no_mismatch():
    report = DemoReport()

    _compare(report, "x", ["שלום", "你好"], delivered("שלום", "你好"))

    assert report.mismatches == 0


@pytest.mark.parametrize(
    ("received", "problem"),
    [
        pytest.param(delivered("a"), "missing", id="missing"),
        pytest.param(delivered("a", "B"), "differs", id="altered"),
        pytest.param(delivered("a", "b", "c"), "extra", id="extra"),
        pytest.param(delivered("a", "b", seqs=[2, 1]), "order", id="out-of-order"),
        pytest.param(delivered("a", "b", seqs=[1, 1]), "order", id="duplicate-seq"),
    ],
)
def test_compare_each_fault_counted(received, problem):
    report = DemoReport()

    _compare(report, "x", ["a", "b"], received)

    assert report.mismatches >= 1
    assert any(problem in text for text in report.problems)


def test_compare_trailing_space_counts_as_mismatch():
    report = DemoReport()

    _compare(report, "x", ["a "], delivered("a"))

    assert report.mismatches == 1


def test_load_corpus_rtl_and_cjk_lines_are_text():
    corpus = load_corpus(["persian", "chinese"], 1)

    assert {item.language for item in corpus} == {"persian", "chinese"}
    for corpus_file in corpus:
        assert len(corpus_file.dialogues) == 1
        for line in corpus_file.dialogues[0]:
            assert isinstance(line, str)
            assert line.strip()


def test_load_corpus_unknown_language_raises():
    with pytest.raises(DemoError, match="klingon"):
        load_corpus(["klingon"], None)
