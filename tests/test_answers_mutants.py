"""Symbolic checks: in this process without a time limit, in the worker with one; a boxed
answer after the answer marker."""

from reasonlab.data.answers import symbolic


def test_symbolic_without_a_time_limit_runs_here():
    assert symbolic("verify", "\\frac{1}{2}", "0.5", timeout=None) is True
    assert symbolic("verify", "3", "4", timeout=None) is False
    assert symbolic("verify", "\\frac{1}{2}", "0.5", timeout=0) is True


class _FakeWorker:
    def __init__(self):
        self.calls = []

    def call(self, op, args, timeout):
        self.calls.append((op, args, timeout))
        return "from the worker"


def test_any_positive_time_limit_goes_to_the_worker(monkeypatch):
    from reasonlab.data import answers

    fake = _FakeWorker()
    monkeypatch.setattr(answers, "_worker", fake)
    for t in (0.001, 0.5, 1.0, 30.0):
        assert symbolic("verify", "1", "1", timeout=t) == "from the worker"
    assert [c[2] for c in fake.calls] == [0.001, 0.5, 1.0, 30.0]
    assert symbolic("verify", "1", "1", timeout=-1.0) is True  # no limit: here
    assert symbolic("verify", "1", "1", timeout=None) is True
    assert len(fake.calls) == 4


def test_boxed_or_fbox_after_the_answer_marker():
    from reasonlab.data.answers import extract_answer

    assert extract_answer("So #### \\boxed{42} apples", "gsm8k") == "42"
    assert extract_answer("So #### \\fbox{42} apples", "gsm8k") == "42"
    assert extract_answer("The answer is \\fbox{7} apples, I think", "answer_is") == "7"
    assert extract_answer("The answer is \\boxed{7} apples, I think", "answer_is") == "7"


def test_bracketed_answer_runs_to_its_matching_bracket():
    from reasonlab.data.answers import extract_answer

    text = "The answer is ((1, 2), (3, 4)) for both"
    assert extract_answer(text, "answer_is") == "((1, 2), (3, 4))"
    assert extract_answer("The answer is [0, (1, 2)] here", "answer_is") == "[0, (1, 2)]"
    assert extract_answer("The answer is (1, 2] here", "answer_is") == "(1, 2]"
    assert extract_answer("The answer is {1 2) here", "answer_is") == "{1 2) here"  # unclosed


def test_gsm8k_format_without_its_marker_grades_wrong():
    from reasonlab.data.answers import check_answer

    assert check_answer("so it is 42", "42", "gsm8k") is False
    assert check_answer("so it is #### 42", "42", "gsm8k") is True
    assert check_answer("so it is 42", "42") is True  # auto: the last number


def test_numeric_mode_compares_decimals_and_fractions_as_numbers():
    from reasonlab.data.answers import is_equivalent

    assert is_equivalent("0.5", "1/2", mode="numeric") is True
    assert is_equivalent("0.75", "\\frac{3}{4}", mode="numeric") is True
    assert is_equivalent("2.0000000001", "2", mode="numeric") is True
    assert is_equivalent("2.001", "2", mode="numeric") is False


def test_empty_answers_and_different_units_are_false_not_none():
    from reasonlab.data.answers import is_equivalent

    assert is_equivalent("", "5") is False
    assert is_equivalent("5", "$ $") is False
    assert is_equivalent("5 cm", "5 kg") is False
    assert is_equivalent(None, "5") is False


def test_three_letter_plural_units_match_their_singular_and_long_names():
    from reasonlab.data.answers import check_answer, is_equivalent

    for a, b in [("5 lbs", "5 pounds"), ("5 lbs", "5 lb"), ("2 hrs", "2 hours"),
                 ("4 cms", "4 cm")]:
        assert is_equivalent(a, b) is True, (a, b)
    assert check_answer("The answer is 5 lbs.", "5 pounds") is True
    assert is_equivalent("5 lbs", "5 kg") is False


def test_no_answer_normalizes_to_the_empty_string():
    from reasonlab.data.answers import normalize_answer

    assert normalize_answer(None) == ""
    assert normalize_answer(" 5 ") == "5"
