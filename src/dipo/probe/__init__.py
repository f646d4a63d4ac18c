"""``dipo probe``: check DiPO's premise on a model and a task before training.

DiPO assumes that, on the model and task at hand, sequence perplexity separates correct from wrong responses (the
advantage judgment passes) and that extreme groups contain responses BRR can act on. :func:`run_probe` samples ``k``
responses per prompt with the training sampler's settings, scores them with the task's reward
(:mod:`dipo.tasks.registry`) and computes every premise quantity with ``dipo.core`` (:mod:`dipo.probe.analysis`);
:func:`merge_probes` combines shards (``--offset/--limit`` runs). Output folder: ``meta.json``, ``samples.jsonl``,
``probe.json``, ``probe.md``, ``ppl_hist.png``, ``ppl_hist_by_length.png``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from dipo.probe.analysis import AnalysisConfig, analyse, build_tensors
from dipo.probe.report import verdict, write_report

logger = logging.getLogger("dipo.probe")

OUTPUT_FILES = ("meta.json", "samples.jsonl", "probe.json", "probe.md", "ppl_hist.png", "ppl_hist_by_length.png")
_RESUME_KEYS = ("model", "task", "dataset", "split", "limit", "offset", "sampling", "chat_template_used")

__all__ = ["AnalysisConfig", "analyse", "build_tensors", "merge_probes", "prepare_output_dir", "run_probe", "verdict"]


def prepare_output_dir(out_dir: Path, meta: dict[str, Any], overwrite: bool, resume: bool) -> set[str]:
    """Make ``out_dir`` ready; returns the prompt ids already sampled (resume) or an empty set.

    An existing probe folder is refused unless ``overwrite`` (its probe files are deleted) or ``resume`` (same
    settings required: its complete prompts are kept, a partly written prompt is dropped and sampled again).
    """
    if overwrite and resume:
        raise ValueError("choose either --overwrite (start again) or --resume (continue), not both")
    existing = [name for name in OUTPUT_FILES if (out_dir / name).exists()]
    if existing and not (overwrite or resume):
        raise FileExistsError(
            f"{out_dir} already holds a probe ({', '.join(existing)}); pass --resume to continue an unfinished probe "
            "with the same settings, --overwrite to replace it, or choose another --output_dir"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    if overwrite:
        for name in existing:
            (out_dir / name).unlink()
        existing = []
    done: set[str] = set()
    if resume and (out_dir / "meta.json").exists():
        old = json.loads((out_dir / "meta.json").read_text())
        diff = [key for key in _RESUME_KEYS if old.get(key) != meta.get(key)]
        if diff:
            raise ValueError(
                f"--resume: {out_dir}/meta.json was written with other settings ({', '.join(diff)} differ: "
                f"{ {key: old.get(key) for key in diff} }); resume with the same settings or use --overwrite"
            )
        records = read_samples(out_dir / "samples.jsonl", meta["sampling"]["k"])
        done = {str(r["id"]) for r in records}
        with (out_dir / "samples.jsonl").open("w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        logger.info("resuming %s: %d prompts already sampled", out_dir, len(done))
    (out_dir / "meta.json").write_text(json.dumps(meta, indent=2))
    return done


def read_samples(path: Path, k: int) -> list[dict[str, Any]]:
    """Complete prompts (exactly ``k`` samples) of a ``samples.jsonl``; a broken last line or a partial prompt is
    dropped (an interrupted write)."""
    if not path.exists():
        return []
    by_id: dict[str, list[dict[str, Any]]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        by_id.setdefault(str(record["id"]), []).append(record)
    return [r for group in by_id.values() if len(group) == k for r in sorted(group, key=lambda r: r["sample"])]


def _score(reward_fn: Any, row: Any, texts: list[str]) -> list[float]:
    columns = {key: [value] * len(texts) for key, value in row.to_dict().items() if key != "prompt"}
    values = reward_fn(prompts=[row.prompt] * len(texts), completions=texts, completion_ids=None, **columns)
    if len(values) != len(texts) or any(v is None for v in values):
        raise ValueError(f"task reward returned {values!r} for {len(texts)} completions of row {row.id}")
    return [float(v) for v in values]


def run_probe(
    *,
    model: str | Any,
    task: str,
    output_dir: str | Path,
    tokenizer: Any = None,
    dataset: str | None = None,
    split: str | None = None,
    k: int | None = None,
    limit: int | None = 128,
    offset: int = 0,
    temperature: float = 1.0,
    top_p: float = 1.0,
    max_new_tokens: int | None = None,
    chat_template: bool | None = None,
    batch_size: int = 4,
    seed: int = 0,
    dtype: str = "auto",
    device: str | None = None,
    overwrite: bool = False,
    resume: bool = False,
    analysis: AnalysisConfig | None = None,
    show_progress: bool = True,
    sample_dtype: str = "auto",
) -> dict[str, Any]:
    """Sample, score and analyse; writes the probe folder and returns ``{"meta", "result"}``.

    ``model``: a folder, Hub id or ``smollm2-135m-instruct`` (loaded in ``dtype`` on ``device``), or an already loaded
    model together with its ``tokenizer``. ``task`` / ``dataset`` / ``split``: a task of :mod:`dipo.tasks.registry`
    (``dataset`` and ``k`` / ``max_new_tokens`` default to the task's defaults). ``temperature`` / ``top_p`` /
    ``max_new_tokens`` / ``chat_template`` should be the training sampler's (TRL's defaults: 1.0 / 1.0).
    ``sample_dtype``: the weights that draw the tokens (:mod:`dipo.probe.sampling`); the log-probs are the model's.
    """
    import torch

    from dipo.evaluation.generation import SamplingConfig, load_model
    from dipo.evaluation.harness import hardware_description
    from dipo.probe.sampling import SAMPLE_DTYPE_CHOICES, resolve_sample_dtype, sample_rows
    from dipo.tasks.registry import get_task

    if sample_dtype not in SAMPLE_DTYPE_CHOICES:
        raise ValueError(f"sample_dtype must be one of {', '.join(SAMPLE_DTYPE_CHOICES)}, got {sample_dtype!r}")
    spec = get_task(task)
    defaults = spec.defaults
    sampling = SamplingConfig(
        k=k or defaults.k,
        max_new_tokens=max_new_tokens or defaults.max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        batch_size=batch_size,
        seed=seed,
        chat_template=defaults.chat_template if chat_template is None else chat_template,
    )
    if sampling.k < 2:
        raise ValueError(f"k={sampling.k}: the probe needs groups of at least 2 samples (training uses G >= 2)")
    if sampling.temperature <= 0:
        raise ValueError("temperature must be > 0: the probe samples groups as training does")
    dataset = dataset or defaults.dataset
    load_kwargs: dict[str, Any] = {"dataset": dataset, "limit": limit, "offset": offset, "seed": seed}
    if split:
        load_kwargs["split"] = split
    rows = spec.load(**load_kwargs)
    if not rows:
        raise ValueError(f"task {task!r} (dataset {dataset!r}) gave no rows for offset={offset}, limit={limit}")
    if isinstance(model, str):
        name = model
        model, tokenizer = load_model(model, dtype, device)
    else:
        if tokenizer is None:
            raise ValueError("run_probe: pass the tokenizer together with a loaded model")
        name = getattr(model.config, "_name_or_path", type(model).__name__)
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
    model.eval()
    uses_template = (
        bool(getattr(tokenizer, "chat_template", None)) if sampling.chat_template is None else (sampling.chat_template)
    )
    out_dir = Path(output_dir)
    meta: dict[str, Any] = {
        "model": str(name),
        "task": task,
        "dataset": dataset,
        "split": split,
        "limit": limit,
        "offset": offset,
        "sampling": asdict(sampling),
        "chat_template_used": bool(uses_template and not isinstance(rows[0].prompt, str)),
        "reward": getattr(spec.make_reward(), "__name__", "reward"),
        "logprobs": "log softmax(logits / temperature) of the sampled tokens (tempered policy, no top-p), EOS "
        "included, prompt and padding excluded",
        "sample_dtype": resolve_sample_dtype(sample_dtype, model),
        "hardware": hardware_description(),
        "torch_threads": torch.get_num_threads(),
    }
    done = prepare_output_dir(out_dir, meta, overwrite, resume)
    reward_fn = spec.make_reward()
    samples_path = out_dir / "samples.jsonl"
    bar = None
    if show_progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(rows), desc=f"probe {task}", unit="prompt", initial=len(done))

    def on_batch(idx: list[int], samples: list[list[dict[str, Any]]], seconds: float) -> None:
        lines = []
        for i, group in zip(idx, samples, strict=True):
            row = rows[i]
            if row.id in done:  # already complete from an earlier, interrupted run
                continue
            rewards = _score(reward_fn, row, [s["completion"] for s in group])
            for j, (sample, reward) in enumerate(zip(group, rewards, strict=True)):
                lines.append({"id": row.id, "sample": j, "answer": row.answer, "reward": reward,
                              "meta": row.meta, **sample})  # fmt: skip
        with samples_path.open("a", encoding="utf-8") as handle:
            handle.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in lines)
        if bar is not None:
            bar.update(len([i for i in idx if rows[i].id not in done]))

    start = time.perf_counter()
    spent = sample_rows(model, tokenizer, rows, sampling, on_batch, done, sample_dtype=sample_dtype)
    if bar is not None:
        bar.close()
    meta["sampling_seconds"] = spent
    meta["wall_seconds"] = time.perf_counter() - start
    records = read_samples(samples_path, sampling.k)
    return finish(records, meta, out_dir, analysis)


def finish(
    records: Sequence[dict[str, Any]], meta: dict[str, Any], out_dir: Path, analysis: AnalysisConfig | None = None
) -> dict[str, Any]:
    """Analyse ``records`` and write ``probe.json`` / ``probe.md`` / the plots; returns ``{"meta", "result"}``."""
    result = analyse(records, analysis)
    (out_dir / "meta.json").write_text(json.dumps(meta, indent=2))
    write_report(result, meta, records, out_dir)
    logger.info("%s", verdict(result))
    return {"meta": meta, "result": result}


def merge_probes(
    dirs: Sequence[str | Path], output_dir: str | Path, analysis: AnalysisConfig | None = None, overwrite: bool = False
) -> dict[str, Any]:
    """Combine probe shards (same model, task, dataset and sampling; disjoint prompts) and analyse them together."""
    metas = [json.loads((Path(d) / "meta.json").read_text()) for d in dirs]
    keys = ("model", "task", "dataset", "split", "sampling", "chat_template_used")
    for key in keys:
        values = {json.dumps(m.get(key), sort_keys=True) for m in metas}
        if len(values) != 1:
            raise ValueError(f"probe shards differ in {key!r} ({sorted(values)}); merge only shards of one probe")
    records: list[dict[str, Any]] = []
    seen: set[str] = set()
    for directory, meta in zip(dirs, metas, strict=True):
        shard = read_samples(Path(directory) / "samples.jsonl", meta["sampling"]["k"])
        ids = {str(r["id"]) for r in shard}
        if ids & seen:
            raise ValueError(f"probe shard {directory} overlaps an earlier shard ({len(ids & seen)} prompts twice)")
        seen |= ids
        records.extend(shard)
    out_dir = Path(output_dir)
    merged = {key: metas[0].get(key) for key in (*keys, "reward", "logprobs", "hardware", "torch_threads")}
    merged.update(
        merged_from=[str(d) for d in dirs],
        sampling_seconds=sum(m.get("sampling_seconds", 0.0) for m in metas),
        wall_seconds=sum(m.get("wall_seconds", 0.0) for m in metas),
    )
    prepare_output_dir(out_dir, merged, overwrite, False)
    with (out_dir / "samples.jsonl").open("w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    return finish(records, merged, out_dir, analysis)
