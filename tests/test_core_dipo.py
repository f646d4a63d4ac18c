"""The DiPO step (spec §3–§7, §10): hand-computed end-to-end cases, state, diagnostics, bad input."""

import math

import pytest
import torch

from dipo.core import MEMBERSHIP_RULES, DiPO, DiPOCoreConfig, PPLQueue, sequence_log_ppl


def batch():
    """Three groups of G=8: hard (max PPL in EiS), easy (max PPL in ErS), normal."""
    rewards = torch.tensor([0.0] * 8 + [1.0] * 8 + [0, 1, 0, 1, 0, 1, 0, 1.0])
    s = torch.tensor(
        [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]
        + [0.9, 1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 2.6]
        + [0.1, 0.2, 1.5, 0.3, 1.6, 0.4, 2.0, 0.5]
    )
    return rewards, s


def test_step_end_to_end_by_hand():
    rewards, s = batch()
    out = DiPO(DiPOCoreConfig(judgment_confidence=None)).step(rewards, s, 8)
    # τ*: queue = this batch; the best cut is between 1.4 and 1.5 (error 11/24, checked by brute force in tests).
    assert out.threshold == pytest.approx(1.45)
    assert out.judgment.passed and out.applied
    # hard group: response 7 (s=0.8 < τ) rewarded; easy group: response 15 (s=2.6 > τ) penalised.
    assert out.realloc_rewards[:16].tolist() == [0] * 7 + [1] + [1] * 7 + [0]
    a_j, a_o = 0.875 / (math.sqrt(0.125) + 1e-4), -0.125 / (math.sqrt(0.125) + 1e-4)
    expected = [0.1 * a_o] * 7 + [0.1 * a_j] + [-0.1 * a_o] * 7 + [-0.1 * a_j]
    assert out.advantage_delta[:16].tolist() == pytest.approx(expected, abs=1e-6)
    assert out.advantage_delta[16:].abs().sum() == 0
    assert torch.equal(out.advantages[16:], out.base_advantages[16:])
    m = out.metrics()
    assert m["frac_hard"] == m["frac_easy"] == m["frac_normal"] == pytest.approx(1 / 3)
    assert (m["realloc_hard"], m["realloc_easy"]) == (1.0, 1.0)
    assert m["threshold_ppl"] == pytest.approx(math.exp(1.45))
    assert sum(m[f"frac_{q}"] for q in ("CL", "CH", "EL", "EH")) == pytest.approx(1.0)
    assert m["queue_size"] == 24.0


def test_failed_judgment_means_base_method():
    rewards, s = batch()
    out = DiPO(DiPOCoreConfig(judgment_confidence=0.95)).step(rewards, s, 8)
    assert not out.judgment.passed and not out.applied  # 24 samples are too few for the 95 % interval
    assert out.advantage_delta.abs().sum() == 0 and not out.realloc_mask.any()
    # the ablation without judgment reallocates anyway
    out = DiPO(DiPOCoreConfig(judgment=False)).step(rewards, s, 8)
    assert out.applied and out.realloc_mask.sum() == 16


def test_alpha_zero_is_the_base_method_but_still_diagnoses():
    rewards, s = batch()
    out = DiPO(DiPOCoreConfig(alpha=0.0, judgment_confidence=None)).step(rewards, s, 8)
    assert torch.equal(out.advantages, out.base_advantages)
    assert out.metrics()["realloc_hard"] == 1.0


def test_separate_normalizer_rescales_by_own_rows():
    rewards, s = batch()
    shared = DiPO(DiPOCoreConfig(judgment_confidence=None)).step(rewards, s, 8)
    separate = DiPO(DiPOCoreConfig(judgment_confidence=None, realloc_normalizer="separate")).step(rewards, s, 8)
    assert torch.allclose(separate.advantage_delta, shared.advantage_delta * 24 / 16)
    tokens = torch.tensor([2] * 16 + [4] * 8)
    tok = DiPO(DiPOCoreConfig(judgment_confidence=None, realloc_normalizer="separate"))
    out = tok.step(rewards, s, 8, token_counts=tokens)
    assert torch.allclose(out.advantage_delta, shared.advantage_delta * (64 / 32))


