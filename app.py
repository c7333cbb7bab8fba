"""Guided fine-tuning dashboard: the router and the shared sidebar.

Start with ``streamlit run app.py``. Each step of the walk is a function,
``render()`` of ``pages/<step>.py``, routed by ``st.navigation`` at
``/<step>`` (``/train?run=ID``). All compute lives in the ``ftcore``
package; the pages are a thin UI over it.
"""

from pathlib import Path

import streamlit as st

from pages.common import STEPS, init_state, sidebar_status, step

HERE = Path(__file__).resolve().parent
LOGO = str(HERE / "assets" / "logo.png")

st.set_page_config(page_title="Guided fine-tuning", page_icon=LOGO, layout="wide")
init_state()
page = st.navigation([step(url_path) for url_path in STEPS])
st.logo(LOGO)
# The sidebar is filled after the page ran, so it shows the choices the page just made.
slot = st.sidebar.container()
try:
    page.run()
finally:  # also when a page ended early (a plain return) or failed
    with slot:
        sidebar_status()
