"""Regime testbeds of the demo: the teacher's distribution (hand cases, exact vs sampled), the converged-policy
simulation, the per-step instruments, the study's report helpers and the demo's argument checks."""

from __future__ import annotations

import json
import math
import random
from collections import Counter

import pytest
import torch

from dipo.demo.regimes import REGIMES, Teacher, get_regime, simulate_converged, teacher_logprob
from dipo.tasks.arithmetic import ArithmeticTask

TASK = ArithmeticTask(levels=(1, 2, 3), ops=("+",))


def item(prompt: str, level: int):
    a, b = (int(x) for x in prompt.rstrip("=").split("+"))
    return TASK.make_item("+", [a, b], level)


def test_trap_items_are_the_units_carry_sums_of_trap_levels():
    teacher = Teacher(trap_levels=(2,), trap_drop=0.9, trap_noise=0.05)
    assert teacher.is_trap(item("17+25=", 2))  # 7 + 5 carries
    assert not teacher.is_trap(item("12+13=", 2))  # no units carry
    assert not teacher.is_trap(item("7+5=", 1))  # level 1 is not a trap level
    assert not teacher.is_trap(item("117+125=", 3))


def test_trap_answers_hand_case():
    teacher = Teacher(trap_levels=(2,), trap_drop=0.9, trap_noise=0.05)
    it = item("17+25=", 2)  # 42, reversed "24"; dropping the units carry gives 32, reversed "23"
    table = teacher.trap_answers(it, TASK)
    assert table["24"] == pytest.approx(0.05)
    assert table["23"] == pytest.approx(0.9 + 0.05 / 9)  # "23" is also one of the random tens digits
    assert table["20"] == pytest.approx(0.05 / 9)
    assert sum(table.values()) == pytest.approx(1.0)
    assert teacher.answer_prob(it, TASK, "42") == 0.0


def test_digit_noise_probability_hand_case():
    teacher = Teacher(noisy_levels=(3,), digit_noise=0.4, noise_spread=2)
    it = item("123+456=", 3)  # 579, reversed "975"
    assert teacher.answer_prob(it, TASK, "975") == pytest.approx(0.6**3)
    assert teacher.answer_prob(it, TASK, "985") == pytest.approx(0.6**2 * 0.2)  # 7 → 8 is a nearest digit
    assert teacher.answer_prob(it, TASK, "995") == 0.0  # 7 → 9 is not among the 2 nearest
    assert teacher.answer_prob(it, TASK, "97") == 0.0


def test_teacher_logprob_includes_the_filler_and_counts_eos():
    teacher = Teacher(filler_probs=(0.7, 0.2, 0.1))
    it = item("3+4=", 1)
    logp, n = teacher_logprob(teacher, it, TASK, "  7")
    assert logp == pytest.approx(math.log(0.1)) and n == 4
    assert teacher_logprob(teacher, it, TASK, "8")[0] == -math.inf


def test_samples_follow_the_exact_distribution():
    teacher = get_regime("explore").teacher
    it = item("17+25=", 2)
    rng = random.Random(0)
    n = 20_000
    counts = Counter(teacher.sample(it, TASK, rng) for _ in range(n))
    for target, c in counts.most_common(4):
        p = math.exp(teacher_logprob(teacher, it, TASK, target)[0])
        assert abs(c / n - p) < 5 * math.sqrt(p * (1 - p) / n) + 1e-3, target


def test_teacher_validation():
    with pytest.raises(ValueError, match="filler_probs"):
        Teacher(filler_probs=(0.5, 0.2))
    with pytest.raises(ValueError, match="reachable"):
        Teacher(trap_drop=0.9, trap_noise=0.1)
    with pytest.raises(ValueError, match="noise_spread"):
        Teacher(noise_spread=0)
    with pytest.raises(ValueError, match="unknown regime"):
        get_regime("nope")


def test_converged_simulation_puts_brr_on_the_intended_side():
    """The regimes were chosen by this simulation: explore rewards hard groups, exploit penalises easy ones."""
    explore = simulate_converged(REGIMES["explore"], steps=12)
    exploit = simulate_converged(REGIMES["exploit"], steps=12)
    assert explore["judgment_passed"] == 1.0 and exploit["judgment_passed"] == 1.0
    assert explore["realloc_hard_share"] > 0.3 and explore["realloc_easy_share"] < 0.05
    assert exploit["realloc_easy_share"] > 0.05 and exploit["realloc_hard_share"] < 0.05