def test_queue_keeps_the_two_most_recent_batches():
    dipo = DiPO()
    rewards, s = batch()
    for k in range(3):
        out = dipo.step(rewards, s + k, 8)
    assert out.queue_size == 48 and dipo.queue.num_batches == 2
    q_s, _ = dipo.queue.values()
    assert q_s.min().item() == pytest.approx(0.1 + 1)  # batch 0 fell out


def test_state_dict_round_trip_reproduces_decisions():
    rewards, s = batch()
    a = DiPO(DiPOCoreConfig(judgment_confidence=None))
    a.step(rewards, s + 0.3, 8)
    state = a.state_dict()
    b = DiPO(DiPOCoreConfig(judgment_confidence=None))
    b.load_state_dict(state)
    out_a, out_b = a.step(rewards, s, 8), b.step(rewards, s, 8)
    assert out_a.threshold == out_b.threshold
    assert torch.equal(out_a.advantages, out_b.advantages)


def test_queue_state_mismatch_is_an_error():
    q = PPLQueue(2)
    q.push(torch.tensor([0.1, 0.2]), torch.tensor([True, False]))
    with pytest.raises(ValueError, match="queue_batches"):
        PPLQueue(3).load_state_dict(q.state_dict())
    with pytest.raises(ValueError, match="missing"):
        PPLQueue(2).load_state_dict({"max_batches": 2})


def test_invalid_rows_never_enter_the_queue():
    rewards, s = batch()
    valid = torch.ones(24, dtype=torch.bool)
    valid[3] = False
    rewards = rewards.clone()
    rewards[3] = float("nan")
    s = s.clone()
    s[5] = float("nan")
    dipo = DiPO(DiPOCoreConfig(judgment=False))
    out = dipo.step(rewards, s, 8, valid=valid)
    assert out.queue_size == 22
    assert out.group_types[0].item() == 0  # the hard group holds an invalid row -> normal
    assert out.advantages[3].item() == 0.0


def test_works_on_float64_and_keeps_device():
    rewards, s = batch()
    out = DiPO(DiPOCoreConfig(judgment=False)).step(rewards.double(), s.double(), 8)
    assert out.advantages.dtype == torch.float64


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"alpha": -0.1}, "alpha"),
        ({"alpha": float("nan")}, "alpha"),
        ({"queue_batches": 0}, "queue_batches"),
        ({"judgment_confidence": 1.0}, "judgment_confidence"),
        ({"membership": "some"}, "membership"),
        ({"reward_mode": "soft"}, "reward_mode"),
        ({"scale_rewards": "global"}, "scale_rewards"),
        ({"realloc_normalizer": "mine"}, "realloc_normalizer"),
        ({"graded_delta": 0.0}, "graded_delta"),
    ],
)
def test_bad_config_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DiPOCoreConfig(**kwargs)


@pytest.mark.parametrize(
    ("rewards", "log_ppl", "group_size", "match"),
    [
        (torch.zeros(8), torch.zeros(7), 4, "shape"),
        (torch.zeros(6), torch.zeros(6), 4, "not divisible"),
        (torch.zeros(6), torch.zeros(6), 1, ">= 2"),
        (torch.tensor([0, 0.5, 1, 1]), torch.zeros(4), 2, "binary"),
        (torch.tensor([0, float("nan"), 1, 1]), torch.zeros(4), 2, "not finite"),
        (torch.zeros(2, 4), torch.zeros(2, 4), 4, "1-D"),
    ],
)
def test_bad_step_input_raises_and_leaves_the_queue_untouched(rewards, log_ppl, group_size, match):
    dipo = DiPO()
    with pytest.raises(ValueError, match=match):
        dipo.step(rewards, log_ppl, group_size)
    assert len(dipo.queue) == 0


