"""The Celery 5 + RabbitMQ side of `squadron bench queue`.

No-op tasks, enqueued one `apply_async` at a time, then run by a prefork
worker with `-c 2`, `worker_prefetch_multiplier=1`, `task_acks_late=True`
and `ignore_result=True` (Celery's settings for not losing tasks when a
worker dies). Prints one line: `celery enqueue_per_second=… tasks_per_second=…`.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time

APP = """
import os
from celery import Celery

app = Celery("bench_app", broker=os.environ["BENCH_BROKER"])
app.conf.update(
    task_default_queue=os.environ["BENCH_QUEUE"],
    worker_prefetch_multiplier=1,
    task_acks_late=True,
    task_ignore_result=True,
    broker_connection_retry_on_startup=True,
)


@app.task(ignore_result=True)
def noop():
    pass
"""


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=20000)
    parser.add_argument("--broker", default="amqp://guest:guest@127.0.0.1:5672//")
    args = parser.parse_args()

    workdir = tempfile.mkdtemp(prefix="squadron-celery-")
    with open(os.path.join(workdir, "bench_app.py"), "w") as f:
        f.write(APP)
    queue = f"squadron_bench_{os.getpid()}"
    os.environ["BENCH_BROKER"] = args.broker
    os.environ["BENCH_QUEUE"] = queue
    sys.path.insert(0, workdir)
    import bench_app  # noqa: E402

    app = bench_app.app
    with app.connection_for_write() as conn:
        channel = conn.channel()
        channel.queue_declare(queue, durable=True, auto_delete=False)

        def ready():
            return channel.queue_declare(queue, passive=True).message_count

        started = time.monotonic()
        for _ in range(args.tasks):
            bench_app.noop.apply_async()
        enqueue_rate = args.tasks / (time.monotonic() - started)
        while ready() < args.tasks:
            time.sleep(0.01)

        worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "bench_app", "worker", "-P", "prefork", "-c", "2",
             "-Q", queue, "--prefetch-multiplier", "1", "--without-gossip", "--without-mingle",
             "--without-heartbeat", "-l", "warning"],
            cwd=workdir,
            env=dict(os.environ, PYTHONPATH=workdir),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            # The rate is measured from the first task taken (the worker's
            # start-up is not counted) until the queue is empty.
            while (left := ready()) >= args.tasks:
                time.sleep(0.005)
            first = time.monotonic()
            while ready() > 0:
                time.sleep(0.005)
            rate = left / (time.monotonic() - first)
        finally:
            worker.terminate()
            worker.wait()
            channel.queue_delete(queue)
    print(f"celery enqueue_per_second={enqueue_rate:.0f} tasks_per_second={rate:.0f}")


if __name__ == "__main__":
    main()
