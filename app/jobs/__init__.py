"""Queued embedding jobs on RQ: the job record (:mod:`store`), its chunks as RQ jobs
(:mod:`chunks`), the items they carry (:mod:`items`), the MLX worker (:mod:`worker`) and the
server's side (:mod:`client`)."""
