"""The dashboard from a source checkout: `streamlit run dashboards/app.py` (`evalsvc dashboard` does the same).

The pages live in the package (evalsvc/dashboard/views/) so that an installed wheel ships them.
"""

from evalsvc.dashboard.app import main

main()
