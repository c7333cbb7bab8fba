"""Guided fine-tuning dashboard: the router and the shared sidebar.

Start with ``streamlit run app.py``. All compute lives in the ``ftcore``
package; the pages are a thin UI over it.
"""

from pathlib import Path

import streamlit as st

from pages.common import PageHalt, init_state, sidebar_status

HERE = Path(__file__).resolve().parent
LOGO = str(HERE / "assets" / "logo.png")

st.set_page_config(page_title="Guided fine-tuning", page_icon=LOGO, layout="wide")
init_state()

PAGES = [
    st.Page(HERE / "pages" / "backbone.py", title="1. Backbone", default=True),
    st.Page(HERE / "pages" / "layers.py", title="2. Layers"),
    st.Page(HERE / "pages" / "data.py", title="3. Data"),
    st.Page(HERE / "pages" / "train.py", title="4. Train"),
    st.Page(HERE / "pages" / "compare.py", title="5. Compare"),
]

nav = st.navigation(PAGES)
st.logo(LOGO)
# The sidebar is filled after the page runs, so it shows the choices the page just made.
slot = st.sidebar.container()
try:
    nav.run()
except PageHalt:  # a page ended early (pages.common.halt); the sidebar is still drawn
    pass
finally:
    with slot:
        sidebar_status()
