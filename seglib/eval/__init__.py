"""Evaluation: per-case confusion counts and metrics, pooled and per case (``metrics``), bootstrap CIs and
paired tests (``stats``), and the results tables built from them (``tables``)."""
