"""The dashboard's pages: Streamlit scripts that ``evalsvc.dashboard.app`` runs, one per page."""
