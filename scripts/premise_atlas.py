"""The premise atlas (docs/results/premise-atlas.md): on which model and task does DiPO's BRR act?

A thin driver over ``dipo probe``: one probe per cell (model × task × dataset), written under
``runs/atlas/<model>/<task>-<dataset>/``. Resumable: a cell with ``probe.json`` is finished and skipped; a cell with
samples but no ``probe.json`` (interrupted) is continued with ``--resume``. Every command is printed before it runs,
so each cell can be reproduced by hand::

    python scripts/premise_atlas.py                       # the plan: every cell, its state and its exact command
    python scripts/premise_atlas.py --run                 # run the unfinished cells, one after the other
    python scripts/premise_atlas.py --run --models smollm2-135m --tasks letter_count
    python scripts/premise_atlas.py --included            # analysis only: truncated responses included (<cell>-incl)
    python scripts/premise_atlas.py --report              # atlas.md, atlas.json and the figure atlas_reach.png

``--report`` reads each cell's ``probe.json`` (keys of :mod:`dipo.probe.report`; the class-balanced threshold's block
``balanced`` when the probe has it) and replays its ``samples.jsonl`` through ``dipo.core.DiPO`` to count the steps
whose τ* falls at an edge. BRR's *reach* = the share of extreme (all-right / all-wrong) groups BRR reallocates.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path("runs/atlas")
MEMBERSHIPS = ("selected", "all", "mean")


@dataclass(frozen=True)
class Model:
    """A model of the atlas: its key (folder name), the ``--model`` value and its size (the figure's x axis)."""

    key: str
    name: str
    params: float
    prompts: int  # prompts per short-answer cell
    max_new_tokens: int
    extra: tuple[str, ...] = ()


MODELS: dict[str, Model] = {
    m.key: m
    for m in (
        Model("smollm2-135m", "smollm2-135m-instruct", 135e6, 128, 64),
        Model("gemma-3-270m", "gemma-3-270m", 270e6, 128, 16),
        Model("qwen2.5-coder-0.5b", "qwen2.5-coder-0.5b-instruct", 494e6, 64, 32),
        Model("qwen2.5-coder-1.5b", "qwen2.5-coder-1.5b-instruct", 1544e6, 64, 32),
    )
}


@dataclass(frozen=True)
class Cell:
    """One probe: model × task × dataset, with its sampling limits."""

    model: str
    task: str
    dataset: str
    limit: int
    max_new_tokens: int
    k: int = 8
    batch_size: int = 8
    extra: tuple[str, ...] = field(default=())

    @property
    def name(self) -> str:
        return f"{self.task}-{self.dataset.replace(',', '+').replace(':', '_')}"

    def out_dir(self, root: Path) -> Path:
        return root / self.model / self.name


SHORT_TASKS: tuple[tuple[str, str], ...] = (
    ("nl_arithmetic", "add1"),
    ("nl_arithmetic", "mul1"),
    ("nl_arithmetic", "add2"),
    ("reasoning_gym", "basic_arithmetic"),
    ("reasoning_gym", "chain_sum"),
    ("reasoning_gym", "gcd"),
    ("reasoning_gym", "simple_equations"),
    ("decimal_compare", "trap,control"),
    ("letter_count", "repeat,single"),
)
COT_MODEL = "qwen2.5-coder-0.5b"
COT_TASKS: tuple[tuple[str, str], ...] = (("math", "gsm8k"), ("math", "math_train:level1-2"))
COT_PROMPTS, COT_MAX_NEW_TOKENS, COT_BATCH = 64, 512, 4


def cells() -> list[Cell]:
    """Every cell of the atlas, in run order (small models first, the chain-of-thought cells last)."""
    out = [
        Cell(m.key, task, dataset, m.prompts, m.max_new_tokens, extra=m.extra)
        for m in MODELS.values()
        for task, dataset in SHORT_TASKS
    ]
    out += [Cell(COT_MODEL, t, d, COT_PROMPTS, COT_MAX_NEW_TOKENS, batch_size=COT_BATCH) for t, d in COT_TASKS]
    return out


def command(cell: Cell, root: Path, dipo: Sequence[str], probe_args: Sequence[str], resume: bool = False) -> list[str]:
    """The exact ``dipo probe`` command of ``cell`` (``--resume`` to continue an interrupted one)."""
    args = [
        *dipo,
        "probe",
        "--model", MODELS[cell.model].name,
        "--task", cell.task,
        "--dataset", cell.dataset,
        "--split", "train",
        "--limit", str(cell.limit),
        "-k", str(cell.k),
        "--max_new_tokens", str(cell.max_new_tokens),
        "--temperature", "1.0",
        "--top_p", "1.0",
        "--batch_size", str(cell.batch_size),
        "--seed", "0",
        "--threads", "2",
        "--batch_prompts", "8",
        "--no_progress",
        "--output_dir", str(cell.out_dir(root)),
        *cell.extra,
        *probe_args,
    ]  # fmt: skip
    if cell.task == "math":  # the math loader has no --split: gsm8k is GSM8K test, math_train excludes MATH-500
        i = args.index("--split")
        del args[i : i + 2]
    return [*args, "--resume"] if resume else args


def state(cell: Cell, root: Path) -> str:
    """``done`` (probe.json written), ``partial`` (samples but no probe.json: resume it) or ``todo``."""
    out = cell.out_dir(root)
    if (out / "probe.json").exists():
        return "done"
    if (out / "meta.json").exists() or (out / "samples.jsonl").exists():
        return "partial"
    return "todo"


def select(all_cells: Sequence[Cell], models: str | None, tasks: str | None) -> list[Cell]:
    """Cells whose model key / task (or ``task-dataset`` cell name) is in the comma lists (``None`` = all)."""
    keep_m = set(models.split(",")) if models else None
    keep_t = set(tasks.split(",")) if tasks else None
    unknown = (keep_m or set()) - set(MODELS)
    if unknown:
        raise SystemExit(f"premise_atlas: unknown model key(s) {sorted(unknown)}; choose from {', '.join(MODELS)}")
    return [
        c
        for c in all_cells
        if (keep_m is None or c.model in keep_m) and (keep_t is None or c.task in keep_t or c.name in keep_t)
    ]


def run_cells(selected: Sequence[Cell], root: Path, dipo: Sequence[str], probe_args: Sequence[str]) -> int:
    """Run every unfinished cell (printing its command and wall time); returns the number of failed cells."""
    failed = 0
    for cell in selected:
        status = state(cell, root)
        if status == "done":
            print(f"[done] {cell.model}/{cell.name}", flush=True)
            continue
        cmd = command(cell, root, dipo, probe_args, resume=status == "partial")
        print(f"[run] {shlex.join(cmd)}", flush=True)
        start = time.perf_counter()
        rc = subprocess.run(cmd, check=False).returncode
        print(f"[{'ok' if rc == 0 else f'failed rc={rc}'}] {cell.model}/{cell.name}: "
              f"{time.perf_counter() - start:.0f} s", flush=True)  # fmt: skip
        failed += rc != 0
    return failed


INCLUDED = "-incl"  # folder suffix of a cell's re-analysis with truncated responses included


def run_included(selected: Sequence[Cell], root: Path, dipo: Sequence[str]) -> int:
    """Re-analyse finished cells with truncated responses included (``dipo probe --merge``, into ``<cell>-incl``)."""
    failed = 0
    for cell in selected:
        out = cell.out_dir(root)
        incl = out.with_name(out.name + INCLUDED)
        if state(cell, root) != "done" or (incl / "probe.json").exists():
            continue
        cmd = [*dipo, "probe", "--merge", str(out), "--truncated", "include", "--output_dir", str(incl)]
        print(f"[run] {shlex.join(cmd)}", flush=True)
        failed += subprocess.run(cmd, check=False).returncode != 0
    return failed


# --- report ----------------------------------------------------------------------------------------------------------


def reach(block: dict[str, Any], membership: str = "selected") -> dict[str, float | None]:
    """BRR's reach in one analysis block (the probe's result or its ``balanced`` block): the share of extreme groups
    reallocated at the pooled τ* given the judgment (``pooled``) and in the replay at training batch size (``replay``).
    """
    groups = block.get("groups") or {}
    extreme = (groups.get("num_hard") or 0) + (groups.get("num_easy") or 0)
    row = (block.get("reallocation") or {}).get(membership) or {}
    pooled = (row.get("hard_if_judged", 0) + row.get("easy_if_judged", 0)) / extreme if extreme and row else None
    replay = ((block.get("batches") or {}).get(membership) or {}).get("frac_of_extreme")
    return {"pooled": pooled, "replay": replay}


def replay_edges(
    records: Sequence[dict[str, Any]],
    batch_prompts: int = 8,
    threshold_rule: str | None = None,
    truncated: str = "exclude",
) -> float | None:
    """Share of replay steps (``batch_prompts`` prompts, the two-batch queue of ``dipo.core.DiPO``) whose τ* falls at
    an edge (no finite cut: every response on one side); ``None`` if there is no full step. ``records``: a
    probe's samples (:func:`dipo.probe.read_samples`). ``truncated``: whether truncated responses keep their PPL
    ("include") or not ("exclude", as in training), as the probe's option."""
    import dataclasses

    from dipo.core import DiPO, DiPOCoreConfig
    from dipo.probe.analysis import build_tensors

    if not records:
        return None
    t = build_tensors(records, truncated)
    rows = batch_prompts * t.group_size
    steps = t.rewards.numel() // rows
    if steps == 0:
        return None
    options: dict[str, Any] = {}
    if threshold_rule and "threshold_rule" in {f.name for f in dataclasses.fields(DiPOCoreConfig)}:
        options["threshold_rule"] = threshold_rule
    elif threshold_rule:
        return None  # this dipo.core has no such rule
    dipo = DiPO(DiPOCoreConfig(**options))
    edges = 0
    for b in range(steps):
        out = dipo.step(t.rewards[b * rows : (b + 1) * rows], t.log_ppl[b * rows : (b + 1) * rows], t.group_size)
        edges += math.isinf(out.threshold)  # NaN (no response with a PPL in the queue) is no edge
    return edges / steps


def cell_summary(cell: Cell, root: Path, suffix: str = "") -> dict[str, Any] | None:
    """The atlas row of a finished cell (``None`` if it has no ``probe.json``); ``suffix=INCLUDED`` reads the cell's
    re-analysis with truncated responses included (:func:`run_included`)."""
    out = cell.out_dir(root).with_name(cell.name + suffix)
    path = out / "probe.json"
    if not path.exists():
        return None
    probe = json.loads(path.read_text(encoding="utf-8"))
    meta, result = probe.get("meta", {}), probe.get("result", {})
    row: dict[str, Any] = {
        "model": cell.model,
        "params": MODELS[cell.model].params,
        "cell": cell.name + suffix,
        "task": cell.task,
        "dataset": cell.dataset,
        "prompts": result.get("num_prompts"),
        "k": result.get("k"),
        "max_new_tokens": (meta.get("sampling") or {}).get("max_new_tokens"),
        "wall_s": meta.get("wall_seconds"),
        "error": result.get("error"),
    }
    if result.get("error"):
        return row
    groups = result.get("groups", {})
    row.update(
        accuracy=result.get("accuracy"),
        truncated=result.get("frac_truncated"),
        auroc=result.get("auroc"),
        tau_ppl=result.get("threshold_ppl"),
        tau_edge=result.get("threshold_at_edge"),
        judged=(result.get("judgment") or {}).get("passed"),
        quadrants=result.get("quadrants"),
        easy=groups.get("easy"),
        hard=groups.get("hard"),
        reach={m: reach(result, m) for m in MEMBERSHIPS},
        replay_judged=((result.get("batches") or {}).get("selected") or {}).get("frac_steps_judgment_passed"),
    )
    batch_prompts = (result.get("batches") or {}).get("batch_prompts") or 8
    truncated = (result.get("config") or {}).get("truncated", "exclude")
    edges = cell_replay_edges(out, batch_prompts, result.get("k") or cell.k, truncated)
    row["replay_edge"] = edges["paper"]
    balanced = result.get("balanced")
    if balanced:
        row["balanced"] = {
            "tau_ppl": balanced.get("threshold_ppl"),
            "tau_edge": balanced.get("threshold_at_edge"),
            "judged": (balanced.get("judgment") or {}).get("passed"),
            "reach": {m: reach({**balanced, "groups": groups}, m) for m in MEMBERSHIPS},
            "replay_edge": edges["balanced"],
        }
    return row


def cell_replay_edges(out: Path, batch_prompts: int, k: int, truncated: str = "exclude") -> dict[str, float | None]:
    """Replay edge shares of a cell under the paper's and the balanced rule, from its ``samples.jsonl`` (groups of
    ``k``, read once by the probe's own reader).

    The values are also written to ``replay_edges.json`` in the cell, and read from there when ``samples.jsonl`` is
    absent (the committed copies of the cells leave the samples out), so a report rebuilt from committed cells keeps
    them. Both ``None`` when neither file exists."""
    samples, cache = out / "samples.jsonl", out / "replay_edges.json"
    if samples.exists():
        from dipo.probe import read_samples

        records = read_samples(samples, k)
        edges = {
            "paper": replay_edges(records, batch_prompts, truncated=truncated),
            "balanced": replay_edges(records, batch_prompts, "balanced", truncated),
            "batch_prompts": batch_prompts,
            "truncated": truncated,
        }
        cache.write_text(json.dumps(edges, indent=1) + "\n", encoding="utf-8")
        return edges
    if cache.exists():
        edges = json.loads(cache.read_text(encoding="utf-8"))
        if edges.get("batch_prompts") == batch_prompts and edges.get("truncated", "exclude") == truncated:
            return edges
    return {"paper": None, "balanced": None}


def _pct(x: Any) -> str:
    return "–" if x is None else f"{100 * x:.1f} %"


def _num(x: Any, digits: int = 2) -> str:
    return "–" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.{digits}f}"


