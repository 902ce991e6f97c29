"""Pictures a person judges results by: training (flattened faces, loss curves), evaluation
(the cumulative error distribution) and per-image fits (overlay, UV maps, cost). Composed
here, written through :mod:`stn_train.outputs`."""
