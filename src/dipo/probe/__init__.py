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
import os
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from dipo.evaluation import generation
from dipo.evaluation.generation import SamplingConfig
from dipo.evaluation.harness import hardware_description
from dipo.fileio import FileFormatError, decode_utf8, parse_json, read_json, read_lines
from dipo.fileio import check_output_dir as guard_output_dir
from dipo.probe.analysis import AnalysisConfig, analyse, build_tensors
from dipo.probe.report import verdict, write_report
from dipo.probe.sampling import DEFAULT_SAMPLE_DTYPE, SAMPLE_DTYPE_CHOICES, resolve_sample_dtype, sample_rows
from dipo.tasks.registry import get_task

logger = logging.getLogger("dipo.probe")

OUTPUT_FILES = ("meta.json", "samples.jsonl", "probe.json", "probe.md", "ppl_hist.png", "ppl_hist_by_length.png")
_RESUME_KEYS = ("model", "task", "dataset", "split", "limit", "offset", "sampling", "chat_template_used")
#: Fields every record of ``samples.jsonl`` has (and the analysis reads).
_SAMPLE_KEYS = ("id", "sample", "reward", "token_logps", "num_tokens", "truncated")
_DAMAGED = "the file is damaged: repair or delete that line, or start again with --overwrite"

__all__ = ["AnalysisConfig", "analyse", "build_tensors", "merge_probes", "prepare_output_dir", "run_probe", "verdict"]


def check_output_dir(out_dir: Path, settings: dict[str, Any], k: int, overwrite: bool, resume: bool) -> None:
    """Refuse what :func:`prepare_output_dir` would refuse, before the model is loaded and before anything is
    written: the output-folder guard (:func:`dipo.fileio.check_output_dir`: ``overwrite`` with ``resume``, a file,
    an existing probe without either, an unwritable folder); with ``resume``, other ``settings`` (those of
    :data:`_RESUME_KEYS` known before loading) or a damaged ``samples.jsonl``."""
    guard_output_dir(
        out_dir,
        OUTPUT_FILES,
        what="a probe",
        overwrite=overwrite,
        resume=resume,
        resume_flag="--resume",
        resume_hint="pass --resume to continue an unfinished probe with the same settings",
    )
    if resume and (out_dir / "meta.json").exists():
        _check_resume_settings(out_dir, read_json(out_dir / "meta.json"), settings)
        read_samples(out_dir / "samples.jsonl", k)  # a damaged file: an error naming its line


def _check_resume_settings(out_dir: Path, old: Any, meta: dict[str, Any]) -> None:
    if not isinstance(old, dict):
        raise ValueError(f"--resume: {out_dir}/meta.json is not a probe's meta.json; use --overwrite to start again")
    was, now = old.get("sample_dtype"), meta.get("sample_dtype")
    if was and now and was != now:
        raise ValueError(
            f"--resume: the samples in {out_dir} were drawn with {was} weights, but this run would draw with {now} "
            f"(before 2026-12-07, 'auto' chose bf16 on CPUs with native bf16); pass --sample_dtype {was} to "
            "continue as the probe started, or use --overwrite to start again"
        )
    diff = [key for key in _RESUME_KEYS if key in meta and old.get(key) != meta.get(key)]
    if diff:
        raise ValueError(
            f"--resume: {out_dir}/meta.json was written with other settings ({', '.join(diff)} differ: "
            f"{ {key: old.get(key) for key in diff} }); resume with the same settings or use --overwrite"
        )


