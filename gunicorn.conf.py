"""gunicorn's settings for Conduit's web process, read from the working directory.

Procfile, bin/serve and the Dockerfile all start gunicorn from the repository
root, so they all get these. Only the request limits live here; the bind
address and worker count stay on the command line.

gunicorn answers requests over its limits itself, with a plain-text page and no
JSON. Its limits are set above the application's (conduit.middleware
RequestLimitsMiddleware: a request line of 8,190 bytes, a header field of 8,190
bytes, 100 header fields), so that under /api/ Conduit answers 414/431 in the
API's error shape. Beyond these hard caps gunicorn still answers alone; put a
proxy in front with lower limits if that matters (see the README).
"""

# 0 = no limit of its own; gunicorn's parser still stops at 1 MiB.
limit_request_line = 0
limit_request_field_size = 65536
limit_request_fields = 200

# Metrics (conduit/metrics.py): imported here, in gunicorn's master, so that the
# web's folder of metric files is chosen and cleared of a previous run's files
# before any worker starts counting; each worker inherits the choice.
from prometheus_client import multiprocess  # noqa: E402

from conduit import metrics  # noqa: E402


def child_exit(server, worker):  # gunicorn calls it when a worker exits
    # A dead worker's counters stay (a counter never goes down); its live gauges go.
    if metrics.DIRECTORY is not None:
        multiprocess.mark_process_dead(worker.pid, str(metrics.DIRECTORY))
