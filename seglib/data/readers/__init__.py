"""One reader per dataset layout, each returning ``Case`` records: ISLES'22 and ATLAS R2.0 (BIDS, ``isles``),
PROSTATEx (``prostatex``) and Kaggle LGG (``lgg``). Reached through :func:`seglib.data.load_cases`."""
