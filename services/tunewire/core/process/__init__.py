"""One service process: its HTTP app and probes, its named workers, and how they are assembled.

Every service's ``__main__`` builds its domain objects and hands them to :mod:`assembly`,
which wires :mod:`http`'s app and :mod:`runner`'s workers the same way for all five.
"""
