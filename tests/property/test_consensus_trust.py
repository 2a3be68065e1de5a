"""Trust: fixed-point, bounded, and honest in the long run (see the rationale in consensus/trust.py).

X = 1/3: a node wrong in more than a third of its observations (spread over windows of up to 12)
always ends below the neutral prior; an honest node never loses trust.
"""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mycelium.encoding import canonical
from mycelium.consensus.trust import (
    SCALE_PPM, Outcome, TrustBook, TrustConfig, after_decay, after_outcome,
)

CFG = TrustConfig()
WRONG = [Outcome.DISSENT, Outcome.WITHHELD]
SETTINGS = settings(max_examples=150, deadline=None)


@st.composite
def window(draw, wrong_share: Fraction):
    """3–12 outcomes, in any order, with strictly more than `wrong_share` of them wrong."""
    size = draw(st.integers(3, 12))
    wrongs = draw(st.integers(int(size * wrong_share) + 1, size))
    outcomes = [draw(st.sampled_from(WRONG)) for _ in range(wrongs)] + [Outcome.AGREE] * (size - wrongs)
    return draw(st.permutations(outcomes))


def run(trust: int, block: list[Outcome], repeats: int, decay_every: int) -> list[int]:
    seen = []
    for i in range(repeats):
        for outcome in block:
            trust = after_outcome(trust, outcome, CFG)
            seen.append(trust)
        if decay_every and i % decay_every == 0:
            trust = after_decay(trust, CFG)  # epochs end between windows
            seen.append(trust)
    return seen


@SETTINGS
@given(block=window(Fraction(1, 3)), start=st.integers(0, SCALE_PPM), decay_every=st.integers(0, 5))
def test_a_node_wrong_more_than_a_third_of_the_time_loses_trust(block, start, decay_every):
    history = run(start, block, repeats=60, decay_every=decay_every)
    assert history[-1] < CFG.prior_ppm, f"wrong {block.count(Outcome.AGREE)}/{len(block)} right yet trusted"
    assert max(history[-len(block):]) < CFG.prior_ppm


@SETTINGS
@given(block=window(Fraction(1, 2) - Fraction(1, 100)), start=st.integers(0, SCALE_PPM))
def test_a_node_wrong_half_the_time_is_replaced(block, start):
    history = run(start, block, repeats=60, decay_every=1)
    assert history[-1] < CFG.replace_below_ppm
    assert TrustBook(CFG, {"n": history[-1]}).to_replace(["n", "m"]) == ["n"]


@SETTINGS
@given(start=st.integers(0, SCALE_PPM), steps=st.lists(st.sampled_from(["agree", "decay"]), max_size=200))
def test_an_honest_node_never_loses_trust(start, steps):
    trust, floor = start, min(start, CFG.prior_ppm)
    for step in steps:
        trust = after_outcome(trust, Outcome.AGREE, CFG) if step == "agree" else after_decay(trust, CFG)
        assert floor <= trust <= SCALE_PPM
        floor = max(floor, min(trust, CFG.prior_ppm))  # once at the prior, it never falls below it


def test_the_seed_004_rule_is_not_what_we_use():
    """dw = 0.08·o − 0.04·(1−o) − 0.002 rewards a node wrong 60% of the time; ours does not."""
    p_wrong = Fraction(60, 100)
    assert Fraction(8, 100) * (1 - p_wrong) - Fraction(4, 100) * p_wrong - Fraction(2, 1000) > 0
    block = [Outcome.DISSENT] * 3 + [Outcome.AGREE] * 2
    assert run(CFG.prior_ppm, block, repeats=60, decay_every=1)[-1] < CFG.replace_below_ppm


@SETTINGS
@given(trust=st.integers(0, SCALE_PPM), outcome=st.sampled_from(list(Outcome)))
def test_updates_stay_integers_in_range(trust, outcome):
    for value in (after_outcome(trust, outcome, CFG), after_decay(trust, CFG)):
        assert isinstance(value, int) and 0 <= value <= SCALE_PPM
    assert (after_outcome(trust, outcome, CFG) > trust) == (outcome is Outcome.AGREE and trust < SCALE_PPM)


def test_decay_moves_toward_the_prior_without_overshooting():
    assert CFG.prior_ppm < after_decay(900_000, CFG) < 900_000
    assert 100_000 < after_decay(100_000, CFG) < CFG.prior_ppm
    assert after_decay(CFG.prior_ppm, CFG) == CFG.prior_ppm


def test_equivocation_slashes_to_zero_for_good_and_keeps_the_evidence():
    book = TrustBook()
    for _ in range(10):
        book.record("a", Outcome.AGREE)
    book.slash("a", b"evidence-1")
    book.slash("a", b"evidence-2")
    for _ in range(10):
        book.record("a", Outcome.AGREE)
        book.decay()
    assert book.trust("a") == 0 and book.slashed == {"a": b"evidence-1"}
    assert book.to_replace(["a", "b"]) == ["a"]
    again = TrustBook.from_wire(book.to_wire())
    assert again.trust("a") == 0 and canonical(again.to_wire()) == canonical(book.to_wire())


@pytest.mark.parametrize("bad", [{"prior_ppm": 2_000_000}, {"replace_below_ppm": 600_000}, {"decay_ppm": 0.5}])
def test_config_is_checked(bad):
    with pytest.raises(ValueError):
        TrustConfig(**bad)


def test_trust_book_wire_is_checked():
    with pytest.raises(ValueError):
        TrustBook.from_wire({"scores": {"a": 2_000_000}, "slashed": {}})
    with pytest.raises(ValueError):
        TrustBook.from_wire([1])
