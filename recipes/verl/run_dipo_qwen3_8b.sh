#!/usr/bin/env bash
# DiPO (DAPO + DiPO advantage) on Qwen3-8B-Base with verl 0.9.1, multi-node Ray, DAPO-Math-17k.
# Documented, NOT run in this repository (it needs GPUs; the CPU tests only check that every override below is a
# valid key of the composed Hydra config, via DRY_RUN=1).
#
# Before running, on EVERY node (head and workers):
#   pip install 'dipo[verl]'  plus verl's GPU stack (e.g. pip install 'verl[vllm]==0.9.1' on a CUDA machine)
#   -> `import verl` then loads the DiPO plugin through the `verl.plugins` entry point (Ray actors included).
# Start Ray:   head:    ray start --head --dashboard-host=0.0.0.0
#              workers: ray start --address=<head-ip>:6379
# Then, from a checkout of this repository on the head node:
#   NNODES=4 RAY_ADDRESS=http://<head-ip>:8265 bash recipes/verl/run_dipo_qwen3_8b.sh
# Single node without a Ray cluster:  NNODES=1 SUBMIT=local bash recipes/verl/run_dipo_qwen3_8b.sh
set -euo pipefail

RECIPE_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

NNODES=${NNODES:-4}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
RAY_ADDRESS=${RAY_ADDRESS:-http://localhost:8265}
SUBMIT=${SUBMIT:-ray}                        # ray (ray job submit) | local (python3 -m ... in this shell)
MODEL_PATH=${MODEL_PATH:-Qwen/Qwen3-8B-Base}
TRAIN_FILE=${TRAIN_FILE:-$HOME/data/dapo-math-17k.parquet}
TEST_FILE=${TEST_FILE:-$HOME/data/aime-2024.parquet}
CKPTS_DIR=${CKPTS_DIR:-$HOME/ckpts/dipo/dipo-qwen3-8b}
ALPHA=${ALPHA:-0.1}                          # DiPO alpha (paper's best)
DYNAMIC_SAMPLING=${DYNAMIC_SAMPLING:-false}  # true: DAPO's dynamic sampling, DiPO-aware (keeps reallocated groups)

MAX_PROMPT=2048
MAX_RESPONSE=20480
OVERLONG_BUFFER=4096
SP=${SP:-2}                                  # Ulysses sequence parallel size for the 22.5k-token sequences
GEN_TP=${GEN_TP:-2}                          # vLLM tensor parallel size
ACTOR_TOKENS=$(( (MAX_PROMPT + MAX_RESPONSE) * 2 ))
INFER_TOKENS=$(( (MAX_PROMPT + MAX_RESPONSE) * 3 ))

DATA=(
    data.train_files="${TRAIN_FILE}"
    data.val_files="${TEST_FILE}"
    data.prompt_key=prompt
    data.max_prompt_length=${MAX_PROMPT}
    data.max_response_length=${MAX_RESPONSE}
    data.train_batch_size=512
)
MODEL=(
    actor_rollout_ref.model.path="${MODEL_PATH}"
    actor_rollout_ref.model.use_remove_padding=true
    actor_rollout_ref.model.enable_gradient_checkpointing=true
)
ACTOR=(
    actor_rollout_ref.actor.ppo_mini_batch_size=32
    actor_rollout_ref.actor.use_dynamic_bsz=true
    actor_rollout_ref.actor.ppo_max_token_len_per_gpu=${ACTOR_TOKENS}
    actor_rollout_ref.actor.ulysses_sequence_parallel_size=${SP}
    actor_rollout_ref.actor.fsdp_config.param_offload=false
    actor_rollout_ref.actor.fsdp_config.optimizer_offload=false
)
ROLLOUT=(
    actor_rollout_ref.rollout.name=vllm
    actor_rollout_ref.rollout.n=16
    actor_rollout_ref.rollout.tensor_model_parallel_size=${GEN_TP}
    actor_rollout_ref.rollout.gpu_memory_utilization=0.80
    actor_rollout_ref.rollout.max_num_batched_tokens=$(( MAX_PROMPT + MAX_RESPONSE ))
    actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu=${INFER_TOKENS}
)
REWARD=(
    reward.reward_kwargs.overlong_buffer_cfg.len=${OVERLONG_BUFFER}
)
ALGORITHM=(
    algorithm.adv_estimator=dipo
    algorithm.filter_groups.enable=${DYNAMIC_SAMPLING}  # dipo_sync's filter keeps the groups BRR reallocates
    algorithm.filter_groups.metric=acc      # DAPO's filter metric (math_dapo's correctness, no overlong penalty)
    algorithm.dipo.alpha=${ALPHA}
)
TRAINER=(
    trainer.v1.trainer_mode=dipo_sync       # dipo/* metrics + PPL queue in checkpoints
    trainer.nnodes=${NNODES}
    trainer.n_gpus_per_node=${GPUS_PER_NODE}
    trainer.project_name=dipo
    trainer.experiment_name=dipo-qwen3-8b-alpha${ALPHA}
    trainer.default_local_dir="${CKPTS_DIR}"
    trainer.save_freq=10
    trainer.test_freq=10
    trainer.total_epochs=10
    trainer.resume_mode=auto
)

OVERRIDES=("${DATA[@]}" "${MODEL[@]}" "${ACTOR[@]}" "${ROLLOUT[@]}" "${REWARD[@]}" "${ALGORITHM[@]}" "${TRAINER[@]}")
CMD=(python3 -m verl.trainer.main_ppo --config-path="${RECIPE_DIR}/config" --config-name=dipo_trainer "${OVERRIDES[@]}")

if [[ "${DRY_RUN:-0}" == "1" ]]; then
    printf '%s\n' "${OVERRIDES[@]}"
    exit 0
fi

if [[ "${SUBMIT}" == "local" ]]; then
    exec "${CMD[@]}"
fi

# VERL_USE_EXTERNAL_MODULES is the fallback loader in case entry points are disabled (VERL_USE_EXTERNAL_PLUGINS=none).
RUNTIME_ENV='{"env_vars": {"VERL_USE_EXTERNAL_MODULES": "dipo.integrations.verl", "TOKENIZERS_PARALLELISM": "true"}}'
ray job submit --address="${RAY_ADDRESS}" --runtime-env-json="${RUNTIME_ENV}" -- "${CMD[@]}"