def test_entropy_split_hand_case():
    from dipo.demo.instruments import entropy_split

    # vocab: 0 = space, 1..2 = digits, 3 = eos; one completion " 1<eos>".
    logits = torch.log(torch.tensor([[[0.5, 0.25, 0.25, 1e-9], [0.2, 0.4, 0.4, 1e-9], [1e-9, 1e-9, 1e-9, 1.0]]]))
    ids = torch.tensor([[0, 1, 3]])
    mask = torch.ones(1, 3)
    out = entropy_split(logits, ids, mask, space_id=0, digit_ids=[1, 2])
    h_half = math.log(2)
    h_02 = -(0.2 * math.log(0.2) + 0.8 * math.log(0.8))
    assert out["surface_entropy"] == pytest.approx((h_half + h_02) / 2, abs=1e-5)  # positions 0 and 1
    assert out["answer_entropy"] == pytest.approx(math.log(2), abs=1e-5)  # digits 1/2 equally likely at position 1


def test_batch_recorder_passes_rewards_through_and_measures_no_shift_without_update():
    from dipo.demo.instruments import BatchRecorder
    from dipo.demo.model import ModelSpec, build_model
    from dipo.demo.tokenizer import build_tokenizer
    from dipo.tasks.arithmetic import arithmetic_reward

    tok = build_tokenizer()
    rec = BatchRecorder(arithmetic_reward, tok)
    rec.model = build_model(ModelSpec(num_hidden_layers=1), tok, seed=0)
    ids = [[*tok("3")["input_ids"], tok.eos_token_id], tok(" 9")["input_ids"]]
    rewards = rec(["1+2=", "4+5="], ["3", " 9"], ids, answer=["3", "9"])
    assert rewards == [1.0, 1.0] and rec.__name__ == "arithmetic_reward"
    assert rec.entropy_shift(torch.tensor([True, True])) == pytest.approx(0.0, abs=1e-6)
    assert math.isnan(rec.entropy_shift(torch.tensor([False, False])))
    assert set(rec.split) == {"surface_entropy", "answer_entropy"}
    # After an update, one forward over the union of subsets gives each subset's own shift.
    with torch.no_grad():
        for p in rec.model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    first, second = torch.tensor([True, False]), torch.tensor([False, True])
    both = rec.entropy_shifts({"a": first, "b": second, "none": torch.tensor([False, False])})
    assert both["a"] == pytest.approx(rec.entropy_shift(first), abs=1e-5)
    assert both["b"] == pytest.approx(rec.entropy_shift(second), abs=1e-5)
    assert both["a"] != pytest.approx(0.0, abs=1e-6) and math.isnan(both["none"])


def _run(seed: int, hits: list[list[int]], final: dict) -> dict:
    evals = [{"step": float(10 * i), "item_hits": h} for i, h in enumerate(hits)]
    return {"method": "x", "seed": seed, "evals": evals, "final": final, "history": []}


def test_first_solves_hand_case():
    from dipo.demo.report import first_solves

    # items 0 and 2 unsolved at step 0; item 0 first solved at step 20, item 2 never (counts as 30 + 10 = 40).
    run = _run(0, [[0, 3, 0], [0, 2, 0], [1, 4, 0], [2, 1, 0]], {})
    out = first_solves(run)
    assert out["solved_share"] == 0.5
    assert out["first_solve_step"] == pytest.approx((20 + 40) / 2)


def test_paired_table_reports_differences_with_ci():
    from dipo.demo.report import paired_table

    def final(m):
        return {"mean_at_k": m, "pass_at_k": m, "mean_at_k_by_level": {"3": m}, "trap_mean_at_k": math.nan}

    runs = [dict(_run(s, [[0], [1]], final(0.5 + 0.01 * s)), method="dapo") for s in range(3)]
    runs += [dict(_run(s, [[0], [1]], final(0.52 + 0.01 * s)), method="dipo") for s in range(3)]
    results = {"runs": runs, "methods": {"dapo": {}, "dipo": {}}}
    table = paired_table(results)
    assert "| dipo | 3 | **+2.00 [+2.00, +2.00]** |" in table


def test_demo_refuses_bad_seeds_and_existing_results(tmp_path, capsys):
    from dipo.cli.main import main

    assert main(["demo", "--seeds", "0", "-1", "--out", str(tmp_path / "a")]) == 2
    assert "seeds must be integers >= 0" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()  # nothing started
    out = tmp_path / "b"
    out.mkdir()
    (out / "results.json").write_text(json.dumps({}))
    assert main(["demo", "--quick", "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert json.loads((out / "results.json").read_text()) == {}  # untouched
    assert main(["demo", "--list-regimes"]) == 0
    assert "explore" in capsys.readouterr().out
