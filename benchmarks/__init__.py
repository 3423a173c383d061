"""Side-by-side benchmarks of palm and its peers.

Entry point: ``python -m benchmarks.run``. The modules at this level are shared by every
benchmark (timing, result rows, processes, Redis, the case launcher, the report and the
plots); ``benchmarks/cases/`` holds the code that runs inside each interpreter.

Nothing here is imported by palm, and no peer becomes a palm dependency: peers live in
their own virtual environments and run as subprocesses that print one JSON record.
"""
