"""Guided fine-tuning dashboard: the router and the shared sidebar.

Start with ``streamlit run app.py``. All compute lives in the ``ftcore``
package; the pages are a thin UI over it.
"""

import streamlit as st

from pages.common import init_state, sidebar_status

st.set_page_config(page_title="Guided fine-tuning", page_icon="assets/logo.png", layout="wide")
init_state()

PAGES = [
    st.Page("pages/backbone.py", title="1. Backbone", default=True),
    st.Page("pages/layers.py", title="2. Layers"),
    st.Page("pages/data.py", title="3. Data"),
    st.Page("pages/train.py", title="4. Train"),
    st.Page("pages/compare.py", title="5. Compare"),
]

nav = st.navigation(PAGES)
st.logo("assets/logo.png")
sidebar_status()
nav.run()
