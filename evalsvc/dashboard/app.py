"""evalsvc dashboard: `evalsvc dashboard` starts it (read-only; see README: the dashboard).

The pages ship inside the package (``views/``), so an installed wheel serves them too.
"""

from pathlib import Path

import streamlit as st

from evalsvc.dashboard import ui
from evalsvc.dashboard.access import admit

VIEWS = Path(__file__).resolve().parent / "views"


def main() -> None:
    st.set_page_config(page_title="evalsvc", layout="wide")
    admit(ui.config())  # with dashboard.auth: a sign-in or refusal page, and nothing else, unless allowed
    pages = [
        st.Page(VIEWS / "overview.py", title="Overview", default=True),
        st.Page(VIEWS / "trends.py", title="Trends", url_path="trends"),
        st.Page(VIEWS / "drift.py", title="Drift", url_path="drift"),
        st.Page(VIEWS / "compare.py", title="Compare", url_path="compare"),
        st.Page(VIEWS / "tradeoff.py", title="Quality vs speed", url_path="tradeoff"),
        st.Page(VIEWS / "arena.py", title="Arena", url_path="arena"),
        st.Page(VIEWS / "runs.py", title="Runs and alerts", url_path="runs"),
    ]
    st.navigation(pages).run()


if __name__ == "__main__":
    main()
