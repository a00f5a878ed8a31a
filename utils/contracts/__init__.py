"""The contracts `llava/` and `lab/` meet at without importing each other.

layout.py (`ImageLayout`: where a sample's image tokens sit in the original image), capture.py (the
`ContextVar` holding the active sink and the `LayerPlan` one layer call must follow), vlm.py (the
methods `lab` calls on a loaded model, as a `typing.Protocol`).
"""
