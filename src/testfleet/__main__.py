"""`python -m testfleet`: the `testfleet` command (entry.py)."""

try:
    from testfleet.entry import main
except KeyboardInterrupt:  # Ctrl-C before entry.main could take it: as entry.main says it
    import sys

    print("testfleet: interrupted; everything started was stopped", file=sys.stderr, flush=True)
    raise SystemExit(130) from None

raise SystemExit(main())
