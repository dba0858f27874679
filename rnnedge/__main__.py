"""`python -m rnnedge`: the same command as `rnnedge`."""

from rnnedge.entry import main

main()
