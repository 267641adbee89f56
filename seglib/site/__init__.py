"""Report-site machinery behind :func:`seglib.report.render_site`.

One module per concern:

- :mod:`seglib.site.crossref`: Quarto cell options (``#| label: fig-…``) read from
  notebook cells, figures and tables numbered, ``@fig-…``/``@tbl-…`` resolved;
- :mod:`seglib.site.pages`: the generated pages (index with the reproduction
  scorecard, provenance appendix) written as Markdown/HTML from ``results.json``
  and papermill's notebook metadata;
- :mod:`seglib.site.fallback`: the offline renderer (nbconvert, one template);
- :mod:`seglib.site.quarto`: staging the Quarto project and calling ``quarto``;
- :mod:`seglib.site.pdf`: PDF through headless Chromium for the fallback.

Nothing here is imported by ``import seglib``.
"""
