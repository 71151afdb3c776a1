"""Chooses the launcher a service's settings select: the one module that knows both.

The implementation is imported inside :func:`build`, so a service using the local launcher
never loads the Kubernetes client (and the other way round), and neither launcher imports
this module: the interface lives in :mod:`tunewire.core.launchers.launching`.
"""

from __future__ import annotations

from collections.abc import Mapping

from tunewire.core.launchers.launching import Launcher, LauncherSettings, WorkloadKind


def build(
    settings: LauncherSettings, *, kind: WorkloadKind, local_env: Mapping[str, str] | None = None
) -> Launcher:
    """The launcher ``settings`` select, serving workloads of ``kind``.

    The implementation is imported here, not at the top, so that a service using the local
    launcher never imports the Kubernetes client (and the other way round).
    ``local_env`` is the base environment of local workloads (default: this process's).
    """
    if settings.kind == "kubernetes":
        from tunewire.core.launchers import kubejobs

        return kubejobs.KubernetesLauncher(settings.kubernetes, kind=kind)
    from tunewire.core.launchers import localjobs

    return localjobs.LocalLauncher(settings.local, kind=kind, env=local_env)
