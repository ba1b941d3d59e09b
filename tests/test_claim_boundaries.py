"""Each claim's rule (cerebral/claims.py, RULES) at both sides of each of its boundaries, on
constructed curves: moving any window, threshold or tolerance by one epoch (or past 0.02)
changes a verdict here."""

import pytest

from cerebral import claims


def flat(value, n):
    return [value] * n


def test_the_rules_name_the_boundaries_tested_here():
    assert (claims.PAPER_EPOCHS, claims.C5_EARLIEST, claims.C5_LATEST) == (500, 610, 746)
    assert "0-499" in claims.RULES["C1"] and "200-300" in claims.RULES["C2"]
    assert "<= 50" in claims.RULES["C3"] and "0.02 of 0.3979" in claims.RULES["C4"]
    assert "610-746" in claims.RULES["C5"]


# --- C1: Cerebral below single at every one of epochs 0-499 --------------------------------------

@pytest.mark.parametrize("epoch", [0, 1, 250, 498, 499])
@pytest.mark.parametrize("cerebral_value,holds", [(2.0, False), (2.0 + 1e-9, False), (2.0 - 1e-9, True)])
def test_c1_every_epoch_from_0_to_499_counts(epoch, cerebral_value, holds):
    single, cerebral = flat(2.0, 500), flat(1.0, 500)
    cerebral[epoch] = cerebral_value  # equal is not below
    v = claims.judge_c1({"single_lstm": single, "cerebral_lstm": cerebral})
    assert v.holds is holds
    if not holds:
        assert v.value == 1 and v.text.endswith(f"first at {epoch}")


@pytest.mark.parametrize("epoch", [500, 600, 790])
def test_c1_ignores_epochs_after_499(epoch):
    single, cerebral = flat(2.0, 791), flat(1.0, 791)
    cerebral[epoch] = 3.0
    assert claims.judge_c1({"single_lstm": single, "cerebral_lstm": cerebral}).holds is True


def test_c1_needs_500_epochs_to_hold():
    assert claims.judge_c1({"single_lstm": flat(2.0, 499), "cerebral_lstm": flat(1.0, 499)}).holds is None
    assert claims.judge_c1({"single_lstm": flat(2.0, 500), "cerebral_lstm": flat(1.0, 500)}).holds is True
    assert claims.judge_c1({"single_lstm": flat(2.0, 500), "cerebral_lstm": flat(1.0, 499)}).holds is None


# --- C2: the last epoch (of 0-499) with two-stacked >= single lies in 200-300 ----------------------

def c2_curves(last, at_last=2.0, length=500):
    """single flat at 1; two-stacked above it through epoch `last` (at_last there), below after."""
    stacked = [2.0] * last + [at_last] + [0.5] * (length - last - 1)
    return {"single_lstm": flat(1.0, length), "stacked_lstm": stacked}


@pytest.mark.parametrize("last,holds", [(150, False), (199, False), (200, True), (250, True), (300, True),
                                        (301, False), (499, False)])
@pytest.mark.parametrize("at_last", [2.0, 1.0])  # above, or equal: equal counts as >=
def test_c2_window_is_200_to_300_inclusive(last, holds, at_last):
    v = claims.judge_c2(c2_curves(last, at_last))
    assert v.holds is holds and v.value == last


def test_c2_overtaking_for_good_means_the_last_crossing_counts():
    curves = c2_curves(250)
    curves["stacked_lstm"][301] = 1.0  # back level with single once, later
    v = claims.judge_c2(curves)
    assert v.holds is False and v.value == 301


def test_c2_ignores_epochs_after_499_and_needs_500():
    curves = c2_curves(250, length=791)
    curves["stacked_lstm"][500] = curves["stacked_lstm"][700] = 5.0
    assert claims.judge_c2(curves).value == 250 and claims.judge_c2(curves).holds is True
    short = {m: c[:499] for m, c in c2_curves(250).items()}
    assert claims.judge_c2(short).holds is None


# --- C3: Cerebral below two-stacked at every epoch from some epoch <= 50 through 499 ---------------