def test_sequence_log_ppl():
    logps = torch.tensor([[-1.0, -2.0, -3.0], [-0.5, float("-inf"), 0.0], [-1.0, -1.0, -1.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0], [0, 0, 0]])
    s = sequence_log_ppl(logps, mask)
    assert s[0].item() == pytest.approx(1.5) and s[1].item() == pytest.approx(0.5) and math.isnan(s[2])
    with pytest.raises(ValueError, match="same shape"):
        sequence_log_ppl(logps, mask[:, :2])


def test_edge_threshold_is_logged_as_nan_with_its_side():
    dipo = DiPO(DiPOCoreConfig(judgment=False))
    out = dipo.step(torch.ones(4), torch.tensor([0.1, 0.2, 0.3, 0.4]), 2)  # all correct -> cut above all
    assert out.threshold == math.inf
    m = out.metrics()
    assert math.isnan(m["threshold_ppl"]) and m["threshold_at_edge"] == 1.0
    assert all(not math.isinf(v) for v in m.values())


def test_random_selection_is_seeded_reproducible_and_restored_from_state():
    torch.manual_seed(0)
    batches = [(torch.randint(0, 2, (64,)).float(), torch.rand(64)) for _ in range(6)]
    batches = [(torch.zeros(64) if i % 2 else r, s) for i, (r, s) in enumerate(batches)]  # hard groups to act on

    def run(dipo, items):
        return [dipo.step(r, s, group_size=8).selected.tolist() for r, s in items]

    cfg = DiPOCoreConfig(selection="random", selection_seed=3, judgment=False)
    full = run(DiPO(cfg), batches)
    assert full == run(DiPO(cfg), batches)  # same seed, same draws
    assert full != run(DiPO(DiPOCoreConfig(selection="random", selection_seed=4, judgment=False)), batches)
    first = DiPO(cfg)
    head = run(first, batches[:3])
    resumed = DiPO(cfg)
    resumed.load_state_dict(first.state_dict())
    assert head + run(resumed, batches[3:]) == full


def test_step_folds_with_fold_advantages_and_validates_once(monkeypatch):
    """One path: ``DiPO.step`` folds with :func:`fold_advantages` and validates its inputs itself only; the BRR and
    queue entry points' own checks are not run again from inside the step."""
    import dipo.core.brr as brr
    import dipo.core.dipo as dipo_module
    import dipo.core.queue as queue

    calls = []
    real_fold = dipo_module.fold_advantages

    def spy_fold(*args, **kwargs):
        calls.append(args)
        return real_fold(*args, **kwargs)

    def refuse(*args, **kwargs):
        raise AssertionError("re-validated inside DiPO.step")

    rewards, s = batch()
    expected = DiPO(DiPOCoreConfig(judgment_confidence=None)).step(rewards, s, 8)
    monkeypatch.setattr(dipo_module, "fold_advantages", spy_fold)
    for module in (brr, queue):
        for name in ("check_1d", "check_same_shape", "check_group_size", "check_log_ppl", "check_choice"):
            if hasattr(module, name):
                monkeypatch.setattr(module, name, refuse)
    out = DiPO(DiPOCoreConfig(judgment_confidence=None)).step(rewards, s, 8)
    assert len(calls) == 1
    assert torch.equal(out.advantages, expected.advantages)
    assert torch.equal(out.advantages, out.base_advantages + out.advantage_delta)


# --------------------------------------------- read-only BRR for filters that decide before the step (spec §5, §6)


def test_current_threshold_reads_the_queue_without_pushing():
    """Queue s = 0.1 … 1.0 with wrong answers at 0.4 and 0.9: the paper's rule cuts between 0.8 and 0.9 (errors: the
    0.4 below, the 1.0 above; the cut above all ties and the lower median is taken), the class-balanced one between
    0.3 and 0.4 (½·(5/8 + 0) = ½·(1/8 + 1/2), lower median)."""
    s = torch.arange(1, 11, dtype=torch.float64) / 10
    c = torch.tensor([1, 1, 1, 0, 1, 1, 1, 1, 0, 1]).bool()
    for rule, expected in (("error", 0.85), ("balanced", 0.35)):
        core = DiPO(DiPOCoreConfig(judgment=False, threshold_rule=rule))
        core.queue.push(s, c)
        assert core.current_threshold() == pytest.approx(expected)
        assert core.queue.values()[0].numel() == 10  # nothing pushed
    assert math.isnan(DiPO().current_threshold())  # empty queue: BRR would not act


