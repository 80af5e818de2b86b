"""Scoring a pre-registered prediction: the loss each target run was predicted to reach, and what it reached.

Why: the prediction (``report.prediction``, written by ``--preregister`` before any target trained) is worth
something only if it is scored against the runs it was made for, by the file those runs carry: each target
record holds the sha256 of its prediction file and both times (``RunRecord.preregistration``). A file whose
sha256 no longer matches, or a prediction written after its target started, is said so, not scored silently.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from datascale.records import PREDICTION_FILENAME, RunRecord

from ..render.text import markdown_table, pct, short
from .base import Step, StepResult, StudyContext

FIELDS = {
    "prediction": "the pre-registered prediction at the study's target sizes (`analysis.predict.targets`, "
    "written by `scaling-fit --preregister` before any target trained) scored on the target runs: per target "
    "run `observed`, `predicted`, its `interval`, `signed_error` ((predicted − observed)/observed), "
    "`abs_error`, `inside` (the interval), `prediction_created_at`, `started_at`, `created_before_start`, "
    "`sha256_ok` (the prediction file is the one the run carries); `predictions` (each file: law, targets, "
    "created_at), `summary` (runs scored, inside, mean absolute error); or the current prediction while no "
    "target has finished",
}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _load(study_dir: Path, info: Mapping[str, Any], cache: dict[str, Any]) -> dict[str, Any]:
    """The prediction file a target run carries (read once per file), with whether its sha256 matches."""
    name = str(info.get("prediction_file", ""))
    if name not in cache:
        path = study_dir / name
        try:
            body = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            cache[name] = {"file": name, "error": f"unreadable: {exc}"}
        else:
            cache[name] = {"file": name, "body": body, "sha256": _sha256(path)}
    return cache[name]


def score_target(rec: RunRecord, pred: Mapping[str, Any]) -> dict[str, Any]:
    """One target run against the prediction it carries."""
    info, body = rec.preregistration, pred.get("body") or {}
    row: dict[str, Any] = {"run_id": rec.run_id, "U": int(rec.unique_tokens), "seed": rec.seed}
    row.update(file=pred.get("file"), sha256_ok=pred.get("sha256") == info.get("prediction_sha256"))
    created, started = info.get("prediction_created_at", ""), info.get("started_at", "")
    row.update(
        prediction_created_at=created, started_at=started, created_before_start=bool(created < started)
    )
    target = next((p for p in body.get("predictions") or [] if int(p["U"]) == int(rec.unique_tokens)), None)
    if target is None:
        return {**row, "error": pred.get("error") or f"the prediction has no target U={rec.unique_tokens}"}
    observed = float(getattr(rec, (body.get("inputs") or {}).get("loss_metric", "test_loss")))
    predicted, (lo, hi) = float(target["loss"]), target["interval"]
    signed = (predicted - observed) / observed
    inside = None if lo is None or hi is None else bool(lo <= observed <= hi)
    row.update(observed=observed, predicted=predicted, interval=[lo, hi], law=body.get("law"))
    row.update(signed_error=signed, abs_error=abs(signed), log_error=math.log(predicted / observed))
    return {**row, "inside": inside}


def run(ctx: StudyContext) -> StepResult:
    """Score every finished target run that carries a prediction; without any, show the current one."""
    study_dir = Path(ctx.source)
    records = [r for _, r in ctx.protocol_files()]
    targets = [r for r in records if r.status == "done" and r.preregistration.get("prediction_file")]
    current = study_dir / PREDICTION_FILENAME if study_dir.is_dir() else None
    if not targets:
        if current is None or not current.is_file():
            return StepResult.skip("prediction", FIELDS, "no pre-registered prediction (analysis.predict)")
        body = json.loads(current.read_text())
        return StepResult(
            "prediction", {"prediction": {"status": "no target run finished yet", **_brief(body)}}
        )
    cache: dict[str, Any] = {}
    scores = [score_target(r, _load(study_dir, r.preregistration, cache)) for r in targets]
    scored = [s for s in scores if "abs_error" in s]
    summary = {
        "n_scored": len(scored),
        "n_inside": sum(bool(s.get("inside")) for s in scored),
        "mean_abs_error": sum(s["abs_error"] for s in scored) / len(scored) if scored else None,
        "all_created_before_start": all(s["created_before_start"] for s in scores),
        "all_sha256_ok": all(s["sha256_ok"] for s in scores),
    }
    preds = [{"file": p["file"], **_brief(p.get("body") or {})} for p in cache.values()]
    return StepResult(
        "prediction", {"prediction": {"scores": scores, "predictions": preds, "summary": summary}}
    )


def _brief(body: Mapping[str, Any]) -> dict[str, Any]:
    """What a prediction file said, in short."""
    keys = ("created_at", "targets", "law", "predictions", "seed_noise")
    out = {k: body.get(k) for k in keys}
    out["rule_reason"] = (body.get("rule") or {}).get("reason")
    out["inputs_sha256"] = (body.get("inputs") or {}).get("sha256")
    return out


def sections(fj: Mapping[str, Any]) -> list[str]:
    """The report section: each target run's prediction, outcome and times."""
    p = fj.get("prediction") or {}
    if not p or p.get("skipped"):
        return []
    title = "## Pre-registered prediction"
    if "scores" not in p:
        rows = [[r["U"], short(r["loss"]), _iv(r["interval"])] for r in p.get("predictions") or []]
        text = f"Written {p.get('created_at')} ({p.get('law')}); no target run has finished yet."
        return ["\n\n".join([title, text, markdown_table(["target U", "predicted", "95% interval"], rows)])]
    s = p["summary"]
    yes = {True: "yes", False: "NO"}
    text = (
        f"{s['n_inside']} of {s['n_scored']} target runs inside their 95% interval (bootstrap + seed noise); "
        f"mean absolute error {pct(s['mean_abs_error'])}. Written before every target started: "
        f"{yes[s['all_created_before_start']]}; prediction files unchanged since: {yes[s['all_sha256_ok']]}."
    )
    head = [
        "run",
        "U",
        "law",
        "predicted",
        "95% interval",
        "observed",
        "error",
        "inside",
        "written",
        "started",
    ]
    return ["\n\n".join([title, text, markdown_table(head, [_row(r) for r in p["scores"]])])]


def _iv(iv: Any) -> str:
    return "—" if not iv or iv[0] is None else f"[{short(iv[0])}, {short(iv[1])}]"


def _row(r: Mapping[str, Any]) -> list[Any]:
    if "abs_error" not in r:
        return [
            r["run_id"],
            r["U"],
            "—",
            "—",
            "—",
            "—",
            r.get("error", ""),
            "—",
            r["prediction_created_at"],
            r["started_at"],
        ]
    return [
        r["run_id"], r["U"], r.get("law"), short(r["predicted"]), _iv(r["interval"]), short(r["observed"]),
        f"{r['signed_error']:+.2%}", {True: "yes", False: "NO", None: "—"}[r["inside"]],
        r["prediction_created_at"], r["started_at"],
    ]  # fmt: skip


def console(fj: Mapping[str, Any]) -> list[str]:
    p = fj.get("prediction") or {}
    if "summary" not in p:
        return []
    s = p["summary"]
    return [
        f"pre-registered prediction: {s['n_inside']} of {s['n_scored']} target runs inside the 95% interval, "
        f"mean absolute error {pct(s['mean_abs_error'])}"
    ]


STEP = Step("prediction", FIELDS, run, sections, console)