def c3_curves(start, length=500, at_last_not_below=2.0):
    """two-stacked flat at 1; Cerebral not below it before epoch `start`, below from `start` on."""
    cerebral = [2.0] * max(start - 1, 0) + ([at_last_not_below] if start else []) + [0.5] * (length - start)
    return {"stacked_lstm": flat(1.0, length), "cerebral_lstm": cerebral}


@pytest.mark.parametrize("start,holds", [(0, True), (1, True), (49, True), (50, True), (51, False), (52, False),
                                         (400, False)])
@pytest.mark.parametrize("at_last_not_below", [2.0, 1.0])  # above, or equal: equal is not below
def test_c3_below_from_an_epoch_at_most_50(start, holds, at_last_not_below):
    v = claims.judge_c3(c3_curves(start, at_last_not_below=at_last_not_below))
    assert v.holds is holds and v.value == start


@pytest.mark.parametrize("epoch,holds", [(60, False), (498, False), (499, False), (500, True), (700, True)])
def test_c3_through_epoch_499_and_no_further(epoch, holds):
    curves = c3_curves(10, length=791)
    curves["cerebral_lstm"][epoch] = 1.0
    assert claims.judge_c3(curves).holds is holds


def test_c3_needs_500_epochs():
    assert claims.judge_c3({m: c[:499] for m, c in c3_curves(10).items()}).holds is None


# --- C4: the loss at index 499 is within 0.02 of 0.3979 --------------------------------------------

@pytest.mark.parametrize("final,holds", [(0.3979, True), (0.3979 + 0.0199, True), (0.3979 - 0.0199, True),
                                         (0.3979 + 0.0201, False), (0.3979 - 0.0201, False)])
def test_c4_tolerance_is_0_02(final, holds):
    cerebral = flat(5.0, 499) + [final]
    v = claims.judge_c4({"cerebral_lstm": cerebral})
    assert v.holds is holds and v.value == final


def test_c4_reads_index_499_only():
    right = flat(5.0, 499) + [0.3979] + flat(5.0, 291)
    assert claims.judge_c4({"cerebral_lstm": right}).holds is True
    wrong = flat(0.3979, 499) + [5.0] + flat(0.3979, 291)
    assert claims.judge_c4({"cerebral_lstm": wrong}).holds is False
    assert claims.judge_c4({"cerebral_lstm": flat(0.3979, 499)}).holds is None


# --- C5: two-stacked first <= Cerebral's loss at index 499 in 610-746 -------------------------------

TARGET = 0.4


def c5_curves(reached, length=791, at_reached=TARGET):
    """Cerebral at TARGET at index 499 (lower before it); two-stacked above TARGET before `reached`."""
    cerebral = flat(0.1, 499) + [TARGET]
    stacked = [TARGET + 1e-9] * reached + [at_reached] + [0.3] * (length - reached - 1)
    return {"cerebral_lstm": cerebral, "stacked_lstm": stacked}


@pytest.mark.parametrize("reached,holds", [(500, False), (609, False), (610, True), (678, True), (746, True),
                                           (747, False), (790, False)])
@pytest.mark.parametrize("at_reached", [TARGET, TARGET - 0.05])  # equal counts as reached
def test_c5_window_is_610_to_746_inclusive(reached, holds, at_reached):
    v = claims.judge_c5(c5_curves(reached, at_reached=at_reached))
    assert v.holds is holds and v.value == reached


def test_c5_not_reached_is_judgeable_once_epoch_746_is_known():
    never = {"cerebral_lstm": flat(0.1, 499) + [TARGET]}
    assert claims.judge_c5({**never, "stacked_lstm": flat(1.0, 746)}).holds is None   # epochs 0-745
    assert claims.judge_c5({**never, "stacked_lstm": flat(1.0, 747)}).holds is False  # epoch 746 known too
    # a curve that stops inside the window before reaching: not yet
    assert claims.judge_c5({**never, "stacked_lstm": flat(1.0, 700)}).holds is None
