import calendar
import re

import pytest

from ftbench.data.builtin import FAMILIES, _tagged, _words, generate

SENTENCE_END = re.compile(r"[.!?](?=\s|$)")


def test_deterministic_and_seed_changes_order():
    assert generate(300, seed=3) == generate(300, seed=3)
    assert generate() == generate()
    assert generate(300, seed=0) != generate(300, seed=1)


@pytest.mark.parametrize("n", [2000, None])
def test_records_unique_and_well_formed(n):
    records = generate() if n is None else generate(n)
    assert len(records) == (2400 if n is None else n)
    assert len({(r["instruction"], r["input"]) for r in records}) == len(records)
    for r in records:
        assert set(r) == {"instruction", "input", "output"}
        assert all(isinstance(v, str) for v in r.values())
        assert r["instruction"].strip() and r["output"].strip()


def test_prefix_is_balanced_across_families():
    assert len(FAMILIES) >= 12
    first = [family for family, _ in _tagged(200, seed=0)]
    assert len(set(first)) >= 12
    assert set(first) == set(FAMILIES)
    counts = [first.count(f) for f in FAMILIES]
    assert max(counts) - min(counts) <= 1


def test_some_records_use_input_but_most_do_not():
    records = generate()
    with_input = sum(1 for r in records if r["input"])
    assert 0 < with_input < len(records) / 2


def test_answers_are_one_to_three_sentences():
    for r in generate(5000, seed=7):
        out = r["output"]
        assert out.endswith("."), out
        assert 1 <= len(SENTENCE_END.findall(out)) <= 3, out
        assert out[0].isupper() or out[0].isdigit(), out


def _by_family(n=2400, seed=0):
    grouped = {}
    for family, record in _tagged(n, seed):
        grouped.setdefault(family, []).append(record)
    return grouped


def test_arithmetic_is_correct():
    grouped = _by_family()
    ops = {"addition": lambda a, b: a + b, "subtraction": lambda a, b: a - b}
    ops["multiplication"] = lambda a, b: a * b
    for family, op in ops.items():
        for r in grouped[family]:
            numbers = [int(x) for x in re.findall(r"\d+", r["instruction"])]
            if family == "subtraction" and r["instruction"].startswith(("Subtract", "What do you get")):
                numbers.reverse()  # "Subtract b from a" / "take b away from a"
            a, b = numbers
            # with its sign: "b - a" would read back as a - b without it
            assert int(re.findall(r"-?\d+", r["output"])[-1]) == op(a, b), r


def test_comparison_parity_units_and_letters_are_correct():
    grouped = _by_family()
    for r in grouped["comparison"]:
        a, b = (int(x) for x in re.findall(r"\d+", r["instruction"]))
        if "larger" in r["instruction"]:
            assert r["output"] == f"{max(a, b)} is larger than {min(a, b)}."
        elif "smaller" in r["instruction"]:
            assert r["output"] == f"{min(a, b)} is smaller than {max(a, b)}."
        else:
            assert r["output"].startswith("Yes" if a > b else "No")
    for r in grouped["parity"]:
        n = int(re.search(r"\d+", r["instruction"]).group())
        assert ("even" if n % 2 == 0 else "odd") in r["output"]
    factors = {"meters": 1000, "centimeters": 100, "grams": 1000, "minutes": 60, "seconds": 60, "hours": 24}
    factors |= {"days": 7, "milliliters": 1000, "months": 12}
    for r in grouped["units"]:
        v, result = (int(x) for x in re.findall(r"\d+", r["output"]))
        small = r["output"].split()[-1].rstrip(".")
        assert result == v * factors[small], r
    for r in grouped["letter_count"]:
        word = r["input"] or re.search(r'"(\w+)"', r["instruction"]).group(1)
        assert r["output"] == f"The word {word} has {len(word)} letters."
    for r in grouped["first_last_letter"]:
        word = re.search(r'"(\w+)"', r["instruction"]).group(1)
        first = "first" in r["instruction"] or "start" in r["instruction"]
        assert r["output"].endswith(f" letter {word[0] if first else word[-1]}."), r
    for r in grouped["reverse_word"]:
        word = r["input"] or re.search(r'"(\w+)"', r["instruction"]).group(1)
        assert r["output"].endswith(f" {word[::-1]}.")


def test_sorting_and_calendar_are_correct():
    grouped = _by_family()
    for r in grouped["sort_words"]:
        words = sorted(r["input"].split(", "))
        expected = ", ".join(words[:-1]) + f", and {words[-1]}."
        assert r["output"] == f"In alphabetical order, the words are {expected}"
    days = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
    spans = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6}
    for r in grouped["calendar"]:
        m = re.search(r"(\w+) days? (after|before) (\w+)", r["instruction"])
        if m:
            k, sign = spans[m.group(1)], 1 if m.group(2) == "after" else -1
            assert r["output"].endswith(f" {days[(days.index(m.group(3)) + sign * k) % 7]}."), r
    months = list(calendar.month_name)[1:]
    month_records = [r for r in grouped["calendar"] if "month" in r["instruction"]]
    assert month_records
    for r in month_records:
        asked = re.search(r"(\w+)\?$", r["instruction"]).group(1)
        step = 1 if "after" in r["instruction"] or "follows" in r["instruction"] else -1
        neighbour = months[(months.index(asked) + step) % 12]
        assert neighbour in r["output"], r


def test_capitals_spot_check():
    records = generate(11000, seed=0)
    capitals = {r["instruction"]: r["output"] for r in records if "capital of France" in r["instruction"]}
    assert capitals
    france = "The capital of France is Paris. Paris is also the largest city in France."
    assert set(capitals.values()) == {france}
    canada = {r["output"] for r in records if "capital of Canada" in r["instruction"]}
    assert canada == {"The capital of Canada is Ottawa."}


@pytest.mark.parametrize(
    ("n", "words"),
    [(7, "seven"), (13, "thirteen"), (40, "forty"), (342, "three hundred forty-two"), (500, "five hundred")],
)
def test_numbers_are_spelled_in_american_english(n, words):
    assert _words(n) == words


def test_too_many_records_raises():
    with pytest.raises(ValueError, match="distinct"):
        generate(10**6)
    with pytest.raises(ValueError):
        generate(-1)
    assert generate(0) == []