def prepare_output_dir(out_dir: Path, meta: dict[str, Any], overwrite: bool, resume: bool) -> set[str]:
    """Make ``out_dir`` ready; returns the prompt ids already sampled (resume) or an empty set.

    An existing probe folder is refused unless ``overwrite`` (its probe files are deleted) or ``resume`` (same
    settings required: its complete prompts are kept, a partly written prompt is dropped and sampled again; the
    kept samples replace ``samples.jsonl`` atomically, so an interruption here loses nothing).
    """
    check_output_dir(out_dir, {}, meta["sampling"]["k"], overwrite, resume)
    existing = [name for name in OUTPUT_FILES if (out_dir / name).exists()]
    out_dir.mkdir(parents=True, exist_ok=True)
    if overwrite:
        for name in existing:
            (out_dir / name).unlink()
    done: set[str] = set()
    if resume and (out_dir / "meta.json").exists():
        _check_resume_settings(out_dir, read_json(out_dir / "meta.json"), meta)
        records = read_samples(out_dir / "samples.jsonl", meta["sampling"]["k"])
        done = {str(r["id"]) for r in records}
        _write_samples(out_dir / "samples.jsonl", records)
        logger.info("resuming %s: %d prompts already sampled", out_dir, len(done))
    _write_json(out_dir / "meta.json", meta)
    return done


def _write_samples(path: Path, records: Sequence[dict[str, Any]]) -> None:
    """``records`` as ``path`` (JSON lines), written next to it and renamed over it (never half a file)."""
    partial = path.with_name(path.name + ".partial")
    with partial.open("w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    os.replace(partial, path)


def _write_json(path: Path, value: dict[str, Any]) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(value, indent=2), encoding="utf-8")
    os.replace(partial, path)


def _sample_problem(record: Any, k: int) -> str | None:
    """What keeps ``record`` from being a probe sample (of a group of ``k``), or None."""
    if not isinstance(record, dict):
        return f"a JSON {type(record).__name__}, not an object"
    missing = [key for key in _SAMPLE_KEYS if key not in record]
    if missing:
        return f"no {', '.join(missing)}"
    sample, logps = record["sample"], record["token_logps"]
    if not isinstance(record["id"], (str, int)) or isinstance(record["id"], bool):
        return f"id {record['id']!r:.40} is not a string"
    if not isinstance(sample, int) or isinstance(sample, bool) or not 0 <= sample < k:
        return f"sample {sample!r:.40} is not an index below k={k}"
    if not _is_number(record["reward"]):
        return f"reward {record['reward']!r:.40} is not a number"
    if not isinstance(logps, list) or not all(_is_number(x) for x in logps):
        return "token_logps is not a list of numbers"
    if not isinstance(record["num_tokens"], int) or not isinstance(record["truncated"], bool):
        return "num_tokens is not an integer or truncated not true/false"
    return None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def read_samples(path: Path, k: int) -> list[dict[str, Any]]:
    """Complete prompts (exactly ``k`` samples) of a ``samples.jsonl``. A partial prompt and a cut last line (no line
    end: an interrupted write) are dropped; any other line that is not a probe sample (not UTF-8 JSON, nested too
    deeply, fields missing or of the wrong type, a sample written twice) raises ``ValueError`` naming the file and
    the line."""
    if not path.exists():
        return []
    lines, complete = read_lines(path)
    by_id: dict[str, dict[int, dict[str, Any]]] = {}
    for lineno, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            record = parse_json(decode_utf8(raw, str(path), lineno), str(path), lineno)
        except FileFormatError as err:
            if lineno == len(lines) and not complete:  # cut by an interrupted write: sampled again
                break
            raise ValueError(f"{err}; {_DAMAGED}") from None
        problem = _sample_problem(record, k)
        group = by_id.setdefault(str(record["id"]), {}) if problem is None else {}
        if problem is None and record["sample"] in group:
            problem = f"sample {record['sample']} of prompt {str(record['id'])!r:.40} is written twice"
        if problem:
            raise ValueError(f"{path}: line {lineno} is not a probe sample ({problem}); {_DAMAGED}")
        group[record["sample"]] = record
    return [group[j] for group in by_id.values() if len(group) == k for j in range(k)]


def _score(reward_fn: Any, row: Any, texts: list[str]) -> list[float]:
    columns = {key: [value] * len(texts) for key, value in row.to_dict().items() if key != "prompt"}
    values = reward_fn(prompts=[row.prompt] * len(texts), completions=texts, completion_ids=None, **columns)
    if len(values) != len(texts) or any(v is None for v in values):
        raise ValueError(f"task reward returned {values!r} for {len(texts)} completions of row {row.id}")
    return [float(v) for v in values]


