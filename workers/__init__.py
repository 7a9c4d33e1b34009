"""kcap's workers: the caption side (workers.captioning, GPU hosts) and the route side
(workers.routing, the storage host). The two never import each other."""
