"""Services of a running process that every layer may use: ranks and collectives, progress display, metrics log.

Nothing here imports the rest of robustdistill beyond `errors` and `utils`, so `methods/`,
`attacks/` and `evaluate/` use these helpers without depending on `train/`.
"""