def test_current_threshold_is_nan_when_the_judgment_fails_and_on_with_judgment_off():
    s, c = torch.tensor([0.1, 0.2, 1.4, 1.5], dtype=torch.float64), torch.tensor([True, False, True, False])
    judged = DiPO(DiPOCoreConfig())
    judged.queue.push(s, c)
    assert math.isnan(judged.current_threshold())
    unjudged = DiPO(DiPOCoreConfig(judgment=False))
    unjudged.queue.push(s, c)
    assert not math.isnan(unjudged.current_threshold())


def test_predict_reallocation_by_hand():
    """Groups of 2, τ* = 0.9: hard low (reallocated), hard high (no), easy with a high-PPL answer (reallocated), easy
    low (no); membership "all" needs the whole group on the side; without its high-PPL answer (invalid row) the easy
    group lies below τ*."""
    rewards = torch.tensor([0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0])
    log_ppl = torch.tensor([0.2, 0.3, 1.5, 1.6, 0.2, 1.7, 0.2, 0.3], dtype=torch.float64)
    core = DiPO()
    assert core.predict_reallocation(rewards, log_ppl, 2, 0.9).tolist() == [True, False, True, False]
    assert core.predict_reallocation(rewards, log_ppl, 2, math.nan).tolist() == [False] * 4
    hard_only = DiPO(DiPOCoreConfig(reallocate_easy=False))
    assert hard_only.predict_reallocation(rewards, log_ppl, 2, 0.9).tolist() == [True, False, False, False]
    every = DiPO(DiPOCoreConfig(membership="all"))
    assert every.predict_reallocation(rewards, log_ppl, 2, 0.9).tolist() == [True, False, False, False]
    valid = torch.tensor([True] * 5 + [False, True, True])
    assert core.predict_reallocation(rewards, log_ppl, 2, 0.9, valid=valid).tolist() == [True, False, False, False]


def agreement_batch(reward_mode: str, gen: torch.Generator, groups: int = 48, size: int = 4):
    """Hard, easy and normal groups in random order; log-PPL spread so that every membership rule splits them."""
    kinds = torch.randint(0, 3, (groups,), generator=gen)
    low, high = (0.0, 1.0) if reward_mode == "binary" else (0.2, 0.9)
    rewards = torch.where(kinds == 0, low, high).repeat_interleave(size).double()
    normal = (kinds == 2).repeat_interleave(size)
    mixed = torch.tensor([low, high]).double()[torch.randint(0, 2, (groups * size,), generator=gen)]
    mixed.view(groups, size)[:, 0], mixed.view(groups, size)[:, 1] = low, high
    rewards = torch.where(normal, mixed, rewards)
    log_ppl = torch.rand(groups * size, generator=gen, dtype=torch.float64) * 2 + (rewards < 0.5) * 0.5
    return rewards, log_ppl


@pytest.mark.parametrize("selection", ["max_ppl", "random"])
@pytest.mark.parametrize("reward_mode", ["binary", "graded"])
@pytest.mark.parametrize("membership", sorted(MEMBERSHIP_RULES))
def test_predict_reallocation_agrees_with_step(membership, reward_mode, selection):
    """What a filter predicts before the step (at the step's τ*) is exactly what the step reallocates."""
    config = DiPOCoreConfig(membership=membership, reward_mode=reward_mode, selection=selection, judgment=False)
    gen = torch.Generator().manual_seed(7)
    rewards, log_ppl = agreement_batch(reward_mode, gen)
    out = DiPO(config).step(rewards, log_ppl, 4)
    done = out.realloc_hard | out.realloc_easy
    assert out.applied and 0 < int(done.sum()) < int((out.group_types != 0).sum())  # the case can fail
    predicted = DiPO(config).predict_reallocation(rewards, log_ppl, 4, out.threshold)
    assert predicted.tolist() == done.tolist()
