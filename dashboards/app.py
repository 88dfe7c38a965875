"""evalsvc dashboard: `evalsvc dashboard` starts it (read-only; see README: the dashboard)."""

import streamlit as st

st.set_page_config(page_title="evalsvc", layout="wide")
pages = [
    st.Page("pages/overview.py", title="Overview", url_path="overview", default=True),
    st.Page("pages/trends.py", title="Trends", url_path="trends"),
    st.Page("pages/compare.py", title="Compare", url_path="compare"),
    st.Page("pages/arena.py", title="Arena", url_path="arena"),
    st.Page("pages/runs.py", title="Runs and alerts", url_path="runs"),
]
st.navigation(pages).run()
