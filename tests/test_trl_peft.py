"""DiPOTrainer with a PEFT (LoRA) adapter on a tiny local model (CPU, no hub): the extra no-grad forward that gives
the per-response PPL runs through the adapter-wrapped policy, and training changes the adapter, not the base model."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("trl")
pytest.importorskip("peft")

import peft

from dipo.integrations.trl import DiPOConfig, DiPOTrainer
from trl_helpers import (
    build_dataset,
    build_tiny_model_dir,
    kind_reward,
    load_tiny,
    reference_log_ppl,
    tiny_grpo_kwargs,
)

pytestmark = pytest.mark.slow

G = 4


class RecordingTrainer(DiPOTrainer):
    """Keeps every batch's DiPO record and a reference log-PPL from a plain forward of the (PEFT) policy."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.records, self.reference_log_ppl = [], []

    def _apply_dipo(self, output, rewards_per_func):
        self.reference_log_ppl.append(reference_log_ppl(self.model, output))
        super()._apply_dipo(output, rewards_per_func)
        self.records.append(self.last_dipo_batch)


def test_lora_adapter_trains_and_the_ppl_forward_uses_it(tmp_path):
    model_dir = build_tiny_model_dir(tmp_path / "tiny", seed=0)
    model, tokenizer = load_tiny(model_dir)
    base_before = {n: p.detach().clone() for n, p in model.named_parameters()}
    lora = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0, bias="none")
    args = DiPOConfig(
        **tiny_grpo_kwargs(
            tmp_path / "out",
            per_device_train_batch_size=16,
            num_generations=G,
            mask_truncated_completions=False,
            dipo_judgment=False,
            max_steps=1,
            learning_rate=0.1,
        )
    )
    trainer = RecordingTrainer(
        model=model,
        reward_funcs=[kind_reward],
        args=args,
        train_dataset=build_dataset(16),
        processing_class=tokenizer,
        peft_config=lora,
    )
    assert isinstance(trainer.model, peft.PeftModel) and trainer.dipo is not None
    # LoRA's B matrices start at zero: they must move for the adapter to have learnt anything
    adapter_before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert adapter_before and all("lora_" in n for n in adapter_before)
    trainer.train()

    assert len(trainer.records) == 1
    for record, reference in zip(trainer.records, trainer.reference_log_ppl, strict=True):
        assert record.ppl_source == "forward"  # the extra no-grad pass through the PEFT-wrapped model
        torch.testing.assert_close(record.log_ppl, reference, rtol=1e-5, atol=1e-5)
        assert record.output is not None and not torch.isnan(record.log_ppl).all()
    assert trainer.dipo_log_history("queue_size")[-1] == 16
    changed = [
        n for n, p in trainer.model.named_parameters() if p.requires_grad and not torch.equal(p, adapter_before[n])
    ]
    assert any("lora_B" in n for n in changed), "the LoRA adapter did not change"
    merged_names = {n.replace("base_model.model.", "").replace(".base_layer", ""): p for n, p in
                    trainer.model.named_parameters() if "lora_" not in n}  # fmt: skip
    for name, before in base_before.items():
        assert torch.equal(merged_names[name], before), f"base weight {name} changed"
