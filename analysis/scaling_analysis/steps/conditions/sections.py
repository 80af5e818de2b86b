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
    rows = [
        [short(r[x]), pct(r["accuracy"]), _pct_iv(r.get("accuracy_interval")), r["n_pairs"], r["n_seeds"],
         _per_seed(r), short(r.get("seed_std"), 3), short(r.get("min_gap"), 3)]
        for r in dec["rows"]
    ]  # fmt: skip
    header = [x, "decision accuracy", "95% interval", "pairs", "seeds", "per-seed accuracy (std)",
              "seed std", "smallest gap"]  # fmt: skip
    lines += ["", markdown_table(header, rows), ""]
    lines += _bootstrap_text(dec.get("bootstrap") or {})
    if dec.get("trusted_from") is not None:
        lines.append(
            f"From {x} = {short(dec['trusted_from'])} on, every compared size ranks all pairs as the largest "
            "does."
        )
    else:
        lines.append("No smaller size ranks every pair as the largest size does.")
    lines += _figure(dec, "decision accuracy")
    return "\n".join(lines)


def _pct_iv(iv: Sequence[float] | None) -> str:
    return f"[{pct(iv[0])}, {pct(iv[1])}]" if iv else "—"


def _per_seed(row: Mapping[str, Any]) -> str:
    """Each seed's accuracy alone: min – max and, with 2+ seeds, their std."""
    per_seed = row.get("per_seed_accuracy")
    if not per_seed:
        return "—"
    std = row.get("per_seed_std")
    return f"{pct(per_seed[0])} – {pct(per_seed[1])}" + (f" ({pct(std)})" if std is not None else "")


def _bootstrap_text(boot: Mapping[str, Any]) -> list[str]:
    """How the accuracy intervals were drawn, or why there are none (nothing for an older fit.json)."""
    if not boot:
        return []
    if "skipped" in boot:
        return [f"No interval: {boot['skipped']}."]
    return [
        f"Intervals: {boot.get('confidence', 0.95):.0%} bootstrap over seeds ({boot.get('n_resamples')} "
        f"resamples of the {boot.get('resampled')}, accuracy recomputed); per-seed accuracy ranks each "
        "seed's runs alone against the target size's seed means.",
        "",
    ]


def snr_section(snr: Mapping[str, Any]) -> str:
    """Per size: how many condition pairs differ by more than the seed noise, and the weakest pair."""
    x, threshold = snr["x"], snr["threshold"]
    lines = ["## Signal and noise per comparison", ""]
    lines.append(
        "For each pair of conditions at each size: SNR = |difference of mean losses| / its seed-to-seed "
        "standard error sqrt(s_a²/n_a + s_b²/n_b), after Heineman et al. (2025). Below "
        f"{short(threshold)} the seeds alone could make the difference: that pair's order is not settled."
    )
    rows = [
        [short(r[x]), r["n_pairs"], short(r["median_snr"], 3), pct(r["share_resolved"]),
         short(r["min_snr"], 3), " vs ".join(r["weakest_pair"]) if r["weakest_pair"] else "—"]
        for r in snr["sizes"]
    ]  # fmt: skip
    header = [x, "pairs", "median SNR", f"SNR ≥ {short(threshold)}", "lowest SNR", "weakest pair"]
    lines += ["", markdown_table(header, rows)]
    top = snr["target_size"]
    weak = [p for p in snr["pairs"] if p[x] == top and p["snr"] is not None and p["snr"] < threshold]
    if weak:
        named = ", ".join(f"{p['a']} vs {p['b']} ({short(p['snr'], 2)})" for p in weak[:5])
        more = f" and {len(weak) - 5} more" if len(weak) > 5 else ""
        lines.append(
            f"\nBelow {short(threshold)} at {x} = {short(top)}: {named}{more}; more seeds would tell."
        )
    if min(min(p["n_a"], p["n_b"]) for p in snr["pairs"]) < 3:
        lines.append(
            "\nSome cells hold only two runs: their noise rests on one degree of freedom, so read those SNRs "
            "as rough (3+ seeds per cell steady them)."
        )
    return "\n".join(lines)


def snr_skipped_section(reason: str) -> str:
    """A condition study whose SNR could not be measured says so (never a number)."""
    return (
        f"## Signal and noise per comparison\n\n{reason[:1].upper()}{reason[1:]}: add `seed=0,1,2` to see it."
    )


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
    ("condition_snr", snr_section),
    ("domain_transfer", transfer_section),
    ("mixtures", mixtures_section),
    ("mixing_law", mixing_law_section),
    ("pool_transforms", pool_section),
)


#: fields whose section a condition study shows even when skipped, saying why
SAY_WHY_SKIPPED = {"condition_snr": snr_skipped_section}


def condition_sections(fit_json: Mapping[str, Any]) -> list[str]:
    """The report sections whose fit.json field holds results, in reading order (with conditions, a
    ``SAY_WHY_SKIPPED`` field that was skipped says why instead)."""
    out = []
    for name, render in SECTIONS:
        field = fit_json.get(name)
        if _ok(field):
            out.append(render(fit_json[name]))
        elif name in SAY_WHY_SKIPPED and _ok(fit_json.get("conditions")) and isinstance(field, Mapping):
            out.append(SAY_WHY_SKIPPED[name](str(field.get("skipped", "not measured"))))
    return out


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
        acc = ", ".join(
            f"{short(r[dec['x']])}: {pct(r['accuracy'])}"
            + (f" {_pct_iv(r['accuracy_interval'])}" if r.get("accuracy_interval") else "")
            for r in dec["rows"]
        )
        lines.append(f"decision accuracy vs {dec['x']} = {short(dec['target_size'])} (by size): {acc}")
    lines += _snr_console(fit_json)
    ml = fit_json.get("mixing_law") or {}
    if _ok(ml):
        best = ", ".join(f"{d}={w:g}" for d, w in ml["proposal"]["weights"].items())
        lines.append(f"mixing law: best predicted mixture {best} (written to {ml['file']}); train it with:")
        lines.append(ml["proposal"]["command"])
    return lines


def _snr_console(fit_json: Mapping[str, Any]) -> list[str]:
    """One line: median SNR and the share of pairs above the threshold by size, or why it is not measured."""
    snr = fit_json.get("condition_snr") or {}
    if not _ok(fit_json.get("conditions")):
        return []
    if not _ok(snr):
        return [f"signal-to-noise of condition pairs: {snr.get('skipped', 'not measured')}"]
    x, t = snr["x"], short(snr["threshold"])
    by_size = ", ".join(
        f"{short(r[x])}: {short(r['median_snr'], 3)} ({pct(r['share_resolved'])})" for r in snr["sizes"]
    )
    return [f"signal-to-noise of condition pairs by {x} (median SNR, share with SNR ≥ {t}): {by_size}"]
