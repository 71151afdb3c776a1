"""How train and evaluate run workloads: Kubernetes Jobs or local subprocesses, one interface.

:mod:`launching` holds the interface and the settings, :mod:`factory` picks the launcher the
settings select (the only module that knows both), :mod:`kubejobs` and :mod:`localjobs` are
the two launchers, and :mod:`following` runs the watch and re-check workers over either.
"""
