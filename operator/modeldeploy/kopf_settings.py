"""kopf settings for real clusters."""

from __future__ import annotations

import logging

import kopf


def tune(settings: kopf.OperatorSettings) -> None:
    """Settings for real clusters: watches that cannot hang silently, quiet kopf events."""
    settings.watching.server_timeout = 270
    settings.watching.client_timeout = 300
    settings.watching.connect_timeout = 10
    settings.networking.request_timeout = 60
    settings.networking.connect_timeout = 10
    settings.posting.level = logging.WARNING
    settings.peering.standalone = True  # the Lease in leader.py decides who runs
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
        prefix="modeldeploy.dev"
    )
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="modeldeploy.dev"
    )
    settings.execution.max_workers = 4
    # The handlers only hand events to the scheduler, which folds repeats itself; kopf's
    # default 0.1 s wait for more events of the same object would only delay a new one.
    settings.batching.batch_window = 0.02
