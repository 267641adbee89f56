"""``python -m seglib.report``: render the site from the executed notebooks."""

from seglib.report.render import main

main()
