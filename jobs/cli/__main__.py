"""`python -m jobs.cli …`: what Ray jobs and `quanyu serve --detach` run."""

from jobs.cli import main

main()
