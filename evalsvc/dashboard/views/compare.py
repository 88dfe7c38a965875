"""Compare: baseline vs candidate, paired case by case: deltas, flips and the cases side by side."""

import pandas as pd
import streamlit as st

from evalsvc.dashboard import cases as case_view
from evalsvc.dashboard import charts, sequential, ui
from evalsvc.dashboard.diff import side_by_side

cfg = ui.config()
st.title("Compare")
names = ui.query(cfg, "names")
if len(names["variants"]) < 2:
    st.info("Comparing needs runs of two variants on the same suite.")
    st.stop()
candidate = ui.pick("Candidate", "candidate", names["variants"])
family = next((v.family for v in cfg.variants if v.name == candidate), None)
baseline = ui.pick("Baseline", "baseline", [v for v in names["variants"] if v != candidate],
                   default=cfg.baselines.get(family or "", None))
suites = ui.pick_many("Suites", "suite", names["suites"])


def banner(verdict: str, text: str) -> None:
    (st.error if verdict == "regression" else st.warning if verdict == "inconclusive" else st.success)(text)


def mark(stop: dict, compared: set[int]) -> None:
    """The newest stored verdict of the pair, when a sequential gate made it: where it stopped, and on which runs."""
    st.markdown(f":violet-badge[{sequential.note(stop)}]")
    said = f"the newest stored verdict of this pair ({stop['verdict']}, stored {stop['at']:%Y-%m-%d %H:%M} UTC)"
    if stop["runs"] and set(stop["runs"]) <= compared:
        st.caption(f"Sequential: {said} is an `evalsvc gate --sequential` verdict on the runs compared here, decided at "
                   "its stopping look's boundary; this page pairs the same runs at the fixed gate's level.")
    elif stop["stopped_early"]:
        st.caption(f"Sequential: {said} is an `evalsvc gate --sequential` verdict on runs asked in part (slot "
                   f"{stop['slot']}), which this page does not pair: it compares complete runs. "
                   f"`evalsvc run -s SUITE -v VARIANT --slot {stop['slot']}` completes them.")
    else:
        st.caption(f"Sequential: {said} is an `evalsvc gate --sequential` verdict on earlier runs than those compared "
                   "here.")


result = ui.query(cfg, "comparison", cfg.gate.model_dump(mode="json"), baseline, candidate, tuple(suites))
stop = ui.query(cfg, "sequential_verdict", baseline, candidate)
if result is None:
    if stop is not None:  # a sequential gate that stopped early leaves partial runs only
        banner(stop["verdict"], f"**{candidate} vs {baseline}: {stop['verdict']}** (the newest stored verdict of this "
                                "pair, by `evalsvc gate --sequential`)")
        mark(stop, set())
    st.info(f"{candidate} and {baseline} have no succeeded runs on a common suite version.")
    st.stop()
if "error" in result:
    st.error(result["error"])
    st.stop()
verdict, metrics, flips = result["verdict"], result["metrics"], result["flips"]
banner(verdict, f"**{candidate} vs {baseline}: {verdict}** (what `evalsvc gate` decides on their newest shared runs of "
                f"{', '.join(result['runs'])}: gate metrics {', '.join(cfg.gate.primary)}, the 'all suites' rows pooled "
                "over the suites; margins and alpha from evalsvc.yaml)")
if stop is not None:
    mark(stop, {c for _, c in result["runs"].values()})
st.markdown(result["how"])
if result["reasons"]:
    st.markdown(("**Why:**" if verdict == "regression" else "**What blocked the pass:**") + "\n"
                + "\n".join(f"- {r}" for r in result["reasons"]))
for note in result["notes"]:
    st.caption(note)
st.altair_chart(charts.deltas(metrics), width="stretch")
st.caption("Each row: the candidate's difference from the baseline (dot) with its interval (bar), turned so that right is "
           "better for every metric; the red tick is minus the margin, the grey line no difference.")
