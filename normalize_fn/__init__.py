"""normalize_fn: raw Azure logs from Event Hub → normalized events and dead letters.

Bindings only; the work is `shared.normalize.batch.process_batch`. The retry policy covers the one case that
raises (dead-letter store or fan-out hub unreachable): the Event Hub trigger checkpoints even after a
failure, so without it a batch would be lost. Retries are in memory and hold the partition: the pipeline
stalls rather than drops logs, and resumes from the same batch once storage is back.
The worker keeps freed heap memory between batches (`shared.worker_memory`): set here, as the worker loads it.
`catalog_refresh` stores Microsoft's operation catalog in the app's storage once a day, for normalize to describe
every operation with (`shared.normalize.catalog_sync`); it has no retry policy, the next day's run retries.
The engine is imported by the first invocation, not when the host indexes the app (cold start).
"""

import typing

import azure.functions as func

from shared import settings as names
from shared.clients.eventhubs import EVENT_HUB_RETRY, bodies_with_positions
from shared.worker_memory import keep_freed_memory

keep_freed_memory()
bp = func.Blueprint()

# Daily at 03:17 UTC (NCRONTAB with seconds): Azure adds operations a few times a week, a day late is fine.
CATALOG_SCHEDULE = "0 17 3 * * *"


@bp.function_name("normalize")
@bp.retry(**EVENT_HUB_RETRY)
@bp.event_hub_message_trigger(
    arg_name="events", connection=names.RAW_CONNECTION, event_hub_name=f"%{names.RAW_HUB}%",
    consumer_group=f"%{names.NORMALIZE_CONSUMER_GROUP}%", cardinality="many", data_type="binary",
)
def normalize(events: typing.List[func.EventHubEvent]) -> None:  # the worker needs typing.List, not list
    from shared.clients import wiring  # noqa: PLC0415 - cold start
    from shared.normalize.batch import process_batch  # noqa: PLC0415
    from shared.normalize.catalog_sync import stored_catalog  # noqa: PLC0415

    process_batch(bodies_with_positions(events), wiring.publisher(), wiring.dead_letter_store(),
                  names.get_settings(), stored_catalog())


@bp.function_name("catalog_refresh")
@bp.timer_trigger(arg_name="timer", schedule=CATALOG_SCHEDULE, run_on_startup=False, use_monitor=True)
def catalog_refresh(timer: func.TimerRequest) -> None:
    from shared.normalize.catalog_sync import refresh_catalog  # noqa: PLC0415 - cold start

    refresh_catalog()
