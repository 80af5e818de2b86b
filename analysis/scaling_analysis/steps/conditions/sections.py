"""Report sections of a condition study, rendered from fit.json's condition fields (``step``).

Every section is written only when its field holds results: a plain size study gets none, a domain study no
mixing law, a mixture study no pool-transform table. Nothing here is typed by hand: each sentence is built
from the numbers beside it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ...render.text import markdown_table, pct, readable, short


def _ok(field: Any) -> bool:
    return isinstance(field, Mapping) and bool(field) and "skipped" not in field


def _figure(field: Mapping[str, Any], caption: str) -> list[str]:
    return ["", f"![{caption}]({field['plot']})"] if field.get("plot") else []


def _iv(iv: Sequence[float] | None) -> str:
    return f"[{readable(iv[0], 4)}, {readable(iv[1], 4)}]" if iv else "—"


def conditions_section(cond: Mapping[str, Any]) -> str:
    """The conditions, the reference, and mean loss per condition and size."""
    lines = ["## Conditions", ""]
    lines.append(
        f"Swept axes besides size and seed: {', '.join(f'`{a}`' for a in cond['axes']) or '`condition`'}; "
        f"{len(cond['levels'])} conditions. Reference (k = 1): **{cond['reference']}**, "
        f"{cond['reference_reason']}."
    )
    sizes = sorted({r["size"] for r in cond["table"]})
    cells = {(r["condition"], r["size"]): r for r in cond["table"]}
    rows = []
    for level in cond["levels"]:
        row = [level]
        for s in sizes:
            c = cells.get((level, s))
            spread = f" ± {short(c['std'], 2)}" if c and c.get("std") == c.get("std") and c["n"] > 1 else ""
            row.append(f"{short(c['mean'])}{spread}" if c else "—")
        rows.append(row)
    lines += ["", f"Mean test loss (± seed std. dev.) per condition and {cond['x']}:", ""]
    lines.append(markdown_table(["condition", *[f"{cond['x']} = {short(s)}" for s in sizes]], rows))
    lines += _figure(cond, "per-condition curves")
    return "\n".join(lines)


def effective_data_section(eff: Mapping[str, Any]) -> str:
    """k per condition with its interval, and the shared E, B, β."""
    lines = ["## Effective data: what a token of each condition is worth", ""]
    lines.append(
        f"Joint fit `{eff['formula']}` over {eff['n_points']} runs, E, B and β shared by every condition, "
        "one multiplier k per condition: **one token of condition X is worth k reference tokens**."
    )
    boot = eff.get("bootstrap") or {}
    if boot.get("skipped"):
        lines.append(f"Bootstrap skipped: {boot['skipped']}.")
    else:
        lines.append(
            f"Intervals: {boot.get('confidence', 0.95):.0%} bootstrap, runs resampled within each condition "
            f"({boot.get('n_resamples')} resamples, {boot.get('n_failed', 0)} failed)."
        )
    rows = [
        [r["condition"], readable(r["k"], 4), "reference" if r["reference"] else _iv(r["interval"]),
         r["n_sizes"], r["n_runs"], r["sentence"]]
        for r in eff["multipliers"]
    ]  # fmt: skip
    lines += ["", markdown_table(["condition", "k", "interval", "sizes", "runs", "reading"], rows), ""]
    shared = ", ".join(
        f"{p} = {readable(v['value'], 5)} {_iv(v['interval'])}" for p, v in eff["shared"].items()
    )
    lines.append(
        f"Shared parameters: {shared}. In-sample MAPE {pct((eff.get('metrics') or {}).get('mape'))}."
    )
    lines += [f"- ⚠ {w}" for w in eff.get("warnings") or []]
    for level, why in (eff.get("per_condition_skipped") or {}).items():
        lines.append(f"- no separate fit for {level}: {why}")
    lines += _figure(eff, "effective-data multiplier per condition")
    return "\n".join(lines)


def decision_section(dec: Mapping[str, Any]) -> str:
    """Per smaller size: the share of condition pairs ranked as at the largest size, and seed noise."""
    x = dec["x"]
    lines = ["## Decision accuracy: from which size can small runs pick the data?", ""]
    lines.append(
        f"For each smaller size, the share of condition pairs ordered by mean test loss as at the largest "
        f"size ({x} = {short(dec['target_size'])}, {dec['n_conditions']} conditions), in the manner of "
        "DataDecide (Magnusson et al. 2025); a tie at the small size counts one half."
    )
    if not dec.get("several_seeds"):
        lines.append(
            "There is **one seed**, so the seed-to-seed spread is unknown: add `seed=0,1,2` to see it."
        )
    rows = []
    for r in dec["rows"]:
        per_seed = r.get("per_seed_accuracy")
        rows.append(
            [short(r[x]), pct(r["accuracy"]), r["n_pairs"], r["n_seeds"],
             f"{pct(per_seed[0])} – {pct(per_seed[1])}" if per_seed else "—",
             short(r.get("seed_std"), 3), short(r.get("min_gap"), 3)]
        )  # fmt: skip
    header = [x, "decision accuracy", "pairs", "seeds", "per-seed accuracy", "seed std", "smallest gap"]
    lines += ["", markdown_table(header, rows), ""]
    if dec.get("trusted_from") is not None:
        lines.append(
            f"From {x} = {short(dec['trusted_from'])} on, every compared size ranks all pairs as the largest "
            "does."
        )
    else:
        lines.append("No smaller size ranks every pair as the largest size does.")
    lines += _figure(dec, "decision accuracy")
    return "\n".join(lines)


def transfer_section(tr: Mapping[str, Any]) -> str:
    """The train × eval loss matrix per size, and the gap to in-domain training at the extreme sizes."""
    lines = ["## Domain transfer", ""]
    lines.append("Mean test loss per train domain (rows, single-domain runs) and eval domain (columns):")
    for size, matrix in tr["matrices"].items():
        rows = [
            [t, *[short(matrix[t].get(e)) for e in tr["eval_domains"]]]
            for t in tr["train_domains"]
            if t in matrix
        ]
        lines += [
            "",
            f"**{tr['x']} = {size}**",
            "",
            markdown_table(["train \\ eval", *tr["eval_domains"]], rows),
        ]
    if tr.get("transfer"):
        lines += [
            "",
            "Gap to in-domain training, L(eval | train) − L(eval | eval), and how it moves with size:",
            "",
        ]
        rows = [
            [
                r["train"],
                r["eval"],
                short(r["gap_small"], 3),
                short(r["gap_large"], 3),
                pct(r.get("relative_change")),
            ]
            for r in tr["transfer"]
        ]
        header = [
            "train",
            "eval",
            f"gap at {short(tr['sizes'][0])}",
            f"gap at {short(tr['sizes'][-1])}",
            "change",
        ]
        lines.append(markdown_table(header, rows))
    lines += _figure(tr, "train-domain x eval-domain test loss")
    return "\n".join(lines)


def mixtures_section(mix: Mapping[str, Any]) -> str:
    """Each mixture against its parts: measured, linear interpolation of the parts, best part."""
    lines = ["## Mixtures against their parts", ""]
    lines.append(
        "`interpolated` = Σ_j w_j·L(single-domain run j) at the same size: what the mixture would reach if "
        "mixing were linear; a positive gain means the mixture beats that."
    )
    rows = [
        [r["mixture"], short(r["size"]), r["eval"], short(r["measured"]), short(r["interpolated"]),
         f"{r['best_part']} ({short(r['best_part_loss'])})", short(r["gain_over_interpolation"], 3)]
        for r in mix["rows"]
    ]  # fmt: skip
    header = ["mixture", mix["x"], "eval", "measured", "interpolated", "best part", "gain"]
    return "\n".join([*lines, "", markdown_table(header, rows)])


def _law_table(size_fit: Mapping[str, Any], train: Sequence[str]) -> str:
    """c, k, every t and the RMSE of each eval domain's law at one size."""
    rows = [
        [
            e,
            readable(d["c"], 4),
            readable(d["k"], 4),
            *[readable(d["t"][j], 4) for j in train],
            short(d["rmse"], 3),
        ]
        for e, d in size_fit["laws"].items()
    ]
    return markdown_table(["eval", "c", "k", *[f"t_{j}" for j in train], "RMSE"], rows)


