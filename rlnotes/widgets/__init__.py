"""Widgets: each module holds a pure function that computes what is drawn (tested like any other
function) and a thin ipywidgets view that only wires sliders to it."""
