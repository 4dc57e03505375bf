"""Streamlit helpers of the CAINNFlow inspection app (the library is ``cainnflow``)."""