def _check_sampling(sampling: Any) -> None:
    """``ValueError`` for settings the probe cannot sample groups with (the CLI refuses them earlier)."""
    if sampling.k < 2:
        raise ValueError(f"k={sampling.k}: the probe needs groups of at least 2 samples (training uses G >= 2)")
    if not sampling.temperature > 0:
        raise ValueError("temperature must be > 0: the probe samples groups as training does")
    if sampling.max_new_tokens < 1 or sampling.batch_size < 1 or not 0 < sampling.top_p <= 1:
        raise ValueError(
            f"max_new_tokens={sampling.max_new_tokens} and batch_size={sampling.batch_size} must be >= 1, "
            f"top_p={sampling.top_p} in (0, 1]"
        )


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
    sample_dtype: str = DEFAULT_SAMPLE_DTYPE,
) -> dict[str, Any]:
    """Sample, score and analyse; writes the probe folder and returns ``{"meta", "result"}``.

    ``model``: a folder, Hub id or ``smollm2-135m-instruct`` (loaded in ``dtype`` on ``device``), or an already loaded
    model together with its ``tokenizer``. ``task`` / ``dataset`` / ``split``: a task of :mod:`dipo.tasks.registry`
    (``dataset`` and ``k`` / ``max_new_tokens`` default to the task's defaults). ``temperature`` / ``top_p`` /
    ``max_new_tokens`` / ``chat_template`` should be the training sampler's (TRL's defaults: 1.0 / 1.0).
    ``sample_dtype``: the weights that draw the tokens (:mod:`dipo.probe.sampling`); the log-probs are the model's.
    """
    if sample_dtype not in SAMPLE_DTYPE_CHOICES:
        raise ValueError(f"sample_dtype must be one of {', '.join(SAMPLE_DTYPE_CHOICES)}, got {sample_dtype!r}")
    try:
        spec = get_task(task)
    except KeyError as err:
        raise ValueError(err.args[0] if err.args else f"unknown task {task!r}") from None
    sampling = _sampling_config(spec.defaults, k, max_new_tokens, temperature, top_p, batch_size, seed, chat_template)
    dataset = dataset or spec.defaults.dataset
    rows = _load_rows(spec, dataset, split, limit, offset, seed)
    out_dir = Path(output_dir)
    settings = {"task": task, "dataset": dataset, "split": split, "limit": limit, "offset": offset}
    if isinstance(model, str):
        settings["model"] = model
    check_output_dir(out_dir, {**settings, "sampling": asdict(sampling)}, sampling.k, overwrite, resume)
    name, model, tokenizer = _prepare_model(model, tokenizer, dtype, device)
    meta = _probe_meta(name, settings, rows, sampling, tokenizer, spec)
    meta["sample_dtype"] = resolve_sample_dtype(sample_dtype, model)
    done = prepare_output_dir(out_dir, meta, overwrite, resume)
    samples_path = out_dir / "samples.jsonl"
    start = time.perf_counter()
    spent = _sample_into(samples_path, model, tokenizer, rows, sampling, spec, done, show_progress, sample_dtype)
    meta["sampling_seconds"] = spent
    meta["wall_seconds"] = time.perf_counter() - start
    records = read_samples(samples_path, sampling.k)
    return finish(records, meta, out_dir, analysis)


def _sampling_config(
    defaults: Any,
    k: int | None,
    max_new_tokens: int | None,
    temperature: float,
    top_p: float,
    batch_size: int,
    seed: int,
    chat_template: bool | None,
) -> Any:
    """The probe's :class:`~dipo.evaluation.generation.SamplingConfig` (``None``: the task's default), checked."""
    sampling = SamplingConfig(
        k=defaults.k if k is None else k,
        max_new_tokens=defaults.max_new_tokens if max_new_tokens is None else max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        batch_size=batch_size,
        seed=seed,
        chat_template=defaults.chat_template if chat_template is None else chat_template,
    )
    _check_sampling(sampling)
    return sampling


