"""The Streamlit dashboard's data side: read-only store access and the SQL behind each page (dashboards/ holds the pages)."""
