"""Lanes: how many a run gets (`count`), how each one's pytest starts (`launch`, `spawn`, `early`),
what they collect (`collection`), and the coordinator that feeds them work from the lane queue
and turns what they report into the run's outcome (`coordinator`, `queue`, `state`,
`outcome`, `progress`)."""