def mixing_law_section(ml: Mapping[str, Any]) -> str:
    """The law per eval domain at the largest size, the proposed mixture, its command and any validation."""
    top, prop = ml["sizes"][-1], ml["proposal"]
    train = ml["train_domains"]
    lines = ["## Data mixing law", ""]
    lines.append(
        "Per eval domain i: L_i(r) = c_i + k_i·exp(Σ_j t_ij·r_j) (Ye et al. 2024), fitted to the mixtures "
        f"trained at each size; t_{train[-1]} = 0 (only differences of t are identified)."
    )
    lines += ["", f"At U = {short(top['U'])} ({top['n_mixtures']} mixtures):", "", _law_table(top, train)]
    best = ", ".join(f"{d}={w:g}" for d, w in prop["weights"].items())
    lines += [
        "",
        f"**Predicted best mixture for the average held-out loss at U = {short(top['U'])}: {best}** "
        f"(predicted mean loss {short(prop['predicted']['mean'])}). Written to `{ml['file']}`; train it "
        "with:",
        "",
        "```bash",
        prop["command"],
        "```",
    ]
    if len(ml["sizes"]) > 1:
        moves = "; ".join(
            f"U = {short(s['U'])}: " + ", ".join(f"{d}={w:g}" for d, w in s["best_mixture"].items())
            for s in ml["sizes"]
        )
        lines.append(f"\nBest mixture by size: {moves}.")
    loo = top.get("leave_one_out") or {}
    if "mape" in loo:
        lines.append(
            f"\nLeave-one-mixture-out at U = {short(top['U'])} (each mixture's mean loss predicted by the "
            f"law fitted to the others): mean abs. rel. error {pct(loo['mape'])}, max {pct(loo['max_are'])}."
        )
    lines.append(_validation_text(ml.get("validation") or []))
    lines += _figure(ml, "data mixing law")
    return "\n".join(lines)


