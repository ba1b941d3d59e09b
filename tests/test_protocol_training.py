"""The training protocol as the loop runs it: how batches are drawn, what loss.txt records, and
the Adagrad the loop actually builds. Each check watches the loop from outside (the sampler's
output, or the steps recorded by wrapping `cerebral.train.train_step`) instead of trusting the
history the loop keeps about itself."""

from collections import Counter
from types import SimpleNamespace

import pytest
import torch
from conftest import tiny_overrides

import cerebral.train as training
from cerebral.config import compose
from cerebral.losslog import read_losses
from cerebral.train import BatchSampler, train


def sampler(n, batch, sampling="random_batches", steps=None, seed=0):
    cfg = SimpleNamespace(batch_size=batch, sampling=sampling, steps_per_epoch=steps)
    return BatchSampler(n, cfg, seed)


def batches(s, epochs=1):
    return [b.tolist() for _ in range(epochs) for b in s.epoch()]


# --- random_batches: the paper's draw ---------------------------------------------------------------

def test_every_random_batch_holds_distinct_indices_of_the_data():
    # 30 of 40: a draw with replacement repeats an index in almost every batch
    drawn = batches(sampler(40, 30, steps=50), epochs=2)
    assert len(drawn) == 100
    for b in drawn:
        assert len(b) == 30 and len(set(b)) == 30
        assert all(0 <= i < 40 for i in b)


def test_consecutive_random_batches_differ_and_overlap_as_independent_draws():
    """Each step draws afresh: consecutive batches are not equal (also across an epoch's end),
    and two independent draws of k of n share k*k/n indices on average (a pass that never
    repeats an index within the epoch would share none)."""
    n, k = 40, 20
    drawn = batches(sampler(n, k, steps=100), epochs=3)
    for a, b in zip(drawn, drawn[1:], strict=False):
        assert set(a) != set(b)
    overlaps = [len(set(a) & set(b)) for a, b in zip(drawn, drawn[1:], strict=False)]
    assert sum(overlaps) / len(overlaps) == pytest.approx(k * k / n, rel=0.1)


def test_random_batch_indices_are_uniform_over_many_steps():
    n, k, steps = 25, 5, 4000
    counts = Counter(i for b in batches(sampler(n, k, steps=steps)) for i in b)
    expected = steps * k / n  # 800, standard deviation about 25
    assert set(counts) == set(range(n))
    assert all(abs(c - expected) < 0.12 * expected for c in counts.values()), counts
    first = Counter(b[0] for b in batches(sampler(n, k, steps=steps, seed=1)))  # each slot too
    assert all(abs(first[i] - steps / n) < 0.3 * steps / n for i in range(n)), first


def test_random_batches_take_the_configured_number_of_steps_and_follow_the_seed():
    s = sampler(100, 8, steps=7)
    assert s.steps == 7 and len(batches(s)) == 7
    assert batches(sampler(100, 8, steps=7, seed=3), 2) == batches(sampler(100, 8, steps=7, seed=3), 2)
    assert batches(sampler(100, 8, steps=7, seed=3)) != batches(sampler(100, 8, steps=7, seed=4))


# --- shuffled_pass: the conventional epoch -----------------------------------------------------------

@pytest.mark.parametrize("n,k", [(103, 10), (15259, 4096), (64, 8)])
def test_a_shuffled_pass_covers_n_div_batch_times_batch_distinct_sequences(n, k):
    s = sampler(n, k, sampling="shuffled_pass")
    assert s.steps == n // k
    for _ in range(2):
        drawn = batches(s)
        assert len(drawn) == n // k and all(len(b) == k for b in drawn)
        seen = [i for b in drawn for i in b]
        assert len(set(seen)) == len(seen) == (n // k) * k
        assert all(0 <= i < n for i in seen)


@pytest.mark.parametrize("steps,kept", [(3, 3), (50, 10)])
def test_steps_per_epoch_keeps_at_most_that_many_batches_of_a_shuffled_pass(steps, kept):
    s = sampler(103, 10, sampling="shuffled_pass", steps=steps)
    drawn = batches(s)
    assert s.steps == len(drawn) == kept
    seen = [i for b in drawn for i in b]
    assert len(set(seen)) == len(seen) == kept * 10


def test_each_shuffled_pass_is_a_new_order():
    s = sampler(103, 10, sampling="shuffled_pass")
    first, second = batches(s), batches(s)
    assert first != second
    assert sorted(sum(first, [])) != list(range(100))  # shuffled, not the first 100 in order


# --- what the loop records -------------------------------------------------------------------------

def test_loss_txt_holds_each_epochs_mean_of_its_step_losses(data_dir, tmp_path, recorded_steps):
    run = tmp_path / "run"
    returned = train(compose(*tiny_overrides(data_dir, run, "train.epochs=3")))
    steps = [s["loss"] for s in recorded_steps]
    assert len(steps) == 3 * 3
    assert len(set(steps)) == len(steps)  # the steps differ, so first, last and mean differ too
    written = read_losses(run / "loss.txt")
    expected = [sum(steps[e * 3:(e + 1) * 3]) / 3 for e in range(3)]
    assert written == pytest.approx(expected, rel=1e-12, abs=0)
    assert returned == pytest.approx(expected, rel=1e-12, abs=0)
    # and the loop trained on the batches its sampler draws for this seed
    assert [s["batch"][0].tolist() for s in recorded_steps] == batches(sampler(15259, 8, steps=3), epochs=3)


def test_the_loop_steps_an_adagrad_whose_accumulators_start_at_the_configured_value(data_dir, tmp_path, monkeypatch):
    """The optimizer the loop builds and steps with, seen at its first step: every parameter's
    Adagrad sum starts at optim.initial_accumulator_value, and one step adds grad^2 to it."""
    seen = []
    real = training.train_step

    def wrapper(model, optimizer, loss_fn, *batch, **kwargs):
        if not seen:
            params = list(model.parameters())
            before = [optimizer.state[p]["sum"].clone() for p in params]
            loss = real(model, optimizer, loss_fn, *batch, **kwargs)
            after = [optimizer.state[p]["sum"].clone() for p in params]
            seen.append((optimizer, params, before, after, [p.grad.clone() for p in params]))
            return loss
        return real(model, optimizer, loss_fn, *batch, **kwargs)

    monkeypatch.setattr(training, "train_step", wrapper)
    train(compose(*tiny_overrides(data_dir, tmp_path / "run", "train.epochs=1", "optim.initial_accumulator_value=0.37",
                                  "optim.lr=0.02")))
    (optimizer, params, before, after, grads), = seen
    assert isinstance(optimizer, torch.optim.Adagrad)
    assert {id(p) for g in optimizer.param_groups for p in g["params"]} == {id(p) for p in params}
    assert all(g["lr"] == 0.02 for g in optimizer.param_groups)
    for p, start, end, grad in zip(params, before, after, grads, strict=True):
        assert torch.equal(start, torch.full_like(p, 0.37))
        torch.testing.assert_close(end, start + grad * grad, rtol=1e-6, atol=0)
