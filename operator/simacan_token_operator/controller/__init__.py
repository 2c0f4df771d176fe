"""Workers and routing: the loops that gather, run a pass, act and sleep (I/O only through kube, auth)."""
