"""The report: notebooks executed by papermill (``notebooks``), the site rendered from them (``render``):
Quarto's project staged and run (``quarto``) or the offline renderer (``fallback``), the generated pages
(``pages``: index with the reproduction scorecard, provenance), cross-references (``crossref``) and PDF
through headless Chromium (``pdf``). Nothing here is imported by ``import seglib``."""