ui.table(metrics.drop(columns=["method"]))
st.caption("Role, as `evalsvc gate --json` names it: *decides* (this row's verdict sets the gate's), *veto* (a suite "
           "that blocks a pass where it regressed, is shown worse than the baseline or could not be decided), *summary*, "
           "*informational* (shown, never decides).")

st.subheader(f"Flips ({(flips['direction'] == 'down').sum()} pass → fail, {(flips['direction'] == 'up').sum()} fail → pass)")
ui.table(flips.assign(direction=flips["direction"].map({"down": "pass → fail", "up": "fail → pass"})))

st.subheader("Case by case")
suite = st.selectbox("Suite", list(result["runs"]), index=list(result["runs"]).index(st.query_params["case_suite"])
                     if st.query_params.get("case_suite") in result["runs"] else 0)
st.query_params["case_suite"] = suite
base_run, cand_run = result["runs"][suite]
diverged = ui.query(cfg, "case_divergence", base_run, cand_run)
if diverged.empty:
    st.caption(f"No divergence on {suite}: its two runs stored no log-probabilities for the same cases "
               "(divergence.top_logprobs: 0, or an endpoint that gives none).")
else:
    st.markdown(f"**Divergence from the baseline on {suite}**, most diverged first: kld is the mean per-token "
                "KL(baseline ‖ candidate) over the tokens both answers predict from the same context (nats, a top-k lower "
                "bound); *first divergence* counts the tokens before the answers first differ, where each answer's token "
                "is shown (quoted); Δp is the change in the probability of the baseline's chosen token before that. A "
                "*teacher forced* case was scored on every token of the baseline's answer (its kld and Δp cover them all; "
                "top-1 agreement is the share whose most likely token both models agree on; docs/divergence.md).")
    ui.table(diverged.rename(columns={"delta_p": "Δp"}), ["case_id", "kld", "same_output", "first_divergence",
                                                         "baseline_token", "candidate_token", "Δp", "top1_agreement",
                                                         "mode"])
flipped = flips[flips["suite"] == suite]["case_id"].tolist()
cases = flipped + [c for c in ui.query(cfg, "shared_cases", base_run, cand_run) if c not in set(flipped)]
case_id = ui.pick("Case (flipped first)", "case", cases, container=st)
if case_id:
    here = diverged[diverged["case_id"] == case_id]
    if not here.empty:
        d = here.iloc[0]
        kld = "" if pd.isna(d["kld"]) else f"kld {d['kld']:.4f} nats; "
        where = ("the two answers are the same tokens" if d["same_output"] else
                 f"the answers first differ after {d['first_divergence']} tokens: {baseline} "
                 f"{ui.code_span(d['baseline_token'])}, {candidate} {ui.code_span(d['candidate_token'])}")
        st.markdown(f"**Divergence:** {kld}{where}")
    base = ui.query(cfg, "case_detail", base_run, case_id)
    cand = ui.query(cfg, "case_detail", cand_run, case_id)
    spec = (base or cand or {}).get("spec", {})
    for key in ("input", "messages", "context", "reference", "references"):
        if spec.get(key):
            st.markdown(f"**{ui.header(key)}**")
            st.code(spec[key] if isinstance(spec[key], str) else str(spec[key]), language=None, wrap_lines=True)
    left, right = st.columns(2)
    html_base, html_cand = side_by_side((base or {}).get("output", ""), (cand or {}).get("output", ""))
    for col, who, row, html in ((left, baseline, base, html_base), (right, candidate, cand, html_cand)):
        col.markdown(f"**{who}** · {case_view.outcome(row)}")
        col.html(f"<div class='evalsvc-output'>{html}</div>")
        ui.table(case_view.checks(spec, row), where=col)
        for label, verdict_detail in ((row or {}).get("judge") or {}).items():
            col.markdown(f"judge **{label}** ({verdict_detail.get('judge', '?')}): {verdict_detail.get('verdict', '?')}")
            col.code(str(verdict_detail.get("reply", "")), language=None, wrap_lines=True)
    st.caption("Words that differ between the two answers are underlined grey on both sides, whichever is right: "
               "each side's pass or fail and its checks' scores (✓ 1, ✗ 0) are the ones its run stored.")
