"""Analyses: pure measures over arrays, and fitted estimators.

Each analysis takes arrays of shape (n_stimuli, n_units) (NumPy or torch; heavy linear algebra
runs in torch on the array's own device) and returns a small result object with ``to_frame()``.
"""

__all__: list[str] = []

# Each block below belongs to one part of the package; its owner edits only that block.
# --- similarity: RDMs, RDM comparison, CKA, maps (issue 4) ---
# --- end similarity ---

# --- subspaces and transfer (issue 6) ---
# --- end subspaces and transfer ---

# --- deep-net electrophysiology: receptive fields, top patches (issue 5) ---
# --- end electrophysiology ---
