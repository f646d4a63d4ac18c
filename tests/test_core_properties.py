"""Property tests (hypothesis) of the DiPO invariants (spec §6, §7)."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dipo.core import DiPO, DiPOCoreConfig, GroupType


@st.composite
def batches(draw, distinct_ppl: bool = False):
    group_size = draw(st.integers(2, 6))
    num_groups = draw(st.integers(1, 6))
    rewards = []
    for _ in range(num_groups):
        kind = draw(st.sampled_from(["hard", "easy", "mixed"]))
        if kind == "hard":
            rewards += [0.0] * group_size
        elif kind == "easy":
            rewards += [1.0] * group_size
        else:
            rewards += [float(draw(st.integers(0, 1))) for _ in range(group_size)]
    n = num_groups * group_size
    if distinct_ppl:
        perm = draw(st.permutations(list(range(n))))
        log_ppl = [0.05 * p + 0.01 for p in perm]
    else:
        log_ppl = [draw(st.one_of(st.floats(0.0, 4.0), st.just(float("nan")))) for _ in range(n)]
    config = DiPOCoreConfig(
        alpha=draw(st.sampled_from([0.05, 0.1, 1.0])),
        judgment=draw(st.booleans()),
        judgment_confidence=draw(st.sampled_from([None, 0.95])),
        membership=draw(st.sampled_from(["selected", "all", "mean"])),
        scale_rewards=draw(st.sampled_from(["group", "batch", "none"])),
    )
    return torch.tensor(rewards), torch.tensor(log_ppl), group_size, config


SETTINGS = settings(max_examples=200, deadline=None)


@SETTINGS
@given(batches())
def test_normal_groups_never_change(data):
    rewards, log_ppl, g, config = data
    out = DiPO(config).step(rewards, log_ppl, g)
    normal = (out.group_types == GroupType.NORMAL).repeat_interleave(g)
    assert torch.equal(out.realloc_rewards[normal], rewards[normal])
    assert torch.equal(out.advantages[normal], out.base_advantages[normal])
    assert not out.realloc_mask[normal].any()


@SETTINGS
@given(batches())
def test_at_most_one_response_per_extreme_group_differs(data):
    rewards, log_ppl, g, config = data
    out = DiPO(config).step(rewards, log_ppl, g)
    changed = (out.realloc_rewards != rewards).view(-1, g).sum(1)
    assert (changed <= 1).all()
    assert (changed[out.group_types == GroupType.NORMAL] == 0).all()


@SETTINGS
@given(batches())
def test_supports_of_base_and_realloc_advantages_are_disjoint(data):
    rewards, log_ppl, g, config = data
    out = DiPO(config).step(rewards, log_ppl, g)
    assert not ((out.base_advantages != 0) & (out.advantage_delta != 0)).any()
    # the verifier reward itself never changes
    assert torch.equal(out.base_advantages, DiPO(config).step(rewards, log_ppl, g).base_advantages)


@SETTINGS
@given(batches())
def test_alpha_zero_gives_exactly_the_base_advantages(data):
    rewards, log_ppl, g, config = data
    config.alpha = 0.0
    out = DiPO(config).step(rewards, log_ppl, g)
    assert torch.equal(out.advantages, out.base_advantages)


@SETTINGS
@given(batches(distinct_ppl=True), st.randoms(use_true_random=False))
def test_permuting_inside_a_group_permutes_the_outputs(data, rnd):
    rewards, log_ppl, g, config = data
    n = rewards.numel()
    perm = torch.cat([torch.tensor(rnd.sample(range(g), g)) + start for start in range(0, n, g)])
    a = DiPO(config).step(rewards, log_ppl, g)
    b = DiPO(config).step(rewards[perm], log_ppl[perm], g)
    assert a.threshold == b.threshold
    assert torch.allclose(a.advantages[perm], b.advantages, atol=1e-6)
    assert torch.equal(a.realloc_mask[perm], b.realloc_mask)


@SETTINGS
@given(st.lists(batches(), min_size=1, max_size=4))
def test_queue_state_round_trips(history):
    config = DiPOCoreConfig()
    a = DiPO(config)
    for rewards, log_ppl, g, _ in history:
        a.step(rewards, log_ppl, g)
    b = DiPO(config)
    b.load_state_dict(a.state_dict())
    sa, ca = a.queue.values()
    sb, cb = b.queue.values()
    assert torch.equal(sa, sb) and torch.equal(ca, cb) and a.queue.num_batches == b.queue.num_batches
    rewards, log_ppl, g, _ = history[-1]
    assert torch.equal(a.step(rewards, log_ppl, g).advantages, b.step(rewards, log_ppl, g).advantages)
