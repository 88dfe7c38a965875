"""Arena: Bradley-Terry leaderboard with intervals and the head-to-head win-rate matrix."""

import streamlit as st

from evalsvc.dashboard import charts, ui

cfg = ui.config()
st.title("Arena")
available = ui.query(cfg, "battle_suites")
if available.empty:
    st.info("No battles yet: `evalsvc arena -s SUITE -v A -v B -j JUDGE` stores them.")
    st.stop()
suite = ui.pick("Suite", "suite", sorted(available["suite"].unique()))
judge = ui.pick("Judge", "judge", sorted(available[available["suite"] == suite]["judge"].unique()))
matrix = ui.query(cfg, "win_matrix", suite, judge)
models = sorted(set(matrix["model"]))
anchor = ui.pick("Anchor (rating 1000)", "anchor", models, default=next((b for b in cfg.baselines.values() if b in models), None))
board = ui.query(cfg, "leaderboard", suite, judge, anchor)
st.caption(f"{int(matrix['battles'].sum() // 2)} decided battles on {suite} judged by '{judge}'; ratings anchored at "
           f"{anchor} = 1000 with 95% bootstrap intervals; ties (verdicts that flip with the answer order) count half.")
st.altair_chart(charts.leaderboard(board), width="stretch")
st.dataframe(board, hide_index=True, width="stretch")
st.subheader("Win rate of the row model against the column model")
st.altair_chart(charts.win_matrix(matrix), width="stretch")