def _load_rows(
    spec: Any, dataset: str | None, split: str | None, limit: int | None, offset: int, seed: int
) -> list[Any]:
    """The task's rows to probe (``split=None``: the loader's default); ``ValueError`` if there are none."""
    load_kwargs: dict[str, Any] = {"dataset": dataset, "limit": limit, "offset": offset, "seed": seed}
    if split:
        load_kwargs["split"] = split
    rows = spec.load(**load_kwargs)
    if not rows:
        raise ValueError(f"task {spec.name!r} (dataset {dataset!r}) gave no rows for offset={offset}, limit={limit}")
    return rows


def _prepare_model(model: str | Any, tokenizer: Any, dtype: str, device: str | None) -> tuple[str, Any, Any]:
    """``(name, model in eval mode, tokenizer padding on the left)``: loaded if ``model`` is a name or folder."""
    if isinstance(model, str):
        name = model
        model, tokenizer = generation.load_model(model, dtype, device)  # looked up when called: tests replace it
    else:
        if tokenizer is None:
            raise ValueError("run_probe: pass the tokenizer together with a loaded model")
        name = getattr(model.config, "_name_or_path", type(model).__name__)
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
    model.eval()
    return name, model, tokenizer


def _probe_meta(
    name: str, settings: dict[str, Any], rows: Sequence[Any], sampling: Any, tokenizer: Any, spec: Any
) -> dict[str, Any]:
    """``meta.json`` of a probe before sampling (timings are added after it)."""
    uses_template = (
        bool(getattr(tokenizer, "chat_template", None)) if sampling.chat_template is None else (sampling.chat_template)
    )
    return {
        "model": str(name),
        **settings,
        "num_prompts": len(rows),
        "sampling": asdict(sampling),
        "chat_template_used": bool(uses_template and not isinstance(rows[0].prompt, str)),
        "reward": getattr(spec.make_reward(), "__name__", "reward"),
        "logprobs": "log softmax(logits / temperature) of the sampled tokens (tempered policy, no top-p), EOS "
        "included, prompt and padding excluded",
        "prompt_prefill": "once per prompt, its KV cache shared by the k samples (dipo.probe.sampling)",
        "decoder": "each response leaves the batch once it has ended (dipo.evaluation.decoding.decode_pruned)",
        "hardware": hardware_description(),
        "torch_threads": torch.get_num_threads(),
    }


def _sample_into(
    samples_path: Path,
    model: Any,
    tokenizer: Any,
    rows: Sequence[Any],
    sampling: Any,
    spec: Any,
    done: set[str],
    show_progress: bool,
    sample_dtype: str = DEFAULT_SAMPLE_DTYPE,
) -> float:
    """Sample the rows not ``done`` and append their scored samples to ``samples_path`` batch by batch; returns the
    sampling seconds."""
    reward_fn = spec.make_reward()
    bar = None
    if show_progress:
        bar = tqdm(total=len(rows), desc=f"probe {spec.name}", unit="prompt", initial=len(done))

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

    spent = sample_rows(model, tokenizer, rows, sampling, on_batch, done, sample_dtype=sample_dtype)
    if bar is not None:
        bar.close()
    return spent


def finish(
    records: Sequence[dict[str, Any]], meta: dict[str, Any], out_dir: Path, analysis: AnalysisConfig | None = None
) -> dict[str, Any]:
    """Analyse ``records`` and write ``probe.json`` / ``probe.md`` / the plots, then ``meta.json`` marked
    ``"complete": true`` (what :func:`merge_probes` requires of a shard); returns ``{"meta", "result"}``."""
    result = analyse(records, analysis)
    meta = {**meta, "complete": True}
    write_report(result, meta, records, out_dir)
    _write_json(out_dir / "meta.json", meta)  # last: a probe interrupted before this point is not complete
    logger.info("%s", verdict(result))
    return {"meta": meta, "result": result}


