"""The Streamlit dashboard: the app and its pages (``app.py``, ``views/``) and the SQL behind each page (``queries``)."""
