"""Arena: Bradley-Terry leaderboard with intervals and the head-to-head win-rate matrix, for one judge identity."""

import streamlit as st

from evalsvc.dashboard import charts, ui

cfg = ui.config()
st.title("Arena")
available = ui.query(cfg, "battle_judges")
if available.empty:
    st.info("No battles yet: `evalsvc arena -s SUITE -v A -v B -j JUDGE` stores them.")
    st.stop()
suite = ui.pick("Suite", "suite", list(dict.fromkeys(available["suite"])))
mine = available[available["suite"] == suite]
identities = {f"{r.judge} · {r.judge_fingerprint[:8]} · rubric {r.template[:8]} ({r.battles} battles)": r
              for r in mine.itertuples()}  # newest first: a judge's name can cover several judges and rubrics
choice = identities[ui.pick("Judge (identity: fingerprint and rubric)", "judge", list(identities)) or next(iter(identities))]
matrix = ui.query(cfg, "win_matrix", suite, choice.judge_fingerprint, choice.template)
models = sorted(set(matrix["model"]))
anchor = ui.pick("Anchor (rating 1000)", "anchor", models, default=next((b for b in cfg.baselines.values() if b in models), None))
board = ui.query(cfg, "leaderboard", suite, choice.judge_fingerprint, choice.template, anchor)
st.caption(f"{int(matrix['battles'].sum() // 2)} decided battles on {suite} judged by '{choice.judge}' (fingerprint "
           f"{choice.judge_fingerprint}, rubric {choice.template}); ratings anchored at {anchor} = 1000 with 95% bootstrap "
           "intervals (cases resampled); ties (verdicts that flip with the answer order) count half. A variant shown with "
           "a fingerprint has battles from more than one checkpoint.")
if len(mine) > 1:
    st.caption(f"{len(mine)} judge identities have battles on {suite}; each has its own leaderboard, never mixed.")
st.altair_chart(charts.leaderboard(board), width="stretch")
ui.table(board)
st.subheader("Win rate of the row model against the column model")
st.altair_chart(charts.win_matrix(matrix), width="stretch")