def _validation_text(runs: Sequence[Mapping[str, Any]]) -> str:
    if not runs:
        return "\nNo run has been trained on the proposed mixture yet; its measured loss will be shown here."
    rows = []
    for r in runs:
        for e, pred in r["predicted"].items():
            meas = r["measured"].get(e)
            err = abs(pred - meas) / meas if meas else None
            rows.append(
                [
                    r["run_id"],
                    ", ".join(f"{d}={w:g}" for d, w in r["weights"].items()),
                    e,
                    short(pred),
                    short(meas),
                    pct(err),
                ]
            )
    header = ["run", "mixture", "eval", "predicted", "measured", "abs. rel. error"]
    return "\n**Validation** (runs on the proposed mixture, not used to fit the law):\n\n" + markdown_table(
        header, rows
    )


def _transform_rows(label: str, entry: Mapping[str, Any]) -> list[list[Any]]:
    """One row per transform of a condition's pool: documents in and out, removed per reason, marked."""
    rows = []
    for t in entry["transforms"]:
        removed = ", ".join(f"{k}: {v}" for k, v in (t.get("removed") or {}).items()) or "—"
        name = f"{t['group']}:{t['name']}"
        rows.append([label, name, t["input_docs"], t["output_docs"], removed, t.get("marked")])
    return rows


def _quality_rows(label: str, entry: Mapping[str, Any]) -> list[list[Any]]:
    """One row per removal step (and all removals together): precision and recall on planted documents."""
    q = entry.get("quality") or {}
    steps = {**(q.get("steps") or {}), **({"all removals": q["combined"]} if "combined" in q else {})}
    return [
        [
            label,
            step,
            pr["planted"],
            pr["removed"],
            pr["true_positives"],
            pct(pr["precision"]),
            pct(pr["recall"]),
        ]
        for step, pr in steps.items()
    ]


def pool_section(pool: Mapping[str, Any]) -> str:
    """Per condition: documents each transform removed (per reason) and the removals' precision/recall."""
    lines = ["## Pool transforms: what was removed, and was it the planted noise?", ""]
    rows = [r for label, entry in pool["conditions"].items() for r in _transform_rows(label, entry)]
    quality = [r for label, entry in pool["conditions"].items() for r in _quality_rows(label, entry)]
    header = ["condition", "transform", "docs in", "docs out", "removed per reason", "marked"]
    lines.append(markdown_table(header, rows))
    if quality:
        lines += [
            "",
            "Precision (removed documents that were planted) and recall (planted documents removed):",
            "",
        ]
        header = ["condition", "step", "planted", "removed", "planted & removed", "precision", "recall"]
        lines.append(markdown_table(header, quality))
    return "\n".join(lines)


SECTIONS = (
    ("conditions", conditions_section),
    ("effective_data", effective_data_section),
    ("decision_accuracy", decision_section),
    ("domain_transfer", transfer_section),
    ("mixtures", mixtures_section),
    ("mixing_law", mixing_law_section),
    ("pool_transforms", pool_section),
)


def condition_sections(fit_json: Mapping[str, Any]) -> list[str]:
    """The report sections whose fit.json field holds results, in reading order."""
    return [render(fit_json[name]) for name, render in SECTIONS if _ok(fit_json.get(name))]


def console_lines(fit_json: Mapping[str, Any]) -> list[str]:
    """The condition results worth a line on the console: k per condition, decision accuracy, the proposal."""
    lines = []
    eff = fit_json.get("effective_data") or {}
    if _ok(eff):
        for r in eff["multipliers"]:
            if not r["reference"]:
                lines.append(
                    f"k[{r['condition']}] = {readable(r['k'], 4)} {_iv(r['interval'])}: {r['sentence']}"
                )
    dec = fit_json.get("decision_accuracy") or {}
    if _ok(dec):
        acc = ", ".join(f"{short(r[dec['x']])}: {pct(r['accuracy'])}" for r in dec["rows"])
        lines.append(f"decision accuracy vs {dec['x']} = {short(dec['target_size'])} (by size): {acc}")
    ml = fit_json.get("mixing_law") or {}
    if _ok(ml):
        best = ", ".join(f"{d}={w:g}" for d, w in ml["proposal"]["weights"].items())
        lines.append(f"mixing law: best predicted mixture {best} (written to {ml['file']}); train it with:")
        lines.append(ml["proposal"]["command"])
    return lines
