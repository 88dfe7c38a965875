"""evalsvc dashboard: `evalsvc dashboard` starts it (read-only; see README: the dashboard)."""

import streamlit as st

st.set_page_config(page_title="evalsvc", layout="wide")
pages = [
    st.Page("views/overview.py", title="Overview", default=True),
    st.Page("views/trends.py", title="Trends", url_path="trends"),
    st.Page("views/compare.py", title="Compare", url_path="compare"),
    st.Page("views/arena.py", title="Arena", url_path="arena"),
    st.Page("views/runs.py", title="Runs and alerts", url_path="runs"),
]
st.navigation(pages).run()