HEADER = (
    "model", "cell", "prompts × k", "max tokens", "accuracy", "truncated", "AUROC", "τ* (PPL)", "judgment",
    "CL / CH / EL / EH", "easy / hard groups", "BRR reach at τ*: sel / all / mean", "replay reach: sel / all / mean",
    "replay: steps judged; τ* at edge", "balanced τ*: judgment; reach at τ*; replay reach; τ* at edge (sel)", "wall",
)  # fmt: skip


def table_cells(r: dict[str, Any]) -> list[str]:
    """The atlas table's entries of one cell summary (:func:`cell_summary`)."""
    head = [r["model"], r["cell"], f"{r['prompts']} × {r['k']}", str(r["max_new_tokens"])]
    wall = f"{_num(r['wall_s'], 0)} s"
    if r.get("error"):
        return [*head, f"not measurable: {r['error']}", *[""] * (len(HEADER) - 6), wall]
    q, reach_r, b = r.get("quadrants") or {}, r["reach"], r.get("balanced")
    balanced = "–"
    if b:
        sel = b["reach"]["selected"]
        verdict = "pass" if b["judged"] else "fail"
        balanced = f"{verdict}; {_pct(sel['pooled'])}; {_pct(sel['replay'])}; {_pct(b['replay_edge'])}"
    return [
        *head,
        _pct(r["accuracy"]),
        _pct(r["truncated"]),
        _num(r["auroc"]),
        "edge: " + r["tau_edge"] if r.get("tau_edge") else _num(r.get("tau_ppl")),
        "pass" if r["judged"] else "fail",
        " / ".join(_pct(q.get(x)) for x in ("CL", "CH", "EL", "EH")),
        f"{_pct(r['easy'])} / {_pct(r['hard'])}",
        " / ".join(_pct(reach_r[m]["pooled"]) for m in MEMBERSHIPS),
        " / ".join(_pct(reach_r[m]["replay"]) for m in MEMBERSHIPS),
        f"{_pct(r['replay_judged'])}; {_pct(r['replay_edge'])}",
        balanced,
        wall,
    ]


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    """The atlas table: one line per finished cell."""
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(table_cells(r)) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def plot_reach(rows: Sequence[dict[str, Any]], path: Path) -> Path | None:
    """BRR's replay reach (membership "selected") against model size, one line per task cell."""
    from dipo.reports.plots import pyplot, save_figure

    by_cell: dict[str, list[tuple[float, float]]] = {}
    for r in rows:
        value = None if r.get("error") else r["reach"]["selected"]["replay"]
        if value is not None:
            by_cell.setdefault(r["cell"], []).append((r["params"], 100 * value))
    if not by_cell:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 5.2), dpi=100)
    markers, dashes = "osD^v<>ph*", ("-", "--", ":", "-.")
    for i, (name, points) in enumerate(sorted(by_cell.items())):
        xs, ys = zip(*sorted(points), strict=True)
        # Distinct markers and dash styles: many cells share a value (often 0 %), and their lines overlap.
        ax.plot(xs, ys, marker=markers[i % len(markers)], ls=dashes[i % 4], ms=5, alpha=0.85, label=name)
    ax.axhline(5, color="k", ls="--", lw=1, label="5 % (decision rule)")
    ax.set_xscale("log")
    ax.minorticks_off()  # the log scale's own minor labels (2×10⁸, …) would collide with the model names
    ax.set_xticks(
        [m.params for m in MODELS.values()],
        [f"{m.key}\n{m.params / 1e6:.0f}M" for m in MODELS.values()],
        fontsize=7,
    )
    ax.set_xlabel("model (parameters, log scale)")
    ax.set_ylabel("extreme groups BRR reallocates (%)")
    ax.set_title("BRR reach in the replay at training batch size (membership 'selected')", fontsize=10)
    ax.legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.2))  # below the axes, off the data
    return save_figure(fig, path)