def shard_problem(meta: dict[str, Any], records: Sequence[dict[str, Any]]) -> str | None:
    """Why a probe folder is not a finished probe, or None: its ``meta.json`` is not marked complete (probes written
    before that mark: it has no ``sampling_seconds``), or it holds fewer complete prompts than it sampled."""
    finished = meta.get("complete") is True or ("complete" not in meta and "sampling_seconds" in meta)
    prompts = len({str(r["id"]) for r in records})
    expected = meta.get("num_prompts")
    if not finished:
        of = f" of {expected}" if isinstance(expected, int) else ""
        return f"did not finish ({prompts}{of} prompts sampled)"
    if isinstance(expected, int) and prompts != expected:
        return f"holds {prompts} complete prompts of the {expected} it sampled"
    return None


def _read_shard(directory: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """``(meta, records)`` of a finished probe shard; ``ValueError`` naming the shard otherwise."""
    if not (directory / "meta.json").is_file():
        raise ValueError(f"probe shard {str(directory)!r} has no meta.json: not a dipo probe folder")
    meta = read_json(directory / "meta.json")
    if not isinstance(meta, dict) or not isinstance(meta.get("sampling"), dict) or "k" not in meta["sampling"]:
        raise ValueError(f"{directory / 'meta.json'}: not the meta.json of a dipo probe")
    records = read_samples(directory / "samples.jsonl", meta["sampling"]["k"])
    problem = shard_problem(meta, records)
    if problem:
        raise ValueError(
            f"probe shard {str(directory)!r} {problem}; finish it with dipo probe --resume (same options, "
            f"--output_dir {directory}) or leave it out of --merge"
        )
    return meta, records


def merge_probes(
    dirs: Sequence[str | Path], output_dir: str | Path, analysis: AnalysisConfig | None = None, overwrite: bool = False
) -> dict[str, Any]:
    """Combine finished probe shards (same model, task, dataset and sampling; disjoint prompts) and analyse them
    together. A shard that did not finish (:func:`shard_problem`) is refused, naming it."""
    out_dir = Path(output_dir)
    if any(Path(d).resolve() == out_dir.resolve() for d in dirs):
        raise ValueError(f"--output_dir {str(out_dir)!r} is one of the shards; merge into another folder")
    shards = [_read_shard(Path(d)) for d in dirs]
    metas = [meta for meta, _ in shards]
    keys = ("model", "task", "dataset", "split", "sampling", "chat_template_used")
    for key in keys:
        values = {json.dumps(m.get(key), sort_keys=True) for m in metas}
        if len(values) != 1:
            raise ValueError(f"probe shards differ in {key!r} ({sorted(values)}); merge only shards of one probe")
    records: list[dict[str, Any]] = []
    seen: set[str] = set()
    for directory, (_, shard) in zip(dirs, shards, strict=True):
        ids = {str(r["id"]) for r in shard}
        if ids & seen:
            raise ValueError(f"probe shard {directory} overlaps an earlier shard ({len(ids & seen)} prompts twice)")
        seen |= ids
        records.extend(shard)
    merged = {key: metas[0].get(key) for key in (*keys, "reward", "logprobs", "hardware", "torch_threads")}
    for key in ("sample_dtype", "decoder"):  # shards may come from other machines or code: say so, never hide it
        values = sorted({str(m[key]) for m in metas if m.get(key)})
        if values:
            merged[key] = values[0] if len(values) == 1 else "mixed across shards: " + "; ".join(values)
    merged.update(
        merged_from=[str(d) for d in dirs],
        num_prompts=len(seen),
        sampling_seconds=sum(m.get("sampling_seconds", 0.0) for m in metas),
        wall_seconds=sum(m.get("wall_seconds", 0.0) for m in metas),
    )
    prepare_output_dir(out_dir, merged, overwrite, False)
    _write_samples(out_dir / "samples.jsonl", records)
    return finish(records, merged, out_dir, analysis)