def report(root: Path, all_cells: Sequence[Cell]) -> dict[str, Any]:
    """Write ``atlas.json``, ``atlas.md`` and ``atlas_reach.png`` into ``root`` from the finished cells."""
    rows = [row for cell in all_cells if (row := cell_summary(cell, root)) is not None]
    included = [row for cell in all_cells if (row := cell_summary(cell, root, INCLUDED)) is not None]
    missing = [f"{c.model}/{c.name}" for c in all_cells if state(c, root) != "done"]
    root.mkdir(parents=True, exist_ok=True)
    atlas = {"cells": rows, "included": included, "missing": missing}
    (root / "atlas.json").write_text(json.dumps(atlas, indent=1, default=str))
    text = markdown_table(rows)
    if missing:
        text += f"\nNot finished ({len(missing)}): {', '.join(missing)}\n"
    hits = [
        f"{r['model']}/{r['cell']}"
        for r in rows
        if not r.get("error") and (r["reach"]["selected"]["replay"] or 0) >= 0.05
    ]
    text += "\nDecision rule (BRR acts on ≥ 5 % of extreme groups in the replay, membership 'selected'): "
    text += (f"met in {', '.join(hits)}" if hits else "met in no finished cell") + ".\n"  # fmt: skip
    if included:
        text += "\nSecondary analysis, truncated responses included (`--included`; training excludes them):\n\n"
        text += markdown_table(included)
    (root / "atlas.md").write_text(text)
    figure = plot_reach(rows, root / "atlas_reach.png")
    return {"rows": rows, "included": included, "missing": missing, "hits": hits, "figure": figure}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=ROOT, help="output root (default runs/atlas)")
    parser.add_argument("--models", default=None, help=f"comma list of model keys ({', '.join(MODELS)})")
    parser.add_argument("--tasks", default=None, help="comma list of tasks or cell names (e.g. letter_count)")
    parser.add_argument("--run", action="store_true", help="run the unfinished cells")
    parser.add_argument("--included", action="store_true", help="re-analyse finished cells, truncated included")
    parser.add_argument("--report", action="store_true", help="build atlas.md / atlas.json / atlas_reach.png")
    parser.add_argument("--dipo", default=None, help="the dipo command (default: this python -m dipo.cli.main)")
    parser.add_argument("--probe_args", default="", help="extra arguments for every dipo probe (quoted)")
    args = parser.parse_args(argv)
    dipo = shlex.split(args.dipo) if args.dipo else [sys.executable, "-m", "dipo.cli.main"]
    selected = select(cells(), args.models, args.tasks)
    probe_args = shlex.split(args.probe_args)
    if args.run:
        return 1 if run_cells(selected, args.root, dipo, probe_args) else 0
    if args.included:
        return 1 if run_included(selected, args.root, dipo) else 0
    if args.report:
        out = report(args.root, selected)
        print((args.root / "atlas.md").read_text(), end="")
        print(f"wrote {args.root}/atlas.md, atlas.json" + (f", {out['figure']}" if out["figure"] else ""))
        return 0
    for cell in selected:
        status = state(cell, args.root)
        print(f"[{status}] {shlex.join(command(cell, args.root, ['dipo'], probe_args, resume=status == 'partial'))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
